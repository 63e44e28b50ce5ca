"""Independent validation of ``distill-doctor diagnose`` on labelled scenarios.

Generates scenarios with ``tests/scenarios.py`` (clean runs at several sizes and accuracies, and
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
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from scenarios import MODES, ScenarioSpec, build_scenario  # noqa: E402
from scipy.stats import beta  # noqa: E402

from distill_doctor.atomic import atomic_write_text as write_text  # noqa: E402
from distill_doctor.cli import main as cli_main  # noqa: E402
from distill_doctor.reports.schema import validate_report  # noqa: E402


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return (lo, hi)


def sweep_specs(quick: bool) -> list[ScenarioSpec]:
    seeds = (1,) if quick else (1, 2)
    accs = (0.95, 0.6, 0.35)
    specs: list[ScenarioSpec] = []
    for seed in seeds + ((3, 4) if not quick else ()):
        for acc in accs:
            for n in (12, 60, 200, 600):
                gap = (0.03, 0.08, 0.15)[(seed + n) % 3]
                specs.append(ScenarioSpec("clean", seed, n, teacher_acc=acc, student_gap=gap,
                                          train_chat=seed == 2, train_reference=seed != 3,
                                          with_manifest=seed != 4))  # fmt: skip
        for acc in accs:  # clean traps: a logit-uniform weaker student; same-story twins in train
            for gap in (0.12, 0.3):  # 0.7 and 1.8 logits behind the teacher on every item
                specs.append(
                    ScenarioSpec("clean", seed, 600, teacher_acc=acc, student_gap=gap, student_scale="logit")
                )
            specs.append(ScenarioSpec("clean", seed, 200, teacher_acc=acc, template_twins=True))
    for mode in MODES:
        for seed in seeds:
            for acc in accs:
                for n in (60, 200, 600):
                    specs.append(ScenarioSpec(mode, seed, n, teacher_acc=acc))
            if mode != "provenance":
                specs.append(ScenarioSpec(mode, seed, 12, teacher_acc=0.95))
    specs += situation_specs(quick)
    return specs


def situation_specs(quick: bool) -> list[ScenarioSpec]:
    """The two situations of issue 13: (a) a student at the teacher's accuracy on originals whose
    accuracy on perturbed variants drops 30 points more than the teacher's, the teacher near its
    ceiling (0.95 target: about 0.93 on originals); (b) exposure bias whose student failures sit on
    the hard math slice (difficulty >= 4) and are mostly derivations cut off before the last step
    (a number is still extracted) or loops, so accuracy collapses there as in a capacity gap."""
    seeds = (1, 2) if quick else (1, 2, 3, 4, 5, 6)
    specs = []
    for seed in seeds:
        for n in (200, 600):
            specs.append(ScenarioSpec("superficial_imitation", seed, n, teacher_acc=0.95, extra_drop=0.3))
            specs.append(ScenarioSpec("exposure_bias", seed, n, teacher_acc=0.95, hard_cutoff=True))
    return specs


def situation(spec: ScenarioSpec) -> str:
    return "excess_drop" if spec.extra_drop else "hard_cutoff" if spec.hard_cutoff else ""


def run_one(spec: ScenarioSpec, work: Path) -> dict:
    scen = build_scenario(spec, work / spec.name)
    out = work / spec.name / "out"
    t0 = time.perf_counter()
    rc = cli_main(scen.cli_args(out))
    seconds = time.perf_counter() - t0
    report = json.loads((out / "report.json").read_text())
    validate_report(report)
    findings = {f["mode"]: f for f in report["findings"]}
    return {
        "name": spec.name,
        "label": spec.label,
        "seed": spec.seed,
        "n": spec.n,
        "teacher_acc_target": spec.teacher_acc,
        "tiny": spec.tiny,
        "trap": "twins" if spec.template_twins else "logit" if spec.student_scale == "logit" else "",
        "situation": situation(spec),
        "planted": scen.planted,
        "expected_fails": sorted(scen.expected_fails()),
        "rc": rc,
        "seconds": round(seconds, 2),
        "accuracy": {k: report["accuracy"].get(k) for k in ("n", "teacher", "student")},
        "primary_suspect": report["primary_suspect"],
        "verdicts": {m: f["verdict"] for m, f in findings.items()},
        "findings": {
            m: {"summary": f["summary"], "metrics": f["metrics"], "p_value": f.get("p_value")}
            for m, f in findings.items()
            if f["verdict"] in ("fail", "warn") or m == spec.label
        },
    }


def summarise(rows: list[dict]) -> dict:
    out: dict = {"per_mode": {}, "clean": {}, "per_probe": {}, "misclassified": []}
    for mode in MODES:
        planted = [r for r in rows if r["label"] == mode and not r["tiny"] and not r.get("situation")]
        k = sum(r["verdicts"].get(mode) == "fail" for r in planted)
        by_n = defaultdict(lambda: [0, 0])
        for r in planted:
            by_n[r["n"]][0] += r["verdicts"].get(mode) == "fail"
            by_n[r["n"]][1] += 1
        primary = sum(r["primary_suspect"] == mode for r in planted)
        tiny = [r for r in rows if r["label"] == mode and r["tiny"] and not r.get("situation")]
        out["per_mode"][mode] = {
            "planted": len(planted),
            "detected": k,
            "rate": k / len(planted) if planted else None,
            "ci": clopper_pearson(k, len(planted)),
            "by_n": {str(n): {"detected": a, "of": b} for n, (a, b) in sorted(by_n.items())},
            "primary_suspect": primary,
            "tiny_runs": len(tiny),
            "tiny_fails": sum(v == "fail" for r in tiny for v in r["verdicts"].values()),
        }
    for trap in ("", "logit", "twins"):
        clean = [r for r in rows if r["label"] == "clean" and r["trap"] == trap]
        k = sum(any(v == "fail" for v in r["verdicts"].values()) for r in clean)
        out["clean" + (f"_{trap}" if trap else "")] = {"runs": len(clean), "with_fail": k,
                        "rate": k / len(clean) if clean else None, "ci": clopper_pearson(k, len(clean))}  # fmt: skip
    out["situations"] = {}
    for sit in ("excess_drop", "hard_cutoff"):
        runs = [r for r in rows if r.get("situation") == sit]
        if not runs:
            continue
        mode = runs[0]["label"]
        k = sum(r["verdicts"].get(mode) == "fail" for r in runs)
        out["situations"][sit] = {
            "mode": mode, "runs": len(runs), "detected": k, "ci": clopper_pearson(k, len(runs)),
            "primary_suspect": dict(sorted(_count(r["primary_suspect"] or "none" for r in runs).items())),
            "other_fails": dict(sorted(_count(m for r in runs for m, v in r["verdicts"].items()
                                               if v == "fail" and m != mode).items())),
            "verdicts": dict(sorted(_count(r["verdicts"].get(mode) for r in runs).items())),
        }  # fmt: skip
    for mode in MODES:
        others = [r for r in rows if r["label"] != mode and r["verdicts"].get(mode) not in (None, "skipped")]
        fails = sum(r["verdicts"][mode] == "fail" for r in others)
        warns = sum(r["verdicts"][mode] == "warn" for r in others)
        out["per_probe"][mode] = {"runs": len(others), "false_fail": fails, "false_fail_ci": clopper_pearson(fails, len(others)),
                                  "warn": warns}  # fmt: skip
    for r in rows:
        expected = set(r["expected_fails"])
        got = {m for m, v in r["verdicts"].items() if v == "fail"}
        missed, extra = expected - got, got - expected
        if missed or extra:
            out["misclassified"].append({
                "name": r["name"], "label": r["label"], "n": r["n"], "seed": r["seed"],
                "missed": sorted(missed), "false_fail": sorted(extra), "accuracy": r["accuracy"],
                "findings": {m: r["findings"].get(m) for m in sorted(missed | extra)},
            })  # fmt: skip
    return out


def _count(values) -> dict:
    out: dict = defaultdict(int)
    for v in values:
        out[v] += 1
    return dict(out)


def markdown(summary: dict, rows: list[dict], seconds: float) -> str:
    def ci(c):
        return f"[{c[0]:.2f}, {c[1]:.2f}]"

    lines = ["# Diagnosis validation (independent scenarios, real CLI)", "",
             f"{len(rows)} scenarios in {seconds:.0f} s (tests/scenarios.py; bench/validate_diagnosis.py).", "",
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
            lines.append(f"| {sit}: {a['mode']} fails | {rate(b['detected'], b['runs'])} | {rate(a['detected'], a['runs'])} |")
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
    ap.add_argument("--before", type=Path, default=None,
                    help="a diagnosis_validation.json from another checkout (e.g. main's code) to compare against")
    ap.add_argument("--rerender", action="store_true",
                    help="run nothing: re-write the .md from --out's .json (e.g. to add --before)")
    ap.add_argument("--only", default=None, help="comma-separated labels to run (default: all); also "
                    "'excess_drop', 'hard_cutoff' (the issue-13 situations) and 'logit' (the logit-uniform traps)")
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
            row = run_one(spec, Path(tmp))
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
