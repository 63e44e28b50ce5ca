"""Speculative sampling (Leviathan et al. 2023; Chen et al. 2023), batched, for any two causal LMs
that share a tokenizer.

Each round, per row: the draft samples gamma tokens x_1..x_gamma from q; the target scores the
prefix plus all of them in one forward pass, giving p at each of the gamma + 1 positions; draft
token j is accepted with probability min(1, p(x_j) / q(x_j)), in order, until the first
rejection; at a rejection the next token is drawn from norm(max(0, p - q)) at that position, and
when all gamma are accepted a bonus token is drawn from p at the last position. The emitted
text is distributed exactly as the target's own samples (``tests/test_speculative_sampler.py``
checks that with a chi-square test). Temperature 0 is the greedy variant: one-hot p and q, so a
draft is accepted iff the argmaxes agree and the target's argmax replaces it otherwise.

This is a reference implementation: rows advance independently inside right-padded tensors and
every forward pass recomputes the whole sequence (no KV cache), which is simple and exact, and
fast enough for small models and tests; it is not a serving engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from distill_doctor.speculative.acceptance import next_token_probs


@dataclass(frozen=True)
class SpeculativeResult:
    """Generated tokens per row and what the loop did (totals per row)."""

    tokens: list[list[int]]  # new tokens only, cut at max_new_tokens (and after EOS)
    drafted: np.ndarray  # (B,) draft tokens the target verified
    accepted: np.ndarray  # (B,) of which accepted
    expected_accepted: np.ndarray  # (B,) sum of a = 1 - TV(p, q) over those verifications
    accepted_variance: np.ndarray  # (B,) sum of a (1 - a): the variance of ``accepted`` given the prefixes
    target_calls: np.ndarray  # (B,) target forward passes (one per round)
    emitted: np.ndarray  # (B,) tokens produced by the rounds (before the max_new_tokens cut)

    @property
    def acceptance_rate(self) -> float:
        return float(self.accepted.sum() / max(self.drafted.sum(), 1))

    @property
    def tokens_per_call(self) -> float:
        """Tokens the rounds produced per target call: the quantity of Leviathan et al.'s formula."""
        return float(self.emitted.sum() / max(self.target_calls.sum(), 1))

    @property
    def output_tokens_per_call(self) -> float:
        """Tokens kept (cut at EOS and max_new_tokens) per target call: what a server sees."""
        return float(sum(len(t) for t in self.tokens) / max(self.target_calls.sum(), 1))


def _last_logits(model, seq: torch.Tensor, lens: torch.Tensor, vocab: int, offsets: int = 1) -> torch.Tensor:
    """Logits predicting positions lens .. lens + offsets - 1: (B, T) -> (B, offsets, V)."""
    width = int((lens + offsets - 1).max())
    mask = (torch.arange(width, device=seq.device)[None, :] < (lens + offsets - 1)[:, None]).long()
    logits = model(input_ids=seq[:, :width], attention_mask=mask).logits[..., :vocab]
    idx = (lens - 1)[:, None] + torch.arange(offsets, device=seq.device)[None, :]  # (B, offsets)
    return logits.gather(1, idx[..., None].expand(-1, -1, logits.shape[-1]))


def _sample(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def _round(target, draft, seq, lens, gamma: int, vocab: int, temperature: float, gen):
    """One draft-verify round for every row. Returns (tokens (B, gamma+1), n_new (B,), n_acc (B,),
    n_verified (B,), expected (B,), variance (B,))."""
    b = seq.shape[0]
    rows = torch.arange(b, device=seq.device)
    cur = seq.clone()
    qs: list[torch.Tensor] = []
    xs: list[torch.Tensor] = []
    for j in range(gamma):
        q = next_token_probs(_last_logits(draft, cur, lens + j, vocab)[:, 0], temperature)  # (B, V)
        x = _sample(q, gen)
        cur[rows, lens + j] = x
        qs.append(q)
        xs.append(x)
    q_all, x_all = torch.stack(qs, 1), torch.stack(xs, 1)  # (B, g, V), (B, g)
    p_all = next_token_probs(_last_logits(target, cur, lens, vocab, gamma + 1), temperature)  # (B, g+1, V)
    p_x = p_all[:, :gamma].gather(-1, x_all[..., None]).squeeze(-1)
    q_x = q_all.gather(-1, x_all[..., None]).squeeze(-1)
    u = torch.rand(p_x.shape, generator=gen, device=seq.device)
    ok = u < torch.clamp(p_x / q_x, max=1.0)  # q_x > 0: x was drawn from q
    n_acc = ok.long().cumprod(1).sum(1)  # leading accepts, (B,)
    verified = torch.clamp(n_acc + 1, max=gamma)
    overlap = torch.minimum(p_all[:, :gamma], q_all).sum(-1)  # (B, g): 1 - TV at each draft
    seen = torch.arange(gamma, device=seq.device)[None, :] < verified[:, None]
    expected = (overlap * seen).sum(1)
    variance = (overlap * (1 - overlap) * seen).sum(1)
    at = torch.clamp(n_acc, max=gamma)
    p_at = p_all[rows, at]  # (B, V): target at the first rejected position, or the bonus position
    q_at = torch.cat([q_all, torch.zeros_like(q_all[:, :1])], 1)[rows, at]  # zero q for the bonus
    residual = torch.clamp(p_at - q_at, min=0.0)
    norm = residual.sum(-1, keepdim=True)
    residual = torch.where(norm > 0, residual / norm.clamp_min(1e-30), p_at)  # p == q: any p sample
    nxt = _sample(residual, gen)
    tokens = torch.cat([x_all, torch.zeros_like(x_all[:, :1])], 1)
    tokens[rows, at] = nxt
    return tokens, n_acc + 1, n_acc, verified, expected, variance


@torch.no_grad()
def speculative_sample(
    target,
    draft,
    prompts: Sequence[Sequence[int]],
    *,
    gamma: int = 4,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    vocab_size: int | None = None,
    pad_id: int = 0,
    eos_id: int | None = None,
    seed: int | None = 0,
) -> SpeculativeResult:
    """Sample up to ``max_new_tokens`` tokens per prompt (token-id lists) from ``target``, drafting
    ``gamma`` tokens per round with ``draft``. ``vocab_size``: logits beyond it are dropped (a padded
    head); default the target's output size. ``seed``: a private generator, None = torch's global RNG.
    """
    if gamma < 1 or max_new_tokens < 1:
        raise ValueError(f"gamma and max_new_tokens must be >= 1, got {gamma}, {max_new_tokens}")
    device = next(target.parameters()).device
    vocab = vocab_size or target.get_output_embeddings().weight.shape[0]
    gen = _generator(device, seed)
    b = len(prompts)
    seq, lens = _right_padded(prompts, max_new_tokens + gamma + 1, pad_id, device)
    start = lens.clone()
    stats = {k: np.zeros(b) for k in ("drafted", "accepted", "expected", "variance", "calls", "emitted")}
    done = torch.zeros(b, dtype=torch.bool, device=device)
    while not bool(done.all()):
        act = (~done).nonzero().squeeze(-1)
        tokens, n_new, n_acc, verified, expected, variance = _round(
            target, draft, seq[act], lens[act], gamma, vocab, temperature, gen
        )
        for k, (r, row) in enumerate(zip(act.tolist(), tokens.tolist())):
            new = row[: int(n_new[k])]
            pos = int(lens[r])
            seq[r, pos : pos + len(new)] = torch.tensor(new, dtype=torch.long)
            lens[r] += len(new)
            for name, value in (
                ("drafted", verified),
                ("accepted", n_acc),
                ("expected", expected),
                ("variance", variance),
                ("emitted", n_new),
            ):
                stats[name][r] += float(value[k])
            stats["calls"][r] += 1
            produced = int(lens[r] - start[r])
            if produced >= max_new_tokens or (eos_id is not None and eos_id in new):
                done[r] = True
    out = [_kept(seq[r, int(start[r]) : int(lens[r])].tolist(), max_new_tokens, eos_id) for r in range(b)]
    return SpeculativeResult(
        out,
        stats["drafted"],
        stats["accepted"],
        stats["expected"],
        stats["variance"],
        stats["calls"],
        stats["emitted"],
    )


def _generator(device: torch.device, seed: int | None) -> torch.Generator | None:
    """A private generator seeded with ``seed``, or None (torch's global RNG) without a seed."""
    if seed is None:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def _right_padded(
    prompts: Sequence[Sequence[int]], room: int, pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompts right-padded with ``pad_id`` into (B, max prompt length + room), and their lengths (B,)."""
    lens = torch.tensor([len(p) for p in prompts], device=device)
    seq = torch.full((len(prompts), int(lens.max()) + room), pad_id, dtype=torch.long, device=device)
    for r, p in enumerate(prompts):
        seq[r, : len(p)] = torch.tensor(list(p), dtype=torch.long)
    return seq, lens


def _kept(new: list[int], max_new_tokens: int, eos_id: int | None) -> list[int]:
    """One row's new tokens as returned: at most ``max_new_tokens``, ending at the first EOS."""
    new = new[:max_new_tokens]
    if eos_id is not None and eos_id in new:
        new = new[: new.index(eos_id) + 1]
    return new
