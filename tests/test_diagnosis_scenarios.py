"""The real ``distill-doctor diagnose`` on independently generated, labelled scenarios.

Scenarios come from ``distill_doctor/testing/scenarios.py`` (not ``synthetic_runs.py``): clean runs at high and
low accuracy and tiny size must show no ``fail``; each planted mode must fail, and the primary
suspect must be the first failing mode in debug order. The full sweep with detection and
false-alarm rates is ``bench/validate_diagnosis.py``; a reduced sweep runs here under ``slow``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill_doctor.cli import main
from distill_doctor.reports.schema import validate_report
from distill_doctor.testing.scenarios import MODES, STATISTICAL, ScenarioSpec, build_scenario


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_DOCTOR_CACHE", str(tmp_path / "cache"))


def diagnose(spec: ScenarioSpec, tmp_path: Path) -> tuple[dict, dict[str, str]]:
    scen = build_scenario(spec, tmp_path / spec.name)
    out = tmp_path / spec.name / "out"
    assert main(scen.cli_args(out)) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    validate_report(report)
    for name in ("report.md", "report.html"):
        assert (out / name).stat().st_size > 0
    verdicts = {f["mode"]: f["verdict"] for f in report["findings"]}
    assert set(verdicts) == set(MODES)
    failing = [m for m in MODES if verdicts[m] == "fail"]  # MODES is in debug order
    assert report["primary_suspect"] == (failing[0] if failing else None)
    return report, verdicts


def fails(verdicts: dict[str, str]) -> list[str]:
    return [m for m, v in verdicts.items() if v == "fail"]


CLEAN = [
    ScenarioSpec("clean", 11, 200, teacher_acc=0.95, student_gap=0.08),
    ScenarioSpec("clean", 12, 200, teacher_acc=0.35, student_gap=0.05),  # low accuracy
    ScenarioSpec("clean", 13, 600, teacher_acc=0.6, student_gap=0.12, train_chat=True),
    ScenarioSpec("clean", 14, 600, teacher_acc=0.95, student_gap=0.12, student_scale="logit"),
    # 1.8 logits behind on every item (capacity_gap failed here before its log-odds rule)
    ScenarioSpec("clean", 5, 600, teacher_acc=0.95, student_gap=0.3, student_scale="logit"),
    ScenarioSpec("clean", 15, 60, teacher_acc=0.6, with_manifest=False, train_reference=False),
    ScenarioSpec("clean", 16, 12, teacher_acc=0.95),  # tiny
    ScenarioSpec("clean", 17, 12, teacher_acc=0.35),  # tiny and low accuracy
]


@pytest.mark.parametrize("spec", CLEAN, ids=lambda s: s.name)
def test_clean_run_has_no_fail(spec, tmp_path):
    report, verdicts = diagnose(spec, tmp_path)
    assert fails(verdicts) == [], {
        m: f["summary"] for m, f in _by_mode(report).items() if m in fails(verdicts)
    }
    assert report["primary_suspect"] is None
    assert report["accuracy"]["n"] == spec.n


PLANTED = [
    ScenarioSpec("teacher_error_transfer", 1, 600, teacher_acc=0.95),
    ScenarioSpec("capacity_gap", 1, 600, teacher_acc=0.95),
    ScenarioSpec("superficial_imitation", 1, 600, teacher_acc=0.6),
    ScenarioSpec("exposure_bias", 1, 200, teacher_acc=0.6),
    ScenarioSpec("contamination", 1, 200, teacher_acc=0.95),
    ScenarioSpec("provenance", 3, 60, provenance_fault="license"),
    ScenarioSpec("provenance", 4, 60, provenance_fault="decontamination"),
    ScenarioSpec("provenance", 5, 60, provenance_fault="sha"),
]


@pytest.mark.parametrize(
    "spec", PLANTED, ids=lambda s: s.name + (f"-{s.provenance_fault}" if s.provenance_fault else "")
)
def test_planted_mode_fails(spec, tmp_path):
    report, verdicts = diagnose(spec, tmp_path)
    assert verdicts[spec.label] == "fail", _by_mode(report)[spec.label]["summary"]
    if fails(verdicts) == [spec.label]:
        assert report["primary_suspect"] == spec.label


def test_planted_wrong_targets_fail_data_quality(tmp_path):
    report, verdicts = diagnose(ScenarioSpec("data_quality", 1, 600, teacher_acc=0.95), tmp_path)
    assert verdicts["data_quality"] == "fail", _by_mode(report)["data_quality"]["summary"]


@pytest.mark.parametrize(
    "label", ["teacher_error_transfer", "capacity_gap", "exposure_bias", "contamination"]
)
def test_tiny_planted_run_gives_at_most_warn(label, tmp_path):
    spec = ScenarioSpec(label, 2, 12, teacher_acc=0.95)
    assert spec.tiny
    _, verdicts = diagnose(spec, tmp_path)
    assert [m for m in fails(verdicts) if m in STATISTICAL] == []


def test_scenario_files_follow_the_spec_formats(tmp_path):
    scen = build_scenario(ScenarioSpec("contamination", 7, 60), tmp_path / "s")
    items = [json.loads(line) for line in scen.paths["items"].read_text().splitlines()]
    assert len(items) == 60 and len({it["id"] for it in items}) == 60
    code = [it for it in items if it.get("verifier") == "code"]
    assert code and all("tests" in it and "entry_point" in it and "reference" not in it for it in code)
    assert {it["variant"] for it in items if "group" in it} <= {"original", "numbers", "distractor"}
    outputs = [json.loads(line) for line in scen.paths["student"].read_text().splitlines()]
    assert {o["id"] for o in outputs} == {it["id"] for it in items}
    train = [json.loads(line) for line in scen.paths["train"].read_text().splitlines()]
    leaked = {r["prompt"] for r in train} & {it["prompt"] for it in items}
    assert len(leaked) == len(scen.planted["contaminated"]) == 6


def _by_mode(report: dict) -> dict[str, dict]:
    return {f["mode"]: f for f in report["findings"]}


@pytest.mark.slow
def test_quick_sweep_has_no_false_fail_on_clean_or_tiny_runs(tmp_path):
    from distill_doctor.cli import main as cli_main
    from distill_doctor.testing.validation import run_one, summarise, sweep_specs

    rows = [run_one(spec, tmp_path, cli_main) for spec in sweep_specs(quick=True)]
    summary = summarise(rows)
    assert summary["clean"]["with_fail"] == 0
    assert all(m["tiny_fails"] == 0 for mode, m in summary["per_mode"].items() if mode in STATISTICAL)
    for mode in ("exposure_bias", "contamination", "provenance"):
        assert summary["per_mode"][mode]["rate"] == 1.0, mode


@pytest.mark.parametrize("seed", [1, 2])
def test_capacity_collapse_under_a_mediocre_teacher_fails(tmp_path, seed):
    """Teacher ~0.6: the student keeps up on easy items and collapses on hard ones. The DiD CI does
    not clear the 0.15 margin at this size, but the relative collapse does (capacity_gap's rule)."""
    report, verdicts = diagnose(ScenarioSpec("capacity_gap", seed, 600, teacher_acc=0.6), tmp_path)
    finding = _by_mode(report)["capacity_gap"]
    assert verdicts["capacity_gap"] == "fail", finding["summary"]
    retention = finding["metrics"]["did"]["retention"]
    assert retention["hard"] <= 0.6 * retention["easy"]


def test_a_student_uniformly_behind_in_logits_is_not_a_collapse(tmp_path):
    """1.8 logits behind the teacher on every item: in accuracy the gap grows where the teacher leaves
    its ceiling, on the log-odds scale it does not; capacity_gap says so instead of failing."""
    spec = ScenarioSpec("clean", 5, 600, teacher_acc=0.95, student_gap=0.3, student_scale="logit")
    report, verdicts = diagnose(spec, tmp_path)
    finding = _by_mode(report)["capacity_gap"]
    did = finding["metrics"]["did"]
    assert verdicts["capacity_gap"] == "warn"
    assert did["estimate"] >= 0.15 and did["log_odds_did"] < 0.5
    assert "log-odds" in finding["summary"]


def test_excess_drop_with_the_teacher_near_its_ceiling_fails(tmp_path):
    """Issue 13: a student at the teacher's accuracy on originals whose accuracy on perturbed
    variants drops 26 points more than the teacher's (110 pairs, teacher 0.91 on originals,
    drop-difference CI [0.13, 0.41]) was only a ``warn``: the log-odds CI spanned zero."""
    spec = ScenarioSpec("superficial_imitation", 2, 200, teacher_acc=0.95, extra_drop=0.3)
    report, verdicts = diagnose(spec, tmp_path)
    finding = next(f for f in report["findings"] if f["mode"] == "superficial_imitation")
    assert finding["metrics"]["perturbation"]["diff_ci"][0] < 0.15
    assert verdicts["superficial_imitation"] == "fail", finding["summary"]
    assert report["primary_suspect"] == "superficial_imitation"


def test_hard_slice_of_cut_off_derivations_is_exposure_bias_not_capacity(tmp_path):
    """Issue 13: the student's hard-slice failures are mostly derivations cut off before the last
    step (a number is still extracted) or loops; capacity_gap failed and outranked exposure_bias."""
    spec = ScenarioSpec("exposure_bias", 2, 200, teacher_acc=0.95, hard_cutoff=True)
    report, verdicts = diagnose(spec, tmp_path)
    assert verdicts["capacity_gap"] != "fail" and verdicts["exposure_bias"] == "fail"
    assert report["primary_suspect"] == "exposure_bias"
