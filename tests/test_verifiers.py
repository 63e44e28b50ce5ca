"""Verifiers per kind, canonical answers for 'same wrong answer' comparisons, and verify_outputs."""

from __future__ import annotations

import pytest

from distill_doctor.data.records import Item, ModelOutput
from distill_doctor.verify import verify, verify_outputs
from distill_doctor.verify.verifiers import numbers_equal, reference_answer


def mk(ref, verifier, **kw):
    return Item(id=kw.pop("id", "x"), prompt="q", reference=ref, verifier=verifier, **kw)


@pytest.mark.parametrize(
    ("ref", "text", "passed", "answer"),
    [
        (1234, "#### 1,234", True, "1234"),
        ("1,234", "The total is $1,234.", True, "1234"),
        (1234, "1234.0 apples", True, "1234"),
        ("0.5", r"\boxed{\frac{1}{2}}", True, "0.5"),
        (-3.5, "Answer: -3.50", True, "-3.5"),
        ("3.14159265", "pi is about 3.1415926536", True, "3.1415926536"),
        (12, "so 13 apples.", False, "13"),
        (7, "no idea", False, None),
        (100, "1e2", True, "100"),
        ("The answer is #### 72", "#### 72", True, "72"),  # a GSM8K-style reference solution
    ],
)
def test_numeric(ref, text, passed, answer):
    v = verify(mk(ref, "numeric"), text)
    assert (v.passed, v.answer) == (passed, answer)


def test_integers_need_exact_equality():
    assert not numbers_equal("1000000", "1000001")
    assert numbers_equal("0.3333333", "0.33333333")
    assert not numbers_equal("1/3", "0.33")


@pytest.mark.parametrize(
    ("ref", "text", "passed", "answer"),
    [
        ("Paris", "The answer is Paris.", True, "paris"),
        ("Paris", "'PARIS'", True, "paris"),
        ("New York", "I think...\n`new york`.", True, "new york"),
        ("Paris", "The answer is Lyon.", False, "lyon"),
        ("Paris", "", False, None),
    ],
)
def test_exact(ref, text, passed, answer):
    v = verify(mk(ref, "exact"), text)
    assert (v.passed, v.answer) == (passed, answer)


@pytest.mark.parametrize(
    ("ref", "text", "passed", "answer"),
    [
        ("B", "The answer is (b).", True, "B"),
        ("b", "B) is right", True, "B"),
        ("(C)", "Answer: C", True, "C"),
        ("A", "The answer is D.", False, "D"),
        ("A", "I cannot tell", False, None),
    ],
)
def test_choice(ref, text, passed, answer):
    v = verify(mk(ref, "choice"), text)
    assert (v.passed, v.answer) == (passed, answer)


def test_regex_final_answer_then_whole_output():
    it = mk("ignored", r"regex:^\d{3}-\d{4}$")
    v = verify(it, "Call me.\nThe answer is 555-1234")
    assert v.passed and "final answer" in v.reason and v.answer == "555-1234"
    it2 = mk("ignored", r"regex:(?i)photosynthesis")
    v2 = verify(it2, "Plants use photosynthesis.\nSo: energy")
    assert v2.passed and "not the final answer" in v2.reason and v2.answer == "so: energy"
    v3 = verify(it2, "Plants eat.")
    assert not v3.passed


def test_same_wrong_answer_is_comparable():
    it = mk(10, "numeric")
    a, b = verify(it, "so 1,200 apples"), verify(it, r"\boxed{1200}")
    assert not a.passed and a.answer == b.answer == "1200"


def test_reference_answer_canonical_forms():
    assert reference_answer(mk("$1,234", "numeric")) == "1234"
    assert reference_answer(mk(" 'Paris'. ", "exact")) == "paris"
    assert reference_answer(mk("(d)", "choice")) == "D"
    assert reference_answer(mk(None, "code")) is None


def test_verify_outputs_mixes_kinds_and_skips_items_without_output():
    code = Item(
        id="c1",
        prompt="def add(a, b):\n",
        reference=None,
        verifier="code",
        tests="def check(f):\n    assert f(2, 3) == 5\n",
        entry_point="add",
    )
    items = [mk(4, "numeric", id="n1"), mk("Paris", "exact", id="e1"), code, mk(1, "numeric", id="absent")]
    outputs = {
        "n1": ModelOutput("n1", "2+2 = 4"),
        "e1": ModelOutput("e1", "Rome"),
        "c1": ModelOutput("c1", "    return a + b\n"),
    }
    got = verify_outputs(items, outputs, workers=2, timeout_s=10)
    assert list(got) == ["n1", "e1", "c1"]
    assert got["n1"].passed and not got["e1"].passed and got["c1"].passed
    assert got["c1"].answer == "pass"


def test_code_failure_signatures_are_comparable():
    def code_item(i):
        return Item(
            id=f"c{i}",
            prompt="def inc(x):\n",
            reference=None,
            verifier="code",
            tests="def check(f):\n    assert f(1) == 2\n",
            entry_point="inc",
        )

    items = [code_item(i) for i in range(4)]
    outputs = {
        "c0": ModelOutput("c0", "    return x\n"),
        "c1": ModelOutput("c1", "    return x + 2\n"),
        "c2": ModelOutput("c2", "    return undefined_name\n"),
        "c3": ModelOutput("c3", "    return (\n"),
    }
    got = verify_outputs(items, outputs, workers=2, timeout_s=10)
    assert [got[f"c{i}"].answer for i in range(4)] == [
        "AssertionError",
        "AssertionError",
        "NameError",
        "SyntaxError",
    ]
    assert not any(v.passed for v in got.values())
