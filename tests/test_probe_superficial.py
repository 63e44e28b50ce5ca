"""superficial_imitation on planted, clean, tiny and degenerate runs, and its chart contract."""

import pytest
from synthetic_runs import EDGE_KINDS, check_finding, false_fail_sweep, make_edge, make_run

from distill_doctor.data.records import ModelOutput
from distill_doctor.probes import superficial_imitation as probe
from distill_doctor.probes import text_features as tf


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_superficial_fails(seed):
    f = probe.run(make_run("superficial", 300, seed))
    d = check_finding(f)
    assert f.verdict == "fail"
    p = d["metrics"]["perturbation"]
    assert p["student_drop"] > 0.5 and p["diff_ci"][0] > probe.MARGIN
    assert {v["variant"] for v in p["by_variant"]} == {"numbers", "distractor"}
    assert "perturbed" in f.evidence[0]["why"]


@pytest.mark.parametrize("kind", ["clean_high", "clean_low"])
def test_clean_runs_pass(kind):
    f = probe.run(make_run(kind, 300, 8))
    d = check_finding(f)
    assert f.verdict == "pass"
    keys = {"n_pairs", "teacher_original", "teacher_perturbed", "student_original", "student_perturbed"}
    assert keys | {"teacher_drop", "student_drop", "diff_ci", "by_variant"} <= set(
        d["metrics"]["perturbation"]
    )
    assert d["metrics"]["style"]["style_score"] > 0.9


def test_drop_without_imitation_is_only_warn():
    inputs = make_run("superficial", 300, 9)
    for i in inputs.student:
        inputs.student[i] = ModelOutput(i, "ok " * 200 + "\n\\boxed{1}")
    f = probe.run(inputs)
    assert f.metrics["style"]["style_score"] < probe.STYLE_FAIL
    assert f.verdict == "warn"


def test_without_pairs_at_most_warn():
    f = probe.run(make_run("capacity_gap", 300, 1))
    check_finding(f)
    assert f.metrics["perturbation"] is None
    assert f.verdict in ("pass", "warn")


@pytest.mark.parametrize("n,seed", [(8, 0), (12, 1), (20, 2)])
def test_tiny_at_most_warn(n, seed):
    f = probe.run(make_run("superficial", n, seed))
    check_finding(f)
    assert f.verdict in ("pass", "warn")


@pytest.mark.parametrize("kind", EDGE_KINDS)
def test_edge_cases(kind):
    f = probe.run(make_edge(kind))
    check_finding(f)
    assert f.verdict in ("pass", "warn")


def test_false_fail_rate_on_clean_runs():
    counts = false_fail_sweep(probe.run)
    assert counts.get("fail", 0) <= 5, counts


def test_text_features():
    loop = "Step 1: add.\n" + "We add the numbers again and again.\n" * 5
    assert tf.repetition_loop(loop)
    assert tf.repetition_loop(" ".join(["the cat sat on the mat"] * 10))
    assert not tf.repetition_loop("Step 1: Add 3 and 4.\nStep 2: 3 + 4 = 7.\nThe answer is 7.")
    assert tf.truncated("```python\ndef f(x):\n    return")
    assert tf.truncated("Step 2: 3 + 4 =")
    assert tf.truncated("So we multiply the")
    assert not tf.truncated("The answer is 7.")
    assert not tf.truncated("#### 42")
    assert tf.mixed_script("The answer is 42 因为我们计算了两个数字的和")
    assert not tf.mixed_script("θ = π/2, so the angle is right.")
    assert tf.explicit_answer_format("so \\boxed{3}") == "boxed"
    assert tf.explicit_answer_format("x\n#### 3") == "hashes"
    assert tf.explicit_answer_format("The answer is 3") == "answer_is"
    assert {"step", "answer_is"} <= tf.markers("Step 1: x\nThe answer is 3.")
    assert tf.ngram_jaccard("a b c", "a b c") == 1.0 and tf.ngram_jaccard("a b", "c d") == 0.0
    assert tf.normalised_code("```python\ndef f():  # hi\n\n    return 1\n```") == "def f():\nreturn 1"
