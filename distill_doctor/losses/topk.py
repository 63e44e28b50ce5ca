"""The top-k distillation loss: the teacher's k most likely tokens and the rest, against the student.

A teacher's full next-token distribution (V values per token) is too large to store for a whole
training set; its top-k log-probabilities and the log of the remaining tail mass are not
(``train.topk_cache`` writes and reads them). This module holds the math on both sides:
:func:`topk_targets` turns teacher logits into those targets, :func:`sparse_kd_loss` compares a
student with them on k + 1 buckets (the teacher's top-k ids, and everything else).

Temperature: the targets are the teacher's at the temperature they were computed with. Re-tempering
top-k log-probs afterwards is ill-defined for the tail (its mass at another temperature depends on
logits that were not kept), so ``sparse_kd_loss(temperature=...)`` applies the temperature to the
student only.
"""

from __future__ import annotations

import torch

from distill_doctor.losses.per_token import log_probs, token_divergence
from distill_doctor.losses.reduction import NumTokens, loss_rows, mean_over_tokens
from distill_doctor.losses.table import lookup


def topk_targets(
    logits: torch.Tensor, k: int, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k ids, log-probs and tail log-prob of softmax(logits / tau): (..., V) -> (..., k), (..., k), (...)."""
    z = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
    if temperature != 1.0:
        z = z / temperature
    lse = torch.logsumexp(z, dim=-1, keepdim=True)  # (..., 1)
    k = min(k, z.shape[-1])
    values, ids = z.topk(k, dim=-1)  # (..., k)
    rest = z.scatter(-1, ids, float("-inf"))
    tail = torch.logsumexp(rest, dim=-1) - lse.squeeze(-1)  # (...,)  -inf when k = V
    return ids, values - lse, tail


def tail_from_topk(topk_logprobs: torch.Tensor) -> torch.Tensor:
    """log(1 - sum of the top-k probabilities): (..., k) -> (...) float32, the tail log-prob that a
    teacher sending only its top-k (a vLLM server's prompt log-probs) leaves implicit.

    Computed in float64 as ``log(-expm1(logsumexp))``, accurate when the top-k hold almost all the mass;
    -inf where they hold all of it to rounding (the tail then carries no loss)."""
    rest = -torch.expm1(torch.logsumexp(topk_logprobs.double(), dim=-1))  # (...,) 1 - sum p
    tiny = torch.finfo(torch.float64).tiny
    return torch.where(rest > 0, rest.clamp_min(tiny).log(), torch.full_like(rest, float("-inf"))).float()


def bucket_log_probs(logits: torch.Tensor, topk_ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """A model's distribution collapsed to (its probs at topk_ids, the rest): (n, V), (n, k) -> (n, k + 1) log-probs."""
    logp = log_probs(logits, temperature)  # (n, V)
    top = logp.gather(-1, topk_ids)  # (n, k)
    rest = logp.scatter(-1, topk_ids, float("-inf"))  # (n, V)
    empty = torch.isneginf(rest).all(dim=-1)  # (n,) nothing outside the top-k
    # logsumexp over an all -inf row has a NaN gradient: compute those rows on zeros, then overwrite
    rest = torch.where(empty[:, None], torch.zeros_like(rest), rest)
    tail = torch.where(
        empty, torch.full_like(empty, float("-inf"), dtype=logp.dtype), torch.logsumexp(rest, -1)
    )
    return torch.cat([top, tail[:, None]], dim=-1)


def sparse_kd_loss(
    student_logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    tail_logprob: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    temperature: float = 1.0,
    divergence: str = "forward_kl",
    num_tokens: NumTokens = None,
    beta: float | None = None,
    alpha: float | None = None,
) -> torch.Tensor:
    """Divergence between teacher and student on k + 1 buckets: the teacher's top-k ids, and the rest.

    student_logits (B, T, V) / (N, V); topk_ids, topk_logprobs (B, T, k) / (N, k); tail_logprob
    (B, T) / (N,); mask (B, T) / (N,) or None. The teacher side is (cached top-k, tail), renormalised
    (float16 storage leaves its sum a little off 1); the student side is its probabilities at the
    same ids plus everything else. The divergence is then exact for these bucketed distributions and,
    by the data-processing inequality, at most the full-vocabulary divergence. Any name of
    ``table.DIVERGENCES`` works (jsd needs ``beta``, the skew KLs ``alpha``); forward and reverse KL
    are the usual choices (top-k reverse KL on student samples has been reported unstable).
    ``temperature`` applies to the student; the teacher's is the cache's (see the module docstring).
    Returns the sum over unmasked tokens / num_tokens (default: their count).
    """
    lookup(divergence)  # an unknown name fails before any work
    k = topk_ids.shape[-1]
    s = loss_rows(student_logits, mask)  # (n, V)
    flat_mask = None if mask is None else mask.reshape(-1).to(torch.bool)
    ids = topk_ids.reshape(-1, k)
    t_top = topk_logprobs.reshape(-1, k)
    t_tail = tail_logprob.reshape(-1)
    if flat_mask is not None:
        ids, t_top, t_tail = ids[flat_mask], t_top[flat_mask], t_tail[flat_mask]
    ids = ids.long()
    if ids.numel() and int(ids.max()) >= s.shape[-1]:
        raise ValueError(
            f"cached ids reach {int(ids.max())} but the student has {s.shape[-1]} vocabulary slots; "
            "build the cache with vocab_size=<student vocabulary>"
        )
    teacher = torch.cat([t_top.to(s.dtype), t_tail.to(s.dtype)[:, None]], dim=-1).detach()  # (n, k + 1)
    teacher = teacher - torch.logsumexp(teacher, dim=-1, keepdim=True)
    student = bucket_log_probs(s, ids, temperature)  # (n, k + 1)
    per_token = token_divergence(divergence, student, teacher, beta=beta, alpha=alpha)  # (n,)
    return mean_over_tokens(per_token, num_tokens)


@torch.no_grad()
def tail_masses(
    student_logits: torch.Tensor,
    topk_ids: torch.Tensor,
    tail_logprob: torch.Tensor,
    *,
    mask: torch.Tensor | None,
    temperature: float,
    num_tokens: int,
) -> dict[str, float]:
    """How much a top-k teacher approximates: the teacher's and the student's mass outside the
    teacher's top-k, summed over unmasked tokens / num_tokens (shapes as :func:`sparse_kd_loss`).

    Logged by every top-k teacher path as ``teacher_tail_mass`` and ``student_tail_mass`` (the p_R and
    q_R of ``table.TOPK_TAIL_ERROR``); the teacher's is the tail as given (before renormalising)."""
    k = topk_ids.shape[-1]
    s = loss_rows(student_logits, mask)  # (n, V)
    ids, tail = topk_ids.reshape(-1, k), tail_logprob.reshape(-1)
    if mask is not None:
        flat = mask.reshape(-1).to(torch.bool)
        ids, tail = ids[flat], tail[flat]
    student_tail = bucket_log_probs(s, ids.long(), temperature)[:, -1]  # (n,)
    n = max(float(num_tokens), 1.0)
    return {
        "teacher_tail_mass": float(tail.float().exp().sum()) / n,
        "student_tail_mass": float(student_tail.float().exp().sum()) / n,
    }
