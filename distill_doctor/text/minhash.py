"""MinHash/LSH near-duplicate search (datasketch 2.0), shared by ``generate``'s near-dedup
(:mod:`distill_doctor.produce.dedup`), the data-quality probe (:mod:`near_duplicates`) and the
contamination index (:mod:`overlap`).

The pattern all three follow: shingle each text into a set, sketch the sets with
``MinHash.bulk`` under the explicit ``affine32`` scheme (datasketch 2.0's default; 1.x sketches
used ``legacy`` and are not comparable), query the LSH index at a threshold *below* the decision
threshold (LSH recall near its own threshold is poor) and confirm every candidate with the exact
Jaccard of the shingle sets. :func:`record` is how each of them states its settings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from datasketch import MinHash

from distill_doctor.text.text_features import ngrams

LIBRARY = "datasketch"
SCHEME = "affine32"  # datasketch >= 2.0 default, stated explicitly


def word_shingles(words: list[str], n: int) -> set[str]:
    """Word ``n``-grams joined by spaces; a text shorter than ``n`` words is one shingle (none if empty)."""
    return {" ".join(g) for g in ngrams(words, n)}


def lsh_threshold(threshold: float, margin: float = 0.2) -> float:
    """The LSH query threshold for decision ``threshold``: ``margin`` lower, at least 0.3."""
    return round(max(0.3, threshold - margin), 6)


def sketches(
    sets: Sequence[Iterable], *, num_perm: int, hashfunc: Callable | None = None, seed: int = 1
) -> list[MinHash]:
    """One MinHash per shingle set (``hashfunc`` maps a shingle to 32 bits; datasketch's
    ``sha1_hash32`` of bytes when None)."""
    extra = {} if hashfunc is None else {"hashfunc": hashfunc}
    return MinHash.bulk([list(s) for s in sets], num_perm=num_perm, seed=seed, scheme=SCHEME, **extra)


def exact_jaccard(a: set, b: set) -> float:
    """|a & b| / |a | b|; two empty sets are identical (1.0)."""
    if not a and not b:
        return 1.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def confirmed(
    candidates: Iterable, shingles: set, sets: Sequence[set] | dict[Any, set], threshold: float
) -> list[tuple[Any, float]]:
    """``(candidate, Jaccard)`` for the LSH candidates whose exact Jaccard with ``shingles`` is at
    least ``threshold``, in candidate order."""
    out = []
    for key in candidates:
        jac = exact_jaccard(shingles, sets[key])
        if jac >= threshold:
            out.append((key, jac))
    return out


def record(*, num_perm: int, hashfunc: str, **settings: Any) -> dict[str, Any]:
    """What a report or manifest states about a MinHash search to make it reproducible."""
    return {**settings, "num_perm": num_perm, "library": LIBRARY, "scheme": SCHEME, "hashfunc": hashfunc}
