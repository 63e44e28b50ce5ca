"""The compiled ASCII tokeniser (``text/fast_tokens.py``) gives exactly the ids of the reference
``overlap.tokens`` path, in both punctuation modes, alone and merged with the Python path for the
non-ASCII rows of a batch; the scan's hits do not change."""

from __future__ import annotations

import copy
import random
import string

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill_doctor.text import fast_tokens
from distill_doctor.text.fast_tokens import AsciiTokenizer, ByteVocab
from distill_doctor.text.overlap import OverlapIndex, tokens

MODES = ["delete", "keep"]
ITEMS = {
    "q0": "What is the capital of France?",
    "q1": 'Compute 12+5, then x=y; (a<b) or [c>d]... "quoted" it\'s done!',
    "q2": "ΟΔΟΣ İstanbul, naïve ǅemal: 12+5 x=y",
    "q3": "Answer the following question. Tom has 3 apples and buys 12 more apples at the market.",
}
_WORDS = ["What", "is", "THE", "capital", "of", "France", "12+5", "x=y", "foo-bar", "it's", "apples"]
# Every ASCII character (controls, the \x1c-\x1f separators Python counts as whitespace, punctuation).
_ASCII = st.text(alphabet=st.characters(max_codepoint=127), max_size=8)
_UNICODE = list("İıΣσςẞßǅǄﬁ\x85\xa0\u2028\u3000\u200b“”«»—…") + ["ΟΔΟΣ", "naïve", "K"]


def _ascii_texts():
    piece = st.one_of(st.sampled_from(_WORDS), st.sampled_from(list(string.punctuation + " \t\n")), _ASCII)
    return st.lists(piece, max_size=30).map("".join)


def _any_texts():
    piece = st.one_of(st.sampled_from(_WORDS), st.sampled_from(_UNICODE), _ASCII, st.text(max_size=4))
    return st.lists(piece, max_size=20).map("".join)


def _reference(index: OverlapIndex, text: str) -> list[int]:
    return [index.vocab.get(t, 0) for t in tokens(text, index.punctuation)]


@pytest.mark.parametrize("punctuation", MODES)
def test_ascii_ids_are_the_reference_ids(punctuation):
    """Each text's ids and token count equal ``tokens`` + a vocabulary lookup, on ASCII-heavy texts."""
    vocab = {
        w: i + 1 for i, w in enumerate(sorted({t for s in ITEMS.values() for t in tokens(s, punctuation)}))
    }
    tok = AsciiTokenizer(vocab, punctuation)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(_ascii_texts(), min_size=1, max_size=8))
    def check(texts):
        ids, counts = tok.ids("".join(texts), texts)
        want = [[vocab.get(t, 0) for t in tokens(x, punctuation)] for x in texts]
        assert counts.tolist() == [len(w) for w in want]
        assert ids.tolist() == [i for w in want for i in w]

    check()


@pytest.mark.parametrize("punctuation", MODES)
def test_mixed_batches_give_the_reference_ids(punctuation):
    """A batch of ASCII and non-ASCII rows (Unicode-heavy): the compiled ids of the ASCII rows and the
    Python path's of the others, merged in row order, equal ``tokens`` row by row and the all-Python
    batch, offsets included."""
    index = OverlapIndex(ITEMS, punctuation=punctuation)
    plain = copy.copy(index)
    plain._ascii = None
    row = st.one_of(st.tuples(_ascii_texts(), _ascii_texts()), st.tuples(_any_texts(), _any_texts()))

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(row, min_size=1, max_size=8))
    def check(rows):
        args = ([p for p, _ in rows], [r for _, r in rows], list(range(len(rows))))
        b, ref = index._tokenize(*args), plain._tokenize(*args)
        ids = np.asarray(b.ids).tolist()
        for k, (p, r) in enumerate(rows):
            assert ids[b.starts[k] : b.prompt_ends[k]] == _reference(index, p)
            assert ids[b.prompt_ends[k] : b.ends[k]] == _reference(index, r)
        assert ids == np.asarray(ref.ids).tolist()
        for name in ("starts", "prompt_ends", "ends"):
            assert np.asarray(getattr(b, name)).tolist() == np.asarray(getattr(ref, name)).tolist()

    check()


def test_words_that_share_a_slot_with_vocabulary_words_are_unknown():
    """The hash only picks where a probe starts; bytes are compared, so an unknown word whose hash
    lands on a vocabulary word's slot (here the table has 16 slots: most words do) is unknown, and
    prefixes or extensions of vocabulary words are not taken for them."""
    vocab = {"cat": 1, "cats": 2, "dog": 3, "a": 4}
    table = ByteVocab(vocab)
    assert len(table.slots) == 16
    assert {w: table.lookup(w) for w in vocab} == vocab
    rng = random.Random(0)
    strangers = {"".join(rng.choices("acdgost", k=rng.randint(1, 5))) for _ in range(500)} - set(vocab)
    assert len(strangers) > 100  # with 16 slots, each vocabulary word's slot is met by many of them
    assert all(table.lookup(w) == 0 for w in strangers | {"ca", "catss", "do", "dogs", "", "aa"})
    tok = AsciiTokenizer(vocab, "keep")
    texts = sorted(strangers) + ["cat cats dog a"]
    ids, counts = tok.ids("".join(texts), texts)
    assert ids.tolist() == [0] * int(counts[:-1].sum()) + [1, 2, 3, 4]


def test_scan_hits_are_those_of_the_python_path():
    """Whole scans (prefilter, every rule) give the same hits with the compiled tokeniser as with
    the Python one, on copies, edits and re-punctuations of the items, ASCII or not."""
    rng = random.Random(5)
    items = {**ITEMS, "q4": " ".join(rng.choice(_WORDS[:7]) for _ in range(30)) + "?"}
    for punctuation in MODES:
        index = OverlapIndex(items, punctuation=punctuation, template_min_items=2)
        plain = copy.copy(index)
        plain._ascii = None
        rows = []
        for _ in range(300):
            words = rng.choice(list(items.values())).split()
            if rng.random() < 0.5:
                words[rng.randrange(len(words))] = rng.choice(["zzz", "İ", "apples,", "12"])
            cut = rng.randrange(len(words) // 2 + 1)
            text = " ".join(words[cut:]) if rng.random() < 0.3 else " ".join(words)
            rows.append((text, rng.choice(["ok", "", text.upper(), "naïve answer"])))
        hits = list(index.scan(rows))
        assert hits == list(plain.scan(rows)) and len({h.kind for h in hits}) >= 3


@pytest.mark.parametrize("punctuation", MODES)
def test_anchor_runs_found_while_tokenising_are_the_numpy_ones(punctuation):
    """The prefilter's anchor runs (5-word runs and shorter ones found from a key word) that the
    compiled tokeniser finds in the same pass start at the token positions the numpy path finds, on
    batches of eval-item stretches with words changed and punctuation around (runs across rows too)."""
    rng = random.Random(11)
    vocab = ["apple", "river", "stone", "cloud", "seven", "12", "35", "market", "yellow", "garden"]
    items = {}
    for i in range(24):
        body = " ".join(rng.choice(vocab) for _ in range(rng.choice([3, 4, 6, 9, 14, 30])))
        items[f"q{i}"] = ("Answer the question below. " + body if i % 3 == 0 else body) + rng.choice("?.")
    index = OverlapIndex(items, punctuation=punctuation, template_min_items=3)
    assert index._prefilter_on and index._short_runs  # both kinds of run are searched
    words = st.sampled_from([*vocab, "zzz", ",", "?", "Answer", "the", "question", "below."])
    stretch = st.sampled_from(sorted(items.values())).flatmap(
        lambda t: st.tuples(st.integers(0, len(t.split())), st.integers(0, len(t.split()))).map(
            lambda ab: " ".join(t.split()[min(ab) : max(ab)])
        )
    )
    text = st.lists(st.one_of(words, stretch), max_size=12).map(" ".join)

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.tuples(text, text), min_size=1, max_size=6))
    def check(rows):
        b = index._tokenize([p for p, _ in rows], [r for _, r in rows], list(range(len(rows))))
        assert b.run_starts is not None
        assert b.run_starts.tolist() == sorted(set(index._anchor_starts(np.asarray(b.ids)).tolist()))

    check()


def test_warm_up_compiles_the_kernels():
    fast_tokens.warm_up()
    assert AsciiTokenizer({"a": 7}, "delete").ids("A.b", ["A.b"])[0].tolist() == [0]  # "ab": unknown
    assert AsciiTokenizer({"a": 7, ".": 9}, "keep").ids("A.b", ["A.b"])[0].tolist() == [7, 9, 0]


def test_kernels_compile_without_a_writable_cache_folder():
    """Where numba finds no writable cache folder (read-only install, no writable home) its
    ``cache=True`` refuses at import; the kernels are then compiled in each process instead."""
    import os
    import subprocess
    import sys

    code = (
        "import numba.core.caching as c; c.CacheImpl._locator_classes = []\n"
        "from distill_doctor.text import fast_tokens as ft\n"
        "ids, counts = ft.AsciiTokenizer({'a': 7}, 'keep').ids('A b', ['A b'])\n"
        "assert ids.tolist() == [7, 0] and ft.kernel_record()['cache_path'] is None\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
