"""teacher_error_transfer on planted, clean, tiny and degenerate runs."""

import pytest

from distill_doctor.data.records import Judgement
from distill_doctor.probes import teacher_error_transfer as probe
from distill_doctor.testing.synthetic_runs import (
    EDGE_KINDS,
    check_finding,
    false_fail_sweep,
    make_edge,
    make_run,
)
from distill_doctor.vocabulary import Verdict


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_transfer_fails(seed):
    f = probe.run(make_run("error_transfer", 300, seed))
    d = check_finding(f)
    assert f.verdict == "fail"
    m = d["metrics"]
    assert m["same_wrong_rate"] >= 0.7 and m["chance"]["p0"] >= probe.CHANCE_FLOOR
    assert m["both_wrong"] >= probe.MIN_BOTH_WRONG
    assert f.evidence and "both answered" in f.evidence[0]["why"]
    assert "generate --reject-with verifier" in f.guardrail


@pytest.mark.parametrize("kind", ["clean_high", "clean_low", "capacity_gap", "superficial"])
def test_other_runs_pass(kind):
    f = probe.run(make_run(kind, 300, 3))
    check_finding(f)
    assert f.verdict == "pass" if kind.startswith("clean") else f.verdict != "fail"


def test_kappa_alone_is_not_a_verdict():
    # Errors strongly correlated (both wrong on the same items) but wrong answers independent.
    inputs = make_run("clean_low", 300, 4)
    for it in inputs.items:
        t = inputs.teacher_verdicts[it.id]
        if not t.passed:
            inputs.student_verdicts[it.id] = Judgement(False, str(int(it.reference) + 1000 + len(it.id)))
    f = probe.run(inputs)
    assert f.metrics["kappa"] > 0.3
    assert f.verdict == "pass"


@pytest.mark.parametrize("n,seed", [(8, 0), (12, 1), (20, 2), (25, 3)])
def test_tiny_at_most_warn(n, seed):
    # a weak teacher makes most of a tiny run "both wrong": still at most warn
    f = probe.run(make_run("error_transfer", n, seed, teacher_acc=0.3, student_acc=0.3))
    check_finding(f)
    assert f.verdict in ("pass", "warn")


@pytest.mark.parametrize("kind", EDGE_KINDS)
def test_edge_cases(kind):
    f = probe.run(make_edge(kind))
    check_finding(f)
    assert f.verdict == "pass"


def test_code_items_need_same_code_not_just_same_signature():
    inputs = make_edge("code", n=120)
    f = probe.run(inputs)
    assert f.metrics["same_wrong"] == 0  # same "AssertionError", different programs
    for i in list(inputs.teacher)[:60]:
        inputs.student[i] = inputs.teacher[i]
        inputs.student_verdicts[i] = inputs.teacher_verdicts[i]
    copied = probe.run(inputs)
    assert copied.metrics["same_wrong"] > 0


def test_false_fail_rate_on_clean_runs():
    counts = false_fail_sweep(probe.run)
    assert counts.get("fail", 0) <= 5, counts


def test_student_repeats_wrong_training_targets():
    import importlib

    if not hasattr(importlib.import_module("distill_doctor.verify"), "extract_answer"):
        pytest.skip("distill_doctor.verify.extract_answer is not available yet")
    from datasets import Dataset

    inputs = make_run("clean_high", 200, 11, teacher_acc=0.97)
    rows = []
    for k, it in enumerate(inputs.items[:40]):
        wrong = int(it.reference) + 5
        # odd rows as the loader renders chat rows: "role: content" lines
        prompt = it.prompt if k % 2 == 0 else f"system: Be brief.\nuser: {it.prompt}"
        rows.append({"prompt": prompt, "response": f"The answer is {wrong}.", "reference": str(it.reference)})
        if k < 30:  # the student learned 30 of the 40 wrong targets
            inputs.student_verdicts[it.id] = Judgement(False, str(wrong))
    inputs.train = Dataset.from_list(rows)
    f = probe.run(inputs)
    check_finding(f)
    echo = f.metrics["train_echo"]
    assert echo["n"] == 40 and echo["k"] == 30
    assert f.metrics["excluded_seen_in_train"] == 40
    # memorised training rows are contamination's finding: supporting evidence here, not a fail
    assert f.verdict == "warn"
    assert any("training target" in e["why"] for e in f.evidence)


def test_shared_stub_programs_are_chance_not_transfer():
    from distill_doctor.data.records import ModelOutput

    inputs = make_edge("code", n=120)
    stub = ModelOutput("", "```python\ndef f(x):\n    pass\n```")
    for i, v in inputs.teacher_verdicts.items():
        if not v.passed:
            inputs.teacher[i] = ModelOutput(i, stub.output)
    for i, v in inputs.student_verdicts.items():
        if not v.passed:
            inputs.student[i] = ModelOutput(i, stub.output)
    f = probe.run(inputs)
    assert f.metrics["same_wrong"] == 0 and f.verdict == "pass"


def test_shared_default_answer_raises_chance():
    inputs = make_run("clean_low", 300, 12)
    for it in inputs.items:
        for verdicts in (inputs.teacher_verdicts, inputs.student_verdicts):
            if not verdicts[it.id].passed:
                verdicts[it.id] = Judgement(False, "0")
    f = probe.run(inputs)
    assert f.metrics["same_wrong_rate"] == 1.0
    assert f.metrics["chance"]["global"] == 1.0
    assert f.verdict == "pass"


# --- the rule on hand-built measurements (decide) and its words (README) --------------------------


def _readme_fails_when(mode: str) -> str:
    """The "fails when" cell of ``mode``'s row in README.md's probe table."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if line.startswith("|") and f"| `{mode}` |" in line)
    return row.strip().strip("|").split(" | ")[-1].strip()


def test_rule_words_are_the_readme_cell():
    assert probe.RULE.describe() == _readme_fails_when("teacher_error_transfer")


def _measured(n=300, both_wrong=20, shared=10, p_value=0.001, echo=None, echo_p=None, floor=0.25):
    """A hand-built measurement: ``shared`` of ``both_wrong`` shared wrong answers, chance = ``floor``."""
    return probe.TransferMeasured(
        n=n,
        teacher_wrong=both_wrong,
        both_wrong=both_wrong,
        shared=tuple(probe.SharedWrong(f"i{k}", "7", "3") for k in range(shared)),
        chance=probe.Chance(
            cross_item=0.0, cross_item_pairs=0, global_=0.0, code=0.0, choice=0.0, floor=floor
        ),
        p_value=p_value,
        kappa=0.0,
        kappa_ci=None,
        acc_when_teacher_wrong=None,
        acc_when_teacher_right=None,
        faults=probe.FormatFaults(0, 0),
        echo=echo,
        echo_p_value=echo_p,
        excluded_seen_in_train=0,
    )


def test_decide_fails_exactly_at_the_thresholds():
    rule, alpha = probe.RULE, 0.05
    at_edge = _measured(n=rule.min_items, both_wrong=rule.min_both_wrong, shared=5, p_value=0.049)
    assert at_edge.rate == rule.threshold(0.25) == 0.5
    ruling = probe.decide(at_edge, rule, alpha)
    assert ruling.verdict == "fail" and ruling.p_value == 0.049


def test_decide_just_below_each_threshold_is_at_most_warn():
    rule, alpha = probe.RULE, 0.05
    assert probe.decide(_measured(n=29, both_wrong=10, shared=5), rule, alpha).verdict == "warn"
    # a significant rate of 0.4: below the fail rate 0.5, at least 1.5 x chance
    assert probe.decide(_measured(both_wrong=10, shared=4), rule, alpha).verdict == "warn"
    assert probe.decide(_measured(both_wrong=10, shared=5, p_value=alpha), rule, alpha).verdict == "pass"
    assert probe.decide(_measured(both_wrong=10, shared=3), rule, alpha).verdict == "pass"  # 0.3 < 0.375


def test_decide_small_samples_give_at_most_warn():
    rule, alpha = probe.RULE, 0.05
    for n, bw, k in [(8, 8, 8), (12, 9, 9), (29, 20, 20), (300, 9, 9)]:
        assert (
            probe.decide(_measured(n=n, both_wrong=bw, shared=k, p_value=1e-6), rule, alpha).verdict == "warn"
        )
    # fewer than 10 both-wrong items, not significant: three shared at the fail rate still warn, two don't
    assert probe.decide(_measured(both_wrong=6, shared=3, p_value=0.2), rule, alpha).verdict == "warn"
    assert probe.decide(_measured(both_wrong=4, shared=2, p_value=0.2), rule, alpha).verdict == "pass"


def test_decide_threshold_follows_the_chance_rate():
    rule, alpha = probe.RULE, 0.05
    m = _measured(both_wrong=20, shared=13, floor=0.4)  # 0.65 < 2 x 0.4
    assert rule.threshold(0.4) == 0.8
    assert probe.decide(m, rule, alpha).verdict == "warn"  # significant and >= 1.5 x chance
    assert rule.as_metrics(alpha, 0.4) == {
        "min_items": 30,
        "min_both_wrong": 10,
        "min_rate": 0.8,
        "alpha": alpha,
    }


def test_decide_echo_alone_is_at_most_warn_with_its_rounded_p():
    rule, alpha = probe.RULE, 0.05
    echo = probe.TrainEcho(n=6, k=3, ids=("a", "b", "c"))
    m = _measured(both_wrong=0, shared=0, p_value=None, echo=echo, echo_p=0.0123456789)
    assert probe.decide(m, rule, alpha) == probe.Ruling(Verdict.WARN, 0.01234568)
    fewer = _measured(
        both_wrong=0, shared=0, p_value=None, echo=probe.TrainEcho(6, 2, ("a", "b")), echo_p=0.1
    )
    assert probe.decide(fewer, rule, alpha).verdict == "pass"
