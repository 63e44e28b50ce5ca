"""Padded vocabularies: make a student's and a teacher's logits share one vocabulary."""

from __future__ import annotations

import torch


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
