"""The divergences a student can be trained with: one table for config, dense, chunked and top-k losses.

Each row names a divergence between the teacher's and the student's next-token distributions
p_T and p_S, and the one extra argument it needs (``beta`` for jsd, ``alpha`` for the skew KLs).
Its two implementations are the functions of the same name in

* ``per_token``: log-probabilities (n, V) -> per-token values (n,), differentiable; the dense
  losses (``divergences``) and the top-k loss (``topk``) are built on it;
* ``closed_form``: the value and the logit gradient of one chunk, in place, without autograd;
  the chunked loss (``chunked``) is built on it.

A new divergence is one row here and one function in each of those modules (a test checks that
every row has both). This module imports no torch, so validating a config stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


def check_unit(name: str, value: float) -> None:
    """Refuse a weight outside [0, 1] (beta, alpha, hard_weight)."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


@dataclass(frozen=True)
class Divergence:
    """One divergence: its name, the extra argument it needs, and what it computes."""

    name: str
    parameter: Literal["beta", "alpha"] | None
    definition: str

    def parameter_value(self, *, beta: float | None = None, alpha: float | None = None) -> float | None:
        """The value of this divergence's extra argument (None when it takes none), checked to lie in [0, 1]."""
        if self.parameter is None:
            return None
        value = beta if self.parameter == "beta" else alpha
        if value is None:
            raise ValueError(f"divergence {self.name!r} needs {self.parameter}")
        check_unit(self.parameter, value)
        return value


TABLE = (
    Divergence("forward_kl", None, "KL(p_T || p_S): mean-seeking, the classic KD objective"),
    Divergence("reverse_kl", None, "KL(p_S || p_T): mode-seeking (MiniLLM, on-policy GKD)"),
    Divergence(
        "jsd", "beta", "beta KL(p_T || M) + (1 - beta) KL(p_S || M), M = beta p_T + (1 - beta) p_S (GKD)"
    ),
    Divergence("skew_forward_kl", "alpha", "KL(p_T || alpha p_T + (1 - alpha) p_S) (DistiLLM)"),
    Divergence("skew_reverse_kl", "alpha", "KL(p_S || alpha p_S + (1 - alpha) p_T) (DistiLLM)"),
    Divergence("tv", None, "0.5 sum_v |p_T - p_S|: total variation (DistillSpec)"),
)
DIVERGENCES = tuple(d.name for d in TABLE)
_BY_NAME = {d.name: d for d in TABLE}


def lookup(name: str) -> Divergence:
    """The table row called ``name``; ValueError naming the known ones otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown divergence {name!r}; expected one of {', '.join(DIVERGENCES)}") from None


# ----------------------------------------------------------------------------- against a top-k teacher

# A top-k teacher (gkd's teacher_top_k, served or in-process; logit_kd's topk_cache) is known on k + 1
# buckets: its top-k ids and the rest, the tail R; both paths compute the same loss
# (``topk.sparse_kd_loss``). The divergence between the bucketed distributions is the full one minus
# what is lost inside the tail, which is >= 0 (data processing). With p_R / q_R the teacher's / the
# student's mass in the tail and p|R, q|R their shapes inside it, that loss is (each bound -> 0 with
# p_R, for any student; checked on random distributions and on a built cache, tests/topk_bounds.py):
TOPK_TAIL_ERROR = {
    "forward_kl": "p_R KL(p|R || q|R): weighted by the teacher's tail mass p_R",
    "reverse_kl": "q_R KL(q|R || p|R): weighted by the student's tail mass, unbounded (refused)",
    "jsd": "at most beta p_R (1 + ln(1 + (1 - beta) q_R / (beta p_R))) for 0 < beta < 1",
    "skew_forward_kl": "at most p_R ln(1 + (1 - alpha) q_R / (alpha p_R)) for alpha > 0",
    "skew_reverse_kl": "at most (1 - alpha) p_R / alpha for alpha > 0 (alpha 0 is reverse KL, refused)",
    "tv": "at most min(p_R, q_R)",
}


def topk_refusal(
    name: str,
    *,
    beta: float | None = None,
    alpha: float | None = None,
    full_teacher: str = "no teacher_top_k",
) -> str | None:
    """Why ``name`` cannot be trained against a top-k teacher (None when it can).

    One answer for every top-k teacher (gkd's ``teacher_top_k``, logit_kd's ``topk_cache``): the
    loss is the same k + 1 bucket loss, and what it misses depends only on the two distributions at a
    position, not on whether the student or the dataset wrote the prefix. ``full_teacher`` says how
    the caller's config gets the full teacher instead (the end of the message).

    Reverse KL, and jsd at beta = 1 and skew_reverse_kl at alpha = 0 which equal it, weight the tail
    by the student's own mass outside the teacher's top-k: that mass need not be small (a fresh
    student's is about 1 - k / V on any prefix, its own samples or the dataset's), and what the
    bucketed loss misses there (the student's tail against a teacher tail that
    was never sent) is unbounded. Every other row misses at most an amount governed by the teacher's
    tail mass (``TOPK_TAIL_ERROR``), which the teacher reports and a larger k shrinks."""
    reverse = (
        name == "reverse_kl"
        or (name == "jsd" and beta == 1.0)
        or (name == "skew_reverse_kl" and alpha == 0.0)
    )
    if not reverse:
        return None
    return (
        f"{name}{'' if name == 'reverse_kl' else ' here'} is reverse KL, which a top-k teacher cannot "
        "stand in for: its tail term (the student's mass outside the teacher's top-k, against teacher "
        "probabilities that were never sent) is unbounded; use jsd with beta < 1 (e.g. 0.9, mode-seeking "
        "with a bounded tail error), forward_kl, or the full teacher "
        f"({full_teacher})"
    )
