"""The teacher-vs-student failure table: where each model is right or wrong, item by item."""

from __future__ import annotations

from typing import Any

from distill_doctor.data.records import Judgement

CATEGORIES = (
    "both_right",
    "only_teacher_right",
    "only_student_right",
    "both_wrong_same",
    "both_wrong_different",
)


def categorise(teacher: Judgement, student: Judgement) -> str:
    """One item's category. Two wrong answers are "the same" only when both were extracted and equal."""
    if teacher.passed and student.passed:
        return "both_right"
    if teacher.passed:
        return "only_teacher_right"
    if student.passed:
        return "only_student_right"
    if teacher.answer is not None and teacher.answer == student.answer:
        return "both_wrong_same"
    return "both_wrong_different"


def failure_table(
    ids: list[str],
    teacher: dict[str, Judgement],
    student: dict[str, Judgement],
    *,
    max_examples: int = 5,
) -> dict[str, Any]:
    """Counts per category over ``ids`` (items both models were scored on), with example ids."""
    counts = dict.fromkeys(CATEGORIES, 0)
    examples: dict[str, list[str]] = {c: [] for c in CATEGORIES}
    for item_id in ids:
        cat = categorise(teacher[item_id], student[item_id])
        counts[cat] += 1
        if len(examples[cat]) < max_examples:
            examples[cat].append(item_id)
    return {"n": len(ids), "counts": counts, "examples": examples}
