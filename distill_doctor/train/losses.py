"""Distillation divergences between a student's and a teacher's next-token distributions.

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
* Probabilities of exactly 0 (logits of -inf, e.g. a masked vocabulary) contribute 0 to
  ``p log(p / q)``; no NaN appears in the value or the gradient. A token where the target has
  mass and the model has none gives +inf, as the divergence does.
* Only unmasked tokens are gathered before any math, so padding rows (whatever their values,
  even all -inf) never reach the computation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "skew_forward_kl", "skew_reverse_kl", "tv")


# ----------------------------------------------------------------------------- building blocks


def _flat(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
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


def _reduce(per_token: torch.Tensor, num_tokens: int | float | torch.Tensor | None) -> torch.Tensor:
    """(n,) -> sum / num_tokens; num_tokens defaults to n and counts below 1 are read as 1 (0 tokens give 0)."""
    total = per_token.sum()
    if num_tokens is None:
        num_tokens = per_token.shape[0]
    if isinstance(num_tokens, torch.Tensor):
        return total / num_tokens.to(device=total.device, dtype=total.dtype).clamp_min(1)
    return total / max(float(num_tokens), 1.0)


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


def token_divergence(
    name: str,
    student_log_probs: torch.Tensor,
    teacher_log_probs: torch.Tensor,
    *,
    beta: float | None = None,
    alpha: float | None = None,
) -> torch.Tensor:
    """Per-token divergence ``name`` from log-probabilities (n, V) -> (n,). Used by the chunked path too."""
    s, t = student_log_probs, teacher_log_probs
    if name == "forward_kl":
        return kl_from_log_probs(t, s)
    if name == "reverse_kl":
        return kl_from_log_probs(s, t)
    if name == "jsd":
        if beta is None:
            raise ValueError("divergence 'jsd' needs beta")
        _check_unit("beta", beta)
        if beta == 0.0:  # TRL special case: the mixture formula itself vanishes at the ends
            return kl_from_log_probs(t, s)
        if beta == 1.0:
            return kl_from_log_probs(s, t)
        log_m = _log_mixture(t, s, beta)  # M = beta p_T + (1 - beta) p_S
        return beta * kl_from_log_probs(t, log_m) + (1.0 - beta) * kl_from_log_probs(s, log_m)
    if name in ("skew_forward_kl", "skew_reverse_kl"):
        if alpha is None:
            raise ValueError(f"divergence {name!r} needs alpha")
        _check_unit("alpha", alpha)
        p, q = (t, s) if name == "skew_forward_kl" else (s, t)  # KL(p || alpha p + (1 - alpha) q)
        if alpha == 0.0:
            return kl_from_log_probs(p, q)
        if alpha == 1.0:
            return (p.exp() * 0.0).sum(dim=-1)  # KL(p || p) = 0, kept in the graph (no -inf * 0)
        return kl_from_log_probs(p, _log_mixture(p, q, alpha))
    if name == "tv":
        return 0.5 * (t.exp() - s.exp()).abs().sum(dim=-1)
    raise ValueError(f"unknown divergence {name!r}; expected one of {', '.join(DIVERGENCES)}")


def _check_unit(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def _divergence_loss(
    name: str,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    mask: torch.Tensor | None,
    temperature: float,
    num_tokens,
    scale_by_t2: bool,
    beta: float | None = None,
    alpha: float | None = None,
) -> torch.Tensor:
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ; call align_vocab first for padded vocabularies"
        )
    s = log_probs(_flat(student_logits, mask), temperature)  # (n, V)
    t = log_probs(_flat(teacher_logits.detach(), mask), temperature)  # (n, V)
    per_token = token_divergence(name, s, t, beta=beta, alpha=alpha)  # (n,)
    loss = _reduce(per_token, num_tokens)
    return loss * temperature**2 if scale_by_t2 else loss


# ----------------------------------------------------------------------------- public divergences


def forward_kl(
    student_logits, teacher_logits, *, mask=None, temperature=1.0, num_tokens=None, scale_by_t2=False
) -> torch.Tensor:
    """KL(p_T || p_S) = sum_v p_T (log p_T - log p_S): mean-seeking, the classic KD objective."""
    return _divergence_loss(
        "forward_kl",
        student_logits,
        teacher_logits,
        mask=mask,
        temperature=temperature,
        num_tokens=num_tokens,
        scale_by_t2=scale_by_t2,
    )


def reverse_kl(
    student_logits, teacher_logits, *, mask=None, temperature=1.0, num_tokens=None, scale_by_t2=False
) -> torch.Tensor:
    """KL(p_S || p_T) = sum_v p_S (log p_S - log p_T): mode-seeking (MiniLLM, on-policy GKD)."""
    return _divergence_loss(
        "reverse_kl",
        student_logits,
        teacher_logits,
        mask=mask,
        temperature=temperature,
        num_tokens=num_tokens,
        scale_by_t2=scale_by_t2,
    )


def generalized_jsd(
    student_logits,
    teacher_logits,
    *,
    beta,
    temperature=1.0,
    mask=None,
    num_tokens=None,
    scale_by_t2=False,
) -> torch.Tensor:
    """Generalised JSD of GKD/TRL: M = beta p_T + (1 - beta) p_S,
    JSD = beta KL(p_T || M) + (1 - beta) KL(p_S || M).

    ``beta = 0`` is exactly forward KL(p_T || p_S) and ``beta = 1`` exactly reverse KL(p_S || p_T)
    (TRL's special cases; the mixture formula itself tends to 0 at both ends).
    """
    return _divergence_loss(
        "jsd",
        student_logits,
        teacher_logits,
        mask=mask,
        temperature=temperature,
        num_tokens=num_tokens,
        scale_by_t2=scale_by_t2,
        beta=beta,
    )


def skew_forward_kl(
    student_logits,
    teacher_logits,
    *,
    alpha,
    temperature=1.0,
    mask=None,
    num_tokens=None,
    scale_by_t2=False,
) -> torch.Tensor:
    """DistiLLM skew KL: KL(p_T || alpha p_T + (1 - alpha) p_S); alpha = 0 is forward KL."""
    return _divergence_loss(
        "skew_forward_kl",
        student_logits,
        teacher_logits,
        mask=mask,
        temperature=temperature,
        num_tokens=num_tokens,
        scale_by_t2=scale_by_t2,
        alpha=alpha,
    )


def skew_reverse_kl(
    student_logits,
    teacher_logits,
    *,
    alpha,
    temperature=1.0,
    mask=None,
    num_tokens=None,
    scale_by_t2=False,
) -> torch.Tensor:
    """DistiLLM skew reverse KL: KL(p_S || alpha p_S + (1 - alpha) p_T); alpha = 0 is reverse KL."""
    return _divergence_loss(
        "skew_reverse_kl",
        student_logits,
        teacher_logits,
        mask=mask,
        temperature=temperature,
        num_tokens=num_tokens,
        scale_by_t2=scale_by_t2,
        alpha=alpha,
    )


def total_variation(
    student_logits, teacher_logits, *, mask=None, temperature=1.0, num_tokens=None, scale_by_t2=False
) -> torch.Tensor:
    """Total variation distance 0.5 * sum_v |p_T - p_S| (bounded in [0, 1] per token)."""
    return _divergence_loss(
        "tv",
        student_logits,
        teacher_logits,
        mask=mask,
        temperature=temperature,
        num_tokens=num_tokens,
        scale_by_t2=scale_by_t2,
    )


def cross_entropy(student_logits, labels, *, mask=None, num_tokens=None, ignore_index=-100) -> torch.Tensor:
    """Hard-label cross-entropy  sum_t -log p_S(labels_t) / num_tokens  (no temperature).

    ``labels`` is (B, T) / (N,) aligned with the logits (the caller shifts). Tokens count when
    ``mask`` is True (or None) AND ``labels != ignore_index``; ``num_tokens`` defaults to that count.
    """
    flat_labels = labels.reshape(-1)
    keep = flat_labels != ignore_index
    if mask is not None:
        keep = keep & mask.reshape(-1).to(torch.bool)
    logits = _flat(student_logits, keep)  # (n, V)
    per_token = F.cross_entropy(logits, flat_labels[keep], reduction="none")  # (n,)
    return _reduce(per_token, num_tokens)


_BY_NAME = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
    "jsd": generalized_jsd,
    "skew_forward_kl": skew_forward_kl,
    "skew_reverse_kl": skew_reverse_kl,
    "tv": total_variation,
}


def divergence(name: str, student_logits, teacher_logits, **kw) -> torch.Tensor:
    """Dispatch by name: forward_kl, reverse_kl, jsd (needs beta), skew_forward_kl / skew_reverse_kl
    (need alpha), tv. Keyword arguments go to the named function."""
    try:
        fn = _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown divergence {name!r}; expected one of {', '.join(DIVERGENCES)}") from None
    if name == "jsd" and "beta" not in kw:
        raise ValueError("divergence 'jsd' needs beta")
    if name.startswith("skew_") and "alpha" not in kw:
        raise ValueError(f"divergence {name!r} needs alpha")
    return fn(student_logits, teacher_logits, **kw)


# ----------------------------------------------------------------------------- vocabularies


def align_vocab(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, max_dropped_mass: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Make both logits (..., V) share one vocabulary when one model has padded output rows.

    Models often carry more output rows than their tokenizer has tokens (Qwen: 151,936 vs
    152,064). Ids at or beyond the smaller size are no token at all, so their probability is 0
    in both distributions: this is ``logit = -inf`` on those slots, implemented by slicing them
    off (the same distributions, no -inf arithmetic). The larger model is thereby renormalised over
    the shared vocabulary; padded slots never receive mass (Liger once padded with 0 instead,
    which gives them mass). Whichever side is larger, student or teacher, is treated alike.

    ``max_dropped_mass``: when given, raise ValueError if on any token the dropped slots held more
    than this probability, a sign the vocabularies genuinely differ rather than being padded
    (the trainer already refuses mismatched tokenizers; the default does not check).
    """
    v_s, v_t = student_logits.shape[-1], teacher_logits.shape[-1]
    if v_s == v_t:
        return student_logits, teacher_logits
    v = min(v_s, v_t)
    if max_dropped_mass is not None:
        larger = student_logits if v_s > v_t else teacher_logits
        with torch.no_grad():
            z = larger.detach().float()
            dropped = (torch.logsumexp(z[..., v:], dim=-1) - torch.logsumexp(z, dim=-1)).exp()
            worst = float(dropped.max()) if dropped.numel() else 0.0
        if worst > max_dropped_mass:
            who = "student" if v_s > v_t else "teacher"
            raise ValueError(
                f"the {who}'s {max(v_s, v_t) - v} extra vocabulary slots hold up to {worst:.3g} of the "
                f"probability (limit {max_dropped_mass}); the vocabularies differ, not just padding"
            )
    return student_logits[..., :v], teacher_logits[..., :v]
