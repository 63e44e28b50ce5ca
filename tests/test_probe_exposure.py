"""Exposure bias probe on output-level evidence: planted compounding fails, clean runs pass."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from distill_doctor.data.records import Judgement, ModelOutput
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
