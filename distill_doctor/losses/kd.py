"""The dense teacher-student loss of one micro-batch, shared by logit_kd, gkd and skd.

Both models score the same tokens; the student's next-token distribution is pulled towards the
teacher's with the configured divergence on loss tokens (labels != -100), optionally mixed with
cross-entropy on the labels: ``loss = hard_weight * CE + (1 - hard_weight) * divergence``.
Padded vocabularies (more model rows than tokens on one side) are aligned with ``align_vocab``.
"""

from __future__ import annotations

from typing import Any

import torch

from distill_doctor.losses.batch import LossParts, model_inputs, shifted
from distill_doctor.losses.cross_entropy import cross_entropy
from distill_doctor.losses.divergences import divergence, forward_kl
from distill_doctor.losses.vocab import align_vocab


@torch.no_grad()
def teacher_logits(teacher: Any, batch: dict[str, Any]) -> torch.Tensor:
    """Teacher logits (B, T, V_t) for the batch's tokens, without gradient."""
    return teacher(**model_inputs(batch)).logits


def dense_kd_loss(
    student: Any,
    teacher: Any,
    batch: dict[str, Any],
    *,
    divergence_name: str,
    beta: float,
    alpha: float,
    temperature: float,
    hard_weight: float,
    num_tokens: int,
) -> LossParts:
    """One micro-batch's KD loss, divided by the step's global loss-token count ``num_tokens``.

    ``divergence_name`` is a row of ``table.TABLE``; ``beta`` / ``alpha`` go to the rows that take them.
    """
    # The divergence is computed in float32 whatever the autocast dtype of the forward passes.
    s_logits = student(**model_inputs(batch)).logits.float()  # (B, T, V_s)
    t_logits = teacher_logits(teacher, batch).float()  # (B, T, V_t)
    s_logits, t_logits = align_vocab(s_logits, t_logits)  # (B, T, V), (B, T, V)
    s_logits, labels, mask = shifted(s_logits, batch["labels"])  # (B, T-1, V)
    t_logits = t_logits[:, :-1]
    soft = divergence(
        divergence_name,
        s_logits,
        t_logits,
        mask=mask,
        temperature=temperature,
        num_tokens=num_tokens,
        beta=beta,
        alpha=alpha,
    )
    loss = (1.0 - hard_weight) * soft
    hard = None
    if hard_weight > 0:
        hard = cross_entropy(s_logits, labels, mask=mask, num_tokens=num_tokens)
        loss = loss + hard_weight * hard
    kl = forward_kl(s_logits.detach(), t_logits, mask=mask, num_tokens=num_tokens)
    return LossParts(loss=loss, soft=soft.detach(), hard=None if hard is None else hard.detach(), kl=kl)
