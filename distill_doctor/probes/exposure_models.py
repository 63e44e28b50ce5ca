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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill_doctor.causal_lm import encode_left_padded, generate_new_tokens, load_causal_lm, same_tokenizer
from distill_doctor.data.records import Item
from distill_doctor.stats import bootstrap_ci, json_float, json_interval

LENGTHS = (16, 32, 64)
MAX_PROMPTS = 64
MAX_PROMPT_TOKENS = 192


@dataclass(frozen=True)
class RatioBlock:
    """Mean divergence on reference prefixes (``base``) and test prefixes (``test``), their ratio
    and its bootstrap CI over prompts, as reported (6 digits; None where undefined)."""

    base: float | None
    test: float | None
    ratio: float | None
    ci: list[float | None] | None
    pct: float | None  # (ratio - 1) * 100
    pct_ci: list[float | None] | None


@dataclass(frozen=True)
class RatioAt:
    """R_l = L_FR(l) / L_TF(l) at continuation length ``length``."""

    length: int
    block: RatioBlock

    def as_metrics(self) -> dict[str, Any]:
        b = self.block
        return {
            "length": self.length,
            "L_TF": b.base,
            "L_FR": b.test,
            "ratio": b.ratio,
            "ci": b.ci,
            "exacc_err_pct": b.pct,
            "exacc_err_ci": b.pct_ci,
        }


@dataclass(frozen=True)
class Injection:
    """Recovery after one random token at ``inject_at``: mean per-step KL after it, corrupted vs
    clean prefix; with a verifier, the shares of continuations still verified correct."""

    block: RatioBlock  # base: after the clean prefix, test: after the corrupted one
    steps_after: int
    correct_clean: float | None = None
    correct_corrupt: float | None = None
    n_verified: int = 0

    def as_metrics(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kl_after_clean": self.block.base,
            "kl_after_corrupt": self.block.test,
            "ratio": self.block.ratio,
            "ci": self.block.ci,
            "steps_after": self.steps_after,
        }
        if self.n_verified:
            d.update(
                correct_clean=self.correct_clean,
                correct_corrupt=self.correct_corrupt,
                n_verified=self.n_verified,
            )
        return d


@dataclass(frozen=True)
class ModelExposure:
    """The model-based measurement: R_l at each length and the injected-error recovery."""

    n_prompts: int
    decoding: str
    lengths: tuple[int, ...]
    inject_at: int
    ratios: tuple[RatioAt, ...] = ()
    injection: Injection | None = None

    @property
    def longest(self) -> RatioAt | None:
        return self.ratios[-1] if self.ratios else None

    def as_metrics(self) -> dict[str, Any]:
        """``metrics["model_based"]`` of the exposure_bias finding."""
        d: dict[str, Any] = {
            "n_prompts": self.n_prompts,
            "decoding": self.decoding,
            "lengths": list(self.lengths),
            "ratios": [r.as_metrics() for r in self.ratios],
            "inject_at": self.inject_at,
        }
        if self.injection is not None:
            d["injection"] = self.injection.as_metrics()
        return d


@dataclass(frozen=True)
class Decoding:
    """How continuations are produced and scored (shared by every batch of a measurement)."""

    lengths: tuple[int, ...]
    inject_at: int = 2
    verify_answers: bool = True
    do_sample: bool = False

    @property
    def total(self) -> int:
        return max(self.lengths)

    @property
    def injects(self) -> bool:
        return 0 <= self.inject_at < self.total - 1


@dataclass
class _Rows:
    """Per-batch (B, steps) KL rows and verification results, concatenated at the end."""

    tf: list[np.ndarray] = field(default_factory=list)
    fr: list[np.ndarray] = field(default_factory=list)
    clean: list[np.ndarray] = field(default_factory=list)
    corrupt: list[np.ndarray] = field(default_factory=list)
    verified: dict[str, list[bool | None]] = field(default_factory=lambda: {"clean": [], "corrupt": []})


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


def _ratio_block(fr: np.ndarray, tf: np.ndarray, seed: int) -> RatioBlock:
    tf_mean, fr_mean = float(tf.mean()), float(fr.mean())
    ratio = fr_mean / tf_mean if tf_mean > 0 else None
    ci = bootstrap_ci(_ratio_of_means, fr, tf, n_boot=2000, seed=seed) if ratio is not None else None
    return RatioBlock(
        base=json_float(tf_mean),
        test=json_float(fr_mean),
        ratio=json_float(ratio),
        ci=json_interval(ci),
        pct=json_float((ratio - 1) * 100) if ratio is not None else None,
        pct_ci=[json_float((ci[0] - 1) * 100), json_float((ci[1] - 1) * 100)] if ci else None,
    )


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
) -> ModelExposure:
    """R_l at each length and the injected-error recovery, on up to ``max_prompts`` item prompts."""
    teacher, t_tok = load_causal_lm(teacher_dir)
    student, s_tok = load_causal_lm(student_dir)
    same_tokenizer(t_tok, s_tok, teacher_dir, student_dir)
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
) -> ModelExposure:
    """:func:`measure_exposure_bias` on models already in memory (sharing tokenizer ``tok``)."""
    rng = np.random.default_rng(seed)
    chosen = (
        list(items)
        if len(items) <= max_prompts
        else [items[k] for k in sorted(rng.choice(len(items), max_prompts, replace=False))]
    )
    kept = tuple(sorted({int(x) for x in lengths if int(x) > 0}))
    torch.manual_seed(seed)
    decoding = "sampled at temperature 1" if do_sample else "greedy"
    base = ModelExposure(
        n_prompts=len(chosen),
        decoding=f"{decoding}, EOS suppressed to full length",
        lengths=kept,
        inject_at=inject_at,
    )
    if not chosen or not kept:
        return base
    how = Decoding(lengths=kept, inject_at=inject_at, verify_answers=verify_answers, do_sample=do_sample)
    rows = _Rows()
    for start in range(0, len(chosen), batch_size):
        _measure_batch(teacher, student, tok, chosen[start : start + batch_size], how, rng, rows)
    tf, fr = np.concatenate(rows.tf), np.concatenate(rows.fr)  # (N, total)
    ratios = tuple(RatioAt(ln, _ratio_block(fr[:, :ln].sum(1), tf[:, :ln].sum(1), seed)) for ln in kept)
    injection = _injection(rows, how, seed) if rows.clean else None
    return replace(base, ratios=ratios, injection=injection)


def _measure_batch(teacher, student, tok, chunk: list[Item], how: Decoding, rng, rows: _Rows) -> None:
    """Teacher-forced and free-running KL rows of one batch of prompts; then the injection branches."""
    vocab = len(tok)
    pad_id = _pad_id(tok)
    device = next(student.parameters()).device
    ids, mask = encode_left_padded(
        tok, [it.prompt for it in chunk], device, max_length=MAX_PROMPT_TOKENS
    )  # (B, P) each
    t_cont = _generate(teacher, ids, mask, how.total, pad_id, how.do_sample)
    s_cont = _generate(student, ids, mask, how.total, pad_id, how.do_sample)
    rows.tf.append(step_kl(teacher, student, ids, mask, t_cont, vocab).cpu().numpy())
    rows.fr.append(step_kl(teacher, student, ids, mask, s_cont, vocab).cpu().numpy())
    if not how.injects:
        return
    at = how.inject_at
    clean_pre = t_cont[:, : at + 1]
    bad_tok = t_cont[:, at].clone()
    normal = _normal_ids(tok)
    for r in range(len(chunk)):
        choices = normal[normal != int(bad_tok[r])]
        bad_tok[r] = int(rng.choice(choices))
    bad_pre = torch.cat([t_cont[:, :at], bad_tok[:, None]], dim=1)
    for pre, out, key in ((clean_pre, rows.clean, "clean"), (bad_pre, rows.corrupt, "corrupt")):
        p_ids = torch.cat([ids, pre], 1)
        p_mask = torch.cat([mask, torch.ones_like(pre)], 1)
        cont = _generate(student, p_ids, p_mask, how.total - at - 1, pad_id, how.do_sample)
        out.append(step_kl(teacher, student, p_ids, p_mask, cont, vocab).cpu().numpy())
        if how.verify_answers:
            texts = tok.batch_decode(torch.cat([pre, cont], 1), skip_special_tokens=True)
            rows.verified[key].extend(_verified(chunk, texts))


def _pad_id(tok) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)


def _normal_ids(tok) -> np.ndarray:
    """Token ids an injected error may use: every id of the vocabulary but the special ones."""
    special = set(tok.all_special_ids)
    return np.array([i for i in range(len(tok)) if i not in special])


def _injection(rows: _Rows, how: Decoding, seed: int) -> Injection:
    clean, bad = np.concatenate(rows.clean).mean(1), np.concatenate(rows.corrupt).mean(1)
    out = Injection(block=_ratio_block(bad, clean, seed), steps_after=how.total - how.inject_at - 1)
    ok_clean = [a for a in rows.verified["clean"] if a is not None]
    ok_bad = [a for a in rows.verified["corrupt"] if a is not None]
    if not ok_clean:
        return out
    return replace(
        out,
        correct_clean=json_float(float(np.mean(ok_clean))),
        correct_corrupt=json_float(float(np.mean(ok_bad))) if ok_bad else None,
        n_verified=len(ok_clean),
    )


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
