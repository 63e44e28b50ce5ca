"""Top-k teacher cache: the bucketed losses, and a cache built from a real tiny teacher."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from topk_bounds import check_missed_tail

from distill_doctor.errors import InputError
from distill_doctor.losses.divergences import forward_kl, reverse_kl
from distill_doctor.losses.topk import sparse_kd_loss, topk_targets
from distill_doctor.train.config import LossConfig, TrainConfig
from distill_doctor.train.data import Example, collate, tokenize_all
from distill_doctor.train.topk_cache import TopKCache, build_topk_cache


def logits_pair(seed=0, N=9, V=13, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, V, generator=g, dtype=dtype) * 2, torch.randn(N, V, generator=g, dtype=dtype) * 2


def numpy_bucket_kl(s_logits, t_logits, k, reverse=False) -> float:
    """Independent reference: explicit loops over tokens, buckets = teacher's top-k ids + the rest."""
    total = 0.0
    for s_row, t_row in zip(np.asarray(s_logits, np.float64), np.asarray(t_logits, np.float64)):
        ps = np.exp(s_row - s_row.max())
        ps /= ps.sum()
        pt = np.exp(t_row - t_row.max())
        pt /= pt.sum()
        top = np.argsort(-pt)[:k]
        bs = list(ps[top]) + [1 - ps[top].sum()]
        bt = list(pt[top]) + [1 - pt[top].sum()]
        p, q = (bs, bt) if reverse else (bt, bs)
        total += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)
    return total / len(s_logits)


@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl"])
@pytest.mark.parametrize("k", [1, 4, 12])
def test_bucketed_kl_matches_reference_and_is_below_the_full_kl(name, k):
    s, t = logits_pair()
    ids, lp, tail = topk_targets(t, k)
    got = float(sparse_kd_loss(s, ids, lp, tail, divergence=name))
    assert got == pytest.approx(
        numpy_bucket_kl(s.numpy(), t.numpy(), k, reverse=name == "reverse_kl"), rel=1e-9
    )
    full = float((forward_kl if name == "forward_kl" else reverse_kl)(s, t))
    assert got <= full + 1e-12  # data-processing inequality


@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "jsd", "tv"])
def test_top_k_of_the_whole_vocabulary_is_the_dense_loss(name):
    s, t = logits_pair(seed=1)
    ids, lp, tail = topk_targets(t, t.shape[-1])
    assert torch.isneginf(tail).all()
    s = s.clone().requires_grad_(True)
    got = sparse_kd_loss(s, ids, lp, tail, divergence=name, beta=0.4, temperature=1.0)
    from distill_doctor.losses.divergences import divergence

    want = divergence(name, s, t, **({"beta": 0.4} if name == "jsd" else {}))
    assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-10, abs=1e-12)
    (g_got,) = torch.autograd.grad(got, s)
    (g_want,) = torch.autograd.grad(want, s)
    assert torch.allclose(g_got, g_want, atol=1e-12)


def test_identical_teacher_gives_zero_and_gradcheck():
    s, t = logits_pair(seed=2, N=4, V=7)
    ids, lp, tail = topk_targets(s, 3)
    assert abs(float(sparse_kd_loss(s, ids, lp, tail))) < 1e-12
    ids, lp, tail = topk_targets(t, 3)
    s.requires_grad_(True)
    for name in ("forward_kl", "reverse_kl"):
        assert torch.autograd.gradcheck(
            lambda z, name=name: sparse_kd_loss(z, ids, lp, tail, divergence=name, temperature=1.5), (s,)
        )


def test_mask_num_tokens_and_masked_rows_never_read():
    s, t = logits_pair(seed=3, N=12)
    s, t = s.reshape(3, 4, -1), t.reshape(3, 4, -1)
    ids, lp, tail = topk_targets(t, 5)
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    poisoned_ids, poisoned_lp, poisoned_tail = ids.clone(), lp.clone(), tail.clone()
    poisoned_ids[~mask] = 0  # what the trainer fills in outside the response
    poisoned_lp[~mask] = float("-inf")
    poisoned_tail[~mask] = float("-inf")
    full = sparse_kd_loss(s, poisoned_ids, poisoned_lp, poisoned_tail, mask=mask)
    assert torch.isfinite(full)
    n = int(mask.sum())
    parts = sum(
        sparse_kd_loss(s[sl], ids[sl], lp[sl], tail[sl], mask=mask[sl], num_tokens=n)
        for sl in (slice(0, 1), slice(1, 3))
    )
    assert float(parts) == pytest.approx(float(full), rel=1e-12)


def test_minus_inf_student_logits_and_bad_ids():
    s, t = logits_pair(seed=4, dtype=torch.float32)
    s[:, -3:] = float("-inf")
    t[:, -3:] = float("-inf")
    ids, lp, tail = topk_targets(t, 10)  # covers every slot with mass: both tails are empty
    s.requires_grad_(True)
    loss = sparse_kd_loss(s, ids, lp, tail, divergence="reverse_kl")
    loss.backward()
    assert torch.isfinite(loss) and not torch.isnan(s.grad).any()
    with pytest.raises(ValueError, match="vocab_size"):
        sparse_kd_loss(s[:, :5], ids, lp, tail)
    with pytest.raises(ValueError, match="unknown divergence"):
        sparse_kd_loss(s, ids, lp, tail, divergence="kl")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from distill_doctor.testing.tiny_model import build_char_tokenizer, build_tiny_llama

    tok = build_char_tokenizer()
    model = build_tiny_llama(tok, hidden_size=32, num_layers=1, num_heads=2, seed=3)
    rows = [
        {"id": "a", "prompt": "12+34=", "response": "46"},
        {"id": "b", "prompt": "7+8=", "response": "15"},
        {"id": "long", "prompt": "1" * 40, "response": "1"},  # prompt longer than max_len: skipped
        {"id": "c", "prompt": "100+1=", "response": "101 done"},
    ]
    out = build_topk_cache(model, tok, rows, tmp_path_factory.mktemp("cache"), k=8, max_len=16,
                           batch_size=2, progress=False)  # fmt: skip
    return tok, model, rows, out


def test_built_cache_holds_the_teachers_response_distributions(tiny):
    tok, model, rows, out = tiny
    cache = TopKCache(out)
    kept = tokenize_all(tok, [Example(r["id"], r["prompt"], r["response"]) for r in rows], 16)
    assert len(cache) == len(kept) == 3
    assert cache.example_ids == [t.id for t in kept] == ["a", "b", "c"]
    meta = json.loads((out / "index.json").read_text())
    assert meta["k"] == 8 and meta["vocab_size"] == len(tok) and meta["ids_dtype"] == "uint16"
    assert cache.bytes_per_token == 8 * 2 + 9 * 2
    for i, ex in enumerate(kept):
        targets = cache.get(torch.tensor(i))
        n_resp = len(ex.input_ids) - ex.prompt_len  # response characters + EOS
        assert targets.ids.shape == (n_resp, 8) and targets.ids.dtype == torch.long
        assert targets.tail_logprob.shape == (n_resp,)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ex.input_ids])).logits[0]
        want_ids, want_lp, want_tail = topk_targets(logits[ex.prompt_len - 1 : -1], 8)
        assert torch.equal(targets.ids, want_ids)
        assert torch.allclose(targets.logprobs, want_lp, atol=2e-3)  # float16 storage
        assert torch.allclose(targets.tail_logprob, want_tail, atol=2e-3)
        mass = targets.logprobs.exp().sum(-1) + targets.tail_logprob.exp()
        assert torch.allclose(mass, torch.ones_like(mass), atol=5e-3)
    with pytest.raises(IndexError):
        cache.get(3)


def test_full_k_cache_reproduces_the_dense_kl_on_a_trainer_batch(tiny, tmp_path):
    tok, model, rows, _ = tiny
    out = build_topk_cache(model, tok, rows, tmp_path, k=1000, max_len=16, progress=False, dtype="float32")
    cache = TopKCache(out)
    assert cache.k == len(tok)
    from distill_doctor.testing.tiny_model import build_tiny_llama

    student = build_tiny_llama(tok, hidden_size=32, num_layers=1, num_heads=2, seed=4)
    kept = tokenize_all(tok, [Example(r["id"], r["prompt"], r["response"]) for r in rows], 16)
    ex = kept[2]
    ids = torch.tensor([ex.input_ids])
    with torch.no_grad():
        s_logits = student(input_ids=ids).logits[:, :-1]
        t_logits = model(input_ids=ids).logits[:, :-1]
    mask = torch.zeros(1, len(ex.input_ids) - 1, dtype=torch.bool)
    mask[0, ex.prompt_len - 1 :] = True
    targets = cache.get(2)
    shape = (1, mask.shape[1], cache.k)
    t_ids = torch.zeros(shape, dtype=torch.long)
    t_lp = torch.full(shape, float("-inf"))
    t_tail = torch.full(shape[:2], float("-inf"))
    t_ids[mask], t_lp[mask], t_tail[mask] = targets.ids, targets.logprobs, targets.tail_logprob
    got = sparse_kd_loss(s_logits, t_ids, t_lp, t_tail, mask=mask)
    want = forward_kl(s_logits, t_logits, mask=mask)
    assert float(got) == pytest.approx(float(want), rel=1e-5)


def test_missing_or_truncated_cache_is_an_input_error(tiny, tmp_path):
    with pytest.raises(InputError, match="index.json"):
        TopKCache(tmp_path)
    _, _, _, out = tiny
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in out.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "tail.bin").write_bytes(b"\0")
    with pytest.raises(InputError, match="truncated"):
        TopKCache(broken)


def test_trainer_alignment_of_cached_targets_gives_the_dense_kl(tiny, tmp_path):
    """logit_kd.cache_targets places row i's targets at prompt_len - 1 onward: check it lines up."""
    from distill_doctor.testing.tiny_model import build_tiny_llama
    from distill_doctor.train.logit_kd import cache_targets

    tok, model, rows, _ = tiny
    cache = TopKCache(build_topk_cache(model, tok, rows, tmp_path, k=1000, max_len=16, progress=False,
                                       dtype="float32"))  # fmt: skip
    kept = tokenize_all(tok, [Example(r["id"], r["prompt"], r["response"]) for r in rows], 16)
    batch = collate(kept, tok.pad_token_id)
    batch["index"] = list(range(len(kept)))
    student = build_tiny_llama(tok, hidden_size=32, num_layers=1, num_heads=2, seed=5)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        s_logits = student(**inputs).logits[:, :-1]
        t_logits = model(**inputs).logits[:, :-1]
    mask = batch["labels"][:, 1:] != -100
    ids, logprobs, tail = cache_targets(cache, batch, like=s_logits)
    got = sparse_kd_loss(s_logits, ids, logprobs, tail, mask=mask)
    assert float(got) == pytest.approx(float(forward_kl(s_logits, t_logits, mask=mask)), rel=1e-5)


# ----------------------------------------------------------------------------- the same semantics as gkd's top-k teacher


def cache_config(**loss) -> TrainConfig:
    return TrainConfig(
        method="logit_kd",
        student="s",
        data="d.jsonl",
        output_dir="o",
        topk_cache="c",
        loss=LossConfig(**loss),
    )


@pytest.mark.parametrize(
    "loss",
    [
        {"divergence": "reverse_kl"},
        {"divergence": "jsd", "beta": 1.0},
        {"divergence": "skew_reverse_kl", "alpha": 0.0},
    ],
)
def test_reverse_kl_against_a_cache_is_refused_as_against_a_served_teacher(loss):
    """logit_kd with topk_cache trains the loss gkd's teacher_top_k does, so it refuses what that
    refuses (``table.topk_refusal``), naming loss.divergence and the way to the full teacher."""
    with pytest.raises(InputError, match="reverse KL, which a top-k teacher cannot stand in for") as err:
        cache_config(**loss)
    assert err.value.field == "loss.divergence"
    assert "with topk_cache" in str(err.value) and "teacher: instead of topk_cache" in str(err.value)
    assert "jsd with beta < 1" in str(err.value) and "forward_kl" in str(err.value)
    TrainConfig(
        method="logit_kd", student="s", teacher="t", data="d.jsonl", output_dir="o", loss=loss
    )  # full


@pytest.mark.parametrize(
    "loss",
    [
        {},
        {"divergence": "jsd", "beta": 0.9},
        {"divergence": "skew_reverse_kl", "alpha": 0.1},
        {"divergence": "tv"},
    ],
)
def test_the_other_divergences_train_against_a_cache(loss):
    assert cache_config(**loss).topk_cache == "c"


def test_the_refusal_exits_2_naming_the_field(tmp_path, capsys):
    from distill_doctor.cli import main

    path = tmp_path / "kd.yaml"
    path.write_text(
        "method: logit_kd\nstudent: s\ndata: d.jsonl\noutput_dir: o\ntopk_cache: c\nloss:\n  divergence: reverse_kl\n"
    )
    assert main(["train", "logit_kd", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{path}:7" in err[0] and "loss.divergence" in err[0], err


def test_a_caches_numbers_miss_no_more_than_the_documented_tail_error(tiny):
    """The ``TOPK_TAIL_ERROR`` bounds on a built cache (float16 storage) against the full teacher, at
    every response position: the same check as on random distributions (tests/topk_bounds.py), with
    a tolerance for the storage (seen: at most 7.9e-5 off the exact top-k's values, tv; the
    tiny teacher keeps about 0.9 of its mass outside its top-8, so the bounds are far from 0)."""
    from distill_doctor.testing.tiny_model import build_tiny_llama

    tok, model, rows, out = tiny
    cache = TopKCache(out)
    student = build_tiny_llama(tok, hidden_size=32, num_layers=1, num_heads=2, seed=4)
    kept = tokenize_all(tok, [Example(r["id"], r["prompt"], r["response"]) for r in rows], 16)
    positions = 0
    for i, ex in enumerate(kept):
        ids = torch.tensor([ex.input_ids])
        with torch.no_grad():
            t_logits = model(input_ids=ids).logits[0, ex.prompt_len - 1 : -1]
            s_logits = student(input_ids=ids).logits[0, ex.prompt_len - 1 : -1]
        targets = cache.get(i)
        for j in range(targets.ids.shape[0]):
            check_missed_tail(
                s_logits[j],
                t_logits[j],
                targets.ids[j],
                targets.logprobs[j],
                targets.tail_logprob[j],
                tol=5e-4,
            )
            positions += 1
    assert positions == sum(len(ex.input_ids) - ex.prompt_len for ex in kept) > 10
