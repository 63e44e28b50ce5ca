"""Distillation divergences between a student's and a teacher's next-token distributions, from logits.

Every function is pure and takes logits of shape ``(B, T, V)`` or ``(N, V)`` with an optional
``mask`` of shape ``(B, T)`` / ``(N,)`` (bool, True = the token carries a loss; None = every token).
Each returns a 0-d tensor::

    sum over unmasked tokens of the per-token divergence  /  num_tokens

``num_tokens`` defaults to the number of unmasked tokens. Under gradient accumulation pass the
step's GLOBAL token count, so micro-batch losses add up to the full-batch loss (TRL issue 4719).
With zero tokens the result is 0 (still connected to the graph).

Conventions, stated so nothing is hidden:

* Temperature: ``p = softmax(z / tau)`` for both models (the TRL/GKD convention). The loss is NOT
  multiplied by ``tau**2`` unless ``scale_by_t2=True`` (Hinton-style KD, which keeps gradient
  magnitudes comparable across temperatures).
* Math runs in float32 (float64 inputs stay float64); bf16/fp16 logits are upcast first.
* Zero probabilities and padding rows: see ``per_token`` and ``reduction``.

The divergences themselves are the rows of ``table.TABLE``; :func:`divergence` dispatches by name.
"""

from __future__ import annotations

from typing import Required, TypedDict, Unpack

import torch
from torch import Tensor

from distill_doctor.losses.per_token import log_probs, token_divergence
from distill_doctor.losses.reduction import NumTokens, loss_rows, mean_over_tokens
from distill_doctor.losses.table import lookup


def divergence(
    name: str,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    temperature: float = 1.0,
    num_tokens: NumTokens = None,
    scale_by_t2: bool = False,
    beta: float | None = None,
    alpha: float | None = None,
) -> torch.Tensor:
    """Divergence ``name`` (a row of ``table.TABLE``: jsd needs ``beta``, the skew KLs ``alpha``).

    student_logits, teacher_logits (B, T, V) / (N, V), the teacher detached; mask (B, T) / (N,) or
    None. Returns the sum over unmasked tokens / num_tokens, times tau**2 if ``scale_by_t2``.
    """
    lookup(name).parameter_value(beta=beta, alpha=alpha)  # unknown names and missing arguments first
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ; call align_vocab first for padded vocabularies"
        )
    s = log_probs(loss_rows(student_logits, mask), temperature)  # (n, V)
    t = log_probs(loss_rows(teacher_logits.detach(), mask), temperature)  # (n, V)
    per_token = token_divergence(name, s, t, beta=beta, alpha=alpha)  # (n,)
    loss = mean_over_tokens(per_token, num_tokens)
    return loss * temperature**2 if scale_by_t2 else loss


# ----------------------------------------------------------------------------- by name


class LossOptions(TypedDict, total=False):
    """The keyword arguments every divergence takes, with :func:`divergence`'s defaults."""

    mask: Tensor | None
    temperature: float
    num_tokens: NumTokens
    scale_by_t2: bool


class JsdOptions(LossOptions):
    """:class:`LossOptions` plus the generalised JSD's mixture weight ``beta`` (required)."""

    beta: Required[float]


class SkewOptions(LossOptions):
    """:class:`LossOptions` plus the skew KLs' mixture weight ``alpha`` (required)."""

    alpha: Required[float]


def forward_kl(student_logits: Tensor, teacher_logits: Tensor, **options: Unpack[LossOptions]) -> Tensor:
    """KL(p_T || p_S) = sum_v p_T (log p_T - log p_S): mean-seeking, the classic KD objective."""
    return divergence("forward_kl", student_logits, teacher_logits, **options)


def reverse_kl(student_logits: Tensor, teacher_logits: Tensor, **options: Unpack[LossOptions]) -> Tensor:
    """KL(p_S || p_T) = sum_v p_S (log p_S - log p_T): mode-seeking (MiniLLM, on-policy GKD)."""
    return divergence("reverse_kl", student_logits, teacher_logits, **options)


def generalized_jsd(student_logits: Tensor, teacher_logits: Tensor, **options: Unpack[JsdOptions]) -> Tensor:
    """Generalised JSD of GKD/TRL: M = beta p_T + (1 - beta) p_S,
    JSD = beta KL(p_T || M) + (1 - beta) KL(p_S || M).

    ``beta = 0`` is exactly forward KL(p_T || p_S) and ``beta = 1`` exactly reverse KL(p_S || p_T)
    (TRL's special cases; the mixture formula itself tends to 0 at both ends).
    """
    return divergence("jsd", student_logits, teacher_logits, **options)


def skew_forward_kl(student_logits: Tensor, teacher_logits: Tensor, **options: Unpack[SkewOptions]) -> Tensor:
    """DistiLLM skew KL: KL(p_T || alpha p_T + (1 - alpha) p_S); alpha = 0 is forward KL."""
    return divergence("skew_forward_kl", student_logits, teacher_logits, **options)


def skew_reverse_kl(student_logits: Tensor, teacher_logits: Tensor, **options: Unpack[SkewOptions]) -> Tensor:
    """DistiLLM skew reverse KL: KL(p_S || alpha p_S + (1 - alpha) p_T); alpha = 0 is reverse KL."""
    return divergence("skew_reverse_kl", student_logits, teacher_logits, **options)


def total_variation(student_logits: Tensor, teacher_logits: Tensor, **options: Unpack[LossOptions]) -> Tensor:
    """Total variation distance 0.5 * sum_v |p_T - p_S| (bounded in [0, 1] per token)."""
    return divergence("tv", student_logits, teacher_logits, **options)
