"""The chunked (fused lm_head) loss equals the dense path in value and in every gradient."""

from __future__ import annotations

import pytest
import torch

from distill_doctor.losses.chunked import chunked_cross_entropy, chunked_distill_loss
from distill_doctor.losses.cross_entropy import cross_entropy
from distill_doctor.losses.divergences import divergence
from distill_doctor.losses.table import DIVERGENCES
from distill_doctor.losses.vocab import align_vocab

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad:UserWarning")

PARAMS = {"jsd": {"beta": 0.3}, "skew_forward_kl": {"alpha": 0.1}, "skew_reverse_kl": {"alpha": 0.2}}


def make_batch(seed=0, B=3, T=17, H_s=16, H_t=24, V_s=50, V_t=50, bias=False):
    g = torch.Generator().manual_seed(seed)
    s_hidden = torch.randn(B, T, H_s, generator=g)
    t_hidden = torch.randn(B, T, H_t, generator=g)
    s_head = torch.nn.Linear(H_s, V_s, bias=bias)
    t_head = torch.nn.Linear(H_t, V_t, bias=bias)
    with torch.no_grad():
        s_head.weight.copy_(torch.randn(V_s, H_s, generator=g) * 0.4)
        t_head.weight.copy_(torch.randn(V_t, H_t, generator=g) * 0.5)
        if bias:
            s_head.bias.copy_(torch.randn(V_s, generator=g))
            t_head.bias.copy_(torch.randn(V_t, generator=g))
    lengths = torch.tensor([T, T - 5, 3])[:B]
    mask = torch.arange(T)[None, :] < lengths[:, None]  # right padding
    mask[:, 0] = False  # prompt-like positions without loss
    labels = torch.randint(0, min(V_s, V_t), (B, T), generator=g)
    labels[~mask] = -100
    return s_hidden, s_head, t_hidden, t_head, mask, labels


def dense(s_hidden, s_head, t_hidden, t_head, mask, labels, *, name, temperature, hard_weight, num_tokens):
    s_logits, t_logits = align_vocab(s_head(s_hidden), t_head(t_hidden).detach())
    soft = divergence(
        name,
        s_logits,
        t_logits,
        mask=mask,
        temperature=temperature,
        num_tokens=num_tokens,
        **PARAMS.get(name, {}),
    )
    hard = cross_entropy(s_logits, labels, mask=mask, num_tokens=num_tokens)
    return (1 - hard_weight) * soft + hard_weight * hard, soft, hard


def grads(loss, *tensors):
    return torch.autograd.grad(loss, tensors)


@pytest.mark.parametrize("name", DIVERGENCES)
@pytest.mark.parametrize(
    "temperature,hard_weight,vocab,chunk_size",
    [(1.0, 0.0, (50, 50), 7), (2.0, 0.3, (50, 64), 5), (0.7, 0.5, (64, 50), 1024)],
)
def test_chunked_equals_dense(name, temperature, hard_weight, vocab, chunk_size):
    s_hidden, s_head, t_hidden, t_head, mask, labels = make_batch(V_s=vocab[0], V_t=vocab[1], bias=True)
    s_hidden.requires_grad_(True)
    n = int(mask.sum()) + 9  # a global count larger than this micro-batch's
    want, want_soft, want_hard = dense(
        s_hidden, s_head, t_hidden, t_head, mask, labels,
        name=name, temperature=temperature, hard_weight=hard_weight, num_tokens=n,
    )  # fmt: skip
    got = chunked_distill_loss(
        s_hidden, s_head, t_hidden, t_head, mask=mask, labels=labels, divergence=name,
        beta=0.3, alpha=PARAMS.get(name, {}).get("alpha", 0.1), temperature=temperature,
        hard_weight=hard_weight, num_tokens=n, chunk_size=chunk_size,
    )  # fmt: skip
    assert abs(float(got.loss) - float(want)) < 1e-5
    assert abs(float(got.soft_loss) - float(want_soft)) < 1e-5
    assert abs(float(got.hard_loss) - float(want_hard)) < 1e-5
    params = (s_hidden, s_head.weight, s_head.bias)
    for g_chunk, g_dense in zip(grads(got.loss, *params), grads(want, *params)):
        assert (g_chunk - g_dense).abs().max() < 1e-5


def test_gradients_scale_with_the_outer_gradient_and_accumulate_into_parameters():
    s_hidden, s_head, t_hidden, t_head, mask, labels = make_batch(seed=1)
    out = chunked_distill_loss(s_hidden, s_head, t_hidden, t_head, mask=mask, divergence="forward_kl")
    (3.0 * out.loss).backward()
    chunked_grad = s_head.weight.grad.clone()
    s_head.weight.grad = None
    want, _, _ = dense(s_hidden, s_head, t_hidden, t_head, mask, labels, name="forward_kl",
                       temperature=1.0, hard_weight=0.0, num_tokens=None)  # fmt: skip
    (3.0 * want).backward()
    assert (chunked_grad - s_head.weight.grad).abs().max() < 1e-5
    assert out.hard_loss is None


def test_micro_batches_with_the_global_count_sum_to_the_full_batch():
    s_hidden, s_head, t_hidden, t_head, mask, labels = make_batch(seed=2)
    kw = {"divergence": "jsd", "beta": 0.5, "hard_weight": 0.2, "chunk_size": 4}
    full = chunked_distill_loss(s_hidden, s_head, t_hidden, t_head, mask=mask, labels=labels, **kw).loss
    n = int(mask.sum())
    parts = sum(
        chunked_distill_loss(
            s_hidden[sl], s_head, t_hidden[sl], t_head, mask=mask[sl], labels=labels[sl], num_tokens=n, **kw
        ).loss
        for sl in (slice(0, 1), slice(1, 3))
    )
    assert abs(float(parts) - float(full)) < 1e-6


def test_bf16_hidden_and_heads_run_the_softmax_in_float32():
    s_hidden, s_head, t_hidden, t_head, mask, labels = make_batch(seed=3)
    s_head, t_head = s_head.bfloat16(), t_head.bfloat16()
    s_hidden = s_hidden.bfloat16().requires_grad_(True)
    out = chunked_distill_loss(
        s_hidden, s_head, t_hidden.bfloat16(), t_head, mask=mask, divergence="reverse_kl", chunk_size=8
    )
    assert out.loss.dtype == torch.float32
    out.loss.backward()
    assert s_head.weight.grad.dtype == torch.bfloat16 and s_hidden.grad.dtype == torch.bfloat16
    # the reference: bf16 logits upcast, then the dense float32 math
    s_logits = s_head(s_hidden.detach()).float()
    t_logits = t_head(t_hidden.bfloat16()).float()
    want = divergence("reverse_kl", s_logits, t_logits, mask=mask)
    assert abs(float(out.loss) - float(want)) < 1e-4


def test_no_grad_computes_values_only():
    s_hidden, s_head, t_hidden, t_head, mask, labels = make_batch(seed=4)
    with torch.no_grad():
        out = chunked_distill_loss(s_hidden, s_head, t_hidden, t_head, mask=mask, divergence="tv")
    assert not out.loss.requires_grad
    want, _, _ = dense(s_hidden, s_head, t_hidden, t_head, mask, labels, name="tv",
                       temperature=1.0, hard_weight=0.0, num_tokens=None)  # fmt: skip
    assert abs(float(out.loss) - float(want)) < 1e-6


def test_head_given_as_a_weight_tensor_and_flat_inputs():
    s_hidden, s_head, t_hidden, t_head, mask, _ = make_batch(seed=5)
    weight = s_head.weight.detach().clone().requires_grad_(True)
    flat = chunked_distill_loss(
        s_hidden.reshape(-1, s_hidden.shape[-1]), weight, t_hidden.reshape(-1, t_hidden.shape[-1]),
        t_head.weight, mask=mask.reshape(-1), divergence="forward_kl", chunk_size=6,
    )  # fmt: skip
    batched = chunked_distill_loss(s_hidden, s_head, t_hidden, t_head, mask=mask, divergence="forward_kl")
    assert abs(float(flat.loss) - float(batched.loss)) < 1e-6
    flat.loss.backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_errors():
    s_hidden, s_head, t_hidden, t_head, mask, _ = make_batch(seed=6)
    with pytest.raises(ValueError, match="labels"):
        chunked_distill_loss(s_hidden, s_head, t_hidden, t_head, hard_weight=0.5)
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_distill_loss(s_hidden, s_head, t_hidden, t_head, chunk_size=0)
    with pytest.raises(ValueError, match="tokens"):
        chunked_distill_loss(s_hidden, s_head, t_hidden[:1], t_head)


@pytest.mark.parametrize("chunk_size", [1, 5, 4096])
def test_chunked_cross_entropy_equals_dense(chunk_size):
    s_hidden, s_head, _, _, mask, labels = make_batch(seed=7, bias=True)
    s_hidden.requires_grad_(True)
    got = chunked_cross_entropy(s_hidden, s_head, labels, num_tokens=40, chunk_size=chunk_size)
    want = cross_entropy(s_head(s_hidden), labels, num_tokens=40)
    assert abs(float(got) - float(want)) < 1e-6
    params = (s_hidden, s_head.weight, s_head.bias)
    for a, b in zip(grads(got, *params), grads(want, *params)):
        assert (a - b).abs().max() < 1e-6


def test_on_a_real_tiny_llama_batch():
    """Final hidden states and tied lm_head of a real model, as the trainer passes them."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True,
    )  # fmt: skip
    student, teacher = transformers.LlamaForCausalLM(cfg), transformers.LlamaForCausalLM(cfg)
    ids = torch.randint(0, 96, (2, 12))
    attn = torch.ones_like(ids)
    attn[1, 8:] = 0
    labels = ids.clone()
    labels[:, :3] = -100
    labels[attn == 0] = -100
    labels, mask = labels[:, 1:], labels[:, 1:] != -100
    with torch.no_grad():
        t_out = teacher(input_ids=ids, attention_mask=attn, output_hidden_states=True)
    s_out = student(input_ids=ids, attention_mask=attn, output_hidden_states=True)
    want = divergence("jsd", s_out.logits[:, :-1], t_out.logits[:, :-1], mask=mask, beta=0.5, temperature=1.5)
    want = 0.8 * want + 0.2 * cross_entropy(s_out.logits[:, :-1], labels, mask=mask)
    (g_dense,) = torch.autograd.grad(want, student.model.embed_tokens.weight, retain_graph=True)
    got = chunked_distill_loss(
        s_out.hidden_states[-1][:, :-1], student.get_output_embeddings(), t_out.hidden_states[-1][:, :-1],
        teacher.get_output_embeddings(), mask=mask, labels=labels, divergence="jsd", beta=0.5,
        temperature=1.5, hard_weight=0.2, chunk_size=4,
    )  # fmt: skip
    (g_chunk,) = torch.autograd.grad(got.loss, student.model.embed_tokens.weight)
    assert abs(float(got.loss) - float(want)) < 1e-5
    assert (g_chunk - g_dense).abs().max() < 1e-5


@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "jsd"])
def test_masked_vocabulary_slots_give_no_nan(name):
    """-inf biases on shared vocabulary slots (a masked vocabulary): finite, and equal to dense."""
    s_hidden, s_head, t_hidden, t_head, mask, labels = make_batch(seed=8, bias=True)
    with torch.no_grad():
        s_head.bias[-4:] = float("-inf")
        t_head.bias[-4:] = float("-inf")
    labels = torch.where(labels >= 0, labels % 40, labels)  # targets never in the masked slots
    s_hidden.requires_grad_(True)
    got = chunked_distill_loss(s_hidden, s_head, t_hidden, t_head, mask=mask, labels=labels,
                               divergence=name, beta=0.3, hard_weight=0.3, chunk_size=6)  # fmt: skip
    want, _, _ = dense(s_hidden, s_head, t_hidden, t_head, mask, labels, name=name,
                       temperature=1.0, hard_weight=0.3, num_tokens=None)  # fmt: skip
    assert torch.isfinite(got.loss) and abs(float(got.loss) - float(want)) < 1e-5
    for a, b in zip(grads(got.loss, s_hidden, s_head.weight), grads(want, s_hidden, s_head.weight)):
        assert not torch.isnan(a).any() and (a - b).abs().max() < 1e-5


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_closed_form_kl_gradient_equals_autograd(reverse, temperature):
    from distill_doctor.losses.closed_form import kl_value_and_grad_
    from distill_doctor.losses.divergences import forward_kl, reverse_kl
    from distill_doctor.losses.per_token import log_probs

    g = torch.Generator().manual_seed(9)
    z = torch.randn(7, 30, generator=g, dtype=torch.float64) * 3
    t = torch.randn(7, 30, generator=g, dtype=torch.float64) * 3
    z[:, :2] = float("-inf")  # student rules out slots 0-1; the teacher too on 0 only when reverse
    t[:, 0] = float("-inf")
    if not reverse:
        z[:, :2] = 0.0  # forward KL with p_S = 0 where p_T > 0 is infinite: keep the student finite
    zz = z.clone().requires_grad_(True)
    fn = reverse_kl if reverse else forward_kl
    want = fn(zz, t, temperature=temperature, num_tokens=1)
    (want_grad,) = torch.autograd.grad(want, zz)
    value, grad = kl_value_and_grad_(
        z.clone(),
        log_probs(t, temperature),
        reverse=reverse,
        temperature=temperature,
        scale=1.0,
        need_grad=True,
    )
    assert float(value) == pytest.approx(float(want.detach()), rel=1e-12)
    assert not torch.isnan(grad).any()
    assert torch.allclose(grad, want_grad, atol=1e-12)


def test_no_loss_tokens_give_zero_and_zero_gradients():
    s_hidden, s_head, t_hidden, t_head, mask, labels = make_batch(seed=10)
    s_hidden.requires_grad_(True)
    none = torch.zeros_like(mask)
    out = chunked_distill_loss(s_hidden, s_head, t_hidden, t_head, mask=none, labels=labels, hard_weight=0.5)
    out.loss.backward()
    assert float(out.loss) == 0.0 and float(s_hidden.grad.abs().sum()) == 0.0
    assert float(chunked_cross_entropy(s_hidden, s_head, torch.full_like(labels, -100))) == 0.0


CLOSED_FORM_CASES = [
    ("forward_kl", {}), ("reverse_kl", {}), ("tv", {}),
    ("jsd", {"beta": 0.5}), ("jsd", {"beta": 0.1}), ("jsd", {"beta": 0.9}), ("jsd", {"beta": 0.0}),
    ("jsd", {"beta": 1.0}), ("skew_forward_kl", {"alpha": 0.1}), ("skew_forward_kl", {"alpha": 0.7}),
    ("skew_reverse_kl", {"alpha": 0.1}), ("skew_reverse_kl", {"alpha": 0.7}),
    ("skew_forward_kl", {"alpha": 0.0}), ("skew_reverse_kl", {"alpha": 1.0}),
]  # fmt: skip


@pytest.mark.parametrize("name,params", CLOSED_FORM_CASES)
@pytest.mark.parametrize("temperature", [1.0, 0.6, 2.0])
@pytest.mark.parametrize("ruled_out", [False, True])
def test_closed_form_gradient_of_every_divergence_equals_autograd_in_float64(
    name, params, temperature, ruled_out
):
    """closed_form's value and logit gradient = autograd through per_token.token_divergence, to 1e-12."""
    from distill_doctor.losses.closed_form import divergence_value_and_grad_
    from distill_doctor.losses.per_token import log_probs, token_divergence

    g = torch.Generator().manual_seed(11)
    z = torch.randn(6, 40, generator=g, dtype=torch.float64) * 3
    t = torch.randn(6, 40, generator=g, dtype=torch.float64) * 3
    if ruled_out:  # a masked vocabulary slot both models rule out, and one only the student rules out
        z[:, 0] = t[:, 0] = float("-inf")
        if name in ("reverse_kl", "tv") or name.startswith("skew_") or name == "jsd":
            z[:, 1] = float("-inf")  # finite for these; forward KL would be +inf there
        if name == "skew_forward_kl" and params["alpha"] == 0.0 or name == "jsd" and params["beta"] == 0.0:
            z[:, 1] = 0.0
    zz = z.clone().requires_grad_(True)
    want = token_divergence(name, log_probs(zz, temperature), log_probs(t, temperature), **params).sum()
    (want_grad,) = torch.autograd.grad(want, zz)
    value, grad = divergence_value_and_grad_(
        name, z.clone(), log_probs(t, temperature), temperature=temperature, scale=1.0, need_grad=True,
        **params,
    )  # fmt: skip
    assert float(value) == pytest.approx(float(want), rel=1e-12, abs=1e-12)
    assert not torch.isnan(grad).any()
    assert torch.allclose(grad, want_grad, atol=1e-12)


def test_identical_distributions_give_zero_loss_and_gradient():
    from distill_doctor.losses.closed_form import divergence_value_and_grad_
    from distill_doctor.losses.per_token import log_probs

    z = torch.randn(5, 30, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for name, params in CLOSED_FORM_CASES:
        value, grad = divergence_value_and_grad_(
            name, z.clone(), log_probs(z), temperature=1.0, scale=1.0, need_grad=True, **params
        )
        assert abs(float(value)) < 1e-12, name
        if name != "tv":  # TV's subgradient takes the sign of rounding-level differences (as autograd's abs)
            assert float(grad.abs().max()) < 1e-12, name


def test_large_vocabulary_chunks_are_cut_to_the_element_budget():
    from distill_doctor.losses.chunked import MAX_CHUNK_ELEMENTS, _rows_per_chunk

    assert _rows_per_chunk(1024, 32768) == 1024
    assert _rows_per_chunk(1024, 151936) == MAX_CHUNK_ELEMENTS // 151936 == 441
    assert _rows_per_chunk(1024, 248320) == 270


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 0.8])
def test_equals_trl_generalized_jsd_loss(beta, temperature):
    """TRL 1.16's GKDTrainer.generalized_jsd_loss on dense logits, with the token count as
    num_items_in_batch (its per-token mean), gives our chunked loss and gradients."""
    trl_gkd = pytest.importorskip("trl.experimental.gkd.gkd_trainer")
    s_hidden, s_head, t_hidden, t_head, mask, labels = make_batch(seed=12, V_s=70, V_t=70)
    s_hidden.requires_grad_(True)
    n = int(mask.sum())
    trl_labels = torch.where(mask, labels.clamp_min(0), torch.full_like(labels, -100))
    want = trl_gkd.GKDTrainer.generalized_jsd_loss(
        s_head(s_hidden), t_head(t_hidden).detach(), labels=trl_labels, beta=beta,
        temperature=temperature, num_items_in_batch=n,
    )  # fmt: skip
    got = chunked_distill_loss(
        s_hidden, s_head, t_hidden, t_head, mask=mask, divergence="jsd", beta=beta,
        temperature=temperature, num_tokens=n, chunk_size=8,
    ).loss  # fmt: skip
    assert float(got) == pytest.approx(float(want), abs=1e-5)
    params = (s_hidden, s_head.weight)
    for a, b in zip(grads(got, *params), grads(want, *params)):
        assert (a - b).abs().max() < 1e-5
