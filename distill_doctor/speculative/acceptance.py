"""Per-token draft acceptance of a student under its teacher, along given output texts.

In speculative sampling (Leviathan et al. 2023) the teacher accepts a token the student drafted
at a position with probability ``sum_x min(p_T(x), p_S(x)) = 1 - TV(p_T, p_S)``, where the two
are the next-token distributions at that prefix at the decoding temperature. At temperature 0
(greedy drafting and verification) a draft is accepted exactly when the two argmaxes agree.

:func:`token_acceptance` computes both quantities for every token of ``prompt + output`` texts
(teacher forcing: one forward pass of each model per batch, no generation), so a run's
teacher and student output files are enough to say how good a draft the student is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from distill_doctor.causal_lm import load_causal_lm
from distill_doctor.causal_lm import same_tokenizer as _same_tokenizer

MAX_TOKENS = 256  # output tokens scored per text
BATCH = 32


@dataclass(frozen=True)
class TokenAcceptance:
    """One text's per-token acceptance: ``accept[t] = 1 - TV`` and ``agree[t]`` (argmax match)."""

    item_id: str
    accept: np.ndarray  # (L,) float in [0, 1]
    agree: np.ndarray  # (L,) bool


def next_token_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Next-token distribution at ``temperature`` over the last axis; 0 = one-hot argmax (greedy)."""
    if temperature <= 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
    return torch.softmax(logits.float() / temperature, dim=-1)


def acceptance_from_logits(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1 - TV(p_T, p_S), argmax agreement)`` per position: (..., V) logits -> (...) each."""
    p_t = next_token_probs(teacher_logits, temperature)
    p_s = next_token_probs(student_logits, temperature)
    accept = torch.minimum(p_t, p_s).sum(-1).clamp(0.0, 1.0)  # = 1 - 0.5 * |p_T - p_S|_1
    agree = teacher_logits.argmax(-1) == student_logits.argmax(-1)
    return accept, agree


def _encode(tok, prompt: str, output: str, max_tokens: int) -> tuple[list[int], int]:
    """Prompt ids (with the tokenizer's specials, as generation sees them) + output ids (none)."""
    p_ids = tok(prompt, add_special_tokens=True)["input_ids"]
    o_ids = tok(output, add_special_tokens=False)["input_ids"][:max_tokens]
    return list(p_ids) + list(o_ids), len(p_ids)


@torch.no_grad()
def token_acceptance(
    teacher,
    student,
    tok,
    rows: Sequence[tuple[str, str, str]],
    *,
    temperature: float = 1.0,
    max_tokens: int = MAX_TOKENS,
    batch_size: int = BATCH,
) -> list[TokenAcceptance]:
    """Acceptance at every output token of ``rows`` = ``(item_id, prompt, output)``.

    Sequences are right-padded (causal attention: padding after a position never changes its
    logits); logits are cut to the tokenizer's vocabulary (extra rows of a padded head dropped).
    Texts longer than the model's context keep their last tokens that fit.
    """
    vocab = len(tok)
    device = next(teacher.parameters()).device
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    limit = int(getattr(teacher.config, "max_position_embeddings", 0) or 10**9)
    encoded = [(rid, *_encode(tok, p, o, max_tokens)) for rid, p, o in rows]
    out: list[TokenAcceptance] = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        seqs = [ids[-limit:] for _, ids, _ in chunk]
        starts = [max(1, n_prompt - (len(ids) - len(s))) for (_, ids, n_prompt), s in zip(chunk, seqs)]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = 1
        ids, mask = ids.to(device), mask.to(device)
        lt = teacher(input_ids=ids, attention_mask=mask).logits[..., :vocab]  # (B, T, V)
        ls = student(input_ids=ids, attention_mask=mask).logits[..., :vocab]
        accept, agree = acceptance_from_logits(lt, ls, temperature)  # (B, T)
        for r, ((rid, _, _), s, first) in enumerate(zip(chunk, seqs, starts)):
            sl = slice(first - 1, len(s) - 1)  # logits at t predict token t + 1
            out.append(TokenAcceptance(rid, accept[r, sl].cpu().numpy(), agree[r, sl].cpu().numpy()))
    return out


def load_pair(teacher_dir, student_dir):
    """``(teacher, student, tokenizer)``: both models loaded; their tokenizers must be the same."""
    teacher, t_tok = load_causal_lm(teacher_dir, local_only=True)
    student, s_tok = load_causal_lm(student_dir, local_only=True)
    _same_tokenizer(t_tok, s_tok, teacher_dir, student_dir)
    return teacher, student, t_tok
