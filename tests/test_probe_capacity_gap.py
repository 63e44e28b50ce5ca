"""capacity_gap on planted, clean, tiny and degenerate runs, and its chart contract."""

import pytest

from distill_doctor.probes import capacity_gap as probe
from distill_doctor.testing.synthetic_runs import (
    EDGE_KINDS,
    check_finding,
    false_fail_sweep,
    make_edge,
    make_run,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_capacity_gap_fails(seed):
    f = probe.run(make_run("capacity_gap", 300, seed))
    d = check_finding(f)
    assert f.verdict == "fail"
    did = d["metrics"]["did"]
    assert did["slice_key"] == "difficulty"
    assert did["ci"][0] > probe.MARGIN and did["estimate"] > 0.3
    assert set(did["hard"]) <= {"3", "4", "5"} and "5" in did["hard"]


@pytest.mark.parametrize("kind", ["clean_high", "clean_low", "error_transfer", "superficial"])
def test_other_runs_pass(kind):
    f = probe.run(make_run(kind, 300, 5))
    check_finding(f)
    # clean runs pass; another mode's planted failure must not be blamed on this one
    assert f.verdict == "pass" if kind.startswith("clean") else f.verdict != "fail"


def test_uniform_gap_passes():
    # Student 25 points worse on every difficulty: a weaker student, not a collapse.
    inputs = make_run("clean_high", 400, 6, teacher_acc=0.95, student_acc=0.7)
    import numpy as np

    rng = np.random.default_rng(0)
    for it in inputs.items:
        t = inputs.teacher_verdicts[it.id]
        s = inputs.student_verdicts[it.id]
        ok = t.passed and rng.random() < 0.74
        inputs.student_verdicts[it.id] = type(s)(ok, str(it.reference) if ok else "1")
    f = probe.run(inputs)
    assert f.verdict == "pass"


def test_chart_contract():
    run = make_run("clean_high", 200, 7)
    originals = sum(1 for it in run.items if it.is_original)
    assert 0 < originals < 200  # the run has perturbed variants, which capacity_gap leaves out
    d = check_finding(probe.run(run))
    m = d["metrics"]
    keys = {"key", "value", "n", "teacher", "student", "teacher_ci", "student_ci", "gap_closure"}
    assert m["slices"] and all(keys <= set(s) for s in m["slices"])
    assert {s["key"] for s in m["slices"]} >= {"all", "difficulty", "domain"}
    assert m["length_buckets"] and all(
        {"bucket", "n", "teacher", "student"} <= set(b) for b in m["length_buckets"]
    )
    assert sum(b["n"] for b in m["length_buckets"]) == originals
    assert m["n"] == originals
    assert {"estimate", "ci", "slice_key", "easy", "hard"} <= set(m["did"])


@pytest.mark.parametrize("n,seed", [(8, 0), (12, 1), (20, 2)])
def test_tiny_at_most_warn(n, seed):
    f = probe.run(make_run("capacity_gap", n, seed))
    check_finding(f)
    assert f.verdict in ("pass", "warn")


@pytest.mark.parametrize("kind", EDGE_KINDS)
def test_edge_cases(kind):
    f = probe.run(make_edge(kind))
    check_finding(f)
    if kind in ("student_all_wrong", "both_all_wrong", "no_answers", "single_slice", "empty", "no_tags"):
        assert f.verdict == "pass" or f.verdict == "skipped" and f.metrics["splits_tested"] == 0


def test_false_fail_rate_on_clean_runs():
    counts = false_fail_sweep(probe.run)
    assert counts.get("fail", 0) <= 5, counts


def test_collapse_made_of_degenerate_outputs_points_to_exposure_bias():
    """The same planted collapse, but the hard-side failures are loops without a final answer."""
    import dataclasses

    from distill_doctor.data.records import Judgement, ModelOutput

    inputs = make_run("capacity_gap", n=400, seed=0)
    assert probe.run(inputs).verdict == "fail"
    loop = "carry the one and add the tens again " * 12
    student = dict(inputs.student)
    verdicts = dict(inputs.student_verdicts)
    for item_id, v in inputs.student_verdicts.items():
        if not v.passed and inputs.teacher_verdicts[item_id].passed:
            student[item_id] = ModelOutput(id=item_id, output=loop)
            verdicts[item_id] = Judgement(passed=False, answer=None, reason="no answer")
    derailing = dataclasses.replace(inputs, student=student, student_verdicts=verdicts)
    finding = probe.run(derailing)
    check_finding(finding)
    assert finding.verdict == "warn"
    assert "exposure_bias" in finding.summary
    assert finding.metrics["hard_failures_degenerate"]["share"] == 1.0


def test_nothing_tested_is_skipped_not_pass():
    """Issue 13: ``pass`` with ``splits_tested: 0`` passed a gate that required the mode."""
    import dataclasses

    run = make_run("clean_high", 200, 3)
    prompt = "Compute the answer."  # one prompt length and no tags: no split to test
    run.items = [dataclasses.replace(it, tags={}, prompt=prompt) for it in run.items]
    d = check_finding(probe.run(run))
    assert d["metrics"]["splits_tested"] == 0
    assert d["verdict"] == "skipped" and "no easy/hard split" in d["skipped_reason"]


@pytest.mark.parametrize("seed", [0, 2])
def test_cut_off_derivations_on_the_hard_slice_go_to_exposure_bias(seed):
    """Issue 13: failures cut off mid-derivation (a number still extracted) were not counted as
    degenerate, so the slice failed capacity_gap and outranked exposure_bias."""
    from test_probe_exposure import exposure_run

    from distill_doctor.probes import exposure_bias

    run = exposure_run("cutoff", 400, seed)
    d = check_finding(probe.run(run))
    assert d["verdict"] == "warn" and "exposure_bias" in d["summary"]
    derail = d["metrics"]["hard_failures_degenerate"]
    assert derail["share"] >= probe.DEGENERATE_SHARE and derail["deferred_to"] == "exposure_bias"
    assert exposure_bias.run(run).verdict == "fail"
