"""Independent validation of ``distill-doctor diagnose`` on labelled scenarios.

Generates scenarios with ``distill_doctor/testing/scenarios.py`` (clean runs at several sizes and accuracies, and
each planted mode), runs the real CLI on each, and writes
``bench/results/diagnosis_validation.json`` and ``.md``:

- per planted mode: detection rate (the planted mode's finding is ``fail``) with a Clopper-Pearson
  95% interval, split by size, and how often it was the primary suspect;
- clean runs: the share with any ``fail`` (false-fail rate), with its interval;
- per probe: the false-alarm rate (``fail`` where that mode was not planted) and warn rate;
- every misclassification with the finding's summary and metrics.

Usage: ``.venv/bin/python bench/validate_diagnosis.py [--quick] [--out bench/results]``
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]

from distill_doctor.atomic import atomic_write_text as write_text  # noqa: E402
from distill_doctor.cli import main as cli_main  # noqa: E402
from distill_doctor.testing.scenarios import MODES  # noqa: E402
from distill_doctor.testing.validation import run_one, situation, summarise, sweep_specs  # noqa: E402


def markdown(summary: dict, rows: list[dict], seconds: float) -> str:
    def ci(c):
        return f"[{c[0]:.2f}, {c[1]:.2f}]"

    lines = ["# Diagnosis validation (independent scenarios, real CLI)", "",
             f"{len(rows)} scenarios in {seconds:.0f} s (distill_doctor/testing/scenarios.py; bench/validate_diagnosis.py).", "",
             "## Detection of planted modes (non-tiny runs; n = 60, 200, 600; teacher 0.95/0.6/0.35)", "",
             "| mode | detected | rate | 95% CI | by n | primary suspect | tiny runs with any fail |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for mode, m in summary["per_mode"].items():
        by_n = ", ".join(f"{n}: {v['detected']}/{v['of']}" for n, v in m["by_n"].items())
        rate = "-" if m["rate"] is None else f"{m['rate']:.2f}"
        lines.append(f"| {mode} | {m['detected']}/{m['planted']} | {rate} | {ci(m['ci'])} | {by_n} | "
                     f"{m['primary_suspect']} | {m['tiny_fails']}/{m['tiny_runs']} |")  # fmt: skip
    lines += ["", "## Clean runs", ""]
    for key, what in (
        ("clean", "clean runs (absolute-uniform student)"),
        ("clean_logit", "clean runs with a logit-uniform weaker student (0.7 or 1.8 logits behind)"),
        ("clean_twins", "clean runs whose train set holds same-story/new-number twins of 10% of math items"),
    ):
        c = summary[key]
        if c["runs"]:
            lines.append(
                f"- {c['with_fail']}/{c['runs']} {what} had a `fail` (rate {c['rate']:.3f}, 95% CI {ci(c['ci'])})."
            )
    if summary.get("situations"):
        lines += ["", "## Issue 13 situations (teacher 0.95, n = 200 and 600)", "",
                  "| situation | planted | fail | 95% CI | verdicts | primary suspect | other fails |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for sit, m in summary["situations"].items():
            lines.append(f"| {sit} | {m['mode']} | {m['detected']}/{m['runs']} | {ci(m['ci'])} | {m['verdicts']} | "
                         f"{m['primary_suspect']} | {m['other_fails'] or '-'} |")  # fmt: skip
    lines += ["",
              "## Per-probe false alarms (runs where that mode was not planted)", "",
              "| probe | runs | false fail | 95% CI | warn |", "|---|---|---|---|---|"]  # fmt: skip
    for mode, p in summary["per_probe"].items():
        lines.append(f"| {mode} | {p['runs']} | {p['false_fail']} | {ci(p['false_fail_ci'])} | {p['warn']} |")
    lines += ["", "## Misclassifications", ""]
    if not summary["misclassified"]:
        lines.append("None.")
    for m in summary["misclassified"]:
        lines.append(
            f"- **{m['name']}** missed={m['missed']} false_fail={m['false_fail']} accuracy={m['accuracy']}"
        )
        for mode, f in m["findings"].items():
            if f:
                lines.append(f"  - {mode}: {f['summary']}")
    return "\n".join(lines) + "\n"


def comparison(before: dict, after: dict) -> str:
    """Markdown: the headline rates of ``before`` (another checkout's summary) next to ``after``."""

    def rate(k: int, n: int) -> str:
        return f"{k}/{n}" if n else "-"

    lines = ["## Before and after (same scenarios; before = the other checkout's code)", "",
             "| what | before | after |", "|---|---|---|"]  # fmt: skip
    for mode in MODES:
        b, a = before["per_mode"][mode], after["per_mode"][mode]
        lines.append(f"| {mode} detected (n >= 60) | {rate(b['detected'], b['planted'])} | "
                     f"{rate(a['detected'], a['planted'])} |")  # fmt: skip
    for sit in ("excess_drop", "hard_cutoff"):
        b, a = before.get("situations", {}).get(sit), after.get("situations", {}).get(sit)
        if b and a:
            lines.append(
                f"| {sit}: {a['mode']} fails | {rate(b['detected'], b['runs'])} | {rate(a['detected'], a['runs'])} |"
            )
            lines.append(f"| {sit}: primary suspect | {b['primary_suspect']} | {a['primary_suspect']} |")
            lines.append(f"| {sit}: other fails | {b['other_fails'] or '-'} | {a['other_fails'] or '-'} |")
    for key, what in (("clean", "clean runs with a fail"), ("clean_logit", "logit-uniform traps with a fail"),
                      ("clean_twins", "same-story twin traps with a fail")):  # fmt: skip
        b, a = before[key], after[key]
        lines.append(f"| {what} | {rate(b['with_fail'], b['runs'])} | {rate(a['with_fail'], a['runs'])} |")
    for mode in MODES:
        b, a = before["per_probe"][mode], after["per_probe"][mode]
        lines.append(f"| {mode} false fails (runs where not planted) | {rate(b['false_fail'], b['runs'])} | "
                     f"{rate(a['false_fail'], a['runs'])} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one seed per cell (about a third of the sweep)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="results directory")
    ap.add_argument(
        "--before",
        type=Path,
        default=None,
        help="a diagnosis_validation.json from another checkout (e.g. main's code) to compare against",
    )
    ap.add_argument(
        "--rerender",
        action="store_true",
        help="run nothing: re-write the .md from --out's .json (e.g. to add --before)",
    )
    ap.add_argument(
        "--only",
        default=None,
        help="comma-separated labels to run (default: all); also "
        "'excess_drop', 'hard_cutoff' (the issue-13 situations) and 'logit' (the logit-uniform traps)",
    )
    args = ap.parse_args(argv)
    if args.rerender:
        saved = json.loads((args.out / "diagnosis_validation.json").read_text())
        seconds = saved.get("seconds")
        if seconds is None:  # written before the JSON kept it: the .md's first line has it
            md = (args.out / "diagnosis_validation.md").read_text()
            seconds = float(md.split(" scenarios in ", 1)[1].split(" s", 1)[0])
        return write_results(args, saved["runs"], seconds)
    import torch

    torch.set_num_threads(1)
    specs = sweep_specs(args.quick)
    if args.only:
        keep = set(args.only.split(","))
        specs = [s for s in specs if (s.label in keep and not situation(s)) or situation(s) in keep
                 or ("logit" in keep and s.student_scale == "logit")]  # fmt: skip
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dd-validate-") as tmp:
        os.environ.setdefault("DISTILL_DOCTOR_CACHE", str(Path(tmp) / "cache"))
        for i, spec in enumerate(specs):
            row = run_one(spec, Path(tmp), cli_main)
            rows.append(row)
            fails = [m for m, v in row["verdicts"].items() if v == "fail"]
            print(f"[{i + 1}/{len(specs)}] {spec.name}: fails={fails} ({row['seconds']} s)", flush=True)
    return write_results(args, rows, time.perf_counter() - t0)


def write_results(args: argparse.Namespace, rows: list[dict], seconds: float) -> int:
    summary = summarise(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(
        args.out / "diagnosis_validation.json",
        json.dumps({"summary": summary, "seconds": round(seconds, 1), "runs": rows}, indent=1),
    )
    text = markdown(summary, rows, seconds)
    if args.before is not None:
        text = text.replace("\n## Detection of planted modes", comparison(json.loads(args.before.read_text())["summary"],
                            summary) + "\n## Detection of planted modes", 1)  # fmt: skip
    write_text(args.out / "diagnosis_validation.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
