"""Text overlap between an evaluation set and training text: exact n-grams, whole texts, near-duplicates.

The index is built over the EVALUATION side (thousands of items) and training rows (millions)
stream through :meth:`OverlapIndex.scan`. Four kinds of hit, each reported per training row:

- ``exact``: the row's prompt equals the item's prompt after normalisation (catches short prompts,
  which have no 13-grams at all; at least ``MIN_WHOLE_WORDS`` words).
- ``ngram``: word n-grams (13 by default, as GPT-3 and lm-eval's Janitor) shared with the item.
  The score is the Llama-2 style *coverage*: the share of the item's content tokens inside the
  n-grams it shares with this row; ``dirty`` when one row reaches ``dirty_coverage`` (0.8) and covers every number of the item (a re-told problem with other numbers is another problem).
- ``contained``: an item shorter than n words (but at least ``min_contained`` words) appears
  contiguously inside the row.
- ``near``: MinHash/LSH near-duplicates of the prompt (word shingles; dirty only when the row holds
  every number of the item), the LSH queried at a lower
  threshold than the decision threshold and every candidate confirmed with the exact Jaccard.
- ``edited``: the item, with at most ``EDIT_MAX`` (2) word edits and at most one per
  ``EDIT_WORDS_PER_EDIT`` (10) content words (words outside template shingles shared by many
  items), anywhere in the row (prompt or response). Words are the tokens
  other than prose punctuation (``, . ; : ! ? ' "``), so a re-punctuated copy has no edits, while
  symbols (``+ - = < (`` ...) stay words. Candidates share enough disjoint 5-word blocks of the item
  (an edit breaks at most one block), then a word alignment (difflib) counts the edits: per gap,
  the larger of the item's and the row's unmatched words. Dirty only when every number of the item
  is matched (another story's numbers make another problem). A 9-word item allows no edit: "What is
  the capital of Spain?" is not a copy of "... of France?".

Template text (an n-gram or shingle shared by ``template_min_items`` or more eval items, e.g. a
prompt template or boilerplate such as "Write a function that ... returns") is removed before
matching, and covered template tokens count neither for nor against an item.

Normalisation follows lm-eval's Janitor by default (``punctuation="delete"``: lowercase, delete ASCII
punctuation, split on whitespace), which suits decontamination (removing too much is safe). The
diagnosis uses ``punctuation="keep"``: each punctuation character is a token, because deleting it
makes ``What is 12+5?`` equal ``What is 12-5?`` and HumanEval/56 (``"<"``/``">"`` brackets) equal
HumanEval/61 (``"("``/``")"``): false alarms on arithmetic and code.

Speed: rows of ASCII text (``str.isascii``) are tokenised by compiled code (:mod:`fast_tokens`,
numba: bytes split, lower-cased and looked up in one loop, the prefilter's anchor runs found in
the same pass). Other rows take the Python path: the batch is lower-cased once and split on
whitespace; each distinct word is tokenised (``str.translate`` + ``split``, or one regular
expression in ``keep`` mode) and looked up in the vocabulary once, then cached (:class:`_WordIds`),
so a row costs a split and one dict lookup per word. Both give the ids of :func:`tokens`. All
window hashing is vectorised with numpy over
batches of rows (:mod:`window_hash`: 64-bit polynomial hashes of eval-vocabulary ids via prefix
sums). N-gram and containment hits are confirmed by exact comparison of the id tuples. Shingles
are represented by their 64-bit window hashes (the exact Jaccard is computed on those hash sets:
a collision needs about 2**64 pairs) and fed to MinHash folded to 32 bits. Before any rule runs,
a prefilter keeps only the rows whose word stream holds one of a few anchor runs chosen per eval
item such that every hit needs one (:meth:`OverlapIndex._build_prefilter` proves it; the hits are
those of the unfiltered path): on generic training text almost every row stops there.
"""

from __future__ import annotations

import math
import re
import string
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from itertools import chain, repeat
from typing import Any

import numpy as np
from datasketch import MinHash, MinHashLSH

from distill_doctor.text import fast_tokens, minhash
from distill_doctor.text.fast_tokens import AsciiTokenizer, RunTable
from distill_doctor.text.window_hash import WindowHasher, bitmap, items_per_hash, member

_DELETE_PUNCT = str.maketrans("", "", string.punctuation)
_PUNCT = re.escape(string.punctuation)
_KEEP_RE = re.compile(rf"[^\s{_PUNCT}]+|[{_PUNCT}]")
_SENTENCE_END = frozenset(".?!")
MINHASH_SCHEME = minhash.SCHEME
_OOV_SALT = np.uint64(0x9E3779B97F4A7C15)
MIN_WHOLE_WORDS = 3  # whole-text matches need at least this many normalised words
_ROW, _RESPONSE = "\x01", "\x02"  # sentinel tokens between rows and between prompt and response
# Edited copies (kind "edited"): words are the tokens other than prose punctuation, so a copy that
# is only re-punctuated has no edits; symbols (+ - * / = < > brackets ...) stay words.
FREE_PUNCTUATION = frozenset(",.;:!?'\"`")
EDIT_ANCHOR = 5  # words per anchor window (candidate pairs share anchors)
EDIT_MAX = 2  # at most this many word edits ...
EDIT_WORDS_PER_EDIT = 10  # ... and one per this many words of the item (a 9-word item: none)


def tokens(text: str, punctuation: str = "delete") -> list[str]:
    """Normalised words. ``"delete"``: lm-eval Janitor (lowercase, delete ASCII punctuation, split on
    whitespace). ``"keep"``: the same, but each punctuation character is a token of its own, so
    ``2+2`` and ``2*2`` (or ``"<"`` and ``"("`` in code) stay different."""
    if punctuation == "delete":
        return text.lower().translate(_DELETE_PUNCT).split()
    if punctuation == "keep":
        return _KEEP_RE.findall(text.lower())
    raise ValueError("punctuation must be 'delete' or 'keep'")


def _split_lowered(word: str, punctuation: str) -> list[str]:
    """:func:`tokens` of text that is already lower-cased (no second ``lower``: it is not applied twice
    on the reference path either)."""
    return word.translate(_DELETE_PUNCT).split() if punctuation == "delete" else _KEEP_RE.findall(word)


class _WordIds(dict):
    """Scan-vocabulary ids of the tokens of lower-cased whitespace words, computed once per distinct word.

    A batch is lower-cased once and split on whitespace (``str.split``: the same ``isspace`` characters
    as ``\\s`` in :data:`_KEEP_RE`, and no token spans whitespace in either mode), then each word is
    looked up here: the regular expression and the per-token lookups run once per distinct word
    instead of once per occurrence. The ids are those of :func:`tokens` on the whole batch (property
    test ``tests/test_overlap.py``).

    A word maps to one int: its token's id (>= -2, sentinels negative) when it is one token, else
    ``-3 - k`` with ``k`` its entry in ``multi`` (several tokens, or none), expanded with numpy. The
    cache is emptied between batches once it holds ``limit`` words (memory bound on text with endless
    distinct words: numbers, URLs). Being mutable, it makes :meth:`OverlapIndex.scan` unsafe to run
    from several threads on one index at once (scan workers are processes, each with its own copy).
    """

    __slots__ = ("_vocab", "_punctuation", "_limit", "multi", "_flat", "_start", "_length")

    def __init__(self, scan_vocab: dict[str, int], punctuation: str, limit: int = 1_000_000) -> None:
        super().__init__()
        self._vocab, self._punctuation, self._limit = scan_vocab, punctuation, limit
        self._reset()

    def _reset(self) -> None:
        self.clear()
        self.multi: list[tuple[int, ...]] = []
        self._flat = np.zeros(0, dtype=np.int64)  # numpy copy of multi[: len(_start)], concatenated
        self._start = np.zeros(0, dtype=np.int64)
        self._length = np.zeros(0, dtype=np.int64)

    def __missing__(self, word: str) -> int:
        get = self._vocab.get
        ids = tuple(get(t, 0) for t in _split_lowered(word, self._punctuation))
        if len(ids) == 1:
            code = ids[0]
        else:
            code = -3 - len(self.multi)
            self.multi.append(ids)
        self[word] = code
        return code

    def ids(self, words: list[str]) -> np.ndarray:
        """Token ids of ``words`` in order (the concatenation of each word's tokens)."""
        if len(self) >= self._limit:
            self._reset()
        codes = np.fromiter(map(self.__getitem__, words), dtype=np.int64, count=len(words))
        multi = np.flatnonzero(codes <= -3)
        if not len(multi):
            return codes
        self._sync()
        k = -3 - codes[multi]
        n = self._length[k]
        lengths = np.ones(len(codes), dtype=np.int64)
        lengths[multi] = n
        out = np.repeat(codes, lengths)  # the multi words' places are overwritten below
        total = int(n.sum())
        if total:
            within = np.arange(total) - np.repeat(np.cumsum(n) - n, n)
            first = np.cumsum(lengths)[multi] - n  # where each multi word's tokens go in out
            out[np.repeat(first, n) + within] = self._flat[np.repeat(self._start[k], n) + within]
        return out

    def _sync(self) -> None:
        """Append the multi-token words added since the last batch to the numpy tables."""
        new = self.multi[len(self._start) :]
        if not new:
            return
        length = np.fromiter(map(len, new), dtype=np.int64, count=len(new))
        start = len(self._flat) + np.cumsum(length) - length
        flat = np.fromiter(chain.from_iterable(new), dtype=np.int64, count=int(length.sum()))
        self._flat = np.concatenate((self._flat, flat))
        self._start = np.concatenate((self._start, start))
        self._length = np.concatenate((self._length, length))


def normalize(text: str, punctuation: str = "delete") -> str:
    """Normalised text: :func:`tokens` joined by single spaces."""
    return " ".join(tokens(text, punctuation))


def whole_key(words: list[str]) -> str:
    """Whole-text key of normalised words: trailing sentence punctuation tokens dropped."""
    end = len(words)
    while end and words[end - 1] in _SENTENCE_END:
        end -= 1
    return " ".join(words[:end])


def word_ngrams(text: str, n: int = 13, punctuation: str = "delete") -> list[tuple[str, ...]]:
    """Word n-grams of the normalised text, in order (empty when the text has fewer than n words)."""
    words = tokens(text, punctuation)
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def _low32(value: int) -> int:
    """MinHash input hash: a 64-bit window hash folded to 32 bits (the affine32 scheme's range)."""
    return (value ^ (value >> 32)) & 0xFFFFFFFF


def _first_per_item(item: np.ndarray, keys: tuple[np.ndarray, ...], quota: np.ndarray) -> np.ndarray:
    """Indices of each item's first ``quota[item]`` entries ordered by ``keys`` (the last key first,
    as ``np.lexsort``; then by index)."""
    order = np.lexsort((np.arange(len(item)), *keys, item))
    run = item[order]
    rank = np.arange(len(run)) - np.searchsorted(run, run)  # place within the item's run
    return order[rank < quota[run]]


def _range_argmin(weight: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """For each ``i``, the index of the smallest ``weight[lo[i]:hi[i]]`` (``hi > lo``; the leftmost of
    equal ones within each half): a sparse table of argmins over power-of-two ranges."""
    table = [np.arange(len(weight))]
    width = 1
    longest = int((hi - lo).max()) if len(lo) else 0
    while 2 * width <= longest:
        prev = table[-1]
        left, right = prev[: len(prev) - width], prev[width:]
        table.append(np.where(weight[right] < weight[left], right, left))
        width *= 2
    length = hi - lo
    level = np.zeros(len(lo), dtype=np.int64)
    for k in range(1, len(table)):
        level += length >= (1 << k)
    out = np.empty(len(lo), dtype=np.int64)
    for k in np.unique(level).tolist():
        sel = np.flatnonzero(level == k)
        t = table[k]
        left, right = t[lo[sel]], t[hi[sel] - (1 << k)]
        out[sel] = np.where(weight[right] < weight[left], right, left)
    return out


@dataclass(frozen=True)
class Hit:
    """One training row matching one eval item.

    ``score``: 1.0 for ``exact``/``contained``; the covered share of the item's content tokens for
    ``ngram``; the exact Jaccard of the prompt shingle sets for ``near``. ``dirty``: the hit alone
    meets the index's decision threshold. ``positions``: for ``ngram``, the start positions (in the
    item's normalised words) of the matching n-grams; for ``edited``, one number, the word edits.
    ``edited``'s score is 1 - edits / the item's words.
    """

    eval_id: str
    kind: str
    score: float
    row: int
    dirty: bool
    positions: tuple[int, ...] = ()


@dataclass
class _Batch:
    """Token ids of a batch of rows. Offsets are lists while built row by row, int64 arrays on the
    joined-batch path (both index the same way)."""

    ids: list[int] | np.ndarray = field(default_factory=list)
    starts: list[int] | np.ndarray = field(default_factory=list)  # row start offsets into ids
    prompt_ends: list[int] | np.ndarray = field(default_factory=list)
    ends: list[int] | np.ndarray = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    run_starts: np.ndarray | None = None  # the prefilter's anchor runs, found by the compiled tokeniser


def _interleave(parts: list[tuple[_Batch, list[int]]], rows: list[int]) -> _Batch:
    """One batch from sub-batches, each with the positions its rows take in ``rows``: every row's
    tokens (prompt then response) moved to its place, as if the batch had been tokenised whole."""
    start = np.zeros(len(rows), dtype=np.int64)  # of each row in the sub-batches' concatenated ids
    length = np.zeros(len(rows), dtype=np.int64)
    prompt = np.zeros(len(rows), dtype=np.int64)
    flat, offset = [], 0
    for b, where in parts:
        starts = np.asarray(b.starts, dtype=np.int64)
        start[where] = starts + offset
        length[where] = np.asarray(b.ends, dtype=np.int64) - starts
        prompt[where] = np.asarray(b.prompt_ends, dtype=np.int64) - starts
        flat.append(np.asarray(b.ids, dtype=np.int64))
        offset += len(flat[-1])
    new_starts = np.cumsum(length) - length
    origin = np.repeat(start - new_starts, length) + np.arange(int(length.sum()), dtype=np.int64)
    return _Batch(
        ids=np.concatenate(flat)[origin], starts=new_starts, prompt_ends=new_starts + prompt,
        ends=new_starts + length, rows=rows,
    )  # fmt: skip


@dataclass
class _Windows:
    """Every window of one length over the concatenated eval items: global start, item, local start, hash."""

    start: np.ndarray
    item: np.ndarray
    local: np.ndarray
    hash: np.ndarray


class OverlapIndex:
    """Index over eval texts; training texts stream through :meth:`scan` / :meth:`match`.

    >>> idx = OverlapIndex({"q1": "What is the capital of France?"}, punctuation="keep")
    >>> [(h.eval_id, h.kind, h.dirty) for h in idx.match("what is the capital of France")]
    [('q1', 'exact', True)]
    """

    def __init__(
        self,
        eval_texts: dict[str, str],
        *,
        ngram: int = 13,
        minhash_threshold: float = 0.7,
        num_perm: int = 128,
        shingle: int = 5,
        dirty_coverage: float = 0.8,
        min_contained: int = 8,
        template_min_items: int | None = None,
        lsh_margin: float = 0.2,
        punctuation: str = "delete",
        batch_rows: int = 20_000,
        seed: int = 0,
    ) -> None:
        if punctuation not in ("delete", "keep"):
            raise ValueError("punctuation must be 'delete' or 'keep'")
        if ngram < 2 or shingle < 1:
            raise ValueError("ngram must be >= 2 and shingle >= 1")
        if not 0.0 < minhash_threshold <= 1.0 or not 0.0 < dirty_coverage <= 1.0:
            raise ValueError("minhash_threshold and dirty_coverage must be in (0, 1]")
        self.punctuation = punctuation
        self.ngram, self.shingle, self.num_perm = ngram, shingle, num_perm
        self.minhash_threshold, self.dirty_coverage = minhash_threshold, dirty_coverage
        self.lsh_threshold = minhash.lsh_threshold(minhash_threshold, lsh_margin)
        self.min_contained = min(min_contained, ngram - 1)
        self.batch_rows = batch_rows
        self.eval_ids = list(eval_texts)
        # Template: shared by at least 10 items or 1% of them, whichever is more (so variant groups
        # of one problem, a handful of items, keep their shared text).
        self.template_min_items = template_min_items or max(10, math.ceil(0.01 * len(self.eval_ids)))

        words = [tokens(eval_texts[i], punctuation) for i in self.eval_ids]
        self.vocab: dict[str, int] = {}
        for ws in words:
            for w in ws:
                self.vocab.setdefault(w, len(self.vocab) + 1)  # 0 = out of the eval vocabulary
        for w in sorted(FREE_PUNCTUATION) if punctuation == "keep" else ():
            self.vocab.setdefault(w, len(self.vocab) + 1)  # edited copies must see them to skip them
        self.hasher = WindowHasher(len(self.vocab), seed)
        self._scan_vocab = {**self.vocab, _ROW: -1, _RESPONSE: -2}
        self._word_ids = _WordIds(self._scan_vocab, punctuation)
        self._ascii: AsciiTokenizer | None = AsciiTokenizer(self.vocab, punctuation)
        fast_tokens.warm_up()  # compiled (or loaded from numba's disk cache) before workers fork
        self.eval_tokens = [tuple(map(self.vocab.__getitem__, ws)) for ws in words]
        lengths = np.fromiter((len(t) for t in self.eval_tokens), dtype=np.int64, count=len(words))
        self._offsets = np.concatenate(([0], np.cumsum(lengths)))
        self._item_of = np.repeat(np.arange(len(words)), lengths)
        flat = np.fromiter(chain.from_iterable(self.eval_tokens), dtype=np.int64, count=len(self._item_of))
        # Number tokens: a problem re-told with other numbers is another problem, not a copy.
        is_number = np.zeros(len(self.vocab) + 1, dtype=bool)  # by id, so each word is read once
        is_number[1:] = [any(c.isdigit() for c in w) for w in self.vocab]
        self.numbers = np.split(is_number[flat], self._offsets[1:-1]) if len(words) else []
        self._eval_prefix = self.hasher.prefix(flat)
        self._build_ngrams()
        self._build_contained()
        self._build_whole(words)
        self._build_near()
        self._build_edited(words)
        self._build_prefilter(flat)

    # ---- build ---------------------------------------------------------------------------------
    def _eval_windows(self, length: int) -> _Windows:
        h = self.hasher.windows(self._eval_prefix, length)
        start = np.arange(len(h))
        ok = start + length <= self._offsets[1:][self._item_of[: len(h)]] if len(h) else start.astype(bool)
        start = start[ok]
        item = self._item_of[start]
        return _Windows(start, item, start - self._offsets[item], h[ok])

    def _template(self, w: _Windows) -> np.ndarray:
        """Sorted hashes of windows that occur in at least ``template_min_items`` eval items."""
        hashes, counts = items_per_hash(w.hash, w.item)
        return hashes[counts >= self.template_min_items]

    def _build_ngrams(self) -> None:
        n = self.ngram
        w = self._eval_windows(n)
        self._template_ngrams = self._template(w)
        is_tmpl = member(w.hash, self._template_ngrams)
        # Content = positions not inside any template n-gram (template starts cover [p, p + n)).
        marks = np.zeros(len(self._item_of) + 1, dtype=np.int64)
        np.add.at(marks, w.start[is_tmpl], 1)
        np.add.at(marks, w.start[is_tmpl] + n, -1)
        covered = np.cumsum(marks)[:-1] > 0
        self.content = np.split(~covered, self._offsets[1:-1]) if len(self.eval_ids) else []
        keep = ~is_tmpl
        self._ngram_starts = w.start[keep]  # global token starts of the non-template n-grams (prefilter)
        # Postings (CSR): the (item, start) of every non-template n-gram, grouped by hash; within a
        # hash in item then start order (the windows' order, kept by the stable sort).
        order = np.argsort(w.hash[keep], kind="stable")
        self._post_item, self._post_local = w.item[keep][order], w.local[keep][order]
        self._ngram_hashes, first = np.unique(w.hash[keep][order], return_index=True)
        self._post_first = np.append(first, len(order))
        self._ngram_bitmap = bitmap(self._ngram_hashes)

    def _build_contained(self) -> None:
        self.short_items: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for e, toks in enumerate(self.eval_tokens):
            if self.min_contained <= len(toks) < self.ngram:
                self.short_items[toks].append(e)
        self.short_items = dict(self.short_items)
        self._short_by_len: dict[int, np.ndarray] = {}
        for length in sorted({len(t) for t in self.short_items}):
            keys = [t for t in self.short_items if len(t) == length]
            self._short_by_len[length] = np.unique(self.hasher.of_tuples(keys))

    def _build_whole(self, words: list[list[str]]) -> None:
        """Whole-text keys: each item's ids with trailing . ? ! dropped (at least ``MIN_WHOLE_WORDS``)."""
        self._sentence_ids = np.asarray(
            [self.vocab[w] for w in _SENTENCE_END if w in self.vocab], dtype=np.int64
        )
        self.whole: dict[tuple[int, ...], list[int]] = defaultdict(list)
        self._whole_spans: list[tuple[int, int]] = []  # (item, key length in tokens), for the prefilter
        for e, ws in enumerate(words):
            n = len(whole_key(ws).split())
            if n >= MIN_WHOLE_WORDS:  # "Solve." or "Continue." alone proves nothing
                self.whole[self.eval_tokens[e][:n]].append(e)
                self._whole_spans.append((e, n))
        self.whole = dict(self.whole)
        self._whole_lengths = np.unique(np.asarray([len(k) for k in self.whole], dtype=np.int64))
        self._whole_hashes = np.unique(
            np.concatenate([self.hasher.of_tuples([k]) for k in self.whole])
            if self.whole
            else np.zeros(0, np.uint64)
        )

    def _build_edited(self, words: list[list[str]]) -> None:
        """Anchors for edited copies: ``EDIT_ANCHOR``-word windows of each item's word stream (prose
        punctuation dropped) for items of at least ``EDIT_WORDS_PER_EDIT`` words, template anchors
        removed; stored as sorted hashes with CSR postings (item, word position)."""
        self._free_ids = np.asarray(
            [self.vocab[w] for w in FREE_PUNCTUATION if w in self.vocab], dtype=np.int64
        )
        self._is_free = np.zeros(len(self.vocab) + 1, dtype=bool)  # by id: a gather, not np.isin
        self._is_free[self._free_ids] = True
        a = EDIT_ANCHOR
        self.edit_words: list[tuple[int, ...]] = []
        self.edit_numbers: list[np.ndarray] = []
        self.edit_allowed = np.zeros(len(self.eval_ids), dtype=np.int64)
        overlap = np.zeros(len(self.eval_ids), dtype=np.int64)  # 1 where the end block overlaps another
        hs, its, pos = [], [], []
        for e, toks in enumerate(self.eval_tokens):
            keep = [k for k, w in enumerate(words[e]) if w not in FREE_PUNCTUATION]
            wids = tuple(toks[k] for k in keep)
            self.edit_words.append(wids)
            self.edit_numbers.append(self.numbers[e][keep] if keep else np.zeros(0, dtype=bool))
            # Edits allowed per content word: template words (inside a 5-word shingle shared by
            # many items, e.g. "Write the word '...' backwards in capital letters") do not count.
            content = int(self._shingle_content[e][keep].sum()) if keep else 0
            allowed = min(EDIT_MAX, content // EDIT_WORDS_PER_EDIT)
            if allowed == 0:
                continue
            self.edit_allowed[e] = allowed
            # Disjoint blocks (and one flush with the end): an edit breaks at most one of them. Short
            # items (under 4 blocks, where a template block or two edits leave too few) use every
            # window: an edit breaks at most ``a`` of those.
            if len(wids) < 4 * a:
                blocks = np.arange(len(wids) - a + 1)
                overlap[e] = (a - 1) * allowed
            else:
                blocks = np.unique(np.append(np.arange(0, len(wids) - a + 1, a), len(wids) - a))
                overlap[e] = int(len(wids) % a != 0)
            h = self.hasher.windows(self.hasher.prefix(np.asarray(wids, dtype=np.int64)), a)[blocks]
            hs.append(h)
            its.append(np.full(len(h), e, dtype=np.int64))
            pos.append(blocks)
        h = np.concatenate(hs) if hs else np.zeros(0, np.uint64)
        item = np.concatenate(its) if its else np.zeros(0, np.int64)
        local = np.concatenate(pos) if pos else np.zeros(0, np.int64)
        uniq, counts = items_per_hash(h, item)
        kept = ~member(h, uniq[counts >= self.template_min_items])
        h, item, local = h[kept], item[kept], local[kept]
        order = np.lexsort((local, item, h))
        self._anchor_hash, self._anchor_item, self._anchor_pos = h[order], item[order], local[order]
        self._anchor_keys, self._anchor_first = np.unique(self._anchor_hash, return_index=True)
        self._anchor_bitmap = bitmap(self._anchor_keys)
        # Anchors an edited copy must share: all distinct blocks but those the edits can break.
        distinct = np.zeros(len(self.eval_ids), dtype=np.int64)
        if len(h):
            first = np.ones(len(order), dtype=bool)
            first[1:] = (self._anchor_hash[1:] != self._anchor_hash[:-1]) | (
                self._anchor_item[1:] != self._anchor_item[:-1]
            )
            distinct = np.bincount(self._anchor_item[first], minlength=len(self.eval_ids))
        # An edit breaks one block, or two inside the end block's overlap (at most one edit there);
        # with every window as an anchor, ``a`` windows (``overlap`` holds the extra a - 1 per edit).
        self.edit_needed = np.maximum(1, distinct - self.edit_allowed - overlap)
        self.edit_needed[self.edit_allowed == 0] = np.iinfo(np.int64).max

    def _edited_hits(self, ids, row_of, b: _Batch) -> list[Hit]:
        """Rows holding an item with at most ``edit_allowed`` word edits (``edited``): candidate pairs
        share enough anchors, then a word alignment (difflib) counts the edits; every number of the
        item must be matched (a re-told problem with other numbers is another problem)."""
        a = EDIT_ANCHOR
        if not len(self._anchor_keys):
            return []
        words = ~self._is_free[ids]
        wids, wrow = ids[words], row_of[words]
        n = len(wids) - a + 1
        if n <= 0:
            return []
        h = self.hasher.windows(self.hasher.prefix(wids), a)
        oov = np.concatenate(([0], np.cumsum(wids == 0)))
        ok = (wrow[:n] == wrow[a - 1 : a - 1 + n]) & (oov[a : a + n] == oov[:n])
        pos = np.flatnonzero(ok & member(h, self._anchor_keys, self._anchor_bitmap))
        if not len(pos):
            return []
        k = np.searchsorted(self._anchor_keys, h[pos])
        lo = self._anchor_first[k]
        hi = np.append(self._anchor_first[1:], len(self._anchor_hash))[k]
        reps = hi - lo
        at = np.repeat(pos, reps)  # row-stream position of each (window, posting) pair
        post = np.repeat(lo - np.cumsum(reps) + reps, reps) + np.arange(int(reps.sum()))
        item, ipos, row = self._anchor_item[post], self._anchor_pos[post], wrow[at]
        key = row * len(self.eval_ids) + item
        width = max(len(w) for w in self.edit_words) + 1
        v = np.sort(key * width + ipos)
        v = v[np.append(True, v[1:] != v[:-1])] // width  # one entry per (pair, anchor position)
        starts = np.flatnonzero(np.append(True, v[1:] != v[:-1]))
        keys, counts = v[starts], np.diff(np.append(starts, len(v)))
        cand = keys[counts >= self.edit_needed[keys % len(self.eval_ids)]]
        if not len(cand):
            return []
        order = np.argsort(key, kind="stable")
        sorted_keys = key[order]
        out = []
        for kv in cand.tolist():
            r, e = divmod(kv, len(self.eval_ids))
            lo_k, hi_k = np.searchsorted(sorted_keys, [kv, kv + 1])
            sel = at[order[lo_k:hi_k]]
            row_start = int(np.searchsorted(wrow, r))
            row_end = int(np.searchsorted(wrow, r, side="right"))
            size = len(self.edit_words[e])
            lo_, hi_ = max(row_start, int(sel.min()) - size), min(row_end, int(sel.max()) + a + size)
            edits = self._edits(e, wids[lo_:hi_].tolist())
            if edits is not None and edits <= self.edit_allowed[e]:
                out.append(Hit(self.eval_ids[e], "edited", 1.0 - edits / size, b.rows[r], True, (edits,)))
        return out

    def _edits(self, e: int, region: list[int]) -> int | None:
        """Word edits between item ``e`` and its best-aligned stretch of ``region``: per gap between
        matched blocks, the larger of the item's and the row's unmatched words (unmatched item words
        before the first and after the last block count too). None when a number is not matched."""
        item = self.edit_words[e]
        blocks = [
            m for m in SequenceMatcher(None, item, region, autojunk=False).get_matching_blocks() if m.size
        ]
        if not blocks:
            return None
        matched = np.zeros(len(item), dtype=bool)
        for m in blocks:
            matched[m.a : m.a + m.size] = True
        if not matched[self.edit_numbers[e]].all():
            return None
        edits = blocks[0].a + (len(item) - blocks[-1].a - blocks[-1].size)
        for prev, nxt in zip(blocks, blocks[1:]):
            edits += max(nxt.a - prev.a - prev.size, nxt.b - prev.b - prev.size)
        return edits

    def _build_near(self) -> None:
        w = self._eval_windows(self.shingle)
        self._template_shingles = self._template(w)
        self._template_bitmap = bitmap(self._template_shingles)
        is_tmpl = member(w.hash, self._template_shingles)
        marks = np.zeros(len(self._item_of) + 1, dtype=np.int64)  # template shingles cover [p, p + k)
        np.add.at(marks, w.start[is_tmpl], 1)
        np.add.at(marks, w.start[is_tmpl] + self.shingle, -1)
        covered = np.cumsum(marks)[:-1] > 0
        self._shingle_content = np.split(~covered, self._offsets[1:-1]) if len(self.eval_ids) else []
        keep = ~is_tmpl
        self._shingle_hashes = np.unique(w.hash[keep])
        self._shingle_bitmap = bitmap(self._shingle_hashes)
        hashes = w.hash[keep].tolist()  # windows come in item order: one slice per item
        bounds = np.searchsorted(w.item[keep], np.arange(len(self.eval_ids) + 1)).tolist()
        self.eval_shingles: list[set[int]] = [set(hashes[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        self.lsh = MinHashLSH(threshold=self.lsh_threshold, num_perm=self.num_perm)
        keyed = [e for e, st in enumerate(self.eval_shingles) if st]
        sketches = self._minhash([self.eval_shingles[e] for e in keyed])
        with self.lsh.insertion_session() as session:
            for e, m in zip(keyed, sketches):
                session.insert(e, m)

    def _minhash(self, sets: list[set[int]]) -> list[MinHash]:
        return minhash.sketches(sets, num_perm=self.num_perm, hashfunc=_low32)

    # ---- prefilter -----------------------------------------------------------------------------
    def _build_prefilter(self, flat: np.ndarray) -> None:
        """Anchor word runs that every row with a hit must hold: the prefilter of :meth:`_candidates`.

        Soundness (up to 64-bit hash collisions, as everywhere in this module). A hit needs the row
        to hold, as consecutive tokens, one of these *witness spans* of an eval item:

        - ``exact``: the item's whole key (the prompt equals it);
        - ``ngram``: a non-template n-gram (hits are confirmed against the non-template postings);
        - ``contained``: the whole short item (confirmed by tuple comparison);
        - ``near``: exact Jaccard ``J(A, B) >= t`` (``minhash_threshold``) of the prompt's shingle
          set ``A`` and the item's ``B``, so ``|A & B| >= t |A | B| >= t |B|``: at most
          ``(1 - t) |B|`` shingles of ``B`` are missing from ``A``. Any ``floor((1 - t) |B|) + 1``
          distinct shingles of ``B`` therefore include one that the row holds;
        - ``edited``: at least ``edit_needed[e]`` of the item's ``P_e`` non-template edit-anchor
          positions are matched by ``EDIT_ANCHOR``-word windows of the row's word stream, so any
          ``P_e - edit_needed[e] + 1`` of the positions include a matched one.

        The *word stream* is the tokens less prose punctuation (``FREE_PUNCTUATION``; in ``delete``
        mode every token). A row holding a span's tokens consecutively holds the span's words
        consecutively in its own word stream (the same tokens, the same ones removed); an edit
        block is such a run by definition. Each span, or each chosen shingle or block, contributes
        one anchor: its rarest ``EDIT_ANCHOR``-word window, or its whole word run when shorter.
        :meth:`_candidates` keeps every row whose word stream holds an anchor, so no row with a hit
        is dropped, and the kept rows are scanned exactly as before (each row on its own; token
        positions mapped back where they salt hashes): the hits are the unfiltered scan's
        (property test in ``tests/test_overlap.py``). Rarity (the sum of the log eval-set counts of
        a run's words; the shingles and blocks taken are the rarest, and for shingles those of a
        full ``EDIT_ANCHOR`` words first) only decides how many rows are rejected. A span without
        any word (prose punctuation only) turns the prefilter off.
        """
        self._prefilter_on = False
        is_word = ~self._is_free[flat]
        cw = np.concatenate(([0], np.cumsum(is_word)))  # words before each token position
        wflat, witem = flat[is_word], self._item_of[is_word]
        a = EDIT_ANCHOR
        prefix = self.hasher.prefix(wflat)
        windows = self.hasher.windows(prefix, a)
        # Template runs (shared by many items, e.g. an instruction every prompt starts with) are
        # common in training text too, whatever their eval-set counts: their words weigh 1000 more.
        inside = (
            np.flatnonzero(witem[: len(windows)] == witem[a - 1 :]) if len(windows) else np.zeros(0, np.int64)
        )
        hashes, items = items_per_hash(windows[inside], witem[inside])
        tmpl = inside[member(windows[inside], hashes[items >= self.template_min_items])]
        marks = np.zeros(len(wflat) + 1, dtype=np.int64)
        np.add.at(marks, tmpl, 1)
        np.add.at(marks, tmpl + a, -1)
        count = np.bincount(wflat, minlength=len(self.vocab) + 1).astype(np.float64)
        in_template = np.cumsum(marks)[:-1] > 0
        if len(self.eval_ids):  # and the words inside template shingles (token windows)
            in_template |= ~np.concatenate(self._shingle_content)[is_word]
        rarity = np.log(np.maximum(count[wflat], 1.0)) + 1000.0 * in_template
        log_count = np.concatenate(([0.0], np.cumsum(rarity)))
        weight = np.full(len(wflat), np.inf)  # of the a-word window starting at each word
        if len(wflat) >= a:
            weight[: len(wflat) - a + 1] = log_count[a:] - log_count[: len(wflat) - a + 1]
        lo, hi = self._witness_spans(cw, log_count)
        if np.any(hi <= lo):
            return  # a span of prose punctuation only: no word run can stand for it
        long = hi - lo >= a
        start, length = lo.copy(), hi - lo
        if np.any(long):
            start[long] = _range_argmin(weight, lo[long], hi[long] - a + 1)
            length[long] = a
        full = (
            self.hasher.windows(prefix, a)[start[length == a]] if len(wflat) >= a else np.zeros(0, np.uint64)
        )
        self._anchor_runs = np.unique(full)
        self._anchor_runs_bitmap = bitmap(self._anchor_runs)
        # Shorter runs (few): found from their rarest word, ``key`` words ``offset`` into the run.
        self._short_key = np.zeros(len(self.vocab) + 1, dtype=bool)
        self._short_runs: dict[tuple[int, int], np.ndarray] = {}
        for j, n in zip(start[length < a].tolist(), length[length < a].tolist()):
            offset = int(np.argmin(rarity[j : j + n]))
            self._short_key[wflat[j + offset]] = True
            with np.errstate(over="ignore"):
                h = (prefix[j + n : j + n + 1] - prefix[j]) * self.hasher.pow_inv[j]
            self._short_runs[(n, offset)] = np.append(self._short_runs.get((n, offset), h[:0]), h)
        self._short_runs = {k: np.unique(v) for k, v in self._short_runs.items()}
        short, key = self._short_runs, self._short_key
        self._runs = RunTable(self.hasher, a, self._anchor_runs, self._is_free, key, short)
        self._prefilter_on = True

    def _witness_spans(self, cw: np.ndarray, log_count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Word-stream ranges ``[lo, hi)`` of the spans, shingles and blocks of :meth:`_build_prefilter`."""
        spans = [(self._ngram_starts, self._ngram_starts + self.ngram)]
        short = np.asarray([e for es in self.short_items.values() for e in es], dtype=np.int64)
        spans.append((self._offsets[short], self._offsets[short + 1]))
        whole = np.asarray(self._whole_spans, dtype=np.int64).reshape(-1, 2)
        spans.append((self._offsets[whole[:, 0]], self._offsets[whole[:, 0]] + whole[:, 1]))
        lo = [cw[t0] for t0, _ in spans]
        hi = [cw[t1] for _, t1 in spans]
        # near: per item the quota of its distinct non-template shingles, full-length and rare first
        item, start = self._shingle_firsts()
        s_lo, s_hi = cw[start], cw[start + self.shingle]
        short_run = s_hi - s_lo < EDIT_ANCHOR
        size = np.asarray([len(b) for b in self.eval_shingles], dtype=np.int64)
        quota = np.minimum(np.floor((1.0 - self.minhash_threshold) * size + 1e-9).astype(np.int64) + 1, size)
        pick = _first_per_item(item, (log_count[s_hi] - log_count[s_lo], short_run), quota)
        lo.append(s_lo[pick])
        hi.append(s_hi[pick])
        # edited: per item the P_e - edit_needed + 1 rarest blocks
        if len(self._anchor_hash):
            g = cw[self._offsets[self._anchor_item]] + self._anchor_pos
            positions = np.bincount(self._anchor_item, minlength=len(self.eval_ids))
            quota = np.maximum(positions - np.minimum(self.edit_needed, positions + 1) + 1, 0)
            pick = _first_per_item(self._anchor_item, (log_count[g + EDIT_ANCHOR] - log_count[g],), quota)
            lo.append(g[pick])
            hi.append(g[pick] + EDIT_ANCHOR)
        return np.concatenate(lo), np.concatenate(hi)

    def _shingle_firsts(self) -> tuple[np.ndarray, np.ndarray]:
        """Each item's distinct non-template shingles: (item, token start of its first copy)."""
        w = self._eval_windows(self.shingle)
        keep = ~member(w.hash, self._template_shingles)
        item, h, start = w.item[keep], w.hash[keep], w.start[keep]
        order = np.lexsort((start, h, item))
        item, h, start = item[order], h[order], start[order]
        first = np.ones(len(h), dtype=bool)
        first[1:] = (h[1:] != h[:-1]) | (item[1:] != item[:-1])
        return item[first], start[first]

    def _candidates(self, b: _Batch, ids: np.ndarray) -> tuple[_Batch, np.ndarray | None]:
        """The batch cut to the rows whose word stream holds an anchor run (:meth:`_build_prefilter`)
        and each kept token's position in the full batch (None when every row is kept)."""
        starts = np.asarray(b.starts, dtype=np.int64)
        at = b.run_starts if b.run_starts is not None else self._anchor_starts(ids)
        rows = np.unique(np.searchsorted(starts, at, side="right") - 1)  # a run across rows: a spare row
        if len(rows) == len(b.rows):
            return b, None
        ends, pends = np.asarray(b.ends, dtype=np.int64), np.asarray(b.prompt_ends, dtype=np.int64)
        length = ends[rows] - starts[rows]
        new_starts = np.cumsum(length) - length
        origin = np.repeat(starts[rows] - new_starts, length) + np.arange(int(length.sum()), dtype=np.int64)
        kept = _Batch(
            ids=ids[origin], starts=new_starts, prompt_ends=new_starts + pends[rows] - starts[rows],
            ends=new_starts + length, rows=[b.rows[r] for r in rows.tolist()],
        )  # fmt: skip
        return kept, origin

    def _anchor_starts(self, ids: np.ndarray) -> np.ndarray:
        """Token positions where an anchor run starts in the batch's word stream (numpy; the compiled
        tokeniser finds the same ones with :class:`fast_tokens.RunTable`)."""
        wpos = np.flatnonzero(~self._is_free[ids])
        wids = ids[wpos]
        prefix = self.hasher.prefix(wids)
        found = [
            np.flatnonzero(
                member(self.hasher.windows(prefix, EDIT_ANCHOR), self._anchor_runs, self._anchor_runs_bitmap)
            )
        ]
        if self._short_runs:
            key_at = np.flatnonzero(self._short_key[wids])
            for (n, offset), hashes in self._short_runs.items():
                first = key_at - offset
                first = first[(first >= 0) & (first + n <= len(wids))]
                with np.errstate(over="ignore"):
                    h = (prefix[first + n] - prefix[first]) * self.hasher.pow_inv[first]
                found.append(first[member(h, hashes)])
        return wpos[np.concatenate(found)]

    # ---- scan ----------------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """Everything needed to reproduce or compare the matching (recorded in reports)."""
        return {
            "normalization": (
                "lowercase, delete ASCII punctuation, split on whitespace (lm-eval Janitor)"
                if self.punctuation == "delete"
                else "lowercase, ASCII punctuation characters as tokens of their own, split on whitespace"
            ),
            "punctuation": self.punctuation,
            "whole_text": "normalised words equal (trailing . ? ! ignored)",
            "ngram": self.ngram,
            "dirty_coverage": self.dirty_coverage,
            "min_contained": self.min_contained,
            "template_min_items": self.template_min_items,
            "template_ngrams": len(self._template_ngrams),
            "template_shingles": len(self._template_shingles),
            "hash": "64-bit polynomial window hash over eval-vocabulary word ids; n-gram hits confirmed by exact tuple comparison",
            "minhash": minhash.record(
                num_perm=self.num_perm,
                hashfunc="64-bit shingle window hash folded to 32 bits",
                shingle=f"{self.shingle} words",
                threshold=self.minhash_threshold,
                lsh_threshold=self.lsh_threshold,
                lsh_bands=self.lsh.b,
                lsh_rows=self.lsh.r,
                confirm="exact Jaccard of the shingle sets (template shingles removed)",
            ),
            "n_eval": len(self.eval_ids),
        }

    def dirty_rows(self, texts: Iterable[str | tuple[str, str]]) -> set[int]:
        """Rows to drop when decontaminating: any hit that alone meets its decision threshold."""
        return {h.row for h in self.scan(texts) if h.dirty}

    def manifest_record(self, benchmarks: list[str], removed: int) -> dict[str, Any]:
        """The manifest's ``decontamination`` block (SPEC) describing a decontamination done with this index."""
        method = (
            f"{self.ngram}-gram coverage >= {self.dirty_coverage} + whole-text + MinHash "
            f"(num_perm {self.num_perm}, {self.shingle}-word shingles, Jaccard >= {self.minhash_threshold}), "
            f"punctuation {self.punctuation}"
        )
        return {
            "benchmarks": list(benchmarks),
            "method": method,
            "ngram": self.ngram,
            "threshold": self.minhash_threshold,
            "removed": int(removed),
        }

    def match(self, text: str | tuple[str, str]) -> list[Hit]:
        """Hits of one training text (a string, or a ``(prompt, response)`` pair)."""
        return list(self.scan([text]))

    def scan(self, texts: Iterable[str | tuple[str, str]], first_row: int = 0) -> Iterator[Hit]:
        """Stream training rows (strings, or ``(prompt, response)`` pairs) and yield their hits.

        ``row`` in each hit is ``first_row`` + the 0-based position of the text in ``texts``. Exact and near
        matches look at the prompt only; n-gram and containment matches at prompt + response.
        Hits come in row order.
        """
        prompts: list[str] = []
        responses: list[str] = []
        rows: list[int] = []
        for row, text in enumerate(texts, first_row):
            prompt, response = (text or "", "") if text is None or isinstance(text, str) else text
            prompts.append(prompt or "")
            responses.append(response or "")
            rows.append(row)
            if len(rows) >= self.batch_rows:
                yield from self._scan_batch(self._tokenize(prompts, responses, rows))
                prompts, responses, rows = [], [], []
        if rows:
            yield from self._scan_batch(self._tokenize(prompts, responses, rows))

    def scan_columns(self, prompts: list, responses: list, first_row: int = 0) -> Iterator[Hit]:
        """:meth:`scan` of rows given as two columns (None reads as empty): no per-row Python loop."""
        prompts = [p or "" for p in prompts]
        responses = [r or "" for r in responses]
        for start in range(0, len(prompts), self.batch_rows):
            stop = min(start + self.batch_rows, len(prompts))
            rows = list(range(first_row + start, first_row + stop))
            yield from self._scan_batch(self._tokenize(prompts[start:stop], responses[start:stop], rows))

    def _tokenize(self, prompts: list[str], responses: list[str], rows: list[int]) -> _Batch:
        """Eval-vocabulary ids of a batch of rows. ASCII rows (``str.isascii``, answered without
        reading the text) go through the compiled tokeniser (:mod:`fast_tokens`); the others through
        :meth:`_tokenize_python`, and the two are merged back in row order. Both give the ids of
        :func:`tokens` (property tests ``tests/test_fast_tokens.py``). With ``_ascii`` None (the
        reference for those tests) every row takes the Python path."""
        if self._ascii is None:
            return self._tokenize_python(prompts, responses, rows)
        texts: list[str] = [""] * (2 * len(rows))
        texts[0::2], texts[1::2] = prompts, responses
        joined = "".join(texts)
        if joined.isascii():
            runs = self._runs if self._prefilter_on else None
            return self._tokenize_ascii(self._ascii, joined, texts, rows, runs)
        fast = [k for k, (p, r) in enumerate(zip(prompts, responses)) if p.isascii() and r.isascii()]
        if not fast:
            return self._tokenize_python(prompts, responses, rows)
        slow = sorted(set(range(len(rows))) - set(fast))
        texts = [t for k in fast for t in (prompts[k], responses[k])]
        parts = [
            (self._tokenize_ascii(self._ascii, "".join(texts), texts, [rows[k] for k in fast], None), fast),
            (self._tokenize_python([prompts[k] for k in slow], [responses[k] for k in slow], []), slow),
        ]
        return _interleave(parts, rows)

    @staticmethod
    def _tokenize_ascii(
        tok: AsciiTokenizer, joined: str, texts: list[str], rows: list[int], runs: RunTable | None
    ) -> _Batch:
        """:meth:`_tokenize` of rows whose texts (prompt, response, prompt, ...) are all ASCII; with
        ``runs``, the prefilter's anchor runs are found in the same pass (``run_starts``)."""
        ids, counts, found = tok.ids_and_runs(joined, texts, runs)
        ends = np.cumsum(counts)
        return _Batch(
            ids=ids, starts=ends[0::2] - counts[0::2], prompt_ends=ends[0::2], ends=ends[1::2], rows=rows,
            run_starts=None if runs is None else found,
        )  # fmt: skip

    def _tokenize_python(self, prompts: list[str], responses: list[str], rows: list[int]) -> _Batch:
        """Eval-vocabulary ids of a batch of rows: one lower-casing and one tokenising pass over the
        joined batch (row and prompt/response borders marked by sentinel tokens), falling back to
        row-by-row tokenising when a text holds a sentinel character itself."""
        b = _Batch(rows=rows)
        vocab_get, punct = self.vocab.get, self.punctuation
        parts = [_ROW] * (4 * len(prompts) - 1)  # prompt, mark, response, mark, prompt, ...
        parts[0::4], parts[1::4], parts[2::4] = prompts, [_RESPONSE] * len(prompts), responses
        joined = "\n".join(parts).lower()
        ids = self._word_ids.ids(joined.split())
        marks = np.flatnonzero(ids < 0)
        # Our 2n - 1 marks are words of their own; a sentinel character in a text gives a negative id
        # only as a token of its own (inside a longer token it is part of an out-of-vocabulary word,
        # as on the reference path), so more marks than ours mean such a text: tokenise row by row.
        if len(marks) != 2 * len(prompts) - 1:
            starts: list[int] = []
            pends: list[int] = []
            ends: list[int] = []
            flat: list[int] = []
            for p, r in zip(prompts, responses):
                starts.append(len(flat))
                flat.extend(map(vocab_get, tokens(p, punct), repeat(0)))
                pends.append(len(flat))
                if r:
                    flat.extend(map(vocab_get, tokens(r, punct), repeat(0)))
                ends.append(len(flat))
            b.ids, b.starts, b.prompt_ends, b.ends = flat, starts, pends, ends
            return b
        bounds = np.concatenate(([-1], marks, [len(ids)]))
        k = np.arange(len(prompts))
        b.ids = ids[ids >= 0]  # sentinels (negative ids) dropped; positions shift by the marks before them
        b.starts = bounds[2 * k] + 1 - 2 * k
        b.prompt_ends = bounds[2 * k + 1] - 2 * k
        b.ends = bounds[2 * k + 2] - 2 * k - 1
        return b

    def _scan_batch(self, b: _Batch) -> Iterator[Hit]:
        hits: list[Hit] = []
        ids = np.asarray(b.ids, dtype=np.int64)
        origin = None  # each token's position in the full batch, where the prefilter dropped rows
        if len(ids) and self._prefilter_on:
            b, origin = self._candidates(b, ids)
            ids = np.asarray(b.ids, dtype=np.int64)
        if len(ids):
            s = self.hasher.prefix(ids)
            oov = np.concatenate(([0], np.cumsum(ids == 0)))
            starts = np.asarray(b.starts, dtype=np.int64)
            hits.extend(self._whole_hits(ids, s, oov, starts, np.asarray(b.prompt_ends, dtype=np.int64), b))
            hits.extend(self._row_hits(ids, s, oov, b, origin, hits))
        hits.sort(key=lambda h: h.row)
        yield from hits

    def _row_hits(
        self, ids, s, oov, b: _Batch, origin: np.ndarray | None, found_so_far: list[Hit]
    ) -> list[Hit]:
        """``ngram``, ``contained``, ``near`` and ``edited`` hits of the batch's rows (``exact`` ones given)."""
        starts = np.asarray(b.starts, dtype=np.int64)
        lengths = np.diff(np.append(starts, len(ids)))
        row_of = np.repeat(np.arange(len(b.rows)), lengths)
        ends = np.asarray(b.ends, dtype=np.int64)[row_of]
        pends = np.asarray(b.prompt_ends, dtype=np.int64)[row_of]
        hits = self._ngram_hits(ids, s, oov, ends, row_of, b)
        hits.extend(self._contained_hits(ids, s, oov, ends, row_of, b))
        hits.extend(self._near_hits(ids, s, oov, pends, row_of, b, origin))
        # An edited copy only where no other rule already made the pair dirty (no double count).
        found = {(h.row, h.eval_id) for h in chain(found_so_far, hits) if h.dirty}
        hits.extend(h for h in self._edited_hits(ids, row_of, b) if (h.row, h.eval_id) not in found)
        return hits

    def _whole_hits(self, ids, s, oov, starts, pends, b: _Batch) -> list[Hit]:
        """Rows whose prompt, trailing . ? ! dropped, equals an item's (``exact``)."""
        if not self.whole:
            return []
        pe = pends.copy()
        while True:  # strip trailing sentence punctuation, one token a round, every row at once
            active = np.flatnonzero(pe > starts)
            active = active[np.isin(ids[pe[active] - 1], self._sentence_ids)]
            if not len(active):
                break
            pe[active] -= 1
        n = pe - starts
        cand = np.flatnonzero(np.isin(n, self._whole_lengths) & (oov[pe] == oov[starts]))
        if not len(cand):
            return []
        with np.errstate(over="ignore"):
            h = (s[pe[cand]] - s[starts[cand]]) * self.hasher.pow_inv[starts[cand]]
        out = []
        for r in cand[member(h, self._whole_hashes)].tolist():
            for e in self.whole.get(tuple(ids[starts[r] : pe[r]].tolist()), ()):
                out.append(Hit(self.eval_ids[e], "exact", 1.0, b.rows[r], True))
        return out

    @staticmethod
    def _valid(oov: np.ndarray, ends: np.ndarray, length: int) -> np.ndarray:
        """Windows inside one row (``ends``: per position, its row's end) with no out-of-vocabulary word."""
        n = len(ends) - length + 1
        if n <= 0:
            return np.zeros(0, dtype=bool)
        return (np.arange(n) + length <= ends[:n]) & (oov[length : length + n] == oov[:n])

    def _ngram_hits(self, ids, s, oov, ends, row_of, b: _Batch) -> list[Hit]:
        n = self.ngram
        h = self.hasher.windows(s, n)
        if not len(h) or not len(self._ngram_hashes):
            return []
        pos = np.flatnonzero(self._valid(oov, ends, n) & member(h, self._ngram_hashes, self._ngram_bitmap))
        matched: dict[tuple[int, int], set[int]] = defaultdict(set)
        k = np.searchsorted(self._ngram_hashes, h[pos])
        for i, lo, hi in zip(pos.tolist(), self._post_first[k].tolist(), self._post_first[k + 1].tolist()):
            window = tuple(ids[i : i + n].tolist())
            for e, p in zip(self._post_item[lo:hi].tolist(), self._post_local[lo:hi].tolist()):
                if self.eval_tokens[e][p : p + n] == window:
                    matched[(int(row_of[i]), e)].add(p)
        out = []
        for (r, e), starts in matched.items():
            cover = self.coverage(e, starts)
            dirty = cover >= self.dirty_coverage and self.numbers_covered(e, starts)
            out.append(Hit(self.eval_ids[e], "ngram", cover, b.rows[r], dirty, tuple(sorted(starts))))
        return out

    def numbers_covered(self, e: int, starts: Iterable[int]) -> bool:
        """Whether every number token of eval item ``e`` lies inside a matched n-gram.

        A training row that tells the same story with other numbers covers most words of the item
        but is a different problem; a copy keeps the numbers too."""
        numbers = self.numbers[e]
        if not numbers.any():
            return True
        covered = np.zeros(len(numbers), dtype=bool)
        for p in starts:
            covered[p : p + self.ngram] = True
        return bool(covered[numbers].all())

    def coverage(self, e: int, starts: Iterable[int]) -> float:
        """Share of eval item ``e``'s content (non-template) tokens inside the n-grams starting at ``starts``."""
        content = self.content[e]
        total = int(content.sum())
        if total == 0:
            return 0.0
        covered = np.zeros(len(content), dtype=bool)
        for p in starts:
            covered[p : p + self.ngram] = True
        return float((covered & content).sum() / total)

    def _contained_hits(self, ids, s, oov, ends, row_of, b: _Batch) -> list[Hit]:
        out = []
        seen: set[tuple[int, int]] = set()
        for length, hashes in self._short_by_len.items():
            h = self.hasher.windows(s, length)
            if not len(h):
                continue
            for i in np.flatnonzero(self._valid(oov, ends, length) & member(h, hashes)).tolist():
                r = int(row_of[i])
                for e in self.short_items.get(tuple(ids[i : i + length].tolist()), ()):
                    if (r, e) not in seen:
                        seen.add((r, e))
                        out.append(Hit(self.eval_ids[e], "contained", 1.0, b.rows[r], True))
        return out

    def _near_hits(
        self, ids, s, oov, pends, row_of, b: _Batch, origin: np.ndarray | None = None
    ) -> list[Hit]:
        k = self.shingle
        h = self.hasher.windows(s, k)
        if not len(h) or not len(self._shingle_hashes):
            return []
        n = len(h)
        # Only prompt shingles count (the response, most of a row, is never looked at here).
        at = np.flatnonzero(np.arange(k, n + k) <= pends[:n])
        h, in_vocab = h[at], oov[at + k] == oov[at]
        template = np.zeros(len(at), dtype=bool)
        template[in_vocab] = member(h[in_vocab], self._template_shingles, self._template_bitmap)
        at, h, in_vocab = at[~template], h[~template], in_vocab[~template]  # the counted shingles
        shared = np.zeros(len(at), dtype=bool)
        shared[in_vocab] = member(h[in_vocab], self._shingle_hashes, self._shingle_bitmap)
        rows = row_of[at]
        total = np.bincount(rows, minlength=len(b.rows))
        hit = np.bincount(rows[shared], minlength=len(b.rows))
        # Necessary condition for Jaccard >= t with one item: at least t of the row's distinct
        # shingles are eval shingles; a factor 2 of slack covers repeated shingles (counted per position).
        cand = np.flatnonzero((hit > 0) & (2 * hit >= self.lsh_threshold * total))
        if not len(cand):
            return []
        sel = np.isin(rows, cand)
        # A shingle with an out-of-vocabulary word matches nothing; salt it (by its position in the
        # full batch, whatever the prefilter kept) so that distinct ones stay distinct.
        place = at[sel] if origin is None else origin[at[sel]]
        with np.errstate(over="ignore"):
            salted = np.where(in_vocab[sel], h[sel], h[sel] ^ (place.astype(np.uint64) * _OOV_SALT))
        sets: dict[int, set[int]] = {int(r): set() for r in cand.tolist()}
        for r, hv in zip(rows[sel].tolist(), salted.tolist()):
            sets[r].add(hv)
        order = [r for r in cand.tolist() if sets[r]]
        sketches = self._minhash([sets[r] for r in order])
        out = []
        for r, m in zip(order, sketches):
            row_words: set[int] | None = None
            for e, jac in minhash.confirmed(
                self.lsh.query(m), sets[r], self.eval_shingles, self.minhash_threshold
            ):
                if row_words is None:
                    row_words = set(ids[row_of == r].tolist())
                out.append(Hit(self.eval_ids[e], "near", jac, b.rows[r], self._numbers_in(e, row_words)))
        return out

    def _numbers_in(self, e: int, row_words: set[int]) -> bool:
        """Whether every number of eval item ``e`` occurs in the training row (same problem, not a re-told one)."""
        return all(t in row_words for t, is_num in zip(self.eval_tokens[e], self.numbers[e]) if is_num)


class HitSummary:
    """Per eval item: the strongest hit, best score per kind, rows involved, n-gram starts, dirty flag.

    Built hit by hit (:meth:`add`, hits in row order) or from shards (:meth:`merge` of the summary of
    each shard, in shard order): both give the same result, which is what lets a scan run in shards
    on any number of workers. Memory: one record per eval item with a hit."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.starts: dict[str, set[int]] = defaultdict(set)

    def add(self, h: Hit) -> None:
        rec = self.items.get(h.eval_id)
        if rec is None:
            rec = self.items[h.eval_id] = {
                "dirty": False, "best": None, "kinds": {}, "rows": [], "row_coverage": 0.0, "coverage": 0.0,
            }  # fmt: skip
        if h.kind == "ngram":
            self.starts[h.eval_id].update(h.positions)
            rec["row_coverage"] = max(rec["row_coverage"], h.score)
        rec["dirty"] = rec["dirty"] or h.dirty
        if h.score > rec["kinds"].get(h.kind, -1.0):
            rec["kinds"][h.kind] = h.score
        if len(rec["rows"]) < 5 and h.row not in rec["rows"]:
            rec["rows"].append(h.row)
        if rec["best"] is None or (h.dirty, h.score) > (rec["best"].dirty, rec["best"].score):
            rec["best"] = h

    def merge(self, later: HitSummary) -> None:
        """Fold in the summary of rows that come after every row seen so far."""
        for eid, new in later.items.items():
            rec = self.items.get(eid)
            if rec is None:
                self.items[eid] = {**new, "kinds": dict(new["kinds"]), "rows": list(new["rows"])}
            else:
                rec["dirty"] = rec["dirty"] or new["dirty"]
                rec["row_coverage"] = max(rec["row_coverage"], new["row_coverage"])
                for kind, score in new["kinds"].items():
                    if score > rec["kinds"].get(kind, -1.0):
                        rec["kinds"][kind] = score
                for row in new["rows"]:
                    if len(rec["rows"]) < 5 and row not in rec["rows"]:
                        rec["rows"].append(row)
                b = new["best"]
                if (b.dirty, b.score) > (rec["best"].dirty, rec["best"].score):
                    rec["best"] = b
        for eid, st in later.starts.items():
            self.starts[eid].update(st)

    def finish(self, index: OverlapIndex) -> dict[str, dict[str, Any]]:
        """The per-item records, with ``coverage`` (the union over rows) filled in."""
        pos_of = {eid: e for e, eid in enumerate(index.eval_ids)}
        for eid, st in self.starts.items():
            self.items[eid]["coverage"] = index.coverage(pos_of[eid], st)
        return self.items


def summarize_hits(index: OverlapIndex, hits: Iterable[Hit]) -> dict[str, dict[str, Any]]:
    """Per eval item: the strongest hit, best score per kind, rows involved, coverage, dirty flag.

    Returns ``{eval_id: {"dirty", "best", "kinds": {kind: best score}, "rows": [...],
    "row_coverage", "coverage"}}`` for items with at least one hit. ``dirty``: some single
    training row meets a decision threshold (an exact, contained or near hit, or n-gram coverage of
    at least ``index.dirty_coverage`` by that row alone). ``coverage`` is the union over all rows
    (Llama-2 style), reported but not decisive: prompts that embed few-shot exemplars drawn from a
    train split would otherwise be "covered" piecewise by many unrelated rows.
    """
    summary = HitSummary()
    for h in hits:
        summary.add(h)
    return summary.finish(index)
