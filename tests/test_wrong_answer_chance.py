"""The chance baselines of teacher_error_transfer, on small hand-counted cases."""

import pytest

from distill_doctor.data.records import Item
from distill_doctor.probes.wrong_answer_chance import (
    MIN_CROSS_PAIRS,
    CodePair,
    choice_chance,
    code_chance,
    code_completion,
    cross_item_chance,
    global_chance,
    options_in_prompt,
    same_code,
)

PROGRAM = "def add(a, b):\n    total = a + b\n    return total * 2 + 1 - a"
OTHER = "def add(a, b):\n    values = [a, b]\n    return sum(values) if values else None"


def test_global_chance_counts_cross_item_matches_only():
    # student 0 gives teacher 1's answer, student 1 gives teacher 0's: 2 of the 3 * 2 ordered pairs
    assert global_chance(["1", "2", "3"], ["2", "1", "9"]) == pytest.approx(1 / 3)
    # the same answer on the same item is no chance evidence
    assert global_chance(["1", "2", "3"], ["1", "2", "3"]) == 0.0
    assert global_chance(["0"], ["0"]) == 0.0  # one item estimates nothing


def test_cross_item_chance_needs_enough_pairs_from_other_problems():
    refs, same = ["5"] * 6, ["4"] * 6
    # six problems, one reference, everyone answers 4: 6 * 6 - 6 = 30 cross pairs, all matching
    assert MIN_CROSS_PAIRS == 30
    assert cross_item_chance(refs, same, same) == (1.0, 30)
    # the six are three problems with two variants each: 36 - 3 * 4 = 24 pairs, too few
    assert cross_item_chance(refs, same, same, ["a", "a", "b", "b", "c", "c"]) == (0.0, 24)
    # distinct answers that agree only on the same item: 0 of 30
    answers = [str(k) for k in range(6)]
    assert cross_item_chance(refs, answers, answers) == (0.0, 30)
    # items with different references are never compared
    assert cross_item_chance([str(k) for k in range(6)], same, same) == (0.0, 0)


def test_same_code_needs_non_trivial_nearly_identical_programs():
    assert same_code(PROGRAM, PROGRAM)
    assert not same_code(PROGRAM, OTHER)
    assert not same_code("pass", "pass")  # stubs coincide by chance


def test_code_completion_drops_the_prompts_lines():
    item = Item(id="c", prompt="def add(a, b):\n    # add them", reference=None, verifier="code")
    assert code_completion(item, f"```python\n{PROGRAM}\n```") == "total = a + b\nreturn total * 2 + 1 - a"


def test_code_chance_matches_program_and_signature_across_items():
    same = [CodePair(PROGRAM, PROGRAM, "AssertionError", "AssertionError")] * 4
    assert code_chance(same, seed=0) == 1.0
    other_signature = [CodePair(PROGRAM, PROGRAM, "AssertionError", "TypeError")] * 4
    assert code_chance(other_signature, seed=0) == 0.0
    stubs = [CodePair("pass", "pass", "AssertionError", "AssertionError")] * 4
    assert code_chance(stubs, seed=0) == 0.0
    assert code_chance(same[:1], seed=0) == 0.0  # one item estimates nothing


def test_choice_chance_is_one_over_wrong_options():
    four = Item(id="q1", prompt="Pick one", reference="A", verifier="choice", n_choices=4)
    listed = Item(id="q2", prompt="Pick one\nA. x\nB. y\nC. z", reference="A", verifier="choice")
    unknown = Item(id="q3", prompt="Pick one", reference="A", verifier="choice")
    numeric = Item(id="q4", prompt="2 + 2?", reference=4, verifier="numeric")
    assert options_in_prompt(listed.prompt) == 3
    assert choice_chance([four], 0.25) == pytest.approx(1 / 3)
    assert choice_chance([listed], 0.25) == pytest.approx(1 / 2)
    assert choice_chance([unknown], 0.25) == pytest.approx(1 / 3)  # DEFAULT_OPTIONS = 4
    assert choice_chance([four, numeric], 0.25) == pytest.approx((1 / 3 + 0.25) / 2)
    assert choice_chance([], 0.25) == 0.0
