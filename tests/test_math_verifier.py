"""The ``math`` verifier (math-verify), numeric powers inside ``\\boxed``, and reasoning blocks.

Each of the issue-13 cases (``\\boxed{10^{3}}`` read as 3; ``\\frac{1}{\\sqrt{2}}``,
``1 + 2x + x^{2}`` and ``(-2,2)`` compared as strings; a ``\\boxed`` inside ``<think>`` taken
for the answer) is pinned here.
"""

from __future__ import annotations

import json
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill_doctor.data.items import load_items
from distill_doctor.data.records import Item
from distill_doctor.errors import InputError
from distill_doctor.verify import extract_answer, verify
from distill_doctor.verify.extract import REASONING_TAGS, answer_text, cut_off_in_reasoning


def mk(ref, verifier, **kw):
    return Item(id="x", prompt="q", reference=ref, verifier=verifier, **kw)


# ---- numeric: powers and nested braces --------------------------------------------------


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        (r"\boxed{10^{3}}", "1000"),
        (r"so \boxed{3 \times 10^{8}} m/s", "300000000"),
        (r"\boxed{2^{-2}}", "0.25"),
        (r"\boxed{\frac{1}{2}}", "0.5"),
        (r"\boxed{45^\circ}", "45"),
        (r"\boxed{x^{2}}", None),  # not a number: never the exponent
        (r"\boxed{\frac{\sqrt{2}}{2}}", None),  # never the 2 inside the root
        (r"\boxed{10^{1000}}", None),  # too large to write out: refused, not cut
        (r"\boxed{2^{\frac{1}{2}}}", None),  # a nested exponent is no fraction of its own
    ],
)
def test_numeric_boxed_powers(text, answer):
    assert extract_answer(text, "numeric") == answer


def test_numeric_verifier_boxed_power_equals_its_value():
    assert verify(mk(1000, "numeric"), r"The total is \boxed{10^{3}}").passed
    assert not verify(mk(3, "numeric"), r"The total is \boxed{10^{3}}").passed


# ---- math: symbolic equivalence ---------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "text", "passed"),
    [
        (r"\frac{\sqrt{2}}{2}", r"So the answer is \boxed{\frac{1}{\sqrt{2}}}.", True),
        ("x^2+2x+1", r"The answer is $1 + 2x + x^{2}$", True),
        ("[-2,2]", r"\boxed{(-2,2)}", False),  # open vs closed interval
        ("[-2,2]", r"\boxed{[-2, 2]}", True),
        (r"\{1,2\}", r"\boxed{\{2,1\}}", True),
        (r"50\%", "#### 0.5", True),
        ("1000", r"\boxed{10^{3}}", True),
        (5, "so it is 5", True),
        ("3", r"\boxed{4}", False),
        ("3", "I give up", False),
    ],
)
def test_math_equivalence(ref, text, passed):
    assert verify(mk(ref, "math"), text).passed is passed


def test_math_answer_is_a_canonical_form():
    a = verify(mk("7", "math"), r"\boxed{\frac{1}{\sqrt{2}}}").answer
    b = verify(mk("7", "math"), r"\boxed{\frac{\sqrt{2}}{2}}").answer
    assert a == "1/sqrt(2)" and b == "sqrt(2)/2"  # SymPy's form, short and comparable
    assert verify(mk("7", "math"), "I give up").answer is None


def test_math_verifier_off_the_main_thread_and_bounded():
    """Signals only work on the main thread: off it, a helper process judges, killed on overrun."""
    got = {}

    def work():
        got["ok"] = verify(mk(r"\frac{\sqrt{2}}{2}", "math"), r"\boxed{\frac{1}{\sqrt{2}}}")
        got["interval"] = verify(mk("[-2,2]", "math"), r"\boxed{(-2,2)}")
        got["tower"] = verify(mk("5", "math"), r"\boxed{9^{9^{9^{9}}}}")

    t = threading.Thread(target=work)
    t.start()
    t.join(timeout=60)
    assert not t.is_alive()
    assert got["ok"].passed and not got["interval"].passed
    assert not got["tower"].passed and "counted wrong" in got["tower"].reason


def test_math_on_the_main_thread_is_bounded():
    v = verify(mk("5", "math"), r"\boxed{9^{9^{9^{9}}}}")
    assert not v.passed and "counted wrong" in v.reason


def test_items_accept_math_and_refuse_unreadable_references(tmp_path):
    path = tmp_path / "items.jsonl"
    rows = [{"id": "a", "prompt": "p", "reference": r"\frac{1}{2}", "verifier": "math"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load_items(path)[0].verifier == "math"
    rows.append({"id": "b", "prompt": "p", "reference": "}{", "verifier": "math"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError) as err:
        load_items(path)
    assert err.value.line == 2 and err.value.field == "reference"


# ---- reasoning blocks -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("opening", "closing"),
    [
        ("<think>", "</think>"),
        ("<thinking>", "</thinking>"),
        ("<reasoning>", "</reasoning>"),
        ("<|begin_of_thought|>", "<|end_of_thought|>"),
        ("\u25c1think\u25b7", "\u25c1/think\u25b7"),
        ("[THINK]", "[/THINK]"),
        ("<|channel|>analysis<|message|>", "<|channel|>final<|message|>"),
    ],
)
def test_reasoning_block_is_never_the_answer(opening, closing):
    text = f"{opening}Maybe \\boxed{{5}}? The answer is 5.{closing}\nThe answer is \\boxed{{7}}."
    assert answer_text(text).strip() == "The answer is \\boxed{7}."
    assert extract_answer(text, "numeric") == "7"
    assert not cut_off_in_reasoning(text)
    assert cut_off_in_reasoning(f"{opening}Maybe \\boxed{{5}}? The answer is 5.")


@pytest.mark.parametrize(
    ("ref", "verifier"),
    [(5, "numeric"), ("five", "exact"), ("B", "choice"), ("regex:^5$", "regex:^5$"), ("5", "math")],
)
def test_every_verifier_reads_after_the_last_closing_tag(ref, verifier):
    ref_value = None if verifier.startswith("regex") else ref
    item = mk(ref_value if ref_value is not None else "5", verifier)
    inside = {"numeric": "5", "exact": "five", "choice": "(B)", "math": "5"}.get(verifier, "5")
    # The right answer only inside the reasoning: wrong.
    wrong = f"<think>The answer is {inside}</think>\nThe answer is 9"
    assert not verify(item, wrong).passed
    # Cut off inside its reasoning: no answer at all.
    cut = verify(item, f"<think>The answer is {inside}. Let me check")
    assert not cut.passed and cut.answer is None and "cut off" in cut.reason
    # A template that opened <think> in the prompt: only the closing tag is in the output.
    assert verify(item, f"reasoning ...</think>\nThe answer is {inside}").passed


def test_code_verifier_reads_after_the_reasoning():
    item = Item(
        id="c",
        prompt="def add(a, b):\n",
        reference=None,
        verifier="code",
        tests="def check(f):\n    assert f(1, 2) == 3\n",
        entry_point="add",
    )
    good = "```python\ndef add(a, b):\n    return a + b\n```"
    assert verify(
        item, f"<think>try\n```python\ndef add(a, b):\n    return a - b\n```\n</think>\n{good}"
    ).passed
    cut = verify(item, f"<think>{good}")
    assert not cut.passed and cut.answer is None


def test_cut_off_inside_reasoning_is_degenerate():
    from distill_doctor.probes.exposure_bias import degeneration
    from distill_doctor.text import text_features as tf

    cut = "<think>Let me add 2 and 3. That is 5, so the answer is \\boxed{5}. Let me double-check"
    assert degeneration(cut, True, is_code=False) == ["no final answer", "cut off inside reasoning"]
    assert tf.truncated(cut) and tf.explicit_answer_format(cut) is None
    done = "<think>Let me add 2 and 3. Hmm, the answer is</think>\nThe answer is \\boxed{5}."
    assert degeneration(done, False, is_code=False) == []
    assert tf.explicit_answer_format("<think>\\boxed{5}</think>\n5") is None


def test_training_echo_compares_math_targets_as_mathematics():
    """teacher_error_transfer's echo check: a training target equal in value is not a wrong target."""
    from datasets import Dataset

    from distill_doctor.probes.base import DiagnosisInputs
    from distill_doctor.probes.teacher_error_transfer import TrainEcho, _train_overlap

    items = [
        Item(id=f"m{k}", prompt=f"Problem {k}", reference=r"\frac{1}{2}", verifier="math") for k in range(2)
    ]
    student = {"m0": verify(items[0], r"\boxed{1/3}"), "m1": verify(items[1], r"\boxed{1/3}")}
    train = Dataset.from_dict(
        {
            "prompt": ["Problem 0", "Problem 1"],
            "response": [r"so \boxed{0.5}", r"so \boxed{\frac{1}{3}}"],  # right (another form), wrong
            "reference": [r"\frac{1}{2}", r"\frac{1}{2}"],
        }
    )
    inputs = DiagnosisInputs(items=items, student={}, student_verdicts=student, train=train)
    seen, echo = _train_overlap(inputs, {it.id: it for it in items})
    assert seen == {"m0", "m1"}
    assert echo == TrainEcho(n=1, k=1, ids=("m1",))  # only the wrong target, which the student repeats


_TAG_FREE = st.text(max_size=120).filter(lambda t: answer_text(t) == t)  # holds no reasoning tag


@settings(max_examples=200, deadline=None)
@given(_TAG_FREE, _TAG_FREE, st.sampled_from(REASONING_TAGS), st.sampled_from(["numeric", "exact", "choice"]))
def test_whatever_is_inside_the_reasoning_never_changes_the_answer(inside, after, tags, kind):
    opening, closing = tags
    assert extract_answer(f"{opening}{inside}{closing}{after}", kind) == extract_answer(after, kind)
    assert extract_answer(f"{opening}{inside}", kind) is None


def test_data_quality_checks_latex_training_targets_as_mathematics():
    """A training target \\boxed{0.5} for the reference \\frac{1}{2} is right, not a verified error."""
    from distill_doctor.probes import data_quality

    refs = [r"\frac{1}{2}", r"\frac{1}{2}", r"2\sqrt{3}", "42"]
    responses = [r"so \boxed{0.5}", r"so \boxed{\frac{1}{3}}", r"\boxed{\sqrt{12}}", "#### 42"]
    ids = ["a", "b", "c", "d"]
    errors, n_ver, n_skip, _ = data_quality._verify_rows(["p"] * 4, responses, refs, ids)
    assert (n_ver, n_skip) == (4, 0)
    assert [rid for rid, _ in errors] == ["b"]
    assert [data_quality.default_verifier(r) for r in refs] == ["math", "math", "math", "numeric"]


def test_data_quality_verifies_at_most_math_rows(monkeypatch):
    from distill_doctor.probes import data_quality

    monkeypatch.setattr(data_quality, "MATH_ROWS", 2)
    refs = [rf"\frac{{1}}{{{k}}}" for k in range(2, 7)]
    responses = [rf"\boxed{{\frac{{1}}{{{k}}}}}" for k in range(2, 7)]
    errors, n_ver, n_skip, _ = data_quality._verify_rows(["p"] * 5, responses, refs, list("abcde"), seed=1)
    assert (n_ver, n_skip, errors) == (2, 3, [])
