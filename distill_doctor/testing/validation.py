"""The diagnosis validation sweep over independent scenarios (:mod:`.scenarios`), shared by
``bench/validate_diagnosis.py`` (the full sweep and its tables) and the slow scenario test.

``sweep_specs`` lists the scenarios, ``run_one`` diagnoses one through the real CLI, ``summarise``
turns the rows into detection rates, false-alarm rates and their Clopper-Pearson intervals.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from scipy.stats import beta

from distill_doctor.reports.schema import validate_report
from distill_doctor.testing.scenarios import MODES, ScenarioSpec, build_scenario
from distill_doctor.vocabulary import Verdict


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


def run_one(spec: ScenarioSpec, work: Path, cli_main: Callable[[list[str]], int]) -> dict:
    """Build ``spec``'s scenario under ``work``, diagnose it with ``cli_main`` (the CLI's entry point,
    passed in: this module sits below the CLI) and return the run's row of verdicts and numbers."""
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
            if f["verdict"] in (Verdict.FAIL, Verdict.WARN) or m == spec.label
        },
    }


def summarise(rows: list[dict]) -> dict:
    out: dict = {"per_mode": {}, "clean": {}, "per_probe": {}, "misclassified": []}
    for mode in MODES:
        planted = [r for r in rows if r["label"] == mode and not r["tiny"] and not r.get("situation")]
        k = sum(r["verdicts"].get(mode) == Verdict.FAIL for r in planted)
        by_n: defaultdict[int, list[int]] = defaultdict(lambda: [0, 0])
        for r in planted:
            by_n[r["n"]][0] += r["verdicts"].get(mode) == Verdict.FAIL
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
            "tiny_fails": sum(v == Verdict.FAIL for r in tiny for v in r["verdicts"].values()),
        }
    for trap in ("", "logit", "twins"):
        clean = [r for r in rows if r["label"] == "clean" and r["trap"] == trap]
        k = sum(any(v == Verdict.FAIL for v in r["verdicts"].values()) for r in clean)
        out["clean" + (f"_{trap}" if trap else "")] = {"runs": len(clean), "with_fail": k,
                        "rate": k / len(clean) if clean else None, "ci": clopper_pearson(k, len(clean))}  # fmt: skip
    out["situations"] = {}
    for sit in ("excess_drop", "hard_cutoff"):
        runs = [r for r in rows if r.get("situation") == sit]
        if not runs:
            continue
        mode = runs[0]["label"]
        k = sum(r["verdicts"].get(mode) == Verdict.FAIL for r in runs)
        out["situations"][sit] = {
            "mode": mode, "runs": len(runs), "detected": k, "ci": clopper_pearson(k, len(runs)),
            "primary_suspect": dict(sorted(_count(r["primary_suspect"] or "none" for r in runs).items())),
            "other_fails": dict(sorted(_count(m for r in runs for m, v in r["verdicts"].items()
                                               if v == Verdict.FAIL and m != mode).items())),
            "verdicts": dict(sorted(_count(r["verdicts"].get(mode) for r in runs).items())),
        }  # fmt: skip
    for mode in MODES:
        others = [r for r in rows if r["label"] != mode and r["verdicts"].get(mode) not in (None, "skipped")]
        fails = sum(r["verdicts"][mode] == Verdict.FAIL for r in others)
        warns = sum(r["verdicts"][mode] == Verdict.WARN for r in others)
        out["per_probe"][mode] = {"runs": len(others), "false_fail": fails, "false_fail_ci": clopper_pearson(fails, len(others)),
                                  "warn": warns}  # fmt: skip
    for r in rows:
        expected = set(r["expected_fails"])
        got = {m for m, v in r["verdicts"].items() if v == Verdict.FAIL}
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
