"""The shared pieces generate and the probes build on: the causal-LM loader and generation core
(:mod:`distill_doctor.causal_lm`) and the MinHash/LSH helpers (:mod:`distill_doctor.text.minhash`)."""

from __future__ import annotations

import pytest
import torch
from datasketch import MinHashLSH
from produce_helpers import tiny_models

from distill_doctor.causal_lm import encode_left_padded, generate_new_tokens, load_causal_lm
from distill_doctor.errors import InputError
from distill_doctor.text import minhash

torch.set_num_threads(1)


def test_loader_refuses_a_folder_without_a_model(tmp_path):
    with pytest.raises(InputError, match="no config.json"):
        load_causal_lm(tmp_path, local_only=True)
    with pytest.raises(InputError, match="cannot load a causal LM"):
        load_causal_lm(tmp_path / "missing")


def test_loader_gives_eval_mode_and_left_padding():
    model, tok = load_causal_lm(tiny_models()[0], device="cpu")
    assert not model.training and tok.padding_side == "left"
    assert next(model.parameters()).device.type == "cpu"


def test_encoding_pads_left_and_restores_the_tokenizer():
    _, tok = load_causal_lm(tiny_models()[0], device="cpu")
    tok.padding_side = tok.truncation_side = "right"
    ids, mask = encode_left_padded(tok, ["a", "abcdef"], torch.device("cpu"), max_length=4)
    assert ids.shape == mask.shape == (2, 4)
    assert mask[0, 0] == 0 and mask[0, -1] == 1 and mask[1].all()  # padding on the left
    assert tok.padding_side == tok.truncation_side == "right"


def test_generation_core_greedy_seeded_and_forced_length():
    model, tok = load_causal_lm(tiny_models()[0], device="cpu")
    ids, mask = encode_left_padded(tok, ["What is 1 + 4? ", "Seven"], torch.device("cpu"))
    pad, eos = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id, tok.eos_token_id
    greedy = generate_new_tokens(model, ids, mask, max_new_tokens=6, pad_id=pad, eos_id=eos)
    assert greedy.shape[0] == 2 and greedy.shape[1] <= 6
    forced = generate_new_tokens(model, ids, mask, max_new_tokens=5, min_new_tokens=5, pad_id=pad)
    assert forced.shape == (2, 5)
    rng = torch.get_rng_state()
    kw = dict(max_new_tokens=6, pad_id=pad, eos_id=eos, temperature=1.0, num_return_sequences=3, seed=4)
    a = generate_new_tokens(model, ids, mask, **kw)
    assert torch.equal(rng, torch.get_rng_state())  # a seeded call leaves the caller's RNG alone
    assert torch.equal(a, generate_new_tokens(model, ids, mask, **kw)) and a.shape[0] == 6


def test_minhash_helpers():
    assert minhash.word_shingles(["a", "b", "c"], 2) == {"a b", "b c"}
    assert minhash.word_shingles(["a"], 3) == {"a"} and minhash.word_shingles([], 3) == set()
    assert minhash.lsh_threshold(0.85) == 0.65 and minhash.lsh_threshold(0.4) == 0.3
    assert minhash.exact_jaccard({1, 2}, {2, 3}) == pytest.approx(1 / 3)
    assert minhash.exact_jaccard(set(), set()) == 1.0
    sets = [{b"x", b"y", b"z"}, {b"x", b"y", b"z"}, {b"p", b"q"}]
    sk = minhash.sketches(sets, num_perm=64)
    assert sk[0].jaccard(sk[1]) == 1.0
    lsh = MinHashLSH(threshold=0.5, num_perm=64)
    for i, m in enumerate(sk):
        lsh.insert(i, m)
    assert minhash.confirmed(sorted(lsh.query(sk[0])), sets[0], sets, 0.9) == [(0, 1.0), (1, 1.0)]
    rec = minhash.record(num_perm=64, hashfunc="sha1_hash32", shingle=5)
    assert rec == {
        "shingle": 5,
        "num_perm": 64,
        "library": "datasketch",
        "scheme": "affine32",
        "hashfunc": "sha1_hash32",
    }
