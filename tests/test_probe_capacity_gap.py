"""capacity_gap on planted, clean, tiny and degenerate runs, and its chart contract."""

import dataclasses
from pathlib import Path

import pytest

from distill_doctor.probes import capacity_gap as probe
from distill_doctor.testing.synthetic_runs import (
    EDGE_KINDS,
    check_finding,
    false_fail_sweep,
    make_edge,
    make_run,
)
from distill_doctor.vocabulary import Verdict


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_capacity_gap_fails(seed):
    f = probe.run(make_run("capacity_gap", 300, seed))
    d = check_finding(f)
    assert f.verdict == "fail"
    did = d["metrics"]["did"]
    assert did["slice_key"] == "difficulty"
    assert did["ci"][0] > probe.RULE.margin and did["estimate"] > 0.3
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
    assert inputs.teacher_verdicts is not None
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
    from distill_doctor.data.records import Judgement, ModelOutput

    inputs = make_run("capacity_gap", n=400, seed=0)
    assert probe.run(inputs).verdict == "fail"
    loop = "carry the one and add the tens again " * 12
    student = dict(inputs.student)
    verdicts = dict(inputs.student_verdicts)
    assert inputs.teacher_verdicts is not None
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
    assert derail["share"] >= probe.RULE.degenerate_share and derail["deferred_to"] == "exposure_bias"
    assert exposure_bias.run(run).verdict == "fail"


# --- decide() on hand-built measurements: the rule's edges --------------------------------------

ALPHA = 0.05


def _split(**kw) -> probe.SplitTest:
    """A split that clearly fails: large significant DiD, student keeps up on the easy side."""
    base = probe.SplitTest(
        slice_key="difficulty",
        split="difficulty > 2",
        estimate=0.4,
        ci=(0.25, 0.55),
        log_odds_did=2.0,
        log_odds_ci=(1.0, 3.0),
        p_value=0.001,
        p_adjusted=0.001,
        n_easy=40,
        n_hard=40,
        teacher_easy=0.9,
        student_easy=0.85,
        teacher_hard=0.8,
        student_hard=0.3,
        easy_values=("1", "2"),
        hard_values=("3", "4"),
        hard_failures=(),
    )
    return dataclasses.replace(base, **kw)


def _measured(*splits: probe.SplitTest, degenerate: frozenset[str] = frozenset()) -> probe.CapacityMeasured:
    return probe.CapacityMeasured(
        n=80,
        teacher=0.85,
        student=0.6,
        mean_gap=0.25,
        slices=(),
        length_buckets=(),
        splits=splits,
        ci_level=0.95,
        degenerate=degenerate,
    )


def _decide(*splits: probe.SplitTest, **kw) -> probe.CapacityRuling:
    return probe.decide(_measured(*splits, **kw), probe.RULE, ALPHA)


def test_decide_clear_collapse_fails_on_its_adjusted_p():
    r = _decide(_split())
    assert r.verdict == Verdict.FAIL and r.reading == probe.Reading.COLLAPSE
    assert r.p_value == 0.001 and r.chosen == _split()


@pytest.mark.parametrize(
    "change,verdict",
    [
        ({"n_easy": 20, "n_hard": 20}, Verdict.FAIL),  # exactly the minimum per side
        ({"n_hard": 19}, Verdict.WARN),  # one short: a small sample is at most warn
        ({"n_easy": 3, "n_hard": 3}, Verdict.WARN),
        ({"p_adjusted": ALPHA}, Verdict.PASS),  # p must be below alpha
        ({"student_easy": 0.6 * 0.9}, Verdict.FAIL),  # keeps exactly 60% of the teacher on the easy side
        ({"student_easy": 0.5}, Verdict.WARN),  # does not keep up: not a capacity collapse
        ({"log_odds_did": 0.5}, Verdict.FAIL),  # exactly the log-odds margin
        ({"log_odds_did": 0.49}, Verdict.WARN),  # uniformly behind in logits
        ({"log_odds_did": float("nan")}, Verdict.WARN),
    ],
)
def test_decide_rule_edges(change, verdict):
    assert _decide(_split(**change)).verdict == verdict


def test_decide_margin_edges():
    # CI lower bound exactly at the margin is not "above" it; without a collapse the DiD is not big
    # and, at exactly the margin, not above it for a warn either.
    no_collapse = {"teacher_hard": 0.8, "student_hard": 0.7}
    assert _decide(_split(ci=(0.15, 0.3), estimate=0.15, **no_collapse)).verdict == Verdict.PASS
    assert _decide(_split(ci=(0.1500001, 0.3), estimate=0.2, **no_collapse)).verdict == Verdict.FAIL
    # A collapse (hard-side retention <= 0.6 of the easy side's) needs only the CI above 0.
    collapse = {"teacher_hard": 0.8, "student_hard": 0.8 * 0.6 * (0.85 / 0.9)}
    assert _decide(_split(ci=(0.01, 0.3), estimate=0.15, **collapse)).verdict == Verdict.FAIL
    assert _decide(_split(ci=(0.0, 0.3), estimate=0.15, **collapse)).verdict == Verdict.PASS
    # Significant and above the margin, but a CI lower bound of exactly the warn bound: pass.
    small = {"n_hard": 5, "estimate": 0.2}
    assert _decide(_split(ci=(0.05, 0.3), **small)).verdict == Verdict.PASS
    assert _decide(_split(ci=(0.06, 0.3), **small)).verdict == Verdict.WARN


def test_decide_uniform_shift_reading():
    r = _decide(_split(log_odds_did=0.2))
    assert r.verdict == Verdict.WARN and r.reading == probe.Reading.UNIFORM_SHIFT
    assert "not on the log-odds scale" in probe.summarize(_measured(_split(log_odds_did=0.2)), r).summary


def test_decide_picks_the_most_severe_split():
    passing = _split(split="domain = a", p_adjusted=0.0001, estimate=0.01, ci=(-0.1, 0.1))
    failing = _split(p_adjusted=0.01)
    r = _decide(passing, failing)
    assert r.verdict == Verdict.FAIL and r.chosen == failing and r.p_value == 0.01


def test_decide_degenerate_collapse_is_warn_for_exposure_bias():
    ids = tuple(f"h{k}" for k in range(10))
    half = frozenset(ids[:5])  # exactly the degenerate share on exactly the minimum base
    r = _decide(_split(hard_failures=ids), degenerate=half)
    assert r.verdict == Verdict.WARN and r.reading == probe.Reading.DERAILS
    f = probe.summarize(_measured(_split(hard_failures=ids), degenerate=half), r)
    assert f.metrics["hard_failures_degenerate"] == {
        "k": 5,
        "n": 10,
        "share": 0.5,
        "deferred_to": "exposure_bias",
    }
    # one short of the base, or of the share: the collapse stands
    assert _decide(_split(hard_failures=ids[:9]), degenerate=frozenset(ids[:9])).verdict == Verdict.FAIL
    assert _decide(_split(hard_failures=ids), degenerate=frozenset(ids[:4])).verdict == Verdict.FAIL


def test_decide_nothing_to_test_is_skipped():
    r = _decide()
    assert r.verdict == Verdict.SKIPPED and r.p_value is None and r.chosen is None


def test_rule_matches_the_readme_and_the_report():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| capacity | `capacity_gap` |"))
    assert probe.RULE.describe() == row.rstrip(" |").split(" | ")[-1]
    f = probe.summarize(_measured(_split()), _decide(_split()))
    assert f.metrics["fail_rule"] == probe.RULE.as_metrics(ALPHA)
    assert f.metrics["fail_rule"]["margin"] == 0.15 and f.metrics["fail_rule"]["alpha"] == ALPHA
