"""Compare two ``distill-doctor demo`` output folders: do two versions of the code give the same reports?

Masked, because they differ between two runs of the same code: timestamps, the output folder's
path, wall timings, and the measured draft cost (a wall-clock measurement). In report.json only the
cost and what is computed from it (speedups, best draft length) are dropped; in report.md and
report.html the whole speculative section is, since its text interleaves the cost with the
acceptance numbers (which report.json still compares). Everything else (verdicts, numbers, text,
HTML) must be byte-identical.

Usage: ``python3 scripts/compare_reports.py BEFORE AFTER``; exit 1 on a difference, 2 on bad usage.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

MEASURED_COST = ("draft_cost", "forward_ms", "speedup", "best_gamma", "best_speedup")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00")
VERSION = re.compile(r"distill-doctor \d+\.\d+\.\d+\S*")
MD_SPECULATIVE = re.compile(r"## Speculative decoding readiness.*?(?=\n## )", re.S)
HTML_SPECULATIVE = re.compile(r"<h2 id='speculative'>.*?(?=<h2|<section)", re.S)


def normal_json(path: Path, root: Path) -> str:
    report = json.loads(path.read_text(encoding="utf-8"))
    report.pop("created_at", None)
    report.pop("timings", None)
    if isinstance(report.get("tool"), dict):
        report["tool"].pop("version", None)
    speculative = report.get("speculative") or {}
    for key in MEASURED_COST:
        speculative.pop(key, None)
    return json.dumps(report, indent=1, sort_keys=True).replace(str(root), "ROOT")


def normal_text(path: Path, root: Path) -> str:
    text = path.read_text(encoding="utf-8").replace(str(root), "ROOT")
    text = VERSION.sub("distill-doctor V", TIMESTAMP.sub("TS", text))
    section = MD_SPECULATIVE if path.suffix == ".md" else HTML_SPECULATIVE
    return section.sub("SPECULATIVE", text)


def same_file(before: Path, after: Path, rel: Path) -> bool:
    if not rel.name.startswith("report."):
        return (before / rel).read_bytes() == (after / rel).read_bytes()
    normal = normal_json if rel.suffix == ".json" else normal_text
    return normal(before / rel, before) == normal(after / rel, after)


def compare(before: Path, after: Path) -> int:
    """The number of differences between the two folders (missing files count)."""
    files_before = {p.relative_to(before) for p in before.rglob("*") if p.is_file()}
    files_after = {p.relative_to(after) for p in after.rglob("*") if p.is_file()}
    bad = 0
    for rel in sorted(files_before ^ files_after):
        print(f"only in one folder: {rel}")
        bad += 1
    for rel in sorted(files_before & files_after):
        if not same_file(before, after, rel):
            print(f"DIFFERS: {rel}")
            bad += 1
    return bad


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not all(Path(a).is_dir() for a in argv):
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    bad = compare(Path(argv[0]), Path(argv[1]))
    print(
        f"{bad} differences" if bad else "identical (masked: timestamps, paths, timings, measured draft cost)"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
