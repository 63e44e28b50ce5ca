"""What the top-k loss misses inside the tail, checked against ``losses.table.TOPK_TAIL_ERROR``.

Shared by the served-teacher tests (random distributions, exact top-k) and the top-k cache tests (a
built cache's float16 numbers): both top-k teacher paths train with ``losses.topk.sparse_kd_loss``, so
one check covers both."""

from __future__ import annotations

import math

import torch

from distill_doctor.losses.per_token import token_divergence
from distill_doctor.losses.table import TOPK_TAIL_ERROR
from distill_doctor.losses.topk import sparse_kd_loss


def _kl(p: torch.Tensor, q: torch.Tensor) -> float:
    """KL of two probability vectors (float64), 0 log 0 = 0."""
    keep = p > 0
    return float((p[keep] * (p[keep].log() - q[keep].log())).sum())


def documented_bounds(
    p: torch.Tensor, q: torch.Tensor, tail: torch.Tensor
) -> dict[tuple[str, float | None], float]:
    """The ``TOPK_TAIL_ERROR`` bound of each (divergence, beta or alpha) for teacher p, student q (V,)
    and the tail mask (V,) (True outside the teacher's top-k); forward and reverse KL's are exact."""
    p_R, q_R = float(p[tail].sum()), float(q[tail].sum())
    cases: dict[tuple[str, float | None], float] = {
        ("forward_kl", None): p_R * _kl(p[tail] / p_R, q[tail] / q_R),
        ("reverse_kl", None): q_R * _kl(q[tail] / q_R, p[tail] / p_R),
        ("tv", None): min(p_R, q_R),
    }
    for b in (0.1, 0.5, 0.9):
        cases[("jsd", b)] = b * p_R * (1 + math.log(1 + (1 - b) * q_R / (b * p_R)))
    for a in (0.1, 0.5):
        cases[("skew_forward_kl", a)] = p_R * math.log(1 + (1 - a) * q_R / (a * p_R))
        cases[("skew_reverse_kl", a)] = (1 - a) / a * p_R
    assert {name for name, _ in cases} == set(TOPK_TAIL_ERROR)
    return cases


def check_missed_tail(
    s_logits: torch.Tensor,
    t_logits: torch.Tensor,
    ids: torch.Tensor,
    t_top: torch.Tensor,
    t_tail: torch.Tensor,
    *,
    tol: float = 1e-12,
) -> dict[tuple[str, float | None], tuple[float, float]]:
    """Full-vocabulary divergence minus ``sparse_kd_loss`` on the teacher's top-k (ids, t_top (k,),
    t_tail ()) lies in [-tol, bound + tol] for every row of ``documented_bounds``, and equals the exact
    forward / reverse KL terms within tol. s_logits, t_logits (V,) are the full distributions' logits.
    tol is rounding: 1e-12 for an exact top-k, the storage error for a float16 cache. Returns
    {case: (missed, bound)} for the caller's own checks."""
    s64, t64 = s_logits.double()[None], t_logits.double()[None]  # (1, V)
    p, q = t64.softmax(-1)[0], s64.softmax(-1)[0]
    tail = torch.ones_like(p, dtype=torch.bool)
    tail[ids] = False
    seen: dict[tuple[str, float | None], tuple[float, float]] = {}
    for (name, parameter), bound in documented_bounds(p, q, tail).items():
        s_lp, t_lp = s64.log_softmax(-1), t64.log_softmax(-1)
        full = float(token_divergence(name, s_lp, t_lp, beta=parameter, alpha=parameter))
        top, rest = t_top[None].double(), t_tail[None].double()
        bucketed = float(
            sparse_kd_loss(s64, ids[None].long(), top, rest, divergence=name, beta=parameter, alpha=parameter)
        )
        missed = full - bucketed
        assert -tol <= missed <= bound + tol, (name, parameter, missed, bound)
        if name in ("forward_kl", "reverse_kl"):
            assert abs(missed - bound) <= tol + 1e-9 * abs(bound), (name, missed, bound)
        seen[(name, parameter)] = (missed, bound)
    return seen
