"""The overlap index: exact n-grams with coverage, whole texts, containment, MinHash near-duplicates."""

from __future__ import annotations

import random
import string

import pytest

from distill_doctor.text.overlap import OverlapIndex, normalize, summarize_hits, tokens, word_ngrams

WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "seven",
    "market",
    "yellow",
    "garden",
    "window",
    "pencil",
    "bridge",
    "silver",
    "forest",
    "engine",
    "planet",
    "candle",
    "mirror",
    "rocket",
    "tiger",
    "violin",
    "winter",
    "harbor",
    "basket",
    "copper",
    "desert",
    "feather",
    "island",
    "jacket",
    "ladder",
    "meadow",
    "needle",
    "orange",
]


def sentence(rng: random.Random, k: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(k)).capitalize() + "."


def test_normalisation_matches_lm_eval_janitor():
    from lm_eval.decontamination.janitor import Janitor
    from lm_eval.decontamination.janitor import word_ngrams as janitor_ngrams

    jan = Janitor(ngram_n=3)
    text = "  Hello, World!  It's 2+2=4; isn't it?\n\tYES. "
    assert normalize(text) == " ".join(jan.normalize_string(text).split())
    assert [" ".join(g) for g in word_ngrams(text, 3)] == list(janitor_ngrams(jan.normalize_string(text), 3))
    assert tokens("What is 2+2?", "keep") == ["what", "is", "2", "+", "2", "?"]
    assert word_ngrams("too short", 13) == []


def test_exact_short_prompt_and_case_punctuation():
    idx = OverlapIndex({"q1": "What is 2+2?", "q2": "Name the capital of France."}, punctuation="keep")
    hits = idx.match("  what IS 2 + 2 ")
    assert [(h.eval_id, h.kind, h.dirty) for h in hits] == [("q1", "exact", True)]
    assert idx.match("What is 2*2?") == []  # operators are content
    assert idx.match("What is 22?") == []
    assert idx.match("") == []
    assert (
        OverlapIndex({"a": "Solve."}, punctuation="keep").match("solve!") == []
    )  # too short to mean anything
    # Janitor semantics delete the operator: a known source of false hits on arithmetic.
    janitor_like = OverlapIndex({"q1": "What is 12+5?"})
    assert [h.kind for h in janitor_like.match("what is 12-5")] == ["exact"]


def test_ngram_coverage_rule():
    rng = random.Random(0)
    item = " ".join(sentence(rng, 10) for _ in range(4))  # 40 words
    idx = OverlapIndex({"e": item, "other": sentence(rng, 30)})
    words = normalize(item).split()
    full = idx.match(("Please solve: " + item, "Sure."))
    assert any(h.kind == "ngram" and h.dirty and h.score == 1.0 for h in full)
    half = idx.match(" ".join(words[:20]))
    (h,) = [h for h in half if h.kind == "ngram"]
    assert h.score == pytest.approx(20 / 40) and not h.dirty
    # Two rows that each cover half cover it all in the union, which is reported, but no single
    # row reproduces the item (few-shot exemplars from a train split look like this): not dirty.
    hits = list(idx.scan([" ".join(words[:21]), " ".join(words[19:])]))
    summary = summarize_hits(idx, hits)
    assert summary["e"]["coverage"] == 1.0 and not summary["e"]["dirty"]
    assert summary["e"]["row_coverage"] == pytest.approx(21 / 40)
    assert summary["e"]["rows"] == [0, 1]


def test_contained_short_item_and_response_side():
    idx = OverlapIndex({"s": "Find the sum of the first ten odd numbers please", "x": "unrelated words here"})
    hits = idx.match(("Homework", "Q: find the sum of the first ten odd numbers, please! A: 100"))
    assert [(h.eval_id, h.kind) for h in hits] == [("s", "contained")]


def test_near_duplicates_are_confirmed_by_exact_jaccard():
    rng = random.Random(1)
    items = {f"e{i}": " ".join(sentence(rng, 12) for _ in range(5)) for i in range(30)}
    idx = OverlapIndex(items, minhash_threshold=0.7)
    words = normalize(items["e3"]).split()
    words[30] = "zebra"  # one substitution in 60 words: 5 of ~56 shingles change
    hits = [h for h in idx.match(" ".join(words)) if h.kind == "near"]
    assert [h.eval_id for h in hits] == ["e3"]
    assert 0.7 <= hits[0].score < 1.0
    heavy = normalize(items["e4"]).split()
    for j in range(0, 60, 6):
        heavy[j] = "zebra"
    assert not [h for h in idx.match(" ".join(heavy)) if h.kind == "near"]
    p = idx.params()
    assert p["minhash"]["num_perm"] == 128 and p["minhash"]["scheme"] == "affine32"
    assert p["minhash"]["lsh_threshold"] < p["minhash"]["threshold"]


def test_template_text_shared_by_eval_items_never_matches():
    rng = random.Random(2)
    template = (
        "You are a careful assistant. Read the question below, think step by step, "
        "and write the final answer on its own line after the words The answer is."
    )
    items = {f"e{i}": template + " " + sentence(rng, 8) for i in range(40)}
    idx = OverlapIndex(items)
    assert idx.params()["template_ngrams"] > 0
    train = [template + " " + sentence(rng, 8) for _ in range(200)]
    hits = list(idx.scan(train))
    assert not [h for h in hits if h.dirty]
    # The real item behind the template is still found.
    assert any(h.dirty and h.eval_id == "e7" for h in idx.match(items["e7"]))


def test_scan_streams_in_batches_with_global_row_numbers():
    rng = random.Random(3)
    items = {f"e{i}": " ".join(sentence(rng, 10) for _ in range(3)) for i in range(20)}
    idx = OverlapIndex(items, batch_rows=7)
    rows: list[str | tuple[str, str]] = [sentence(rng, 20) for _ in range(50)]
    rows[33] = items["e5"]
    rows[48] = ("intro", items["e9"])
    dirty = {(h.row, h.eval_id) for h in idx.scan(iter(rows)) if h.dirty}
    assert dirty == {(33, "e5"), (48, "e9")}
    assert idx.dirty_rows(rows) == {33, 48}
    record = idx.manifest_record(["toy"], removed=2)
    assert record["removed"] == 2 and record["ngram"] == 13 and "MinHash" in record["method"]


def test_random_texts_have_no_false_hits():
    rng = random.Random(4)
    letters = string.ascii_lowercase
    vocab = ["".join(rng.choice(letters) for _ in range(5)) for _ in range(3000)]
    items = {f"e{i}": " ".join(rng.choice(vocab) for _ in range(40)) for i in range(200)}
    idx = OverlapIndex(items)
    train = [" ".join(rng.choice(vocab) for _ in range(60)) for _ in range(2000)]
    assert list(idx.scan(train)) == []


def test_invalid_parameters():
    with pytest.raises(ValueError):
        OverlapIndex({"a": "b"}, ngram=1)
    with pytest.raises(ValueError):
        OverlapIndex({"a": "b"}, minhash_threshold=0)
    empty = OverlapIndex({})
    assert empty.match("anything at all") == []


def test_window_hashes_agree_with_tuple_hashes_and_count_items():
    import numpy as np

    from distill_doctor.text.window_hash import WindowHasher, items_per_hash, member

    wh = WindowHasher(50, seed=3)
    ids = np.array([1, 2, 3, 4, 1, 2, 3, 9], dtype=np.int64)
    h = wh.windows(wh.prefix(ids), 3)
    assert len(h) == 6 and h[0] == h[4]  # (1, 2, 3) twice
    assert h.tolist() == wh.of_tuples([tuple(ids[i : i + 3]) for i in range(6)]).tolist()
    assert len(set(h.tolist())) == 5
    hashes, counts = items_per_hash(h, np.array([0, 0, 0, 0, 1, 1]))
    assert dict(zip(hashes.tolist(), counts.tolist()))[int(h[0])] == 2
    assert member(h, np.unique(h[:2])).tolist() == [True, True, False, False, True, False]


def _kinds(idx, text):
    return {(h.eval_id, h.kind, h.dirty) for h in idx.match(text)}


def test_edited_copies_are_dirty_whatever_their_length():
    """One or two words changed, re-punctuated, or inside a longer text (issue 16.3)."""
    q20 = "Tom packs the red boxes into the old van before the market opens and then drives to town quickly today"
    q12 = "Which planet in our solar system has the largest number of known moons"
    q10 = "Ana reads twelve pages of her novel each night before sleep"
    idx = OverlapIndex(
        {"q20": q20, "q12": q12, "q10": q10, "x": "completely unrelated words live here"}, punctuation="keep"
    )
    one = q20.replace("old", "new")
    assert ("q20", "edited", True) in _kinds(idx, (one, "ok"))
    two = q20.replace("old", "new").replace("quickly", "slowly")
    assert ("q20", "edited", True) in _kinds(idx, ("Intro words first. " + two + " And more after.", ""))
    assert ("q12", "edited", True) in _kinds(idx, (q12.replace("largest", "biggest"), ""))
    repunct = "Which planet, in our solar system, has the largest number of known moons?!"
    assert ("q12", "edited", True) in _kinds(idx, ("Quiz", "Answer this: " + repunct))
    assert ("q10", "edited", True) in _kinds(idx, (q10.replace("novel", "book"), ""))
    # Three edits in 20 words, or two in 12, is another text.
    three = two.replace("red", "blue")
    assert not any(d for e, _, d in _kinds(idx, (three, "")) if e == "q20")
    assert not any(
        d for e, _, d in _kinds(idx, (q12.replace("largest", "biggest").replace("moons", "rings"), ""))
    )


def test_short_questions_and_other_numbers_stay_clean():
    idx = OverlapIndex(
        {
            "cap": "What is the capital city of France?",
            "num": "A farmer has 120 sheep and buys 35 more at the spring fair in the next village",
        },
        punctuation="keep",
    )
    assert not any(
        d for _, _, d in _kinds(idx, ("What is the capital city of Spain?", ""))
    )  # 6 words: no edit allowed
    twin = "A farmer has 120 sheep and buys 36 more at the spring fair in the next village"
    assert not any(d for _, _, d in _kinds(idx, (twin, "")))  # other numbers: another problem
    copy = "A farmer has 120 sheep and buys 35 more at the autumn fair in the next village"
    assert ("num", "edited", True) in _kinds(idx, (copy, ""))


def test_words_of_a_shared_opening_are_not_content_words():
    """The bench's short plant missed at 200,000 rows (issue 16): the item had 10 words after its
    instruction, but its first one opened 1% of the items too, so "the following question. <word>"
    is template text and the item has 9 content words: no edit allowed, a one-word edit is another
    question. With 10 content words the same edit, even one on the shared opening word, is a copy."""
    import copy

    rng = random.Random(7)
    lead = "Answer the following question. The"
    items = {f"t{i}": f"{lead} {' '.join(rng.choice(WORDS) for _ in range(12))}?" for i in range(12)}
    items["q9"] = f"{lead} copper lanterns drift over quiet northern harbors after midnight?"
    items["q10"] = f"{lead} copper lanterns drift slowly over quiet northern harbors after midnight?"
    idx = OverlapIndex(items, punctuation="keep")
    plain = copy.copy(idx)
    plain._prefilter_on = False
    pos = {eid: e for e, eid in enumerate(idx.eval_ids)}
    assert idx._shingle_content[pos["q9"]].tolist()[:6] == [False] * 6  # "answer ... . the": template
    assert [int(idx.edit_allowed[pos[q]]) for q in ("q9", "q10")] == [0, 1]
    rows = [
        (items["q9"].replace("drift", "zzzedit"), "ok"),
        (items["q10"].replace("drift", "zzzedit"), "ok"),
        (items["q10"].replace("The copper", "A copper"), "ok"),
        (items["q9"], "ok"),
    ]
    hits = list(idx.scan(rows))
    assert hits == list(plain.scan(rows))  # the prefilter keeps every hit
    dirty = {(h.row, h.eval_id) for h in hits if h.dirty}
    assert (0, "q9") not in dirty and {(1, "q10"), (2, "q10"), (3, "q9")} <= dirty


# Unicode-heavy texts: whitespace of every kind (\x1c-\x1f, U+0085, U+00A0, U+2028, U+3000 ...),
# case pairs whose lower-casing changes length or depends on context ('İ', final sigma 'Σ'),
# ASCII and non-ASCII punctuation, digits, the row/response sentinel characters themselves.
_TRICKY = list(" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2028\u2029\u202f\u3000\u200b")
_TRICKY += list("İıΣσςẞßǅǄﬁΑΒ") + list(string.punctuation) + list("“”«»—…·") + ["\x01", "\x02", "\x00"]
_WORDS = ["What", "is", "the", "capital", "OF", "France", "12+5", "x=y", "ΟΔΟΣ", "İstanbul", "naïve", "ǅemal"]


def _texts():
    from hypothesis import strategies as st

    piece = st.one_of(st.sampled_from(_WORDS), st.sampled_from(_TRICKY), st.text(max_size=6))
    return st.lists(piece, max_size=25).map("".join)


@pytest.mark.parametrize("punctuation", ["delete", "keep"])
def test_batch_tokeniser_gives_the_reference_ids(punctuation):
    """The batch path (whole batch lower-cased, split on whitespace, cached per word) gives exactly
    the ids of :func:`tokens` row by row (the reference path), on Unicode-heavy texts."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    items = {
        f"q{i}": t
        for i, t in enumerate(["What is the capital of France?", "ΟΔΟΣ İstanbul, naïve ǅemal: 12+5 x=y"])
    }
    index = OverlapIndex(items, punctuation=punctuation)
    index._word_ids._limit = 40  # the word cache is emptied between many of the batches below

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.tuples(_texts(), _texts()), min_size=1, max_size=6))
    def check(rows):
        b = index._tokenize([p for p, _ in rows], [r for _, r in rows], list(range(len(rows))))
        ids = [int(i) for i in b.ids]
        for k, (p, r) in enumerate(rows):
            want_p = [index.vocab.get(t, 0) for t in tokens(p, punctuation)]
            want_r = [index.vocab.get(t, 0) for t in tokens(r, punctuation)]
            assert ids[b.starts[k] : b.prompt_ends[k]] == want_p
            assert ids[b.prompt_ends[k] : b.ends[k]] == want_r
        assert len(ids) == b.ends[-1]

    check()


def _prefilter_pair(punctuation: str, **params):
    """An index over eval items built to be matched piecewise (template, numbers, short and long
    items) and the same index with the prefilter switched off (the reference path)."""
    import copy

    rng = random.Random(7)
    vocab = WORDS[:14] + ["12", "35", "7"]
    template = "Answer the question below, then stop."
    items = {}
    for i in range(16):
        body = " ".join(rng.choice(vocab) for _ in range(rng.choice([3, 6, 9, 12, 16, 24, 30])))
        items[f"q{i}"] = (template + " " + body if i % 3 == 0 else body.capitalize()) + rng.choice(
            ["?", ".", ""]
        )
    index = OverlapIndex(items, punctuation=punctuation, template_min_items=3, **params)
    plain = copy.copy(index)
    plain._prefilter_on = False
    return index, plain, items, vocab


def _rows_from(draw, items: dict[str, str], vocab: list[str]) -> str:
    """A training text made of an eval item's stretch with edits, re-punctuation and words around."""
    from hypothesis import strategies as st

    words = draw(st.sampled_from(sorted(items.values()))).split()
    a = draw(st.one_of(st.just(0), st.integers(0, len(words))))  # whole items often: edited copies
    b = draw(st.one_of(st.just(len(words)), st.integers(a, len(words))))
    piece = words[a:b]
    for _ in range(draw(st.integers(0, 3))):
        if piece:
            at = draw(st.integers(0, len(piece) - 1))
            piece[at] = draw(st.sampled_from([*vocab, "zzz", piece[at] + ",", piece[at].upper() + "?"]))
    around = st.lists(st.sampled_from([*vocab, ",", "?", "zzz"]), max_size=4)
    return " ".join(draw(around) + piece + draw(around))


@pytest.mark.parametrize(
    "punctuation,params",
    [("keep", {}), ("delete", {}), ("keep", {"ngram": 6, "shingle": 3, "minhash_threshold": 0.5})],
)
def test_prefilter_keeps_every_hit(punctuation, params):
    """The anchor prefilter (``OverlapIndex._build_prefilter``) drops only rows without hits: the
    scan gives exactly the hits of the unfiltered path, on rows built from eval items with word
    edits, re-punctuation, cut stretches and words around them."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    index, plain, items, vocab = _prefilter_pair(punctuation, **params)
    assert index._prefilter_on
    text = st.composite(lambda draw: _rows_from(draw, items, vocab))()

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.tuples(text, text), min_size=1, max_size=8))
    def check(rows):
        assert list(index.scan(rows)) == list(plain.scan(rows))

    check()


def test_prefilter_rejects_rows_without_anchors_and_keeps_copies():
    """The prefilter is not vacuous: unrelated rows are dropped before the full path, copies kept."""
    import numpy as np

    index, plain, items, vocab = _prefilter_pair("keep")
    rng = random.Random(3)
    rows = [(sentence(rng, 20), sentence(rng, 30)) for _ in range(200)] + [(items["q4"], "")]
    b = index._tokenize([p for p, _ in rows], [r for _, r in rows], list(range(len(rows))))
    ids = np.asarray(b.ids, dtype=np.int64)
    kept, origin = index._candidates(b, ids)
    assert origin is not None and 0 < len(kept.rows) < len(rows) and len(rows) - 1 in kept.rows
    assert list(index.scan(rows)) == list(plain.scan(rows)) != []
