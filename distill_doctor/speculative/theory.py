"""Leviathan et al. (2023)'s expected gains from a draft with acceptance rate alpha.

With draft length gamma and per-token acceptance alpha, i.i.d. across positions, one teacher
call yields on average ``(1 - alpha^(gamma+1)) / (1 - alpha)`` tokens (the block efficiency),
and with a draft/teacher cost ratio c the wall-time speedup over plain teacher decoding is
``(1 - alpha^(gamma+1)) / ((1 - alpha)(gamma c + 1))``.

The i.i.d. assumption is what the single alpha stands for. Real acceptance varies along an
output (easy spans, hard spans); :func:`sequential_block_efficiency` uses each position's own
acceptance probability instead, so the two can be compared on the same run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

GAMMAS = tuple(range(1, 9))


def block_efficiency(alpha: float, gamma: int) -> float:
    """Expected tokens per teacher call: ``(1 - alpha^(gamma+1)) / (1 - alpha)`` (gamma + 1 at alpha 1)."""
    if alpha >= 1.0:
        return float(gamma + 1)
    return float((1.0 - alpha ** (gamma + 1)) / (1.0 - alpha))


def speedup(alpha: float, gamma: int, cost: float) -> float:
    """Expected wall-time speedup: block efficiency / (gamma * cost + 1)."""
    return block_efficiency(alpha, gamma) / (gamma * cost + 1.0)


def sequential_block_efficiency(
    accept: Sequence[np.ndarray], gamma: int, *, n_sim: int = 200, seed: int = 0
) -> float | None:
    """Tokens per teacher call when position t is accepted with its own probability ``accept[t]``.

    Simulates the speculative loop along each output ``n_sim`` times: a block starting at t
    drafts t..t+gamma-1, stops at the first rejection, and the teacher adds one token; the last
    block is cut at the end of the output, as real decoding stops there (so short outputs cap
    the tokens per call, which the i.i.d. formula ignores). Returns total tokens / total teacher
    calls over all outputs, or None without tokens.
    """
    rng = np.random.default_rng(seed)
    tokens = calls = 0
    offsets = np.arange(gamma)
    for a in accept:
        length = len(a)
        if length == 0:
            continue
        draws = rng.random((n_sim, length)) < np.asarray(a)[None, :]  # (n_sim, L) accepted?
        padded = np.concatenate([draws, np.ones((n_sim, gamma), bool)], axis=1)  # past the end: cut
        t = np.zeros(n_sim, dtype=int)
        rows = np.arange(n_sim)
        while True:
            active = t < length
            if not active.any():
                break
            block = padded[rows[:, None], np.minimum(t, length)[:, None] + offsets[None, :]]  # (n_sim, gamma)
            k = np.where(block.all(1), gamma, np.argmin(block, axis=1))
            t = np.where(active, t + k + 1, t)
            calls += int(active.sum())
        tokens += length * n_sim
    return tokens / calls if calls else None
