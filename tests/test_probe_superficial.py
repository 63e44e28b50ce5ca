"""superficial_imitation on planted, clean, tiny and degenerate runs, and its chart contract."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from distill_doctor.data.records import Item, Judgement, ModelOutput
from distill_doctor.probes import superficial_imitation as probe
from distill_doctor.probes.base import DiagnosisInputs
from distill_doctor.testing.synthetic_runs import (
    EDGE_KINDS,
    check_finding,
    false_fail_sweep,
    make_edge,
    make_run,
)
from distill_doctor.text import text_features as tf
from distill_doctor.vocabulary import Verdict


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_superficial_fails(seed):
    f = probe.run(make_run("superficial", 300, seed))
    d = check_finding(f)
    assert f.verdict == "fail"
    p = d["metrics"]["perturbation"]
    assert p["student_drop"] > 0.5 and p["diff_ci"][0] > probe.RULE.margin
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
    assert f.metrics["style"]["style_score"] < probe.RULE.style_fail
    assert f.verdict == "warn"


def test_without_pairs_at_most_warn():
    f = probe.run(make_run("capacity_gap", 300, 1))
    check_finding(f)
    assert f.metrics["perturbation"] is None
    assert f.verdict in ("skipped", "warn")


def test_nothing_tested_is_skipped_not_pass():
    """Issue 13: ``pass`` with ``perturbation: null`` passed a gate that required the mode."""
    run = make_run("clean_high", 300, 1)
    run.items = [dataclasses.replace(it, group=None, variant=None) for it in run.items]
    f = probe.run(run)
    d = check_finding(f)
    assert d["metrics"]["perturbation"] is None
    assert d["verdict"] == "skipped" and "perturbation pairs" in d["skipped_reason"]
    assert not d["guardrail"]


@pytest.mark.parametrize("n,seed", [(8, 0), (12, 1), (20, 2)])
def test_tiny_at_most_warn(n, seed):
    f = probe.run(make_run("superficial", n, seed))
    check_finding(f)
    assert f.verdict in ("pass", "warn")


@pytest.mark.parametrize("kind", EDGE_KINDS)
def test_edge_cases(kind):
    f = probe.run(make_edge(kind))
    check_finding(f)
    assert f.verdict in ("pass", "warn", "skipped")


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


def _ceiling_run(seed: int, student: str, groups: int = 80) -> DiagnosisInputs:
    """``groups`` stories, each an original and two perturbed variants (2 pairs per group), the
    teacher near its ceiling (item logits around 2.9 on originals, 2.2 on variants: about 0.94 and
    0.89). ``student``: "excess" matches the teacher on originals and loses 30 points more on the
    variants; "behind" is 1.8 logits behind the teacher on every item (the uniformly-behind trap)."""
    rng = np.random.default_rng(seed)
    items: list[Item] = []
    teacher: dict[str, ModelOutput] = {}
    student_out: dict[str, ModelOutput] = {}
    tv: dict[str, Judgement] = {}
    sv: dict[str, Judgement] = {}
    for g in range(groups):
        base = rng.normal(3.2, 0.8)
        for variant in ("original", "numbers", "distractor"):
            iid = f"g{g:03d}-{variant}"
            items.append(Item(iid, f"Story {g} ({variant}).", 7, "numeric", {}, f"g{g:03d}", variant))
            logit_t = base - (0.0 if variant == "original" else 0.9) + rng.normal(0, 0.3)
            p_t = 1 / (1 + np.exp(-logit_t))
            if student == "excess":
                p_s = p_t - 0.01 if variant == "original" else max(0.02, p_t - 0.31)
            else:
                p_s = 1 / (1 + np.exp(-(logit_t - 1.8)))
            for outputs, verdicts, p in ((teacher, tv, p_t), (student_out, sv, p_s)):
                ok = bool(rng.random() < p)
                answer = "7" if ok else "8"
                outputs[iid] = ModelOutput(iid, f"Step 1: 3 + 4 = 7.\nThe answer is {answer}.")
                verdicts[iid] = Judgement(ok, answer)
    return DiagnosisInputs(items, student_out, sv, teacher, tv, seed=seed)


def test_large_excess_drop_near_the_ceiling_fails():
    """160 pairs, teacher near its ceiling, a 30-point excess drop: the uniform-shift guard lets
    it fail (the issue-13 run where the old rule only warned is in test_diagnosis_scenarios.py)."""
    verdicts = []
    for seed in range(5):
        d = check_finding(probe.run(_ceiling_run(seed, "excess")))
        p = d["metrics"]["perturbation"]
        assert p["n_pairs"] == 160 and p["teacher_original"] >= 0.85
        verdicts.append(d["verdict"])
    assert verdicts.count("fail") >= 4, verdicts


def test_uniformly_behind_student_near_the_ceiling_does_not_fail():
    verdicts = [probe.run(_ceiling_run(100 + seed, "behind", groups=200)).verdict for seed in range(10)]
    assert verdicts.count(Verdict.FAIL) <= 1, verdicts


# --- decide() on hand-built measurements: the rule's edges --------------------------------------

ALPHA = 0.05


def _pert(**kw) -> probe.Perturbation:
    """Pairs on which the student clearly loses more than the teacher, beyond a uniform shift."""
    base = probe.Perturbation(
        n_pairs=40,
        n_groups=40,
        teacher_original=0.9,
        teacher_perturbed=0.85,
        student_original=0.85,
        student_perturbed=0.3,
        teacher_drop=0.056,
        student_drop=0.647,
        diff=0.6,
        diff_ci=[0.4, 0.8],
        log_odds_diff=2.0,
        log_odds_diff_ci=[1.0, 3.0],
        shift_original=0.0,
        shift_perturbed=2.0,
        discordant_original={"teacher_only": 3, "student_only": 3},
        discordant_perturbed={"teacher_only": 22, "student_only": 3},
        excess_shift=2.0,
        excess_shift_ci=[1.0, 3.0],
        uniform_shift_p=0.001,
        student_breaks=22,
        student_repairs=1,
        mcnemar_p=0.0001,
        diff_sign_flip_p=0.001,
        by_variant=[],
    )
    return dataclasses.replace(base, **kw)


def _measured(pert: probe.Perturbation | None, style: float | None = 0.9, **kw) -> probe.SuperficialMeasured:
    base = probe.SuperficialMeasured(
        n=80,
        teacher=0.88,
        student=0.6,
        style=probe.Style({"n": 80, "style_score": style}, style, 0.9, 0.9),
        perturbation=pert,
        teacher_only_failures=("a", "b"),
    )
    return dataclasses.replace(base, **kw)


def _verdict(pert: probe.Perturbation | None, **kw) -> str:
    return probe.decide(_measured(pert, **kw), probe.RULE, ALPHA).verdict


def test_decide_clear_case_fails_on_the_larger_p():
    r = probe.decide(_measured(_pert()), probe.RULE, ALPHA)
    assert r.verdict == "fail" and r.reading == probe.Reading.IMITATES_FORM
    assert r.p_value == 0.001  # max(McNemar, sign flip): an intersection-union test


@pytest.mark.parametrize(
    "change,verdict",
    [
        ({"n_pairs": 20}, "fail"),  # exactly the minimum
        ({"n_pairs": 19}, "warn"),  # a small sample is at most warn
        ({"n_pairs": 19, "diff": 0.15}, "pass"),  # and its warn needs a drop above the margin
        ({"diff": 0.15}, "fail"),  # exactly the margin
        ({"diff": 0.149}, "pass"),
        ({"diff_ci": [0.0, 0.8]}, "warn"),  # the CI must be above 0
        ({"mcnemar_p": ALPHA}, "pass"),  # p must be below alpha
        ({"diff_sign_flip_p": 0.06}, "pass"),  # both tests must be significant
        ({"student_breaks": 1}, "pass"),  # as many repairs as breaks: no drop
        ({"excess_shift": 0.5}, "fail"),  # exactly the shift margin
        ({"excess_shift": 0.49}, "warn"),  # a uniform shift explains it
        ({"uniform_shift_p": ALPHA}, "warn"),
        ({"student_original": 0.5}, "fail"),  # competent on the originals: >= 50% ...
        ({"student_original": 0.49}, "warn"),
        ({"student_original": 0.1875, "teacher_original": 0.25}, "fail"),  # ... or >= 75% of a weak teacher
        ({"student_original": 0.18, "teacher_original": 0.25}, "warn"),
    ],
)
def test_decide_rule_edges(change, verdict):
    assert _verdict(_pert(**change)) == verdict


@pytest.mark.parametrize("style,verdict", [(0.5, "fail"), (0.49, "warn"), (None, "warn")])
def test_decide_style_edges(style, verdict):
    assert _verdict(_pert(), style=style) == verdict


def test_decide_readings_pick_the_summary():
    r = probe.decide(_measured(_pert(excess_shift=0.2)), probe.RULE, ALPHA)
    assert r.reading == probe.Reading.UNIFORM_SHIFT
    assert "fixed number of logits" in probe.summarize(_measured(_pert(excess_shift=0.2)), r).summary
    r = probe.decide(_measured(_pert(mcnemar_p=0.2)), probe.RULE, ALPHA)
    assert r.verdict == "pass" and r.reading == probe.Reading.UNCLEAR_DROP and r.p_value == 0.2


@pytest.mark.parametrize(
    "change,verdict",
    [
        ({}, "warn"),
        ({"n": 19}, "skipped"),  # too few items for the style-only warn
        ({"style": 0.59}, "skipped"),
        ({"student": 0.41}, "skipped"),  # more than half the teacher's accuracy
        ({"teacher": 0.49, "student": 0.2}, "skipped"),  # a weak teacher
        ({"of_failing": 0.84}, "skipped"),  # failing outputs less teacher-like than passing ones
    ],
)
def test_decide_without_pairs_at_most_warn(change, verdict):
    given = {"n": 20, "teacher": 0.8, "student": 0.4, "style": 0.6, "of_failing": 0.86, **change}
    style, of_failing = given.pop("style"), given.pop("of_failing")
    m = _measured(None, **given)
    m = dataclasses.replace(m, style=probe.Style({"n": m.n}, style, of_failing, 0.9))
    r = probe.decide(m, probe.RULE, ALPHA)
    assert r.verdict == verdict and r.p_value is None
    f = probe.summarize(m, r)
    assert [e["id"] for e in f.evidence] == (["a", "b"] if verdict == "warn" else [])


def test_rule_matches_the_readme_and_the_report():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    row = next(
        line for line in readme.splitlines() if line.startswith("| capacity | `superficial_imitation` |")
    )
    assert probe.RULE.describe() == row.rstrip(" |").split(" | ")[-1]
    f = probe.summarize(_measured(_pert()), probe.decide(_measured(_pert()), probe.RULE, ALPHA))
    assert f.metrics["fail_rule"] == probe.RULE.as_metrics(ALPHA)
    assert list(f.metrics["perturbation"])[-1] == "by_variant"  # the ids behind evidence stay out
