"""Min-K%++ membership scores (Zhang et al. 2024) and an AUC to compare two groups of texts.

For a text x_1..x_T under a causal LM, at each position t (predicting x_t from x_<t):

    z_t = (log p(x_t | x_<t) - mu_t) / sigma_t,
    mu_t = E_{v ~ p(.|x_<t)}[log p(v | x_<t)],   sigma_t^2 = Var_{v ~ p(.|x_<t)}[log p(v | x_<t)]

(mean and standard deviation of the log-probability under the model's *own* next-token
distribution), and the score is the mean of the lowest k% of the z_t (k = 20%). Texts seen in
training tend to score higher (their tokens sit at local maxima of the likelihood).

The contamination probe reports :func:`membership` (AUC of dirty vs clean prompts under the
student) as supporting evidence only: no verdict rests on it, so it has no rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill_doctor.causal_lm import load_causal_lm
from distill_doctor.stats import bootstrap_ci, json_float, json_interval

K = 0.2  # the share of lowest z-scores averaged


def load_model(path: str | Path):
    """``(model, tokenizer)`` from a ``from_pretrained`` directory, in eval mode on the CPU/GPU at hand."""
    return load_causal_lm(path)


def token_z_scores(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Min-K%++ z_t per position.

    logits: (T, V) next-token logits at positions 0..T-1; targets: (T,) the tokens that followed.
    Returns (T,) float64 z-scores (0 where the distribution is degenerate, sigma <= 1e-6).
    """
    logp = torch.log_softmax(logits.double(), dim=-1)  # (T, V)
    probs = logp.exp()
    mu = (probs * logp).sum(-1)  # (T,)
    var = (probs * logp.square()).sum(-1) - mu.square()
    sigma = var.clamp_min(0).sqrt()
    tok_lp = logp.gather(-1, targets[:, None]).squeeze(-1)
    degenerate = sigma <= 1e-6  # (near-)uniform or one-hot: rounding noise, not signal
    return torch.where(degenerate, torch.zeros_like(mu), (tok_lp - mu) / sigma.clamp_min(1e-6))


def min_k_plus_from_z(z: torch.Tensor | np.ndarray, k: float = K) -> float:
    """Mean of the lowest ceil(k * T) z-scores; nan for an empty sequence."""
    z = np.sort(np.asarray(z, dtype=float))
    if z.size == 0:
        return float("nan")
    m = max(1, math.ceil(k * z.size))
    return float(z[:m].mean())


@torch.no_grad()
def min_k_plus_scores(
    model, tokenizer, texts: Sequence[str], *, k: float = K, max_tokens: int = 256
) -> list[float]:
    """Min-K%++ score of each text (nan for texts with fewer than 2 tokens). One forward pass per text."""
    device = next(model.parameters()).device
    out = []
    for text in texts:
        ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_tokens)["input_ids"]
        if ids.shape[1] < 2:
            out.append(float("nan"))
            continue
        ids = ids.to(device)
        logits = model(input_ids=ids).logits[0, :-1]  # (T-1, V)
        out.append(min_k_plus_from_z(token_z_scores(logits, ids[0, 1:]).cpu().numpy(), k))
    return out


def _auc_rows(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUC per replicate: pos (B, n1), neg (B, n2) -> (B,); ties count one half."""
    gt = (pos[:, :, None] > neg[:, None, :]).mean(axis=(1, 2))
    eq = (pos[:, :, None] == neg[:, None, :]).mean(axis=(1, 2))
    return gt + 0.5 * eq


def auc(
    pos: Sequence[float], neg: Sequence[float], *, n_boot: int = 1000, seed: int = 0
) -> tuple[float, tuple[float, float]]:
    """P(score_pos > score_neg) (Mann-Whitney AUC) with an unpaired percentile bootstrap 95% CI.

    nan scores are dropped; an empty group gives ``(nan, (nan, nan))``.
    """
    p = np.asarray([x for x in pos if np.isfinite(x)], dtype=float)
    q = np.asarray([x for x in neg if np.isfinite(x)], dtype=float)
    if p.size == 0 or q.size == 0:
        return float("nan"), (float("nan"), float("nan"))
    value = float(_auc_rows(p[None], q[None])[0])
    ci = bootstrap_ci(_auc_rows, p, q, n_boot=n_boot, seed=seed, paired=False)
    return value, ci


@dataclass(frozen=True)
class Membership:
    """Min-K%++ scores of two groups of texts under one model and the AUC that compares them."""

    k: float
    dirty_scores: tuple[float, ...]
    clean_scores: tuple[float, ...]
    auc: float
    auc_ci: tuple[float, float]

    def as_metrics(self) -> dict[str, Any]:
        """The contamination finding's ``metrics["min_k_plus"]`` block."""
        return {
            "k": self.k,
            "n_dirty": len(self.dirty_scores),
            "n_clean": len(self.clean_scores),
            "auc_dirty_vs_clean": json_float(self.auc),
            "auc_ci": json_interval(self.auc_ci),
            "note": "AUC > 0.5: dirty prompts look more like training members to the student (supporting only)",
        }


def membership(
    model_path: str | Path, dirty: Sequence[str], clean: Sequence[str], *, seed: int = 0
) -> Membership:
    """Score ``dirty`` and ``clean`` texts under the model at ``model_path``; AUC of dirty over clean."""
    model, tok = load_model(model_path)
    scores = min_k_plus_scores(model, tok, [*dirty, *clean])
    s_dirty, s_clean = scores[: len(dirty)], scores[len(dirty) :]
    value, ci = auc(s_dirty, s_clean, seed=seed)
    return Membership(K, tuple(s_dirty), tuple(s_clean), value, ci)
