"""Chance baselines for "the student gave the teacher's same wrong answer".

Two independent models that are both wrong on an item still agree on the wrong answer
sometimes: the answer space may be small (a choice among four, yes/no), both may fall back
on one default ("0", an empty stub), or an item may have an attractive slip. Each function
here estimates one of these chance rates from items *other* than the one compared, so that
genuine copying on the same item is not part of the baseline.

Code outputs are compared as programs: :func:`code_completion` removes the prompt's lines
from the normalised code, and :func:`same_code` calls two completions the same program when
both are non-trivial and nearly identical.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from distill_doctor.data.records import Item
from distill_doctor.text import text_features as tf

CODE_SIMILARITY = 0.9  # word 3-gram Jaccard of two completions
MIN_CODE_WORDS = 8  # shorter completions are stubs ("pass", "return None") that coincide by chance


def code_completion(item: Item, text: str) -> str:
    """The normalised code an output adds to its item's prompt (prompt lines removed)."""
    prompt_lines = set(tf.normalised_code(item.prompt).splitlines())
    return "\n".join(line for line in tf.normalised_code(text).splitlines() if line not in prompt_lines)


def same_code(a: str, b: str) -> bool:
    """Two completions are "the same program": both non-trivial and nearly identical."""
    if min(tf.word_count(a), tf.word_count(b)) < MIN_CODE_WORDS:
        return False  # stubs ("pass", "return None", empty) coincide by chance
    return tf.ngram_jaccard(a, b, 3) >= CODE_SIMILARITY


def global_chance(t_ans: list[str], s_ans: list[str]) -> float:
    """Share of (student answer of i, teacher answer of j), over all i != j, that match.

    High when both models fall back on the same default wrong answer ("0", "none")."""
    m = len(t_ans)
    if m < 2:
        return 0.0
    ct, cs = Counter(t_ans), Counter(s_ans)
    same_item = sum(1 for a, b in zip(t_ans, s_ans) if a == b)
    return (sum(c * ct.get(a, 0) for a, c in cs.items()) - same_item) / (m * (m - 1))


@dataclass(frozen=True)
class CodePair:
    """One both-wrong code item: each model's completion (:func:`code_completion`) and failure
    signature (the verdict's answer, e.g. "AssertionError")."""

    teacher: str
    student: str
    teacher_signature: str
    student_signature: str


def code_chance(pairs: Sequence[CodePair], seed: int, max_pairs: int = 2000) -> float:
    """Chance that a student completion matches the teacher's completion of a *different* item:
    the share of up to ``max_pairs`` random pairs (i, j != i) with the same signature and the same
    program (:func:`same_code`)."""
    m = len(pairs)
    if m < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    i = rng.integers(0, m, size=min(max_pairs, m * (m - 1)))
    j = (i + rng.integers(1, m, size=i.size)) % m  # j != i
    hits = sum(
        pairs[a].student_signature == pairs[b].teacher_signature
        and same_code(pairs[a].student, pairs[b].teacher)
        for a, b in zip(i.tolist(), j.tolist())
    )
    return hits / i.size


MIN_CROSS_PAIRS = 30  # fewer comparable pairs estimate nothing


def cross_item_chance(
    ref_of: list[str], t_ans: list[str], s_ans: list[str], groups: list[str] | None = None
) -> tuple[float, int]:
    """Share of (student answer of i, teacher answer of j) that match, over pairs i != j with the
    same reference from *different* problems.

    ``groups``: the problem each position belongs to (SPEC ``group``; variants of one problem share
    it). Variants of one problem (an original and its distractor version) are the same problem, so
    a shared wrong answer between them is no evidence of chance. Returns ``(rate, pairs)``; with
    fewer than ``MIN_CROSS_PAIRS`` comparable pairs the rate is 0 (no estimate).
    """
    groups = groups if groups is not None else [f"#{p}" for p in range(len(ref_of))]
    by_ref: dict[str, list[int]] = defaultdict(list)
    for pos, r in enumerate(ref_of):
        by_ref[r].append(pos)
    matches, pairs = 0, 0
    for positions in by_ref.values():
        if len(positions) < 2:
            continue
        k, n = _matches_across_groups(positions, t_ans, s_ans, groups)
        matches, pairs = matches + k, pairs + n
    if pairs < MIN_CROSS_PAIRS:
        return 0.0, pairs
    return matches / pairs, pairs


def _matching_pairs(positions: list[int], t_ans: list[str], s_ans: list[str]) -> int:
    """Ordered pairs (i, j) of ``positions``, i == j included, where student i's answer is teacher j's."""
    ct = Counter(t_ans[p] for p in positions)
    cs = Counter(s_ans[p] for p in positions)
    return sum(c * ct.get(a, 0) for a, c in cs.items())


def _matches_across_groups(
    positions: list[int], t_ans: list[str], s_ans: list[str], groups: list[str]
) -> tuple[int, int]:
    """(matching pairs, pairs) among ``positions`` (one reference), pairs within a group left out."""
    by_group: dict[str, list[int]] = defaultdict(list)
    for p in positions:
        by_group[groups[p]].append(p)
    within = [_matching_pairs(members, t_ans, s_ans) for members in by_group.values()]
    within_pairs = sum(len(members) ** 2 for members in by_group.values())
    return (
        _matching_pairs(positions, t_ans, s_ans) - sum(within),
        len(positions) ** 2 - within_pairs,
    )


_OPTION = re.compile(r"^\s*\(?([A-Ja-j])[.):]\s", re.M)
DEFAULT_OPTIONS = 4


def options_in_prompt(prompt: str) -> int:
    """How many lettered options (``A.``, ``(B)``, ``C)``, ``D:`` at a line start) a prompt lists."""
    return len({m.upper() for m in _OPTION.findall(prompt)})


def choice_chance(items: list[Item], floor: float) -> float:
    """Mean per-item chance of a shared wrong answer over ``items`` (the both-wrong items).

    A choice item with K options gives 1 / (K - 1) (two independent wrong picks among the K - 1
    wrong options; K = the choices an lm-eval document offered (``Item.n_choices``), else counted in
    the prompt, ``DEFAULT_OPTIONS`` when none is found: two-choice piqa gives 1.0); any other
    item gives ``floor``. Counting the letters seen across items instead would make two letters
    look like a two-option question and the chance 1.0.
    """
    if not items:
        return 0.0
    per = [
        1.0 / max(1, (it.n_choices or options_in_prompt(it.prompt) or DEFAULT_OPTIONS) - 1)
        if it.verifier_kind == "choice"
        else floor
        for it in items
    ]
    return sum(per) / len(per)
