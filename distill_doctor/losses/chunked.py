"""Distillation and cross-entropy losses with the output head folded in, computed chunk by chunk.

The dense path materialises (N, V) float32 logits for both models, plus several same-sized
intermediates of the softmax math and of its backward. Here only the loss tokens are gathered,
and they are processed ``chunk_size`` at a time: for one chunk both models' logits are computed,
the loss and its gradient with respect to the chunk's student logits are taken in closed form and
in place for every divergence and the cross-entropy (``closed_form.py``: no chunk runs autograd),
the gradient is pushed through the head into the chunk's hidden states and into an accumulated head-weight gradient, and the
chunk's logits are freed. This is Liger's fused-linear approach: the forward pass stores only
``grad_hidden`` (n, H) and ``grad_weight`` (V, H) and the backward pass multiplies them by the
incoming gradient, so the backward is chunked too and peak memory is O(chunk_size * V).

Numerics: logits are computed in the head's dtype (bf16 on tensor cores) and the softmax math runs
in float32; the head-weight gradient accumulates in float32. The result equals the dense
``divergence``/``cross_entropy`` on ``align_vocab``-ed logits (tests check both value and gradients).

Limits: no final-logit soft-capping (Gemma 2), no tensor-parallel heads. If the loss is needed
without gradients (torch.no_grad, or nothing requires grad) only the values are computed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from distill_doctor.losses import closed_form
from distill_doctor.losses.batch import IGNORE_INDEX
from distill_doctor.losses.closed_form import ChunkValueAndGrad, cross_entropy_value_and_grad, log_softmax_
from distill_doctor.losses.table import Divergence, check_unit, lookup

HeadLike = torch.Tensor | torch.nn.Module | tuple


class ChunkedLossOutput(NamedTuple):
    """``loss`` = (1 - hard_weight) * soft_loss + hard_weight * hard_loss (differentiable);
    ``soft_loss`` and ``hard_loss`` are detached values (``hard_loss`` is None without labels)."""

    loss: torch.Tensor
    soft_loss: torch.Tensor | None
    hard_loss: torch.Tensor | None


def _head(head: HeadLike) -> tuple[torch.Tensor, torch.Tensor | None]:
    """An output head as (weight (V, H), bias (V,) or None): a tensor, an nn.Linear-like module or a pair."""
    if isinstance(head, torch.Tensor):
        return head, None
    if isinstance(head, tuple):
        weight, bias = head
        return weight, bias
    weight = getattr(head, "weight", None)
    if isinstance(weight, torch.Tensor):
        return weight, getattr(head, "bias", None)
    raise TypeError(f"expected a weight tensor, an nn.Linear-like module or (weight, bias), got {type(head)}")


ChunkLoss = Callable[[torch.Tensor, slice, bool], tuple]


class _ChunkedLinearLoss(torch.autograd.Function):
    """loss = sum over chunks of the chunk loss of logits = hidden @ W.T + b.

    ``chunk_loss(logits (c, V) float32, rows: slice, need_grad) -> (loss 0-d, grad_logits (c, V) or
    None, (value 0-d, ...))``; the logits tensor is the chunk's own and may be overwritten.
    Outputs: the loss, then the sums of the values (not differentiable).
    """

    @staticmethod
    def forward(
        ctx, hidden, weight, bias, chunk_loss: ChunkLoss, chunk_size: int, n_values: int, grad_on: bool
    ):
        n = hidden.shape[0]
        wants = [grad_on and bool(x) for x in ctx.needs_input_grad[:3]]
        need_grad = any(wants)
        grad_hidden = torch.zeros_like(hidden) if wants[0] else None  # (n, H)
        # (V, H) and (V,), accumulated in float32 whatever the head dtype
        grad_weight = (
            torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if wants[1] else None
        )
        grad_bias = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if wants[2] else None
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        values = [torch.zeros((), dtype=torch.float32, device=hidden.device) for _ in range(n_values)]
        for start in range(0, n, chunk_size):
            rows = slice(start, min(start + chunk_size, n))
            h = hidden[rows].to(weight.dtype)  # (c, H)
            # (c, V): matmul in the head dtype, loss math in float32
            chunk_value, grad_logits, chunk_values = chunk_loss(
                F.linear(h, weight, bias).float(), rows, need_grad
            )
            loss += chunk_value
            for acc, value in zip(values, chunk_values):
                acc += value
            if need_grad:
                g = grad_logits.to(weight.dtype)
                if grad_hidden is not None:
                    grad_hidden[rows] = g @ weight  # (c, H)
                if grad_weight is not None:
                    grad_weight += (g.t() @ h).float()  # (V, H)
                if grad_bias is not None:
                    grad_bias += grad_logits.sum(dim=0)
            del grad_logits
        ctx.save_for_backward(
            grad_hidden,
            None if grad_weight is None else grad_weight.to(weight.dtype),
            None if grad_bias is None else grad_bias.to(bias.dtype),
        )
        ctx.mark_non_differentiable(*values)
        return (loss, *values)

    @staticmethod
    def backward(ctx, grad_loss, *_grad_values):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        scale = grad_loss  # 0-d: d(outer) / d(loss)
        return (
            None if grad_hidden is None else grad_hidden * scale.to(grad_hidden.dtype),
            None if grad_weight is None else grad_weight * scale.to(grad_weight.dtype),
            None if grad_bias is None else grad_bias * scale.to(grad_bias.dtype),
            None,
            None,
            None,
            None,
        )


def _gather(x: torch.Tensor, mask: torch.Tensor | None, *, features: bool) -> torch.Tensor:
    """Hidden states (B, T, H) / (N, H) -> (n, H), or labels (B, T) / (N,) -> (n,): the rows where mask is True."""
    flat = x.reshape(-1, x.shape[-1]) if features else x.reshape(-1)
    if mask is None:
        return flat
    mask = mask.reshape(-1).to(torch.bool)
    if mask.shape[0] != flat.shape[0]:
        raise ValueError(f"mask has {mask.shape[0]} tokens, the tensor {flat.shape[0]}")
    return flat[mask]


MAX_CHUNK_ELEMENTS = 2**26  # (c, V) float32 buffers of at most 256 MB each


def _rows_per_chunk(chunk_size: int, vocab: int) -> int:
    """``chunk_size``, lowered so one (c, V) buffer stays under MAX_CHUNK_ELEMENTS at large vocabularies."""
    return max(1, min(chunk_size, MAX_CHUNK_ELEMENTS // max(vocab, 1)))


def _grad_on(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _count(num_tokens, default: int) -> float:
    n = default if num_tokens is None else num_tokens
    return max(float(n), 1.0)


def _check_arguments(
    *,
    chunk_size: int,
    divergence: str,
    temperature: float,
    hard_weight: float,
    beta: float,
    alpha: float,
    has_labels: bool,
) -> Divergence:
    """Refuse bad arguments before any math; returns the divergence's table row."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    row = lookup(divergence)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    check_unit("hard_weight", hard_weight)
    check_unit("beta", beta)
    check_unit("alpha", alpha)
    if hard_weight > 0 and not has_labels:
        raise ValueError("hard_weight > 0 needs labels")
    return row


class _AlignedHeads(NamedTuple):
    """Both heads cut to the shared vocabulary ``v`` = min(V_s, V_t); the teacher's detached."""

    s_w: torch.Tensor  # (v, H_s)
    s_b: torch.Tensor | None  # (v,)
    t_w: torch.Tensor  # (v, H_t)
    t_b: torch.Tensor | None  # (v,)
    v: int


def _align_heads(student_head: HeadLike, teacher_head: HeadLike) -> _AlignedHeads:
    """The heads as ``align_vocab`` aligns logits: padded rows of either head carry no probability."""
    s_weight, s_bias = _head(student_head)
    t_weight, t_bias = _head(teacher_head)
    v = min(s_weight.shape[0], t_weight.shape[0])
    whole = v == s_weight.shape[0]  # slice only when needed: a slice's backward allocates a (V_s, H) copy
    s_w = s_weight if whole else s_weight[:v]
    s_b = s_bias if s_bias is None or whole else s_bias[:v]
    t_w = t_weight.detach()[:v]
    t_b = None if t_bias is None else t_bias.detach()[:v]
    return _AlignedHeads(s_w, s_b, t_w, t_b, v)


@dataclass(frozen=True)
class _DistillChunk:
    """The ``ChunkLoss`` of ``chunked_distill_loss``: for one chunk of student logits, the divergence
    (+ CE) and its logit gradient in closed form, in place (``closed_form``)."""

    t_hidden: torch.Tensor  # (n, H_t), the teacher's loss tokens
    t_w: torch.Tensor
    t_b: torch.Tensor | None
    labels: torch.Tensor | None  # (n,)
    chunk_divergence: ChunkValueAndGrad
    parameter: float | None
    temperature: float
    hard_weight: float
    soft_den: float
    hard_den: float
    t2: float  # tau**2 with scale_by_t2, else 1
    ignore_index: int

    def teacher_log_probs(self, rows: slice) -> torch.Tensor:
        with torch.no_grad():
            logits = F.linear(self.t_hidden[rows], self.t_w, self.t_b).float()
            return log_softmax_(logits, self.temperature)  # (c, V)

    def __call__(self, logits: torch.Tensor, rows: slice, need_grad: bool) -> tuple:
        hard = ce_grad = None
        if self.labels is not None:  # before the logits buffer is overwritten
            hard, ce_grad = cross_entropy_value_and_grad(
                logits, self.labels[rows], ignore_index=self.ignore_index,
                scale=self.hard_weight / self.hard_den, need_grad=need_grad and self.hard_weight > 0,
            )  # fmt: skip
            hard = hard / self.hard_den
        soft, grad = self.chunk_divergence(
            logits, self.teacher_log_probs(rows), self.parameter, temperature=self.temperature,
            scale=(1.0 - self.hard_weight) * self.t2 / self.soft_den, need_grad=need_grad,
        )  # fmt: skip
        soft = soft * (self.t2 / self.soft_den)
        if ce_grad is not None and grad is not None:  # both or neither (need_grad)
            grad = grad.add_(ce_grad)
        total = (1.0 - self.hard_weight) * soft
        if hard is None:
            return total, grad, (soft,)
        return total + self.hard_weight * hard, grad, (soft, hard)


def chunked_distill_loss(
    student_hidden: torch.Tensor,
    student_head: HeadLike,
    teacher_hidden: torch.Tensor,
    teacher_head: HeadLike,
    *,
    mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    divergence: str = "jsd",
    beta: float = 0.5,
    alpha: float = 0.1,
    temperature: float = 1.0,
    hard_weight: float = 0.0,
    num_tokens: int | None = None,
    chunk_size: int = 1024,
    scale_by_t2: bool = False,
    ignore_index: int = IGNORE_INDEX,
) -> ChunkedLossOutput:
    """The dense KD loss of ``kd``, from final hidden states, without full logits.

    student_hidden (B, T, H_s) or (N, H_s), differentiable; student_head: its lm_head (weight
    (V_s, H_s) tensor, nn.Linear, or (weight, bias)); teacher_hidden (B, T, H_t) / (N, H_t) and
    teacher_head (V_t, H_t) get no gradient. mask (B, T) / (N,) bool or None; labels (B, T) / (N,)
    aligned with the hidden states (the caller shifts), needed when hard_weight > 0.

    ``loss = (1 - hard_weight) * divergence(student || teacher) + hard_weight * CE(labels)``, each
    summed over tokens and divided by ``num_tokens`` (default: mask.sum() for the divergence, the
    unmasked tokens with a label != ignore_index for the CE, like ``cross_entropy``). Padded
    vocabularies are aligned as ``align_vocab`` does: rows beyond min(V_s, V_t) are ignored.
    Temperature: p = softmax(z / tau) for the divergence only; times tau**2 if ``scale_by_t2``.
    ``chunk_size`` is an upper bound: at large vocabularies a chunk is cut to MAX_CHUNK_ELEMENTS / V
    tokens (441 at V = 151,936), so the loss memory stays flat as V grows.
    """
    row = _check_arguments(
        chunk_size=chunk_size, divergence=divergence, temperature=temperature, hard_weight=hard_weight,
        beta=beta, alpha=alpha, has_labels=labels is not None,
    )  # fmt: skip
    heads = _align_heads(student_head, teacher_head)
    hidden = _gather(student_hidden, mask, features=True)  # (n, H_s)
    t_hidden = _gather(teacher_hidden.detach(), mask, features=True).to(heads.t_w.dtype)  # (n, H_t)
    if t_hidden.shape[0] != hidden.shape[0]:
        raise ValueError(f"student has {hidden.shape[0]} tokens, teacher {t_hidden.shape[0]}")
    sel_labels = None if labels is None else _gather(labels, mask, features=False)  # (n,)
    n_hard = 0 if sel_labels is None else int((sel_labels != ignore_index).sum())
    objective = _DistillChunk(
        t_hidden, heads.t_w, heads.t_b, sel_labels, closed_form.function(row.name),
        row.parameter_value(beta=beta, alpha=alpha), temperature, hard_weight,
        soft_den=_count(num_tokens, hidden.shape[0]), hard_den=_count(num_tokens, n_hard),
        t2=temperature**2 if scale_by_t2 else 1.0, ignore_index=ignore_index,
    )  # fmt: skip
    n_values = 1 if sel_labels is None else 2
    grad_on = _grad_on(hidden, heads.s_w, heads.s_b)
    rows = _rows_per_chunk(chunk_size, heads.v)
    out = _ChunkedLinearLoss.apply(hidden, heads.s_w, heads.s_b, objective, rows, n_values, grad_on)
    return ChunkedLossOutput(out[0], out[1], out[2] if n_values == 2 else None)


def chunked_cross_entropy(
    hidden: torch.Tensor,
    head: HeadLike,
    labels: torch.Tensor,
    *,
    num_tokens: int | None = None,
    chunk_size: int = 1024,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """``cross_entropy(hidden @ W.T + b, labels)`` without full logits (SFT on large vocabularies).

    hidden (B, T, H) or (N, H); labels (B, T) / (N,) aligned with it (the caller shifts), tokens
    with ``ignore_index`` skipped; divided by ``num_tokens`` (default: the labelled token count).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    weight, bias = _head(head)
    keep = labels.reshape(-1) != ignore_index
    sel_hidden = _gather(hidden, keep, features=True)  # (n, H)
    sel_labels = labels.reshape(-1)[keep]  # (n,)
    den = _count(num_tokens, sel_labels.shape[0])

    def chunk_loss(logits: torch.Tensor, rows: slice, need_grad: bool):
        value, grad = cross_entropy_value_and_grad(
            logits, sel_labels[rows], ignore_index=ignore_index, scale=1.0 / den, need_grad=need_grad
        )
        return value / den, grad, ()

    grad_on = _grad_on(sel_hidden, weight, bias)
    rows = _rows_per_chunk(chunk_size, weight.shape[0])
    return _ChunkedLinearLoss.apply(sel_hidden, weight, bias, chunk_loss, rows, 0, grad_on)[0]
