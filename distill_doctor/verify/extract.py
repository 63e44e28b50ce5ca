"""Final-answer extraction, as the verifiers' public API.

The code lives in :mod:`distill_doctor.data.answers`, one layer down, because the loaders need it
as well (to check a reference against its verifier while reading the items file).
"""

from distill_doctor.data.answers import (
    KINDS,
    REASONING_TAGS,
    answer_text,
    boxed_contents,
    canonical_exact,
    cut_off_in_reasoning,
    extract_answer,
    iter_numbers,
    marked_answers,
    parse_choice,
    parse_number,
    raw_final_answer,
)

__all__ = [
    "KINDS",
    "REASONING_TAGS",
    "answer_text",
    "boxed_contents",
    "canonical_exact",
    "cut_off_in_reasoning",
    "extract_answer",
    "iter_numbers",
    "marked_answers",
    "parse_choice",
    "parse_number",
    "raw_final_answer",
]
