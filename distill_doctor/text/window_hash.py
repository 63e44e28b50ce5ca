"""Vectorised hashing of every fixed-length window of a token-id sequence (numpy, 64-bit).

For ids a_0..a_{N-1} (small ints, 0 = out of vocabulary), a random table R and an odd base B,

    h(i, L) = sum_{k < L} R[a_{i+k}] * B**k   (mod 2**64)

computed for all i at once from prefix sums S[j] = sum_{t < j} R[a_t] * B**t:
h(i, L) = (S[i+L] - S[i]) * B**-i (B is odd, hence invertible mod 2**64). One prefix pass serves
every window length (13-grams, 5-word shingles, whole short items). Equal windows hash equal;
different windows collide with probability about 2**-64 per pair, and callers confirm hits by
exact comparison where it matters.
"""

from __future__ import annotations

import numpy as np

BITMAP_BITS = 24  # membership prefilter: 16 M booleans (16 MB) indexed by the top hash bits


class WindowHasher:
    """Window hashes over ids in ``[0, vocab_size]`` (seeded, reproducible)."""

    def __init__(self, vocab_size: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        with np.errstate(over="ignore"):
            self.rand = rng.integers(0, 2**63, size=vocab_size + 1, dtype=np.uint64) * np.uint64(
                2
            ) + np.uint64(1)
        self.base = int(rng.integers(2**40, 2**62)) * 2 + 1
        self.base_inv = pow(self.base, -1, 1 << 64)
        self._n = 0
        self._ensure(1 << 16)

    def _ensure(self, n: int) -> None:
        if n <= self._n:
            return
        n = max(n, 2 * self._n)
        b = np.full(n + 1, self.base, dtype=np.uint64)
        bi = np.full(n + 1, self.base_inv, dtype=np.uint64)
        b[0] = bi[0] = 1
        with np.errstate(over="ignore"):
            self.pow = np.cumprod(b, dtype=np.uint64)
            self.pow_inv = np.cumprod(bi, dtype=np.uint64)
        self._n = n

    def prefix(self, ids: np.ndarray) -> np.ndarray:
        """(N,) int ids -> (N + 1,) uint64 prefix sums."""
        self._ensure(len(ids) + 1)
        s = np.zeros(len(ids) + 1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            np.cumsum(self.rand[ids] * self.pow[: len(ids)], dtype=np.uint64, out=s[1:])
        return s

    def windows(self, s: np.ndarray, length: int) -> np.ndarray:
        """Prefix sums (N + 1,) -> (N - length + 1,) hashes of the windows starting at 0, 1, ..."""
        n = len(s) - length
        if n <= 0:
            return np.empty(0, dtype=np.uint64)
        with np.errstate(over="ignore"):
            return (s[length : length + n] - s[:n]) * self.pow_inv[:n]

    def of_tuples(self, keys: list[tuple[int, ...]]) -> np.ndarray:
        """Hashes of equal-length id tuples (the same values :meth:`windows` gives)."""
        arr = np.asarray(keys, dtype=np.int64)
        if arr.size == 0:
            return np.empty(0, dtype=np.uint64)
        with np.errstate(over="ignore"):
            return (self.rand[arr] * self.pow[: arr.shape[1]]).sum(axis=1, dtype=np.uint64)


def bitmap(hashes: np.ndarray) -> np.ndarray:
    """Prefilter for :func:`member`: True at the top ``BITMAP_BITS`` bits of every hash."""
    bm = np.zeros(1 << BITMAP_BITS, dtype=bool)
    bm[(hashes >> np.uint64(64 - BITMAP_BITS)).view(np.int64)] = True
    return bm


def member(h: np.ndarray, sorted_hashes: np.ndarray, bm: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask: which of ``h`` occur in ``sorted_hashes`` (sorted, unique)."""
    out = np.zeros(len(h), dtype=bool)
    if len(sorted_hashes) == 0 or len(h) == 0:
        return out
    cand = (
        np.arange(len(h))
        if bm is None
        else np.flatnonzero(bm[(h >> np.uint64(64 - BITMAP_BITS)).view(np.int64)])
    )
    hc = h[cand]
    pos = np.minimum(np.searchsorted(sorted_hashes, hc), len(sorted_hashes) - 1)
    out[cand[sorted_hashes[pos] == hc]] = True
    return out


def items_per_hash(h: np.ndarray, item: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct hashes and, for each, the number of distinct items it occurs in."""
    if len(h) == 0:
        return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64)
    order = np.lexsort((item, h))
    hs, its = h[order], item[order]
    first = np.ones(len(hs), dtype=bool)
    first[1:] = (hs[1:] != hs[:-1]) | (its[1:] != its[:-1])
    return np.unique(hs[first], return_counts=True)
