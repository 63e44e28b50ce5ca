"""Model-based exposure bias (Arora et al. 2022) with the teacher as the oracle.

For a prompt x and a continuation y_1..y_l, the per-step divergence is
KL(p_T(. | x, y_<t) || p_S(. | x, y_<t)). Then

- L_TF(l): its sum over the first l steps of the TEACHER's own continuation (teacher forcing:
  the prefixes the student was trained on);
- L_FR(l): the same sum over the STUDENT's free-running continuation (its own prefixes);
- R_l = mean_prompts L_FR(l) / mean_prompts L_TF(l), %ExAccErr = (R_l - 1) * 100.

R_l well above 1 means the student is much worse at continuing its own text than text like
its training data: the mismatch that compounds with length. Continuations are greedy and
forced to the full length (EOS suppressed with ``min_new_tokens``) so every prompt contributes
every step; CIs are percentile bootstraps over prompts.

Recovery: one token of the teacher's continuation at ``inject_at`` is replaced by a random
token; the student continues from that corrupted prefix and from the clean one. The ratio of
the mean per-step KL after the injection (corrupted / clean) says whether the error propagates
(>> 1) or the student recovers (about 1). When the item's verifier is available, the share of
continuations that still reach a verified-correct final answer is reported for both branches.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill_doctor.causal_lm import encode_left_padded, generate_new_tokens, load_causal_lm
from distill_doctor.data.records import Item
from distill_doctor.errors import InputError
from distill_doctor.stats import bootstrap_ci, json_float, json_interval

LENGTHS = (16, 32, 64)
MAX_PROMPTS = 64
MAX_PROMPT_TOKENS = 192


def _same_tokenizer(t_tok, s_tok, teacher_dir, student_dir) -> None:
    if t_tok.get_vocab() != s_tok.get_vocab():
        raise InputError(
            f"--teacher-model and --student-model must share a tokenizer (vocabularies differ; student: {student_dir})",
            path=teacher_dir,
        )


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.long().cumsum(-1) - 1).clamp_min(0)


def _generate(
    model, ids: torch.Tensor, mask: torch.Tensor, steps: int, pad_id: int, do_sample: bool = False
) -> torch.Tensor:
    """Continuation of exactly ``steps`` tokens per row (greedy, or sampled at temperature 1): (B, P) -> (B, steps)."""
    if steps <= 0:
        return ids[:, :0]
    return generate_new_tokens(
        model,
        ids,
        mask,
        max_new_tokens=steps,
        min_new_tokens=steps,
        pad_id=pad_id,
        temperature=1.0 if do_sample else 0.0,
    )


@torch.no_grad()
def step_kl(
    teacher, student, ids: torch.Tensor, mask: torch.Tensor, cont: torch.Tensor, vocab: int
) -> torch.Tensor:
    """Per-step KL(teacher || student) while the continuation ``cont`` is produced.

    ids, mask: (B, P) left-padded prompts; cont: (B, L). Returns (B, L): the divergence of the
    next-token distributions at each of the L steps, over the first ``vocab`` logits (a shared
    tokenizer; padded extra rows of a larger head are dropped).
    """
    seq = torch.cat([ids, cont], dim=1)  # (B, P + L)
    m = torch.cat([mask, torch.ones_like(cont)], dim=1)
    pos = _positions(m)
    p, steps = ids.shape[1], cont.shape[1]
    sl = slice(p - 1, p - 1 + steps)  # logits at position i predict token i + 1
    lt = teacher(input_ids=seq, attention_mask=m, position_ids=pos).logits[:, sl, :vocab].float()
    ls = student(input_ids=seq, attention_mask=m, position_ids=pos).logits[:, sl, :vocab].float()
    log_t, log_s = torch.log_softmax(lt, -1), torch.log_softmax(ls, -1)  # (B, L, V)
    return (log_t.exp() * (log_t - log_s)).sum(-1).clamp_min(0.0)


def _ratio_of_means(fr: np.ndarray, tf: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return fr.mean(-1) / tf.mean(-1)


def _ratio_block(fr: np.ndarray, tf: np.ndarray, seed: int) -> dict[str, Any]:
    tf_mean, fr_mean = float(tf.mean()), float(fr.mean())
    ratio = fr_mean / tf_mean if tf_mean > 0 else None
    ci = bootstrap_ci(_ratio_of_means, fr, tf, n_boot=2000, seed=seed) if ratio is not None else None
    return {
        "L_TF": json_float(tf_mean),
        "L_FR": json_float(fr_mean),
        "ratio": json_float(ratio),
        "ci": json_interval(ci),
        "exacc_err_pct": json_float((ratio - 1) * 100) if ratio is not None else None,
        "exacc_err_ci": [json_float((ci[0] - 1) * 100), json_float((ci[1] - 1) * 100)] if ci else None,
    }


def measure_exposure_bias(
    teacher_dir: str | Path,
    student_dir: str | Path,
    items: Sequence[Item],
    *,
    lengths: Sequence[int] = LENGTHS,
    max_prompts: int = MAX_PROMPTS,
    inject_at: int = 2,
    verify_answers: bool = True,
    do_sample: bool = False,
    seed: int = 0,
    batch_size: int = 16,
) -> dict[str, Any]:
    """R_l at each length and the injected-error recovery, on up to ``max_prompts`` item prompts."""
    teacher, t_tok = load_causal_lm(teacher_dir)
    student, s_tok = load_causal_lm(student_dir)
    _same_tokenizer(t_tok, s_tok, teacher_dir, student_dir)
    return measure_with_models(
        teacher,
        student,
        t_tok,
        items,
        lengths=lengths,
        max_prompts=max_prompts,
        inject_at=inject_at,
        verify_answers=verify_answers,
        do_sample=do_sample,
        seed=seed,
        batch_size=batch_size,
    )


@torch.no_grad()
def measure_with_models(
    teacher,
    student,
    tok,
    items: Sequence[Item],
    *,
    lengths: Sequence[int] = LENGTHS,
    max_prompts: int = MAX_PROMPTS,
    inject_at: int = 2,
    verify_answers: bool = True,
    do_sample: bool = False,
    seed: int = 0,
    batch_size: int = 16,
) -> dict[str, Any]:
    """:func:`measure_exposure_bias` on models already in memory (sharing tokenizer ``tok``)."""
    rng = np.random.default_rng(seed)
    chosen = (
        list(items)
        if len(items) <= max_prompts
        else [items[k] for k in sorted(rng.choice(len(items), max_prompts, replace=False))]
    )
    lengths = sorted({int(x) for x in lengths if int(x) > 0})
    torch.manual_seed(seed)
    decoding = "sampled at temperature 1" if do_sample else "greedy"
    base: dict[str, Any] = {
        "n_prompts": len(chosen),
        "decoding": f"{decoding}, EOS suppressed to full length",
        "lengths": lengths,
        "ratios": [],
        "inject_at": inject_at,
    }
    if not chosen or not lengths:
        return base
    total = max(lengths)
    vocab = len(tok)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    special = set(tok.all_special_ids)
    normal = np.array([i for i in range(vocab) if i not in special])
    device = next(student.parameters()).device
    tf_rows, fr_rows, clean_rows, bad_rows, answers = [], [], [], [], {"clean": [], "corrupt": []}
    for start in range(0, len(chosen), batch_size):
        chunk = chosen[start : start + batch_size]
        ids, mask = encode_left_padded(
            tok, [it.prompt for it in chunk], device, max_length=MAX_PROMPT_TOKENS
        )  # (B, P) each
        t_cont = _generate(teacher, ids, mask, total, pad_id, do_sample)
        s_cont = _generate(student, ids, mask, total, pad_id, do_sample)
        tf_rows.append(step_kl(teacher, student, ids, mask, t_cont, vocab).cpu().numpy())
        fr_rows.append(step_kl(teacher, student, ids, mask, s_cont, vocab).cpu().numpy())
        if 0 <= inject_at < total - 1:
            clean_pre = t_cont[:, : inject_at + 1]
            bad_tok = t_cont[:, inject_at].clone()
            for r in range(len(chunk)):
                choices = normal[normal != int(bad_tok[r])]
                bad_tok[r] = int(rng.choice(choices))
            bad_pre = torch.cat([t_cont[:, :inject_at], bad_tok[:, None]], dim=1)
            rest = total - inject_at - 1
            for pre, rows, key in ((clean_pre, clean_rows, "clean"), (bad_pre, bad_rows, "corrupt")):
                p_ids = torch.cat([ids, pre], 1)
                p_mask = torch.cat([mask, torch.ones_like(pre)], 1)
                cont = _generate(student, p_ids, p_mask, rest, pad_id, do_sample)
                rows.append(step_kl(teacher, student, p_ids, p_mask, cont, vocab).cpu().numpy())
                if verify_answers:
                    texts = tok.batch_decode(torch.cat([pre, cont], 1), skip_special_tokens=True)
                    answers[key].extend(_verified(chunk, texts))
    tf, fr = np.concatenate(tf_rows), np.concatenate(fr_rows)  # (N, total)
    for ln in lengths:
        block = _ratio_block(fr[:, :ln].sum(1), tf[:, :ln].sum(1), seed)
        base["ratios"].append({"length": ln, **block})
    if clean_rows:
        clean, bad = np.concatenate(clean_rows).mean(1), np.concatenate(bad_rows).mean(1)
        inj = _ratio_block(bad, clean, seed)
        base["injection"] = {
            "kl_after_clean": inj["L_TF"],
            "kl_after_corrupt": inj["L_FR"],
            "ratio": inj["ratio"],
            "ci": inj["ci"],
            "steps_after": total - inject_at - 1,
        }
        ok_clean = [a for a in answers["clean"] if a is not None]
        ok_bad = [a for a in answers["corrupt"] if a is not None]
        if ok_clean:
            base["injection"]["correct_clean"] = json_float(float(np.mean(ok_clean)))
            base["injection"]["correct_corrupt"] = json_float(float(np.mean(ok_bad))) if ok_bad else None
            base["injection"]["n_verified"] = len(ok_clean)
    return base


def _verified(items: Sequence[Item], texts: Sequence[str]) -> list[bool | None]:
    """Whether each continuation passes its item's verifier; None when no reference or no verifier."""
    try:
        from distill_doctor.verify import verify
    except ImportError:
        return [None] * len(items)
    out: list[bool | None] = []
    for it, text in zip(items, texts):
        if it.reference is None or it.verifier_kind == "code":  # never execute model code here
            out.append(None)
            continue
        try:
            out.append(bool(verify(it, text).passed))
        except Exception:  # untrusted text: a verifier failure is "not verified", not a crash
            out.append(None)
    return out
