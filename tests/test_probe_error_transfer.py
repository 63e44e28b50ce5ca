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
