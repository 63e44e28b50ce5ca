"""Held-out evaluation during training: eval loss and teacher-student KL every ``eval_steps``, best kept.

Every ``eval_steps`` optimizer steps (and after the last) the student scores the held-out rows
(``eval_data``, or the ``eval_split`` of ``data``) in eval mode without gradient: ``eval_loss`` is
the cross-entropy per loss token, ``eval_kl`` KL(p_T || p_S) per loss token at temperature 1 when
a live teacher exists. One line per evaluation goes to ``eval_metrics.jsonl``; whenever
``eval_loss`` improves, the student is saved to ``output_dir/best/`` with ``best.json`` (step and
loss), which a resumed run reads back, so the best checkpoint survives interruptions. Each process
evaluates every row (no sharding): meant for a held-out set of hundreds of rows, not millions.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import torch

from distill_doctor.atomic import atomic_write_text
from distill_doctor.losses.batch import model_inputs, shifted
from distill_doctor.losses.cross_entropy import cross_entropy
from distill_doctor.losses.divergences import forward_kl
from distill_doctor.losses.vocab import align_vocab
from distill_doctor.train.data import collate

EVAL_FILE = "eval_metrics.jsonl"
BEST_DIR = "best"
BEST_FILE = "best.json"


@dataclass(frozen=True)
class EvalResult:
    step: int
    eval_loss: float
    eval_kl: float | None
    eval_tokens: int


@torch.no_grad()
def evaluate(run) -> EvalResult:
    """Cross-entropy (and KL to the teacher) per loss token over ``run.eval_rows``."""
    student = run.student
    was_training = student.training
    student.eval()
    ce = kl = 0.0
    tokens = 0
    try:
        for start in range(0, len(run.eval_rows), run.cfg.batch_size):
            rows = run.eval_rows[start : start + run.cfg.batch_size]
            batch = run.to_device(collate(rows, run.tokenizer.pad_token_id))
            with run.accelerator.autocast():
                s_logits = student(**model_inputs(batch)).logits.float()  # (B, T, V_s)
                t_logits = None if run.teacher is None else run.teacher(**model_inputs(batch)).logits.float()
            if t_logits is not None:
                s_logits, t_logits = align_vocab(s_logits, t_logits)
            s_shift, labels, mask = shifted(s_logits, batch["labels"])  # (B, T-1, V)
            n = int(mask.sum())
            if n == 0:
                continue
            ce += float(cross_entropy(s_shift, labels, mask=mask, num_tokens=1))
            if t_logits is not None:
                kl += float(forward_kl(s_shift, t_logits[:, :-1], mask=mask, num_tokens=1))
            tokens += n
    finally:
        student.train(was_training)
    denominator = max(tokens, 1)
    return EvalResult(run.step, ce / denominator, None if run.teacher is None else kl / denominator, tokens)


def read_best(output_dir) -> float:
    path = output_dir / BEST_DIR / BEST_FILE
    if not path.is_file():
        return math.inf
    return float(json.loads(path.read_text(encoding="utf-8"))["eval_loss"])


def evaluate_and_keep_best(run) -> EvalResult:
    """Evaluate, append to ``eval_metrics.jsonl``, log to the trackers, save ``best/`` on improvement."""
    result = evaluate(run)
    if run.accelerator.is_main_process:
        with open(run.output_dir / EVAL_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(asdict(result)) + "\n")
    if run.cfg.report_to != "none":
        values = {"eval/loss": result.eval_loss}
        if result.eval_kl is not None:
            values["eval/kl"] = result.eval_kl
        run.accelerator.log(values, step=run.step)
    if result.eval_loss < read_best(run.output_dir):
        best = run.output_dir / BEST_DIR
        run.save_model(best, final=False)
        if run.accelerator.is_main_process:
            atomic_write_text(best / BEST_FILE, json.dumps(asdict(result)) + "\n")
    return result


def truncate_eval_metrics(output_dir, step: int) -> None:
    """On resume: drop evaluations after the checkpoint's step (they are recomputed)."""
    path = output_dir / EVAL_FILE
    if not path.exists():
        return
    kept = [
        ln
        for ln in path.read_text(encoding="utf-8").splitlines()
        if ln.strip() and json.loads(ln)["step"] <= step
    ]
    atomic_write_text(path, "".join(ln + "\n" for ln in kept))
