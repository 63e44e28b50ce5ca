"""The four methods train a tiny Llama on CPU; gradient accumulation, NaN stops, vocab checks, SKD's rule."""

from __future__ import annotations

import json

import pytest
import torch
from train_helpers import ALPHABET, make_cfg, read_metrics, tiny_student, toy_setup
from transformers import AutoModelForCausalLM, AutoTokenizer

from distill_doctor.cli import main
from distill_doctor.errors import InputError
from distill_doctor.losses.batch import loss_token_count
from distill_doctor.losses.divergences import forward_kl
from distill_doctor.losses.kd import dense_kd_loss
from distill_doctor.testing.tiny_model import build_char_tokenizer, build_tiny_llama
from distill_doctor.train import run_training
from distill_doctor.train.config import LossConfig
from distill_doctor.train.data import Example, collate, completion_rows, tokenize_all
from distill_doctor.train.engine import TrainingError
from distill_doctor.train.generation import sample_completions, speculative_completions
from distill_doctor.train.sft import sft_loss


@pytest.fixture(scope="module")
def setup():
    return toy_setup()


@pytest.fixture(scope="module")
def tok(setup):
    return AutoTokenizer.from_pretrained(setup.teacher)


def load(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def eval_batch(setup, tok, n=24):
    lines = [json.loads(x) for x in setup.data.read_text().splitlines()[:n]]
    rows = tokenize_all(tok, [Example(d["id"], d["prompt"], d["response"]) for d in lines], max_len=64)
    return collate(rows, tok.pad_token_id)


@torch.no_grad()
def response_ce(model_dir, batch):
    model = load(model_dir)
    return float(sft_loss(model, batch, num_tokens=loss_token_count(batch)).loss)


@torch.no_grad()
def teacher_kl(student_dir, teacher_dir, batch):
    """KL(p_T || p_S) on the dataset's response tokens."""
    s, t = load(student_dir), load(teacher_dir)
    mask = batch["labels"][:, 1:] != -100
    s_logits, t_logits = (
        s(input_ids=batch["input_ids"]).logits[:, :-1],
        t(input_ids=batch["input_ids"]).logits[:, :-1],
    )
    return float(forward_kl(s_logits, t_logits, mask=mask, num_tokens=int(mask.sum())))


def first_last(metrics, key="loss", k=3):
    values = [m[key] for m in metrics]
    return sum(values[:k]) / k, sum(values[-k:]) / k


# ----------------------------------------------------------------------------- the methods learn


def test_sft_learns_the_responses(setup, tok, tmp_path):
    batch = eval_batch(setup, tok)
    out = run_training("sft", make_cfg(setup, tmp_path / "sft", "sft", steps=20, lr=1e-2))
    first, last = first_last(read_metrics(out))
    assert last < 0.8 * first
    assert response_ce(out, batch) < 0.8 * response_ce(setup.student, batch)
    assert (out / "model.safetensors").is_file() and (out / "train_config.yaml").is_file()
    assert (out / "tokenizer.json").is_file()


def test_sft_with_packing_learns(setup, tok, tmp_path):
    batch = eval_batch(setup, tok)
    out = run_training(
        "sft",
        make_cfg(setup, tmp_path / "pk", "sft", steps=15, lr=1e-2, packing=True, max_len=32, batch_size=2),
    )
    assert response_ce(out, batch) < 0.8 * response_ce(setup.student, batch)


@pytest.mark.parametrize(
    "loss",
    [
        {"divergence": "forward_kl", "hard_weight": 0.0},
        {"divergence": "jsd", "beta": 0.5, "hard_weight": 0.3, "temperature": 2.0},
        {"divergence": "reverse_kl", "chunked": True, "chunk_size": 16},
    ],
)
def test_logit_kd_moves_the_student_towards_the_teacher(setup, tok, tmp_path, loss):
    batch = eval_batch(setup, tok)
    out = run_training("logit_kd", make_cfg(setup, tmp_path / "lk", "logit_kd", steps=15, lr=1e-2, loss=loss))
    metrics = read_metrics(out)
    first, last = first_last(metrics)
    assert last < 0.8 * first
    assert teacher_kl(out, setup.teacher, batch) < 0.7 * teacher_kl(setup.student, setup.teacher, batch)
    if loss.get("hard_weight", 0) > 0:
        assert all(m["hard_loss"] is not None and m["soft_loss"] is not None for m in metrics)


@pytest.mark.parametrize(("lmbda", "seq_kd"), [(0.0, False), (1.0, False), (0.0, True)])
def test_gkd_trains_on_and_off_policy(setup, tok, tmp_path, lmbda, seq_kd):
    batch = eval_batch(setup, tok)
    gkd = {"lmbda": lmbda, "max_new_tokens": 4, "beta": 0.5, "seq_kd": seq_kd}
    out = run_training("gkd", make_cfg(setup, tmp_path / "gkd", "gkd", steps=15, lr=1e-2, gkd=gkd))
    metrics = read_metrics(out)
    assert all(m["on_policy_fraction"] == lmbda for m in metrics)
    first, last = first_last(metrics)
    assert last < 0.8 * first
    assert teacher_kl(out, setup.teacher, batch) < 0.8 * teacher_kl(setup.student, setup.teacher, batch)


def test_skd_trains(setup, tok, tmp_path):
    batch = eval_batch(setup, tok)
    cfg = make_cfg(setup, tmp_path / "skd", "skd", steps=15, lr=1e-2, skd={"top_k": 3, "max_new_tokens": 4})
    out = run_training("skd", cfg)
    metrics = read_metrics(out)
    assert all(0.0 <= m["replaced_fraction"] <= 1.0 for m in metrics)
    assert metrics[0]["replaced_fraction"] > 0  # a random student proposes outside the teacher's top 3
    assert teacher_kl(out, setup.teacher, batch) < 0.8 * teacher_kl(setup.student, setup.teacher, batch)


def test_cli_trains_and_saves_a_loadable_model(setup, tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(make_cfg(setup, tmp_path / "ignored", "sft").to_yaml(), encoding="utf-8")
    out = tmp_path / "cli_out"
    code = main(
        ["train", "sft", "--config", str(cfg), "--set", "steps=3", "--output-dir", str(out), "--quiet"]
    )
    assert code == 0, capsys.readouterr().err
    assert load(out).config.num_hidden_layers == 2
    assert len(read_metrics(out)) == 3
    # a second run into the same non-empty directory is refused, naming the field
    assert main(["train", "sft", "--config", str(cfg), "--output-dir", str(out), "--quiet"]) == 2
    assert "output_dir" in capsys.readouterr().err


# ----------------------------------------------------------------------------- gradient accumulation


def split_unequal(setup, tok):
    lines = [json.loads(x) for x in setup.data.read_text().splitlines()[:6]]
    lines[0]["response"] = "1234567"  # make the micro-batches' token counts differ a lot
    rows = tokenize_all(tok, [Example(d["id"], d["prompt"], d["response"]) for d in lines], max_len=64)
    return (
        collate(rows[:1], tok.pad_token_id),
        collate(rows[1:], tok.pad_token_id),
        collate(rows, tok.pad_token_id),
    )


def grads_of(model, fn, batches):
    model.zero_grad()
    num_tokens = sum(loss_token_count(b) for b in batches)
    total = 0.0
    for b in batches:
        parts = fn(model, b, num_tokens)
        parts.loss.backward()
        total += float(parts.loss.detach())
    return total, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("method", ["sft", "kd"])
def test_accumulating_unequal_micro_batches_equals_one_big_batch(setup, tok, method):
    small, large, whole = split_unequal(setup, tok)
    assert loss_token_count(small) != loss_token_count(large)
    model, teacher = load(setup.student), load(setup.teacher)
    if method == "sft":

        def fn(m, b, n):
            return sft_loss(m, b, num_tokens=n)
    else:
        cfg = LossConfig(divergence="jsd", beta=0.3, hard_weight=0.25, temperature=1.5)

        def fn(m, b, n):
            return dense_kd_loss(
                m,
                teacher,
                b,
                divergence_name="jsd",
                beta=cfg.beta,
                alpha=cfg.alpha,
                temperature=cfg.temperature,
                hard_weight=cfg.hard_weight,
                num_tokens=n,
            )

    loss_acc, grads_acc = grads_of(model, fn, [small, large])
    loss_one, grads_one = grads_of(model, fn, [whole])
    assert abs(loss_acc - loss_one) < 1e-5
    for g_acc, g_one in zip(grads_acc, grads_one):
        torch.testing.assert_close(g_acc, g_one, atol=1e-6, rtol=1e-5)
    # averaging per-micro-batch means instead (TRL issue 4719) would give a different loss
    naive = sum(float(fn(model, b, loss_token_count(b)).loss.detach()) for b in (small, large)) / 2
    assert abs(naive - loss_one) > 1e-3


def test_chunked_kd_matches_dense_kd(setup, tok):
    from distill_doctor.train.logit_kd import chunked_kd_loss

    _, _, batch = split_unequal(setup, tok)
    teacher = load(setup.teacher)
    n = loss_token_count(batch)
    for cfg in (
        LossConfig(divergence="forward_kl", hard_weight=0.4, chunk_size=7),
        LossConfig(divergence="jsd", beta=0.2, temperature=2.0, chunk_size=5),
    ):
        dense_model, chunk_model = load(setup.student), load(setup.student)
        dense = dense_kd_loss(
            dense_model,
            teacher,
            batch,
            divergence_name=cfg.divergence,
            beta=cfg.beta,
            alpha=cfg.alpha,
            temperature=cfg.temperature,
            hard_weight=cfg.hard_weight,
            num_tokens=n,
        )
        chunk = chunked_kd_loss(
            chunk_model, chunk_model.get_output_embeddings(), teacher, batch, loss_cfg=cfg, num_tokens=n
        )
        torch.testing.assert_close(chunk.loss, dense.loss, atol=1e-5, rtol=1e-5)
        dense.loss.backward()
        chunk.loss.backward()
        for a, b in zip(chunk_model.parameters(), dense_model.parameters()):
            torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------- failures


def test_nan_loss_stops_naming_step_and_batch_and_keeps_the_last_checkpoint(setup, tmp_path, monkeypatch):
    import distill_doctor.train.sft as sft_module

    calls = {"n": 0}
    real = sft_module.sft_loss

    def poisoned(student, batch, *, num_tokens):
        calls["n"] += 1
        parts = real(student, batch, num_tokens=num_tokens)
        if calls["n"] == 3:
            parts.loss = parts.loss * float("nan")
            poisoned.ids = batch["ids"]
        return parts

    monkeypatch.setattr(sft_module, "sft_loss", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(TrainingError) as info:
        run_training("sft", make_cfg(setup, out, "sft", steps=6, save_every=2))
    message = str(info.value)
    assert "non-finite loss" in message and "at step 3" in message and poisoned.ids[0] in message
    assert "step-000002" in message
    assert (out / "checkpoints" / "step-000002").is_dir() and not (out / "model.safetensors").exists()
    assert [m["step"] for m in read_metrics(out)] == [1, 2]


def test_mismatched_tokenizers_are_refused(setup, tmp_path):
    other_tok = build_char_tokenizer(alphabet=ALPHABET + "xyz")
    build_tiny_llama(other_tok, hidden_size=32, num_layers=1, num_heads=2, out_dir=tmp_path / "other")
    with pytest.raises(InputError, match="tokenizers differ") as info:
        run_training("logit_kd", make_cfg(setup, tmp_path / "o", "logit_kd", teacher=str(tmp_path / "other")))
    assert info.value.field == "teacher" and "only in teacher: 3" in str(info.value)


def test_padded_teacher_vocabulary_is_aligned(setup, tok, tmp_path):
    teacher = load(setup.teacher)
    teacher.resize_token_embeddings(len(tok) + 11)  # Qwen-style padded rows
    teacher.save_pretrained(tmp_path / "padded")
    tok.save_pretrained(tmp_path / "padded")
    out = run_training(
        "logit_kd", make_cfg(setup, tmp_path / "p", "logit_kd", steps=3, teacher=str(tmp_path / "padded"))
    )
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in read_metrics(out))


# ----------------------------------------------------------------------------- generation and SKD


def prompts_of(tok, n=4):
    return [tok(f"{i}+{i + 3}=")["input_ids"] for i in range(n)]


def test_batched_greedy_sampling_matches_one_by_one(setup, tok):
    model = load(setup.teacher)
    kw = {
        "pad_id": tok.pad_token_id,
        "eos_id": tok.eos_token_id,
        "vocab_size": len(tok),
        "max_new_tokens": 5,
        "temperature": 0.0,
    }
    prompts = [tok("7+1=")["input_ids"], tok("12+30=")["input_ids"]]  # different lengths: left padding
    batched = sample_completions(model, prompts, **kw)
    assert batched == [sample_completions(model, [p], **kw)[0] for p in prompts]
    for c in batched:
        assert tok.eos_token_id not in c[:-1] and len(c) <= 5


def skd(setup, tok, top_k, temperature, seed=0):
    torch.manual_seed(seed)
    return speculative_completions(
        load(setup.student),
        load(setup.teacher),
        prompts_of(tok),
        top_k=top_k,
        pad_id=tok.pad_token_id,
        eos_id=tok.eos_token_id,
        vocab_size=len(tok),
        max_new_tokens=6,
        temperature=temperature,
    )


@torch.no_grad()
def teacher_logits_at_completion(setup, tok, out):
    teacher = load(setup.teacher)
    for prompt, completion in zip(prompts_of(tok), out.completions):
        seq = torch.tensor([prompt + completion])
        yield (
            teacher(input_ids=seq).logits[0, len(prompt) - 1 : len(prompt) - 1 + len(completion), : len(tok)],
            completion,
        )


def test_skd_with_k_equal_to_vocab_replaces_nothing(setup, tok):
    out = skd(setup, tok, top_k=len(tok), temperature=1.0)
    assert out.completions == out.proposals and not any(f for row in out.replaced for f in row)


def test_skd_with_k_1_yields_the_teachers_argmax_everywhere(setup, tok):
    out = skd(setup, tok, top_k=1, temperature=1.0)
    for logits, completion in teacher_logits_at_completion(setup, tok, out):
        assert completion == logits.argmax(-1).tolist()
    for row_tokens, row_props, row_repl in zip(out.completions, out.proposals, out.replaced):
        assert [t != p for t, p in zip(row_tokens, row_props)] == row_repl


@pytest.mark.parametrize("seed", [0, 1])
def test_skd_tokens_always_lie_in_the_teachers_top_k(setup, tok, seed):
    K = 3
    out = skd(setup, tok, top_k=K, temperature=1.5, seed=seed)
    assert 0 < out.replaced_fraction < 1
    for logits, completion in teacher_logits_at_completion(setup, tok, out):
        kth = logits.topk(K, dim=-1).values[:, -1]
        chosen = logits.gather(1, torch.tensor(completion)[:, None])[:, 0]
        assert (chosen >= kth - 1e-5).all()
    for tokens, proposals, replaced, topk in zip(
        out.completions, out.proposals, out.replaced, out.teacher_topk
    ):
        for t, p, r, top in zip(tokens, proposals, replaced, topk):
            assert t in top and (r == (p not in top)) and (r or t == p)


def test_skd_continues_from_the_corrected_prefix(setup, tok):
    out = skd(
        setup, tok, top_k=2, temperature=0.0
    )  # greedy student: each proposal = its argmax given the prefix
    student = load(setup.student)
    assert any(f for row in out.replaced for f in row)
    with torch.no_grad():
        for prompt, completion, proposals in zip(prompts_of(tok), out.completions, out.proposals):
            logits = student(input_ids=torch.tensor([prompt + completion])).logits[0, :, : len(tok)]
            expected = logits[len(prompt) - 1 : len(prompt) - 1 + len(completion)].argmax(-1).tolist()
            assert proposals == expected


def test_completion_rows_feed_training_with_labels_on_sampled_tokens(tok):
    rows = completion_rows([[1, 5, 6]], [[7, 2]], ["a"], max_len=16)
    batch = collate(rows, tok.pad_token_id)
    assert loss_token_count(batch) == 2


def test_student_without_tokenizer_borrows_the_teachers(setup, tmp_path):
    bare = tmp_path / "bare"
    tiny_student(bare)
    for f in bare.glob("tokenizer*"):
        f.unlink()
    out = run_training("logit_kd", make_cfg(setup, tmp_path / "b", "logit_kd", steps=2, student=str(bare)))
    assert (out / "tokenizer.json").is_file()


def test_bf16_autocast_on_cpu_trains(setup, tmp_path):
    out = run_training(
        "logit_kd", make_cfg(setup, tmp_path / "bf", "logit_kd", steps=3, mixed_precision="bf16")
    )
    metrics = read_metrics(out)
    assert len(metrics) == 3 and all(torch.isfinite(torch.tensor(m["loss"])) for m in metrics)
    assert load(out).dtype == torch.float32  # master weights stay float32


def test_chunked_sft_matches_dense_sft(setup, tok):
    from distill_doctor.train.sft import chunked_sft_loss

    _, _, batch = split_unequal(setup, tok)
    n = loss_token_count(batch)
    dense_model, chunk_model = load(setup.student), load(setup.student)
    dense = sft_loss(dense_model, batch, num_tokens=n)
    chunk = chunked_sft_loss(
        chunk_model, chunk_model.get_output_embeddings(), batch, num_tokens=n, chunk_size=5
    )
    torch.testing.assert_close(chunk.loss, dense.loss, atol=1e-5, rtol=1e-5)
    dense.loss.backward()
    chunk.loss.backward()
    for a, b in zip(chunk_model.parameters(), dense_model.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4)


def test_chunked_sft_trains(setup, tok, tmp_path):
    batch = eval_batch(setup, tok)
    cfg = make_cfg(setup, tmp_path / "cs", "sft", steps=15, lr=1e-2, loss={"chunked": True, "chunk_size": 32})
    out = run_training("sft", cfg)
    assert response_ce(out, batch) < 0.8 * response_ce(setup.student, batch)


def build_cache(setup, tok, out_dir, **kw):
    from distill_doctor.train.data import read_examples
    from distill_doctor.train.topk_cache import build_topk_cache

    return build_topk_cache(
        load(setup.teacher), tok, read_examples(setup.data), out_dir, progress=False, **kw
    )


def test_logit_kd_from_a_topk_cache_needs_no_teacher(setup, tok, tmp_path):
    cache = build_cache(setup, tok, tmp_path / "cache", k=4, max_len=512)
    batch = eval_batch(setup, tok)
    cfg = make_cfg(setup, tmp_path / "c", "logit_kd", steps=15, lr=1e-2, teacher=None, topk_cache=str(cache))
    out = run_training("logit_kd", cfg)
    metrics = read_metrics(out)
    assert all(m["kl"] is None for m in metrics)  # no live teacher to measure against
    first, last = first_last(metrics)
    assert last < 0.8 * first
    # how much the top-k approximates, as gkd's top-k teacher logs it: the teacher's tail mass is the
    # cache's, per loss token; the student's moves towards it as it learns
    from distill_doctor.train.topk_cache import TopKCache

    cache = TopKCache(cache)
    tails = torch.cat([cache.get(i).tail_logprob.float().exp() for i in range(len(cache))])
    for m in metrics:
        assert float(tails.min()) - 1e-6 <= m["teacher_tail_mass"] <= float(tails.max()) + 1e-6
        assert 0.0 < m["student_tail_mass"] <= 1.0
    s_first, s_last = first_last(metrics, "student_tail_mass")
    t_mean = sum(m["teacher_tail_mass"] for m in metrics) / len(metrics)
    assert abs(s_last - t_mean) < abs(s_first - t_mean)
    assert teacher_kl(out, setup.teacher, batch) < 0.7 * teacher_kl(setup.student, setup.teacher, batch)


def test_a_cache_of_other_rows_or_temperature_is_refused(setup, tok, tmp_path):
    cache = build_cache(setup, tok, tmp_path / "cache", k=4, max_len=512, temperature=2.0)
    base = {"steps": 2, "teacher": None, "topk_cache": str(cache)}
    with pytest.raises(InputError) as info:
        run_training("logit_kd", make_cfg(setup, tmp_path / "a", "logit_kd", **base))
    assert info.value.field == "loss.temperature"
    with pytest.raises(InputError) as info:
        run_training(
            "logit_kd",
            make_cfg(setup, tmp_path / "b", "logit_kd", max_len=6, loss={"temperature": 2.0}, **base),
        )
    assert info.value.field == "topk_cache"


@pytest.mark.slow
def test_two_process_ddp_equals_one_process_with_more_accumulation(setup, tmp_path):
    """2 processes x grad_accum 2 see the same micro-batches per step as 1 process x grad_accum 4."""
    import os
    import subprocess
    import sys

    common = [
        "train", "sft", "--quiet", "--set", f"student={setup.student}", "--set", f"data={setup.data}",
        "--set", "steps=4", "--set", "batch_size=4", "--set", "lr=5e-3",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "-m",
        "distill_doctor",
    ]
    subprocess.run(
        [*torchrun, *common, "--set", "grad_accum=2", "--output-dir", str(tmp_path / "ddp")],
        env=env,
        check=True,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "distill_doctor",
            *common,
            "--set",
            "grad_accum=4",
            "--output-dir",
            str(tmp_path / "one"),
        ],
        env=env,
        check=True,
    )
    ddp, one = read_metrics(tmp_path / "ddp"), read_metrics(tmp_path / "one")
    assert [m["loss_tokens"] for m in ddp] == [m["loss_tokens"] for m in one]
    for a, b in zip(ddp, one):
        assert abs(a["loss"] - b["loss"]) < 1e-5


def test_run_training_accepts_a_mapping(setup, tmp_path):
    fields = {
        "student": str(setup.student),
        "data": str(setup.data),
        "output_dir": str(tmp_path / "m"),
        "steps": 2,
        "quiet": True,
    }
    out = run_training("sft", fields)
    assert [m["step"] for m in read_metrics(out)] == [1, 2]


@pytest.mark.parametrize("method", ["sft", "logit_kd"])
def test_engine_accumulation_of_2x4_equals_1x8(setup, tmp_path, method):
    """Same examples per step (one data permutation per epoch), different micro-batching: same run."""
    acc = run_training(method, make_cfg(setup, tmp_path / "acc", method, steps=4, batch_size=4, grad_accum=2))
    one = run_training(method, make_cfg(setup, tmp_path / "one", method, steps=4, batch_size=8, grad_accum=1))
    for a, b in zip(read_metrics(acc), read_metrics(one), strict=True):
        assert a["loss_tokens"] == b["loss_tokens"]
        assert abs(a["loss"] - b["loss"]) < 1e-5 and abs(a["grad_norm"] - b["grad_norm"]) < 1e-5
