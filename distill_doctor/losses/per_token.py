"""Per-token divergences from log-probabilities: (n, V) student and teacher -> (n,), differentiable.

One function per row of ``table.TABLE``, named as the row, with the signature
``(log p_S, log p_T, parameter)``; ``parameter`` is the row's beta or alpha (already checked to
lie in [0, 1]) or None. The dense losses (``divergences``) and the top-k loss (``topk``) call them
through :func:`token_divergence`.

Probabilities of exactly 0 (log-probability -inf, e.g. a masked vocabulary) contribute 0 to
``p log(p / q)``; no NaN appears in the value or the gradient. A token where the target has mass
and the model has none gives +inf, as the divergence does.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from distill_doctor.losses.table import lookup

# (student log-probs (N, V), teacher log-probs (N, V), parameter) -> per-token values (N,)
PerToken = Callable[[torch.Tensor, torch.Tensor, float | None], torch.Tensor]


def log_probs(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(z / tau) over the last dimension."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if temperature != 1.0:
        logits = logits / temperature
    return torch.log_softmax(logits, dim=-1)


def kl_from_log_probs(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Per-token KL(P || Q) = sum_v p (log p - log q) from log-probabilities (..., V) -> (...).

    Entries with p = 0 contribute exactly 0; inputs are sanitised before the subtraction so that
    neither the value nor the gradient sees ``-inf - (-inf)``.
    """
    if not torch.isneginf(log_p).any():  # the common case: 2 saved (n, V) tensors instead of 5
        return (log_p.exp() * (log_p - log_q)).sum(dim=-1)
    has_mass = log_p > float("-inf")
    safe_p = torch.where(has_mass, log_p, torch.zeros_like(log_p))
    safe_q = torch.where(has_mass, log_q, torch.zeros_like(log_q))
    p = torch.where(has_mass, safe_p.exp(), torch.zeros_like(log_p))
    return (p * (safe_p - safe_q)).sum(dim=-1)


def _log_mixture(log_a: torch.Tensor, log_b: torch.Tensor, weight_a: float) -> torch.Tensor:
    """log(w a + (1 - w) b) for 0 < w < 1, elementwise in log space.

    Where a = b = 0 the result is -inf; those entries are computed on zeros first, because the
    gradient of logsumexp over (-inf, -inf) is NaN even when it is multiplied by 0 afterwards.
    """
    some = (log_a > float("-inf")) | (log_b > float("-inf"))
    zeros = torch.zeros_like(log_a)
    log_a, log_b = torch.where(some, log_a, zeros), torch.where(some, log_b, zeros)
    stacked = torch.stack([log_a + math.log(weight_a), log_b + math.log1p(-weight_a)])
    return torch.where(some, torch.logsumexp(stacked, dim=0), zeros - float("inf"))


# ----------------------------------------------------------------------------- one per table row


def forward_kl(s: torch.Tensor, t: torch.Tensor, parameter: float | None = None) -> torch.Tensor:
    """KL(p_T || p_S) per token."""
    return kl_from_log_probs(t, s)


def reverse_kl(s: torch.Tensor, t: torch.Tensor, parameter: float | None = None) -> torch.Tensor:
    """KL(p_S || p_T) per token."""
    return kl_from_log_probs(s, t)


def jsd(s: torch.Tensor, t: torch.Tensor, beta: float | None) -> torch.Tensor:
    """beta KL(p_T || M) + (1 - beta) KL(p_S || M), M = beta p_T + (1 - beta) p_S, per token.

    beta = 0 is exactly forward KL and beta = 1 exactly reverse KL (TRL's special cases: the
    mixture formula itself vanishes at both ends).
    """
    assert beta is not None  # the table row says jsd needs beta
    if beta == 0.0:
        return kl_from_log_probs(t, s)
    if beta == 1.0:
        return kl_from_log_probs(s, t)
    log_m = _log_mixture(t, s, beta)
    return beta * kl_from_log_probs(t, log_m) + (1.0 - beta) * kl_from_log_probs(s, log_m)


def _skew(p: torch.Tensor, q: torch.Tensor, alpha: float | None) -> torch.Tensor:
    """KL(p || alpha p + (1 - alpha) q) per token; alpha = 0 is KL(p || q), alpha = 1 is 0."""
    assert alpha is not None  # the table row says the skew KLs need alpha
    if alpha == 0.0:
        return kl_from_log_probs(p, q)
    if alpha == 1.0:
        return (p.exp() * 0.0).sum(dim=-1)  # KL(p || p) = 0, kept in the graph (no -inf * 0)
    return kl_from_log_probs(p, _log_mixture(p, q, alpha))


def skew_forward_kl(s: torch.Tensor, t: torch.Tensor, alpha: float | None) -> torch.Tensor:
    """KL(p_T || alpha p_T + (1 - alpha) p_S) per token."""
    return _skew(t, s, alpha)


def skew_reverse_kl(s: torch.Tensor, t: torch.Tensor, alpha: float | None) -> torch.Tensor:
    """KL(p_S || alpha p_S + (1 - alpha) p_T) per token."""
    return _skew(s, t, alpha)


def tv(s: torch.Tensor, t: torch.Tensor, parameter: float | None = None) -> torch.Tensor:
    """0.5 sum_v |p_T - p_S| per token (bounded in [0, 1])."""
    return 0.5 * (t.exp() - s.exp()).abs().sum(dim=-1)


def token_divergence(
    name: str,
    student_log_probs: torch.Tensor,
    teacher_log_probs: torch.Tensor,
    *,
    beta: float | None = None,
    alpha: float | None = None,
) -> torch.Tensor:
    """Per-token divergence ``name`` from log-probabilities (n, V) -> (n,); jsd needs ``beta``, the skew KLs ``alpha``."""
    row = lookup(name)
    return function(row.name)(
        student_log_probs, teacher_log_probs, row.parameter_value(beta=beta, alpha=alpha)
    )


def function(name: str) -> PerToken:
    """The differentiable per-token function of the table's divergence ``name`` (defined above)."""
    fn: PerToken = globals()[lookup(name).name]
    return fn
