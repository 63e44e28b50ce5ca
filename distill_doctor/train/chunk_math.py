"""Closed-form loss values and logit gradients for one chunk, computed in place to save memory.

The chunked loss (``chunked_loss.py``) needs, per chunk of c tokens, the loss and its gradient with
respect to the student's (c, V) logits. Autograd on the chunk gives that for any divergence but
keeps about eight (c, V) float32 tensors alive; for the common objectives the gradient has a short
closed form that can overwrite the logits buffer, keeping about four:

* forward KL(p_T || p_S), p_S = softmax(z / tau):  d/dz = (p_S - p_T) / tau
* reverse KL(p_S || p_T):  d/dz = p_S * (log p_S - log p_T - KL) / tau
* cross-entropy at temperature 1:  d/dz = softmax(z) - onehot(label)

Values agree with ``losses.py`` to float32 rounding (the tests compare with the dense path).
"""

from __future__ import annotations

import torch

from distill_doctor.train.losses import kl_from_log_probs


def log_softmax_(z: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(z / tau) over the last dimension, overwriting ``z`` (c, V); returns ``z``."""
    if temperature != 1.0:
        z.div_(temperature)
    return z.sub_(torch.logsumexp(z, dim=-1, keepdim=True))


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_v a[i, v] b[i, v] for (c, V) inputs -> (c,), without a (c, V) product tensor."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).reshape(-1)


def cross_entropy_value_and_grad(
    logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int, scale: float, need_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sum over labelled rows of -log softmax(z)[label] (0-d), and ``scale`` * its gradient (c, V) or None.

    ``logits`` (c, V) float32 is only read.
    """
    valid = labels != ignore_index  # (c,)
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    lse = torch.logsumexp(logits, dim=-1)  # (c,)
    picked = logits.gather(1, safe[:, None]).squeeze(1)  # (c,)
    value = torch.where(valid, lse - picked, torch.zeros_like(lse)).sum()
    if not need_grad:
        return value, None
    grad = logits.sub(lse[:, None]).exp_()  # softmax(z), (c, V)
    rows = valid.nonzero().squeeze(1)
    grad[rows, labels[rows]] -= 1.0
    grad[~valid] = 0.0
    return value, grad.mul_(scale)


def kl_value_and_grad_(
    student_logits: torch.Tensor,
    teacher_log_probs: torch.Tensor,
    *,
    reverse: bool,
    temperature: float,
    scale: float,
    need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sum over rows of forward KL(p_T || p_S) (or reverse KL(p_S || p_T) when ``reverse``) (0-d),
    and ``scale`` * its gradient with respect to the student logits (c, V), or None.

    Overwrites ``student_logits`` (the gradient is returned in its buffer) and ``teacher_log_probs``.
    """
    s = log_softmax_(student_logits, temperature)  # (c, V) log p_S
    t = teacher_log_probs  # (c, V) log p_T
    if not reverse:
        if torch.isneginf(t).any():  # teacher zeros: the safe (more memory) formula
            per_token = kl_from_log_probs(t, s)
            p_t = t.exp_()
        else:
            p_t = t.exp()
            per_token = _rowdot(p_t, t - s)  # (c,)
            t = None
        value = per_token.sum()
        if not need_grad:
            return value, None
        return value, s.exp_().sub_(p_t).mul_(scale / temperature)
    p_s = s.exp()  # (c, V)
    log_ratio = s.sub_(t)  # log p_S - log p_T, in the student buffer
    if torch.isneginf(t).any() or torch.isneginf(log_ratio).any():
        log_ratio.masked_fill_(p_s == 0, 0.0)  # p_S = 0 contributes 0 (avoids -inf - -inf)
    per_token = _rowdot(p_s, log_ratio)  # (c,)
    value = per_token.sum()
    if not need_grad:
        return value, None
    return value, log_ratio.sub_(per_token[:, None]).mul_(p_s).mul_(scale / temperature)
