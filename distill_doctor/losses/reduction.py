"""Which tokens count, and how a per-token loss becomes one number.

Every loss here is ``sum over the unmasked tokens of a per-token loss / num_tokens``. Only the
unmasked rows are gathered before any math, so padding rows (whatever their values, even all
-inf) never reach the computation. ``num_tokens`` defaults to the number of unmasked tokens;
under gradient accumulation the caller passes the step's GLOBAL token count, so micro-batch
losses add up to the full-batch loss (TRL issue 4719).
"""

from __future__ import annotations

import torch

NumTokens = int | float | torch.Tensor | None


def loss_rows(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, T, V) or (N, V) -> (n, V): the unmasked tokens, upcast to at least float32."""
    flat = logits.reshape(-1, logits.shape[-1])
    if mask is not None:
        mask = mask.reshape(-1)
        if mask.shape[0] != flat.shape[0]:
            raise ValueError(f"mask has {mask.shape[0]} tokens, logits have {flat.shape[0]}")
        mask = mask.to(torch.bool)
        if not bool(mask.all()):  # gathering copies (n, V): skip it when every token counts
            flat = flat[mask]
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()
    return flat


def mean_over_tokens(per_token: torch.Tensor, num_tokens: NumTokens) -> torch.Tensor:
    """(n,) -> sum / num_tokens; num_tokens defaults to n and counts below 1 are read as 1 (0 tokens give 0)."""
    total = per_token.sum()
    if num_tokens is None:
        num_tokens = per_token.shape[0]
    if isinstance(num_tokens, torch.Tensor):
        return total / num_tokens.to(device=total.device, dtype=total.dtype).clamp_min(1)
    return total / max(float(num_tokens), 1.0)
