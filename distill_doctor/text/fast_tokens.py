"""Compiled tokeniser for ASCII text: the ids of :func:`overlap.tokens` without a Python object per word.

The scan's floor in pure Python is one string object and one dict lookup per word (about 60 ns,
7 us a training row). Here a whole batch of texts, encoded as one ASCII byte buffer, is split,
normalised and looked up in one numba loop:

- every byte is classified by tables built from Python itself (``str.isspace``, ``str.lower`` and
  ``string.punctuation`` on the 128 ASCII characters), so the rules are those of
  :func:`overlap.tokens` by construction: lower-case; whitespace ends a token; in ``delete`` mode a
  punctuation character is dropped (``foo-bar`` gives ``foobar``), in ``keep`` mode it ends the
  token and is a token of its own;
- each token is looked up in :class:`ByteVocab`, an open-addressing hash table over the UTF-8
  bytes of the vocabulary, **with an exact byte comparison** on every probe: the hash only picks
  the slot, so a word outside the vocabulary gets the out-of-vocabulary id 0 whatever its hash
  (no hash collision, between two vocabulary words or between an unknown word and a vocabulary
  word, can give a wrong id; the hash needs no secret and no agreement between processes, since
  each process probes its own copy of the table);
- in the same pass, each window of the word stream is hashed as :mod:`window_hash` does and
  tested against the anchor runs of the overlap index's prefilter (:class:`RunTable`). A 64-bit
  collision there can only keep one more row for the full rules, which confirm every hit on the
  ids themselves: it cannot make a hit.

Only ASCII text takes this path (the caller checks ``str.isascii``, which CPython answers without
reading the string): outside ASCII, lower-casing can change length or depend on context (``İ``,
final ``Σ``), a non-ASCII character can lower-case to an ASCII one (the Kelvin sign), and ``\\s``
holds Unicode spaces; such rows keep the Python path.

The compiled functions are cached on disk (numba writes them to ``__pycache__`` next to this file,
else to ``NUMBA_CACHE_DIR`` or its user-wide cache; where none is writable they are compiled in
each process) and compiled, or loaded, by :func:`warm_up` before scan workers fork. Measured here:
the first compile in a fresh clone takes 2-5 s (2 shared cores), a load from the cache 0.2-0.3 s.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from numba import njit

from distill_doctor.text.window_hash import BITMAP_BITS, WindowHasher

# Byte classes of the 128 ASCII characters, from Python's own definitions.
WORD, SPACE, PUNCT = 0, 1, 2
_CLASS = np.array(
    [SPACE if chr(c).isspace() else PUNCT if chr(c) in string.punctuation else WORD for c in range(128)],
    dtype=np.uint8,
)
_LOWER = np.frombuffer(bytes(range(128)).decode("ascii").lower().encode("ascii"), dtype=np.uint8).copy()
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def _jit(inline: Literal["never", "always"] = "never") -> Callable[[Callable], Any]:
    """``numba.njit`` with the on-disk cache; without it where numba finds no writable cache folder
    (a read-only install and no writable ``NUMBA_CACHE_DIR`` or home: numba would refuse at import)."""

    def wrap(fn: Callable) -> Any:
        try:
            return njit(cache=True, inline=inline)(fn)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            return njit(inline=inline)(fn)

    return wrap


class ByteVocab:
    """An exact lookup table from a token's UTF-8 bytes to its id (open addressing, linear probing).

    ``keys``/``key_start``/``key_len``: the vocabulary's bytes, concatenated; ``slots``: for each of
    a power-of-two number of slots (at least twice the vocabulary), the index of the key stored
    there or -1; ``ids``: each key's id. A lookup hashes the bytes (64-bit FNV-1a), walks the slots
    from ``hash & mask`` until an empty one, and returns the id of the key whose bytes are equal,
    else 0.
    """

    def __init__(self, vocab: dict[str, int]) -> None:
        encoded = [w.encode("utf-8") for w in vocab]
        self.ids = np.fromiter(vocab.values(), dtype=np.int64, count=len(vocab))
        self.key_len = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        self.key_start = np.cumsum(self.key_len) - self.key_len
        self.keys = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
        size = 1 << max(4, (2 * len(vocab)).bit_length())
        self.slots = _fill_slots(self.keys, self.key_start, self.key_len, size)

    def lookup(self, word: str) -> int:
        """The id of one word (0 when absent): the compiled probe, for tests and single words."""
        data = np.frombuffer(word.encode("utf-8"), dtype=np.uint8)
        return int(_probe(data, 0, len(data), self.keys, self.key_start, self.key_len, self.slots, self.ids))


@_jit(inline="always")
def _fnv1a(data, lo, hi):  # pragma: no cover - compiled
    h = _FNV_OFFSET
    for k in range(lo, hi):
        h = (h ^ np.uint64(data[k])) * _FNV_PRIME
    return h


@_jit()
def _fill_slots(keys, key_start, key_len, size):  # pragma: no cover - compiled
    slots = np.full(size, -1, dtype=np.int64)
    mask = size - 1
    for k in range(len(key_start)):
        s = np.int64(_fnv1a(keys, key_start[k], key_start[k] + key_len[k]) & np.uint64(mask))
        while slots[s] != -1:
            s = (s + 1) & mask
        slots[s] = k
    return slots


@_jit(inline="always")
def _probe(data, lo, hi, keys, key_start, key_len, slots, ids):  # pragma: no cover - compiled
    """The id of the token ``data[lo:hi]``: exact byte comparison with every key met, 0 if none equals."""
    mask = len(slots) - 1
    s = np.int64(_fnv1a(data, lo, hi) & np.uint64(mask))
    n = hi - lo
    while slots[s] != -1:
        k = slots[s]
        if key_len[k] == n:
            a = key_start[k]
            same = True
            for j in range(n):
                if keys[a + j] != data[lo + j]:
                    same = False
                    break
            if same:
                return ids[k]
        s = (s + 1) & mask
    return 0


@_jit()
def _ascii_ids(
    buf, text_ends, keep, cls, lower, punct_ids, keys, key_start, key_len, slots, ids, runs
):  # pragma: no cover
    """Token ids of the texts ``buf[text_ends[t - 1]:text_ends[t]]`` (ASCII bytes), concatenated, the
    number of tokens of each text, and the positions where a run of ``runs`` (a :class:`RunTable`'s
    arrays) starts. ``keep``: punctuation characters are tokens (their ids in ``punct_ids``), else
    deleted. One loop, the probe of :func:`_probe` written out (a call per token costs more than the
    lookup itself: numba counts references to every array it passes)."""
    free, rand, powers, bits, run_hashes, short_key, g_n, g_offset, g_lo, g_hi, g_hashes = runs
    run_len = len(powers) if len(rand) else 0  # no table: no runs searched
    mask = len(slots) - 1
    # Sized for the worst case (a token per byte), never grown: an array reassigned inside the loop
    # costs numba reference counting on every access (measured 3x slower). Pages never written are
    # never touched, so the resident memory is that of the tokens (8 bytes each), not of the bytes.
    out = np.empty(len(buf), dtype=np.int64)
    found = np.zeros(len(buf), dtype=np.bool_)  # at each token position: does a run start there
    counts = np.zeros(len(text_ends), dtype=np.int64)
    word = np.empty(len(buf) + 1, dtype=np.uint8)  # the current token, lower-cased
    ring_r = np.zeros(8, dtype=np.uint64)  # the last 8 words: random value, token position, key flag
    ring_p = np.zeros(8, dtype=np.int64)
    ring_k = np.zeros(8, dtype=np.bool_)
    m = 0  # words so far (tokens less prose punctuation), across texts as on the numpy path
    recent = 0  # > 0 while a key word of the short runs is among the last run_len words
    n = 0
    done = 0  # tokens already pushed through the run search
    lo = 0
    for t in range(len(text_ends)):
        hi = text_ends[t]
        first = n
        w = 0
        h = _FNV_OFFSET
        for k in range(lo, hi + 1):  # k == hi: the end of the text ends the last token
            c = cls[buf[k]] if k < hi else SPACE
            if c == WORD:
                x = lower[buf[k]]
                word[w] = x
                w += 1
                h = (h ^ np.uint64(x)) * _FNV_PRIME
                continue
            if c == PUNCT and not keep:
                continue  # deleted: the word around it goes on
            if w:
                hit = 0
                s = np.int64(h & np.uint64(mask))
                while slots[s] >= 0:
                    key = slots[s]
                    if key_len[key] == w:
                        a = key_start[key]
                        j = 0
                        while j < w and keys[a + j] == word[j]:
                            j += 1
                        if j == w:
                            hit = ids[key]
                            break
                    s = (s + 1) & mask
                out[n] = hit
                n += 1
                w = 0
                h = _FNV_OFFSET
            if c == PUNCT:
                out[n] = punct_ids[buf[k]]
                n += 1
            while run_len and done < n:  # the new tokens, through the run search
                x = out[done]
                if not free[x]:
                    slot = m & 7
                    ring_r[slot], ring_p[slot], ring_k[slot] = rand[x], done, short_key[x]
                    m += 1
                    recent = run_len if short_key[x] else recent - 1  # a key word among the last ones
                    if m >= run_len:  # the run_len-word window ending here
                        start = m - run_len
                        v = np.uint64(0)
                        for i in range(run_len):
                            v += ring_r[(start + i) & 7] * powers[i]
                        top = v >> np.uint64(64 - BITMAP_BITS)
                        if bits[top >> np.uint64(6)] & (np.uint64(1) << (top & np.uint64(63))):
                            q = np.searchsorted(run_hashes, v)
                            if q < len(run_hashes) and run_hashes[q] == v:
                                found[ring_p[start & 7]] = True
                    for g in range(len(g_n) if recent > 0 else 0):  # shorter runs ending here, key in place
                        start = m - g_n[g]
                        if start < 0 or not ring_k[(start + g_offset[g]) & 7]:
                            continue
                        v = np.uint64(0)
                        for i in range(g_n[g]):
                            v += ring_r[(start + i) & 7] * powers[i]
                        q = g_lo[g] + np.searchsorted(g_hashes[g_lo[g] : g_hi[g]], v)
                        if q < g_hi[g] and g_hashes[q] == v:
                            found[ring_p[start & 7]] = True
                done += 1
        counts[t] = n - first
        lo = hi
    return out, n, counts, found


class RunTable:
    """Word runs to find while tokenising (the anchor prefilter of :class:`overlap.OverlapIndex`).

    ``runs``: sorted :class:`window_hash.WindowHasher` hashes of runs of ``run_len`` words (at most
    8); ``short``: for shorter runs, ``{(length, offset): sorted hashes}``, looked for where their
    key word (``short_key[id]``) is ``offset`` words into the run. Words are the tokens whose id is
    not ``free``. The kernel reports the token position where each found run starts, exactly as the
    numpy path (prefix sums and :func:`window_hash.member` over the batch's word stream) does: a
    window's hash is the same polynomial ``sum_k rand[a_(i+k)] * base**k`` (mod 2**64), summed
    directly over the last 8 words; membership is exact (a bitmap of the top bits, then a binary
    search); the word stream runs on across texts and rows, as on the numpy path.
    """

    def __init__(self, hasher: WindowHasher, run_len: int, runs: np.ndarray, free: np.ndarray, short_key: np.ndarray,
                 short: dict[tuple[int, int], np.ndarray]) -> None:  # fmt: skip
        if run_len > 8 or any(n > run_len for n, _ in short):
            raise ValueError("runs of at most 8 words")
        groups = sorted(short)
        sizes = np.asarray([len(short[g]) for g in groups], dtype=np.int64)
        hi = np.cumsum(sizes)
        runs = np.ascontiguousarray(runs, dtype=np.uint64)
        bits = np.zeros(1 << (BITMAP_BITS - 6), dtype=np.uint64)  # 2 MB: one bit per top-24-bit value
        top = (runs >> np.uint64(64 - BITMAP_BITS)).astype(np.int64)
        np.bitwise_or.at(bits, top >> 6, np.left_shift(np.uint64(1), (top & 63).astype(np.uint64)))
        self.arrays = (
            free.astype(np.bool_), hasher.rand, hasher.pow[:run_len].copy(), bits, runs,
            short_key.astype(np.bool_), np.asarray([g[0] for g in groups], dtype=np.int64),
            np.asarray([g[1] for g in groups], dtype=np.int64), hi - sizes, hi,
            np.concatenate([short[g] for g in groups]).astype(np.uint64) if groups else np.zeros(0, np.uint64),
        )  # fmt: skip


_NO_RUNS = (
    np.zeros(1, np.bool_), np.zeros(0, np.uint64), np.zeros(1, np.uint64), np.zeros(1, np.uint64),
    np.zeros(0, np.uint64), np.zeros(1, np.bool_), np.zeros(0, np.int64), np.zeros(0, np.int64),
    np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint64),
)  # fmt: skip


class AsciiTokenizer:
    """The ids of :func:`overlap.tokens` for ASCII texts, looked up in a vocabulary (absent: 0)."""

    def __init__(self, vocab: dict[str, int], punctuation: str) -> None:
        if punctuation not in ("delete", "keep"):
            raise ValueError("punctuation must be 'delete' or 'keep'")
        self.keep = punctuation == "keep"
        self.table = ByteVocab(vocab)
        self.punct_ids = np.asarray([vocab.get(chr(c), 0) for c in range(128)], dtype=np.int64)

    def ids(self, joined: str, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of ``texts`` (``joined`` is ``"".join(texts)``, ASCII), concatenated, and the token
        count of each text."""
        ids, counts, _ = self.ids_and_runs(joined, texts, None)
        return ids, counts

    def ids_and_runs(
        self, joined: str, texts: list[str], runs: RunTable | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`ids`, and the token positions where a run of ``runs`` starts, in order, each once
        (none when None)."""
        ends = np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)))
        t = self.table
        out, n, counts, found = _ascii_ids(
            np.frombuffer(joined.encode("ascii"), dtype=np.uint8), ends, self.keep, _CLASS, _LOWER,
            self.punct_ids, t.keys, t.key_start, t.key_len, t.slots, t.ids,
            _NO_RUNS if runs is None else runs.arrays,
        )  # fmt: skip
        return out[:n], counts, np.flatnonzero(found[:n])


def warm_up() -> None:
    """Compile (or load from the on-disk cache) the kernels, with the argument types the scan uses:
    call it before forking workers, so that each does not compile its own."""
    AsciiTokenizer({"a": 1}, "keep").ids("a bc", ["a b", "c"])


def kernel_record() -> dict[str, object]:
    """How this process got the scan kernel: signatures compiled here or loaded from numba's cache."""
    stats = _ascii_ids.stats
    return {
        "compiled": sum(stats.cache_misses.values()),
        "loaded_from_cache": sum(stats.cache_hits.values()),
        "cache_path": stats.cache_path,
    }
