"""What a loss needs from a micro-batch: the next-token view, the model inputs and the result record.

A micro-batch is the dict ``train.data.collate`` builds: ``input_ids``, ``attention_mask``,
``position_ids`` and ``labels`` of shape (B, T), with ``labels == IGNORE_INDEX`` on tokens that
carry no loss (prompt, padding). Position t predicts token t + 1, so every loss reads the logits
at positions 0 .. T-2 against ``labels[:, 1:]``. No torch import at run time: these helpers only
call tensor methods, so importing them costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100  # label of a token that carries no loss (PyTorch's cross-entropy default)


@dataclass
class LossParts:
    """What one micro-batch contributes; every tensor is already divided by the step's global token count."""

    loss: torch.Tensor  # what is back-propagated
    soft: torch.Tensor | None = None  # the divergence part
    hard: torch.Tensor | None = None  # the cross-entropy part
    kl: torch.Tensor | None = None  # teacher-student KL(p_T || p_S) at temperature 1, detached (monitoring)
    extra: dict[str, float] = field(default_factory=dict)  # method-specific (summed over micro-batches)


def shifted(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Next-token view: logits (B, T, V) -> (B, T-1, V) predicting labels[:, 1:]; returns (logits, labels, mask)."""
    labels = labels[:, 1:]
    return logits[:, :-1], labels, labels != IGNORE_INDEX


def loss_token_count(batch: dict[str, Any]) -> int:
    """Tokens that carry a loss in one micro-batch (targets after the shift)."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of a causal LM's forward pass (input_ids, attention_mask, position_ids)."""
    return {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}


def final_hidden(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """Final (post-norm) hidden states (B, T, H) without computing full logits (only the last position's)."""
    out = model(**model_inputs(batch), output_hidden_states=True, logits_to_keep=1)
    return out.hidden_states[-1]
