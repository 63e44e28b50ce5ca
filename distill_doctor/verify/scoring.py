"""Scoring items that carry several samples (R1-style evaluation): pass@1, maj@k, pass@k.

- pass@1: the mean over items of the share of an item's samples that passed (``Judgement.score``).
- maj@k: the share of items whose majority answer is correct. Votes are the samples' canonical
  answers (``Judgement.answer``: the number, the case-folded text, the letter, SymPy's form for
  ``math``, the outcome signature for ``code``); samples without an answer do not vote, and an
  item where no sample has one counts wrong. A tie goes to the answer that appeared first in
  sample order, so the result does not depend on anything but the samples and their order.
  The winning answer is correct when the first sample that gave it passed. Equivalent answers
  written differently (``1/sqrt(2)`` and ``sqrt(2)/2``) are different votes.
- pass@k: the unbiased estimator of Chen et al. (2021), ``1 - C(n - c, k) / C(n, k)`` per item
  with ``n`` samples of which ``c`` passed, averaged over items; reported for k = 1, 2, 4, ...
  up to the smallest sample count, and that count itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from math import comb
from typing import Any

from distill_doctor.data.records import Judgement

TIE_BREAK = "earliest first appearance in sample order"


def majority_vote(verdict: Judgement) -> Judgement | None:
    """The verdict of the first sample that gave the majority answer, or None when no sample answered."""
    votes: dict[str, int] = {}
    first: dict[str, Judgement] = {}
    for sample in verdict.samples or (verdict,):
        if sample.answer is None:
            continue
        votes[sample.answer] = votes.get(sample.answer, 0) + 1
        first.setdefault(sample.answer, sample)
    if not votes:
        return None
    most = max(votes.values())
    winner = next(answer for answer, count in votes.items() if count == most)  # dicts keep first-seen order
    return first[winner]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one item: ``n`` samples, ``c`` passed (Chen et al. 2021)."""
    if not 0 < k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 < k <= n and 0 <= c <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def k_values(k_min: int) -> list[int]:
    """1, 2, 4, ... up to ``k_min``, and ``k_min`` itself."""
    ks, k = [], 1
    while k <= k_min:
        ks.append(k)
        k *= 2
    return sorted(set(ks) | {k_min})


def is_multi_sample(verdicts: Mapping[str, Judgement] | None, ids: Sequence[str]) -> bool:
    return verdicts is not None and any(verdicts[i].n_samples > 1 for i in ids)


def summarize(verdicts: Mapping[str, Judgement], ids: Sequence[str]) -> dict[str, Any]:
    """pass@1, first-sample accuracy, maj@k and pass@k over ``ids`` (each item at its own sample count)."""
    if not ids:
        return {"n": 0}
    vs = [verdicts[i] for i in ids]
    ns = [v.n_samples for v in vs]
    cs = [round(v.score * v.n_samples) for v in vs]
    k_min = min(ns)
    majority = [majority_vote(v) for v in vs]
    return {
        "n": len(vs),
        "samples_min": k_min,
        "samples_max": max(ns),
        "pass_at_1": sum(v.score for v in vs) / len(vs),
        "first_sample": sum(v.passed for v in vs) / len(vs),
        "maj_at_k": sum(m is not None and m.passed for m in majority) / len(vs),
        "pass_at_k": {
            str(k): sum(pass_at_k(n, c, k) for n, c in zip(ns, cs)) / len(vs) for k in k_values(k_min)
        },
    }
