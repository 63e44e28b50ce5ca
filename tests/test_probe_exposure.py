"""Exposure bias probe on output-level evidence: planted compounding fails, clean runs pass."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from distill_doctor.data.records import Judgement, ModelOutput
from distill_doctor.probes import exposure_bias as eb
from distill_doctor.probes.base import DiagnosisInputs
from distill_doctor.probes.exposure_bias import PROBE, degeneration, derailment, run
from distill_doctor.testing.exposure_runs import exposure_run
from distill_doctor.testing.synthetic_runs import (
    EDGE_KINDS,
    check_finding,
    false_fail_sweep,
    make_edge,
    make_run,
)
from distill_doctor.vocabulary import Verdict


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_compounding_fails(seed):
    f = run(exposure_run("planted", 300, seed))
    json.dumps(f.to_dict())
    assert f.verdict == "fail", f.summary
    assert f.p_value < 0.05
    assert f.metrics["did_degeneration"] >= 0.1
    assert f.evidence and all("student output" in e["why"] for e in f.evidence)
    assert "lmbda" in f.guardrail
    rows = f.metrics["by_length"]
    assert rows and set(rows[0]) == {
        "bucket",
        "n",
        "teacher_acc",
        "student_acc",
        "teacher_degenerate",
        "student_degenerate",
    }
    assert rows[-1]["student_degenerate"] > rows[0]["student_degenerate"]
    assert sum(r["n"] for r in rows) == 300


@pytest.mark.parametrize("kind", ["clean_high", "clean_low"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clean_runs_pass(kind, seed):
    f = run(exposure_run(kind, 300, seed))
    assert f.verdict == "pass", (f.summary, f.metrics["did_degeneration"])


def test_uniform_degeneration_warns_not_fails():
    f = run(exposure_run("uniform", 300, 0))
    assert f.verdict == "warn"


def test_tiny_planted_is_at_most_warn():
    f = run(exposure_run("planted", 24, 0))
    assert f.verdict in ("pass", "warn")


@pytest.mark.parametrize("kind", ["clean_high", "clean_low", "tiny", "capacity_gap", "error_transfer"])
def test_shared_synthetic_runs_do_not_fail(kind):
    f = run(make_run(kind, 16 if kind == "tiny" else 200, 3))
    assert f.verdict == "pass", f.summary


def test_edge_cases_do_not_crash():
    inputs = exposure_run("clean_high", 5, 0)
    for o in list(inputs.student):
        inputs.student[o] = ModelOutput(o, "")
    f = run(inputs)
    assert f.verdict in ("pass", "warn")
    empty = DiagnosisInputs(items=[], student={}, student_verdicts={}, teacher={}, teacher_verdicts={})
    assert run(empty).verdict == "skipped"  # nothing to compare: untested, never a pass
    assert PROBE.needs == ("teacher",)


def test_degeneration_and_derailment_features():
    assert degeneration("Step 1: 1 + 2 = 3\n" + "Step 2: 3 + 3 = 6\n" * 5, True, is_code=False) == [
        "loop",
        "no final answer",
    ]
    assert degeneration("The answer is 4.", False, is_code=False) == []
    assert degeneration("def f(x):", True, is_code=True) == ["truncated"]
    assert derailment("2 + 3 = 6\n6 + 1 = 7\nThe answer is 7.", "7") == "carried"
    assert derailment("2 + 3 = 6, no wait, 2 + 3 = 5. The answer is 5.", "5") == "recovered"
    assert derailment("2 + 3 = 5\nThe answer is 5.", "5") is None
    assert derailment("1 / 0 = 3", None) is None


def test_length_falls_back_to_prompt_when_teacher_lengths_do_not_vary():
    """Terse teacher outputs ("The answer is N.") carry no length signal: the prompt's length is used."""
    inputs = exposure_run("planted", 300, 0)
    items = []
    for it in inputs.items:
        k = int(it.tags["difficulty"])
        items.append(replace(it, prompt=" ".join(["add"] + [str(j) for j in range(3 * k)])))
        inputs.teacher[it.id] = ModelOutput(it.id, "The answer is 5.")
        inputs.teacher_verdicts[it.id] = Judgement(True, "5")
    inputs.items = items
    f = run(inputs)
    assert f.metrics["length_measure"] == "prompt words"
    assert f.verdict == "fail"


def test_student_carrying_wrong_steps_far_more_often_warns():
    rng = np.random.default_rng(0)
    inputs = exposure_run("clean_high", 200, 0)
    for k, it in enumerate(inputs.items):
        a = int(rng.integers(10, 50))
        if k % 2 == 0:  # the teacher corrects its slip, the student builds on it
            t = f"{a} + 5 = {a + 6}\nNo: {a} + 5 = {a + 5}. {a + 5} + 1 = {a + 6}\nThe answer is {a + 6}."
            s = f"{a} + 5 = {a + 6}\n{a + 6} + 1 = {a + 7}\nThe answer is {a + 7}."
            inputs.teacher[it.id], inputs.student[it.id] = ModelOutput(it.id, t), ModelOutput(it.id, s)
    f = run(inputs)
    assert f.metrics["derailment"]["student"]["carried"] >= 90
    assert f.metrics["derailment"]["teacher"]["recovered"] >= 90
    assert f.verdict == "warn"


@pytest.mark.parametrize("kind", EDGE_KINDS)
def test_shared_edge_runs_survive_without_failing(kind):
    f = run(make_edge(kind, 60, 0))
    assert f.verdict in ("pass", "warn") or f.verdict == "skipped" and f.n == 0
    if f.n:
        check_finding(f)


def test_no_false_fails_over_many_shared_clean_runs():
    counts = false_fail_sweep(run, seeds=25)
    assert counts.get("fail", 0) == 0, counts


def test_derivations_cut_off_mid_way_are_caught_despite_a_fallback_answer():
    f = run(exposure_run("cutoff", 300, 0))
    assert f.metrics["student_signs"].get("no final answer", 0) > 30
    assert f.verdict == "fail"


def test_terse_student_answers_are_not_degeneration():
    inputs = exposure_run("clean_high", 300, 0)
    for i, v in inputs.student_verdicts.items():
        inputs.student[i] = ModelOutput(i, str(v.answer))  # "42": no marker, but no reasoning either
    assert run(inputs).verdict == "pass"


# --- the rule on hand-built measurements (decide) and its words (README) --------------------------


def test_rule_words_are_the_readme_cell():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if line.startswith("|") and "| `exposure_bias` |" in line)
    assert eb.RULE.describe() == row.strip().strip("|").split(" | ")[-1].strip()


def test_rule_metrics_are_todays_rule_keys():
    assert eb.RULE.as_metrics(0.05) == {
        "min_items": 40,
        "min_side": 15,
        "did_margin": 0.10,
        "long_margin": 0.10,
        "overall_margin": 0.05,
        "r_margin": 1.5,
    }


def _measured(
    n=100,
    did=0.2,
    p_did=0.001,
    ci_low=0.05,
    long_only=(20, 5),
    p_long=0.001,
    all_only=(20, 15),
    p_all=0.2,
    carry_on=None,
    models=None,
):
    """A hand-built measurement: ``n`` items, half long; ``long_only``/``all_only`` are (items only the
    student degenerates on, items only the teacher does) on the long half and on all items."""
    n_long = n // 2
    return eb.ExposureMeasured(
        ids=tuple(f"e{k}" for k in range(n)),
        length_measure="teacher output words",
        lengths=tuple(float(k) for k in range(n)),
        long=tuple(k >= n - n_long for k in range(n)),
        teacher_signs=((),) * n,
        student_signs=((),) * n,
        overall=eb.McNemar(*all_only, p_all, n),
        long_half=eb.McNemar(*long_only, p_long, n_long),
        compounding=eb.Compounding(did, p_did, "permutation test", (ci_low, 0.3), 0.0),
        derail_teacher=eb.Derailment(),
        derail_student=eb.Derailment(),
        carry_on=carry_on,
        by_length=(),
        models=models,
    )


def test_decide_fails_exactly_at_the_thresholds():
    rule, alpha = eb.RULE, 0.05
    # 80 items, 40 per half; DiD exactly 0.10 and long-half excess (12 - 8) / 40 = 0.10
    m = _measured(n=rule.min_items * 2, did=rule.did_margin, long_only=(12, 8))
    assert m.long_half.excess == rule.long_margin
    r = eb.decide(m, rule, alpha)
    assert r.verdict == Verdict.FAIL and r.compounding and r.p_value == 0.001
    edge = _measured(n=rule.min_items, did=0.2, long_only=(12, 8))  # 40 items, 20 per half
    assert eb.decide(edge, rule, alpha).verdict == Verdict.FAIL


def test_decide_below_a_threshold_is_at_most_warn():
    rule, alpha = eb.RULE, 0.05
    # just below the DiD margin, or the long-half excess (14 - 10) / 50 = 0.08 below its margin: pass
    assert eb.decide(_measured(did=0.0999), rule, alpha).verdict == Verdict.PASS
    assert eb.decide(_measured(long_only=(14, 10)), rule, alpha).verdict == Verdict.PASS
    # not significant, or the DiD CI touching 0: the large long-half excess (0.3) still warns
    assert eb.decide(_measured(p_did=alpha), rule, alpha).verdict == Verdict.WARN
    assert eb.decide(_measured(ci_low=0.0), rule, alpha).verdict == Verdict.WARN
    # the primary p is the larger of the two tests (intersection-union)
    assert eb.decide(_measured(p_did=0.01, p_long=0.02), rule, alpha).p_value == 0.02


def test_decide_small_samples_give_at_most_warn():
    rule, alpha = eb.RULE, 0.05
    for n in (10, 30, rule.min_items - 1):
        r = eb.decide(_measured(n=n, long_only=(n // 2, 0)), rule, alpha)
        assert r.verdict == Verdict.WARN and r.compounding


def test_decide_uniform_and_carry_on_warn_only():
    rule, alpha = eb.RULE, 0.05
    flat = dict(did=0.0, p_did=0.6, long_only=(10, 8), p_long=0.4)
    r = eb.decide(_measured(all_only=(30, 25), p_all=0.01, **flat), rule, alpha)
    assert r.verdict == Verdict.WARN and r.uniform  # excess 0.05: exactly the margin
    assert eb.decide(_measured(all_only=(30, 26), p_all=0.01, **flat), rule, alpha).verdict == Verdict.PASS
    carry = eb.CarryOn(n=40, p_value=0.01, effect=0.2, odds_ratio=4.0)
    r = eb.decide(_measured(carry_on=carry, **flat), rule, alpha)
    assert r.verdict == Verdict.WARN and r.carries
    weak = eb.CarryOn(n=40, p_value=0.01, effect=0.19, odds_ratio=4.0)
    assert eb.decide(_measured(carry_on=weak, **flat), rule, alpha).verdict == Verdict.PASS


def test_decide_model_evidence_upgrades_conservatively():
    from distill_doctor.probes.exposure_models import ModelExposure, RatioAt, RatioBlock

    def models(n_prompts, ci_low):
        block = RatioBlock(base=0.1, test=0.2, ratio=2.0, ci=[ci_low, 3.0], pct=100.0, pct_ci=None)
        return ModelExposure(n_prompts, "greedy", (64,), 2, ratios=(RatioAt(64, block),))

    rule, alpha = eb.RULE, 0.05
    quiet = dict(did=0.0, p_did=0.6, long_only=(10, 8), p_long=0.4)
    assert eb.decide(_measured(models=models(32, 1.51), **quiet), rule, alpha).verdict == Verdict.WARN
    assert eb.decide(_measured(models=models(31, 2.0), **quiet), rule, alpha).verdict == Verdict.PASS
    assert eb.decide(_measured(models=models(32, 1.5), **quiet), rule, alpha).verdict == Verdict.PASS
    uniform = dict(quiet, all_only=(30, 20), p_all=0.01)
    assert eb.decide(_measured(models=models(32, 1.51), **uniform), rule, alpha).verdict == Verdict.FAIL
    small = dict(uniform, n=30)
    assert eb.decide(_measured(models=models(64, 2.0), **small), rule, alpha).verdict == Verdict.WARN
