"""Divergences: zero on identical inputs, hand-computed cases, gradcheck, an independent numpy
reference, TRL's beta ends, token-count semantics, padded vocabularies and -inf logits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distill_doctor.losses.cross_entropy import cross_entropy
from distill_doctor.losses.divergences import (
    divergence,
    forward_kl,
    generalized_jsd,
    reverse_kl,
    skew_forward_kl,
    skew_reverse_kl,
    total_variation,
)
from distill_doctor.losses.vocab import align_vocab

# name -> extra keyword arguments
CASES = {
    "forward_kl": {},
    "reverse_kl": {},
    "jsd": {"beta": 0.3},
    "skew_forward_kl": {"alpha": 0.1},
    "skew_reverse_kl": {"alpha": 0.25},
    "tv": {},
}


def numpy_reference(name, s_logits, t_logits, mask, temperature, **kw) -> float:
    """Explicit per-token loops in float64 numpy, written independently of the module."""
    s = np.asarray(s_logits, dtype=np.float64).reshape(-1, s_logits.shape[-1]) / temperature
    t = np.asarray(t_logits, dtype=np.float64).reshape(-1, t_logits.shape[-1]) / temperature
    keep = np.ones(s.shape[0], bool) if mask is None else np.asarray(mask).reshape(-1)

    def softmax(z):
        e = np.exp(z - z.max())
        return e / e.sum()

    def kl(p, q):
        return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)

    total = 0.0
    for i in range(s.shape[0]):
        if not keep[i]:
            continue
        ps, pt = softmax(s[i]), softmax(t[i])
        if name == "forward_kl":
            total += kl(pt, ps)
        elif name == "reverse_kl":
            total += kl(ps, pt)
        elif name == "jsd":
            b = kw["beta"]
            m = b * pt + (1 - b) * ps
            total += b * kl(pt, m) + (1 - b) * kl(ps, m)
        elif name == "skew_forward_kl":
            a = kw["alpha"]
            total += kl(pt, a * pt + (1 - a) * ps)
        elif name == "skew_reverse_kl":
            a = kw["alpha"]
            total += kl(ps, a * ps + (1 - a) * pt)
        elif name == "tv":
            total += 0.5 * np.abs(pt - ps).sum()
    return total / keep.sum()


def random_batch(seed=0, B=3, T=5, V=11, scale=2.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(B, T, V, generator=g, dtype=dtype) * scale
    t = torch.randn(B, T, V, generator=g, dtype=dtype) * scale
    mask = torch.rand(B, T, generator=g) > 0.3
    mask[0, 0] = True
    return s, t, mask


@pytest.mark.parametrize("name", list(CASES))
def test_identical_inputs_give_zero(name):
    s, _, mask = random_batch()
    loss = divergence(name, s, s.clone(), mask=mask, temperature=1.7, **CASES[name])
    assert abs(float(loss)) < 1e-12


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_matches_independent_numpy_reference(name, temperature):
    s, t, mask = random_batch(seed=1)
    got = divergence(name, s, t, mask=mask, temperature=temperature, **CASES[name])
    want = numpy_reference(name, s.numpy(), t.numpy(), mask.numpy(), temperature, **CASES[name])
    assert float(got) == pytest.approx(want, rel=1e-10, abs=1e-12)


def test_two_token_vocabulary_by_hand():
    # student p_S = (0.5, 0.5) (equal logits); teacher p_T = (0.8, 0.2) (logits log 0.8, log 0.2)
    s = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[math.log(0.8), math.log(0.2)]], dtype=torch.float64)
    fkl = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)
    rkl = 0.5 * math.log(0.5 / 0.8) + 0.5 * math.log(0.5 / 0.2)
    assert float(forward_kl(s, t)) == pytest.approx(fkl, rel=1e-12)
    assert float(reverse_kl(s, t)) == pytest.approx(rkl, rel=1e-12)
    # beta = 0.5: M = (0.65, 0.35)
    jsd = 0.5 * (0.8 * math.log(0.8 / 0.65) + 0.2 * math.log(0.2 / 0.35)) + 0.5 * (
        0.5 * math.log(0.5 / 0.65) + 0.5 * math.log(0.5 / 0.35)
    )
    assert float(generalized_jsd(s, t, beta=0.5)) == pytest.approx(jsd, rel=1e-12)
    # skew forward KL, alpha = 0.5: mixture = (0.65, 0.35)
    skl = 0.8 * math.log(0.8 / 0.65) + 0.2 * math.log(0.2 / 0.35)
    assert float(skew_forward_kl(s, t, alpha=0.5)) == pytest.approx(skl, rel=1e-12)
    srkl = 0.5 * math.log(0.5 / 0.65) + 0.5 * math.log(0.5 / 0.35)
    assert float(skew_reverse_kl(s, t, alpha=0.5)) == pytest.approx(srkl, rel=1e-12)
    assert float(total_variation(s, t)) == pytest.approx(0.3, rel=1e-12)
    # temperature 2 on logits (0, log 4): p = softmax(0, log 2) = (1/3, 2/3)
    t2 = torch.tensor([[0.0, math.log(4.0)]], dtype=torch.float64)
    want = (1 / 3) * math.log((1 / 3) / 0.5) + (2 / 3) * math.log((2 / 3) / 0.5)
    assert float(forward_kl(s, t2, temperature=2.0)) == pytest.approx(want, rel=1e-12)
    assert float(forward_kl(s, t2, temperature=2.0, scale_by_t2=True)) == pytest.approx(4 * want, rel=1e-12)
    # cross-entropy: -log 0.5 for either label
    assert float(cross_entropy(s, torch.tensor([1]))) == pytest.approx(math.log(2), rel=1e-12)


def test_beta_ends_are_exactly_forward_and_reverse_kl():
    s, t, mask = random_batch(seed=2, dtype=torch.float32)
    assert torch.equal(generalized_jsd(s, t, beta=0.0, mask=mask), forward_kl(s, t, mask=mask))
    assert torch.equal(generalized_jsd(s, t, beta=1.0, mask=mask), reverse_kl(s, t, mask=mask))
    assert torch.equal(skew_forward_kl(s, t, alpha=0.0, mask=mask), forward_kl(s, t, mask=mask))
    assert torch.equal(skew_reverse_kl(s, t, alpha=0.0, mask=mask), reverse_kl(s, t, mask=mask))
    assert float(skew_forward_kl(s, t, alpha=1.0, mask=mask)) == 0.0
    # just inside the ends the mixture formula is near 0, not near the KLs (TRL's documented jump)
    assert float(generalized_jsd(s, t, beta=1e-6, mask=mask)) < 1e-3 * float(forward_kl(s, t, mask=mask))


@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck_float64(name):
    s, t, mask = random_batch(seed=3, B=2, T=3, V=5, scale=1.0)
    s.requires_grad_(True)

    def fn(student):
        return divergence(name, student, t, mask=mask, temperature=1.3, **CASES[name])

    assert torch.autograd.gradcheck(fn, (s,), eps=1e-6, atol=1e-6)


def test_gradcheck_cross_entropy():
    s, _, mask = random_batch(seed=4, B=2, T=3, V=5)
    s.requires_grad_(True)
    labels = torch.tensor([[1, -100, 4], [0, 2, 3]])
    assert torch.autograd.gradcheck(lambda z: cross_entropy(z, labels, mask=mask), (s,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", list(CASES) + ["ce"])
def test_micro_batches_with_the_global_count_sum_to_the_full_batch(name):
    s, t, mask = random_batch(seed=5, B=4, T=6)
    labels = torch.randint(0, s.shape[-1], mask.shape, generator=torch.Generator().manual_seed(0))

    def loss(sl, **kw):
        if name == "ce":
            return cross_entropy(s[sl], labels[sl], mask=mask[sl], **kw)
        return divergence(name, s[sl], t[sl], mask=mask[sl], **CASES[name], **kw)

    full = loss(slice(0, 4))
    n = int(mask.sum())
    parts = loss(slice(0, 1), num_tokens=n) + loss(slice(1, 4), num_tokens=torch.tensor(n))
    assert float(parts) == pytest.approx(float(full), rel=1e-12)
    # per-micro-batch means averaged (TRL issue 4719) differ when the micro-batches are unequal
    assert int(mask[:1].sum()) != int(mask[1:].sum())
    naive = (loss(slice(0, 1)) + loss(slice(1, 4))) / 2
    assert abs(float(naive) - float(full)) > 1e-6


def test_default_count_is_the_mask_and_masked_values_are_never_read():
    s, t, mask = random_batch(seed=6)
    poisoned_s, poisoned_t = s.clone(), t.clone()
    poisoned_s[~mask] = float("nan")
    poisoned_t[~mask] = float("-inf")
    a = forward_kl(poisoned_s, poisoned_t, mask=mask)
    b = forward_kl(s[mask], t[mask])  # (n, V) without a mask
    assert torch.equal(a, b)
    assert float(forward_kl(s, t, mask=torch.zeros_like(mask))) == 0.0
    # cross-entropy: ignore_index counts as masked
    labels = torch.full(mask.shape, -100)
    labels[mask] = 3
    assert float(cross_entropy(s, labels)) == pytest.approx(float(cross_entropy(s, labels, mask=mask)))


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("padded_side", ["teacher", "student"])
def test_padded_vocabulary_gives_the_unpadded_loss(name, padded_side):
    s, t, mask = random_batch(seed=7)
    extra = torch.randn(*s.shape[:-1], 5, dtype=s.dtype) * 3  # padded rows with arbitrary logits
    if padded_side == "teacher":
        a_s, a_t = align_vocab(s, torch.cat([t, extra], dim=-1))
    else:
        a_s, a_t = align_vocab(torch.cat([s, extra], dim=-1), t)
    got = divergence(name, a_s, a_t, mask=mask, **CASES[name])
    want = divergence(name, s, t, mask=mask, **CASES[name])
    assert torch.equal(got, want)


def test_align_vocab_can_refuse_padding_that_carries_mass():
    s, t, _ = random_batch(seed=8)
    big = torch.cat([t, torch.full((*t.shape[:-1], 3), 10.0, dtype=t.dtype)], dim=-1)
    with pytest.raises(ValueError, match="teacher"):
        align_vocab(s, big, max_dropped_mass=0.01)
    quiet = torch.cat([t, torch.full((*t.shape[:-1], 3), -30.0, dtype=t.dtype)], dim=-1)
    align_vocab(s, quiet, max_dropped_mass=0.01)
    with pytest.raises(ValueError, match="align_vocab"):
        forward_kl(s, big)


@pytest.mark.parametrize("name", list(CASES))
def test_minus_inf_logits_give_no_nan(name):
    s, t, mask = random_batch(seed=9, dtype=torch.float32)
    s[..., 7:] = float("-inf")  # a masked vocabulary shared by both models
    t[..., 7:] = float("-inf")
    s.requires_grad_(True)
    loss = divergence(name, s, t, mask=mask, temperature=2.0, **CASES[name])
    loss.backward()
    assert torch.isfinite(loss)
    assert not torch.isnan(s.grad).any()
    ref = divergence(name, s.detach()[..., :7], t[..., :7], mask=mask, temperature=2.0, **CASES[name])
    assert float(loss.detach()) == pytest.approx(float(ref), rel=1e-6, abs=1e-7)


def test_teacher_zero_where_student_has_mass():
    s, t, mask = random_batch(seed=10, dtype=torch.float32)
    t[..., 0] = float("-inf")  # the teacher rules token 0 out, the student does not
    s.requires_grad_(True)
    fkl = forward_kl(s, t, mask=mask)
    fkl.backward()
    assert torch.isfinite(fkl) and not torch.isnan(s.grad).any()
    assert math.isinf(float(reverse_kl(s.detach(), t, mask=mask)))  # the divergence really is infinite
    assert torch.isfinite(generalized_jsd(s, t, beta=0.5, mask=mask))  # the mixture keeps JSD finite


def test_bf16_inputs_are_computed_in_float32():
    s, t, mask = random_batch(seed=11, dtype=torch.float32)
    got = forward_kl(s.bfloat16(), t.bfloat16(), mask=mask)
    assert got.dtype == torch.float32
    want = forward_kl(s.bfloat16().float(), t.bfloat16().float(), mask=mask)
    assert torch.equal(got, want)


def test_unknown_divergence_and_missing_parameters_are_errors():
    s, t, _ = random_batch()
    with pytest.raises(ValueError, match="unknown divergence"):
        divergence("kl", s, t)
    with pytest.raises(ValueError, match="beta"):
        divergence("jsd", s, t)
    with pytest.raises(ValueError, match="alpha"):
        divergence("skew_forward_kl", s, t)
    with pytest.raises(ValueError, match="beta"):
        generalized_jsd(s, t, beta=1.5)
    with pytest.raises(ValueError, match="temperature"):
        forward_kl(s, t, temperature=0.0)
