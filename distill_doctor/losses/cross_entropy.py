"""Hard-label cross-entropy on the loss tokens, normalised like the divergences (see ``reduction``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill_doctor.losses.batch import IGNORE_INDEX
from distill_doctor.losses.reduction import NumTokens, loss_rows, mean_over_tokens


def cross_entropy(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    num_tokens: NumTokens = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Hard-label cross-entropy  sum_t -log p_S(labels_t) / num_tokens  (no temperature).

    ``student_logits`` (B, T, V) / (N, V); ``labels`` (B, T) / (N,) aligned with the logits (the
    caller shifts). Tokens count when ``mask`` is True (or None) AND ``labels != ignore_index``;
    ``num_tokens`` defaults to that count.
    """
    flat_labels = labels.reshape(-1)
    keep = flat_labels != ignore_index
    if mask is not None:
        keep = keep & mask.reshape(-1).to(torch.bool)
    logits = loss_rows(student_logits, keep)  # (n, V)
    per_token = F.cross_entropy(logits, flat_labels[keep], reduction="none")  # (n,)
    return mean_over_tokens(per_token, num_tokens)
