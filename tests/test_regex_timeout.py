"""Regex verifiers cannot hang: catastrophic backtracking ends in a failed match with a note."""

from __future__ import annotations

import time

from distill_doctor.data.records import Item
from distill_doctor.verify import verify
from distill_doctor.verify.verifiers import _verify_regex


def _item(pattern: str) -> Item:
    return Item(id="r", prompt="p", reference="x", verifier=f"regex:{pattern}", tags={})


def test_catastrophic_pattern_times_out_as_a_failed_match():
    start = time.perf_counter()
    v = _verify_regex(_item("(a|aa)+$"), "a" * 40 + "b", timeout_s=0.2)
    assert not v.passed and "timed out after 0.2 s" in v.reason
    assert time.perf_counter() - start < 15  # the limit is checked periodically; minutes without it


def test_the_issue_pattern_is_quick_and_ordinary_patterns_still_match():
    v = verify(_item("(a+)+$"), "a" * 40 + "b")
    assert v.passed is False and "neither" in v.reason
    assert verify(_item(r"^\d{3}$"), "The answer is 123").passed
