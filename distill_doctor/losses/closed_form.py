"""Closed-form loss values and logit gradients for one chunk, computed in place to save memory.

The chunked loss (``chunked.py``) needs, per chunk of c tokens, the loss and its gradient with
respect to the student's (c, V) logits. Autograd on the chunk gives that for any divergence but
keeps about eight (c, V) float32 tensors alive; for the common objectives the gradient has a short
closed form that can overwrite the logits buffer, keeping about four:

* forward KL(p_T || p_S), p_S = softmax(z / tau):  d/dz = (p_S - p_T) / tau
* reverse KL(p_S || p_T):  d/dz = p_S * (log p_S - log p_T - KL) / tau
* cross-entropy at temperature 1:  d/dz = softmax(z) - onehot(label)

and, for any per-token loss L(p_S) with h = dL/dp_S (p_T held fixed), the softmax chain rule
d/dz = p_S * (h - <p_S, h>) / tau, which covers the rest:

* generalized JSD(beta), M = beta p_T + (1 - beta) p_S:  h = (1 - beta) (log p_S - log M)
* skew forward KL(p_T || M), M = alpha p_T + (1 - alpha) p_S:  h = -(1 - alpha) p_T / M
* skew reverse KL(p_S || M), M = alpha p_S + (1 - alpha) p_T:  h = log p_S - log M - alpha p_S / M
  (+ 1, which the chain rule cancels)
* total variation 0.5 sum |p_T - p_S|:  h = 0.5 sign(p_S - p_T) (the subgradient 0 where equal,
  as autograd's abs)

One function per row of ``table.TABLE``, named as the row, with the signature
``(student_logits, teacher_log_probs, parameter, *, temperature, scale, need_grad)``; values agree
with ``per_token`` to float32 rounding (the tests compare with autograd through it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypedDict, Unpack

import torch

from distill_doctor.losses.per_token import kl_from_log_probs
from distill_doctor.losses.table import lookup

# (student logits (c, V), log p_T (c, V), parameter, *, temperature, scale, need_grad) -> (value, grad | None)
ChunkValueAndGrad = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


def log_softmax_(z: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(z / tau) over the last dimension, overwriting ``z`` (c, V); returns ``z``."""
    if temperature != 1.0:
        z.div_(temperature)
    return z.sub_(torch.logsumexp(z, dim=-1, keepdim=True))


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_v a[i, v] b[i, v] for (c, V) inputs -> (c,), without a (c, V) product tensor."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).reshape(-1)


def cross_entropy_value_and_grad(
    logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int, scale: float, need_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sum over labelled rows of -log softmax(z)[label] (0-d), and ``scale`` * its gradient (c, V) or None.

    ``logits`` (c, V) float32 is only read.
    """
    valid = labels != ignore_index  # (c,)
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    lse = torch.logsumexp(logits, dim=-1)  # (c,)
    picked = logits.gather(1, safe[:, None]).squeeze(1)  # (c,)
    value = torch.where(valid, lse - picked, torch.zeros_like(lse)).sum()
    if not need_grad:
        return value, None
    grad = logits.sub(lse[:, None]).exp_()  # softmax(z), (c, V)
    rows = valid.nonzero().squeeze(1)
    grad[rows, labels[rows]] -= 1.0
    grad[~valid] = 0.0
    return value, grad.mul_(scale)


def kl_value_and_grad_(
    student_logits: torch.Tensor,
    teacher_log_probs: torch.Tensor,
    *,
    reverse: bool,
    temperature: float,
    scale: float,
    need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sum over rows of forward KL(p_T || p_S) (or reverse KL(p_S || p_T) when ``reverse``) (0-d),
    and ``scale`` * its gradient with respect to the student logits (c, V), or None.

    Overwrites ``student_logits`` (the gradient is returned in its buffer) and ``teacher_log_probs``.
    """
    s = log_softmax_(student_logits, temperature)  # (c, V) log p_S
    t = teacher_log_probs  # (c, V) log p_T
    if not reverse:
        if torch.isneginf(t).any():  # teacher zeros: the safe (more memory) formula
            per_token = kl_from_log_probs(t, s)
            p_t = t.exp_()
        else:
            p_t = t.exp()
            per_token = _rowdot(p_t, t - s)  # (c,)
        value = per_token.sum()
        if not need_grad:
            return value, None
        return value, s.exp_().sub_(p_t).mul_(scale / temperature)
    p_s = s.exp()  # (c, V)
    log_ratio = s.sub_(t)  # log p_S - log p_T, in the student buffer
    if torch.isneginf(t).any() or torch.isneginf(log_ratio).any():
        log_ratio.masked_fill_(p_s == 0, 0.0)  # p_S = 0 contributes 0 (avoids -inf - -inf)
    per_token = _rowdot(p_s, log_ratio)  # (c,)
    value = per_token.sum()
    if not need_grad:
        return value, None
    return value, log_ratio.sub_(per_token[:, None]).mul_(p_s).mul_(scale / temperature)


def _softmax_chain_(p_s: torch.Tensor, h: torch.Tensor, scale: float) -> torch.Tensor:
    """scale * p_S * (h - <p_S, h>) in ``h``'s buffer (c, V): the logit gradient from dL/dp_S = h."""
    return h.sub_(_rowdot(p_s, h)[:, None]).mul_(p_s).mul_(scale)


def _log_mixture_(log_a: torch.Tensor, log_b: torch.Tensor, weight_a: float) -> torch.Tensor:
    """log(w a + (1 - w) b) (c, V), a new buffer; -inf only where a = b = 0."""
    return torch.logaddexp(log_a + math.log(weight_a), log_b + math.log1p(-weight_a))


def _zero_where_(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """x with entries where p = 0 set to 0 (they carry no mass; avoids inf * 0 and -inf - -inf)."""
    return x.masked_fill_(p == 0, 0.0)


def jsd_value_and_grad_(
    s: torch.Tensor, t: torch.Tensor, *, beta: float, scale: float, need_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Generalized JSD(beta) for 0 < beta < 1 from log p_S ``s`` and log p_T ``t`` (c, V), both overwritten.

    Value: sum over rows of beta KL(p_T || M) + (1 - beta) KL(p_S || M); gradient (scale * d/dz, tau
    folded into ``scale``) in ``s``'s buffer.
    """
    log_m = _log_mixture_(t, s, beta)  # (c, V)
    p_t = t.exp()
    teacher_part = _rowdot(p_t, _zero_where_(t.sub_(log_m), p_t))  # KL(p_T || M) per row
    del p_t
    p_s = s.exp()
    log_ratio = _zero_where_(s.sub_(log_m), p_s)  # log p_S - log M
    del log_m
    student_part = _rowdot(p_s, log_ratio)  # KL(p_S || M) per row
    value = (beta * teacher_part + (1.0 - beta) * student_part).sum()
    if not need_grad:
        return value, None
    return value, _softmax_chain_(p_s, log_ratio, scale * (1.0 - beta))


def skew_value_and_grad_(
    s: torch.Tensor, t: torch.Tensor, *, reverse: bool, alpha: float, scale: float, need_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Skew KL for 0 < alpha < 1 from log p_S ``s`` and log p_T ``t`` (c, V), both overwritten.

    Forward: KL(p_T || alpha p_T + (1 - alpha) p_S); reverse: KL(p_S || alpha p_S + (1 - alpha) p_T).
    """
    p_s = s.exp()
    if not reverse:
        log_m = _log_mixture_(t, s, alpha)
        p_t = t.exp()
        value = _rowdot(p_t, _zero_where_(t.sub_(log_m), p_t)).sum()
        if not need_grad:
            return value, None
        ratio = _zero_where_(t.exp_(), p_t)  # p_T / M (t holds log p_T - log M)
        del p_t, log_m
        return value, _softmax_chain_(p_s, ratio, -scale * (1.0 - alpha))
    log_m = _log_mixture_(s, t, alpha)
    log_ratio = _zero_where_(s.sub_(log_m), p_s)  # log p_S - log M
    del log_m
    value = _rowdot(p_s, log_ratio).sum()
    if not need_grad:
        return value, None
    h = log_ratio.sub_(torch.exp(log_ratio).mul_(alpha))  # log(p_S / M) - alpha p_S / M
    return value, _softmax_chain_(p_s, _zero_where_(h, p_s), scale)


def tv_value_and_grad_(
    s: torch.Tensor, t: torch.Tensor, *, scale: float, need_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Total variation 0.5 sum |p_T - p_S| from log-probabilities (c, V), both overwritten."""
    p_s = s.exp()
    diff = t.exp_().sub_(p_s).neg_()  # p_S - p_T, in the teacher buffer
    value = 0.5 * diff.abs().sum()
    if not need_grad:
        return value, None
    return value, _softmax_chain_(p_s, diff.sign_().mul_(0.5), scale)


# ----------------------------------------------------------------------------- one per table row
# Each: sum over rows of the divergence (0-d) and ``scale`` * its gradient with respect to the
# student logits (c, V), or None; both inputs are overwritten. The end points follow ``per_token``:
# jsd at beta 0 / 1 is forward / reverse KL, a skew KL at alpha 0 is the plain KL and at alpha 1 is 0.

ValueAndGrad = tuple[torch.Tensor, torch.Tensor | None]


class ChunkOptions(TypedDict):
    """The keyword arguments of every per-row function: tau, the gradient's scale, whether to compute it."""

    temperature: float
    scale: float
    need_grad: bool


def forward_kl(
    z: torch.Tensor, t: torch.Tensor, parameter: float | None = None, **options: Unpack[ChunkOptions]
) -> ValueAndGrad:
    """KL(p_T || p_S) of a chunk: student logits ``z``, teacher log-probs ``t`` (c, V)."""
    return kl_value_and_grad_(z, t, reverse=False, **options)


def reverse_kl(
    z: torch.Tensor, t: torch.Tensor, parameter: float | None = None, **options: Unpack[ChunkOptions]
) -> ValueAndGrad:
    """KL(p_S || p_T) of a chunk."""
    return kl_value_and_grad_(z, t, reverse=True, **options)


def jsd(
    z: torch.Tensor, t: torch.Tensor, beta: float | None, **options: Unpack[ChunkOptions]
) -> ValueAndGrad:
    """Generalized JSD(beta) of a chunk."""
    assert beta is not None  # the table row says jsd needs beta
    if beta in (0.0, 1.0):
        return kl_value_and_grad_(z, t, reverse=beta == 1.0, **options)
    s = log_softmax_(z, options["temperature"])
    scale = options["scale"] / options["temperature"]
    return jsd_value_and_grad_(s, t, beta=beta, scale=scale, need_grad=options["need_grad"])


def _skew(
    z: torch.Tensor, t: torch.Tensor, alpha: float | None, *, reverse: bool, **options: Unpack[ChunkOptions]
) -> ValueAndGrad:
    assert alpha is not None  # the table row says the skew KLs need alpha
    if alpha == 0.0:
        return kl_value_and_grad_(z, t, reverse=reverse, **options)
    s = log_softmax_(z, options["temperature"])
    need_grad = options["need_grad"]
    if alpha == 1.0:  # KL(p || p) = 0
        return s.new_zeros(()), (s.zero_() if need_grad else None)
    scale = options["scale"] / options["temperature"]
    return skew_value_and_grad_(s, t, reverse=reverse, alpha=alpha, scale=scale, need_grad=need_grad)


def skew_forward_kl(
    z: torch.Tensor, t: torch.Tensor, alpha: float | None, **options: Unpack[ChunkOptions]
) -> ValueAndGrad:
    """KL(p_T || alpha p_T + (1 - alpha) p_S) of a chunk."""
    return _skew(z, t, alpha, reverse=False, **options)


def skew_reverse_kl(
    z: torch.Tensor, t: torch.Tensor, alpha: float | None, **options: Unpack[ChunkOptions]
) -> ValueAndGrad:
    """KL(p_S || alpha p_S + (1 - alpha) p_T) of a chunk."""
    return _skew(z, t, alpha, reverse=True, **options)


def tv(
    z: torch.Tensor, t: torch.Tensor, parameter: float | None = None, **options: Unpack[ChunkOptions]
) -> ValueAndGrad:
    """Total variation of a chunk."""
    s = log_softmax_(z, options["temperature"])
    scale = options["scale"] / options["temperature"]
    return tv_value_and_grad_(s, t, scale=scale, need_grad=options["need_grad"])


def divergence_value_and_grad_(
    name: str,
    student_logits: torch.Tensor,
    teacher_log_probs: torch.Tensor,
    *,
    temperature: float,
    scale: float,
    need_grad: bool,
    beta: float = 0.5,
    alpha: float = 0.1,
) -> ValueAndGrad:
    """Sum over rows of divergence ``name`` (as ``per_token.token_divergence``) and ``scale`` * its gradient
    with respect to the student logits (c, V), or None. Both inputs are overwritten."""
    row = lookup(name)
    return function(row.name)(
        student_logits,
        teacher_log_probs,
        row.parameter_value(beta=beta, alpha=alpha),
        temperature=temperature,
        scale=scale,
        need_grad=need_grad,
    )


def function(name: str) -> ChunkValueAndGrad:
    """The in-place chunk value-and-gradient function of the table's divergence ``name``."""
    fn: ChunkValueAndGrad = globals()[lookup(name).name]
    return fn
