"""Exact and near-duplicate removal over training rows ``(prompt, response)``; the first copy is kept.

- exact: the rows' prompt and response are equal after Unicode case-folding and collapsing
  whitespace.
- near: the Jaccard similarity of the rows' token shingles (``shingle`` consecutive tokens of
  prompt + response, punctuation characters kept as tokens so that ``12+5`` and ``12-5`` stay
  different) is at least ``threshold``. Candidates come from a datasketch MinHash LSH queried
  at a lower threshold (``threshold - 0.2``, at least 0.3: the LSH misses pairs near its own
  threshold) and every candidate is confirmed with the exact Jaccard. Rows shorter than one
  shingle are compared as one whole-text shingle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

from datasketch import MinHashLSH

from distill_doctor.text import minhash
from distill_doctor.text.overlap import tokens

MINHASH_SCHEME = minhash.SCHEME


def exact_key(prompt: str, response: str) -> str:
    """Case-folded, whitespace-collapsed ``prompt \\x00 response``."""
    return " ".join(prompt.casefold().split()) + "\x00" + " ".join(response.casefold().split())


def exact_duplicates(rows: Sequence[tuple[str, str]]) -> dict[int, int]:
    """``{row: first row it duplicates}`` for every exact duplicate after the first copy."""
    first: dict[str, int] = {}
    dupes: dict[int, int] = {}
    for i, (prompt, response) in enumerate(rows):
        key = exact_key(prompt, response)
        if key in first:
            dupes[i] = first[key]
        else:
            first[key] = i
    return dupes


def _shingles(text: str, size: int) -> set[bytes]:
    grams = minhash.word_shingles(tokens(text, "keep"), size)
    return {blake2b(g.encode("utf-8"), digest_size=8).digest() for g in grams}


def _hash32(value: bytes) -> int:
    return int.from_bytes(value[:4], "little")


@dataclass(frozen=True)
class NearDedup:
    """Near-duplicate settings; :meth:`params` is what the manifest records."""

    threshold: float = 0.85
    shingle: int = 3
    num_perm: int = 128

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {self.threshold}")
        if self.shingle < 1 or self.num_perm < 16:
            raise ValueError("shingle must be >= 1 and num_perm >= 16")

    @property
    def lsh_threshold(self) -> float:
        return minhash.lsh_threshold(self.threshold)

    def params(self) -> dict[str, Any]:
        return minhash.record(
            similarity="Jaccard of token shingles of prompt + response (exact, after MinHash/LSH candidates)",
            tokens="lowercase words, each ASCII punctuation character a token",
            shingle=self.shingle,
            threshold=self.threshold,
            lsh_threshold=self.lsh_threshold,
            num_perm=self.num_perm,
            hashfunc="first 4 bytes (little-endian) of the shingle's 8-byte blake2b",
        )

    def duplicates(self, rows: Sequence[tuple[str, str]]) -> dict[int, tuple[int, float]]:
        """``{row: (earlier kept row, Jaccard)}`` for rows near-duplicating an earlier kept row.

        Rows are visited in order; a row is compared only against rows kept so far, so chains
        (a ~ b ~ c with a !~ c) keep a and c.
        """
        sets = [_shingles(f"{p}\n{r}", self.shingle) for p, r in rows]
        sketches = minhash.sketches(sets, num_perm=self.num_perm, hashfunc=_hash32)
        lsh = MinHashLSH(threshold=self.lsh_threshold, num_perm=self.num_perm)
        dupes: dict[int, tuple[int, float]] = {}
        for i, (st, sketch) in enumerate(zip(sets, sketches)):
            best: tuple[int, float] | None = None
            if st:
                for j, jac in minhash.confirmed(lsh.query(sketch), st, sets, self.threshold):
                    if best is None or (jac, -j) > (best[1], -best[0]):
                        best = (j, jac)
            if best is not None:
                dupes[i] = best
            elif st:
                lsh.insert(i, sketch)
        return dupes
