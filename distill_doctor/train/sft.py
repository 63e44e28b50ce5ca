"""Sequence-level KD (Kim & Rush 2016): supervised fine-tuning on the teacher's responses.

The loss is cross-entropy on response tokens only (the prompt is masked with -100), summed over
the step's micro-batches and divided by the step's global number of response tokens. With
``packing: true`` several examples share a row; the block-diagonal attention mask, restarted
position ids and reset labels keep them apart (see ``data.py``). ``loss.chunked: true`` computes
the cross-entropy from the final hidden states chunk by chunk, so full logits never exist.
"""

from __future__ import annotations

from pathlib import Path

from distill_doctor.losses.batch import LossParts, final_hidden, model_inputs, shifted
from distill_doctor.losses.chunked import chunked_cross_entropy
from distill_doctor.losses.cross_entropy import cross_entropy
from distill_doctor.train.build import check_chunked_supported
from distill_doctor.train.config import TrainConfig
from distill_doctor.train.engine import Run


def sft_loss(student, batch: dict, *, num_tokens: int) -> LossParts:
    """Response-token cross-entropy of one micro-batch, divided by the step's ``num_tokens``."""
    logits = student(**model_inputs(batch)).logits.float()  # (B, T, V), float32 under autocast too
    logits, labels, mask = shifted(logits, batch["labels"])  # (B, T-1, V), (B, T-1), (B, T-1)
    hard = cross_entropy(logits, labels, mask=mask, num_tokens=num_tokens)
    return LossParts(loss=hard, hard=hard.detach())


def chunked_sft_loss(student, head, batch: dict, *, num_tokens: int, chunk_size: int) -> LossParts:
    """The same loss from final hidden states, ``chunk_size`` tokens at a time (no full logits)."""
    hidden = final_hidden(student, batch)[:, :-1]  # (B, T-1, H)
    hard = chunked_cross_entropy(
        hidden, head, batch["labels"][:, 1:], num_tokens=num_tokens, chunk_size=chunk_size
    )
    return LossParts(loss=hard, hard=hard.detach())


def train_sft(cfg: TrainConfig) -> Path:
    run = Run.start(cfg, needs_teacher=False)
    if cfg.loss.chunked:
        check_chunked_supported(run.unwrapped_student)
    for micro_batches in run:
        num_tokens = run.count_loss_tokens(micro_batches)
        for batch in run.accumulate(micro_batches):
            if cfg.loss.chunked:
                head = run.unwrapped_student.get_output_embeddings()
                parts = chunked_sft_loss(
                    run.student, head, batch, num_tokens=num_tokens, chunk_size=cfg.loss.chunk_size
                )
            else:
                parts = sft_loss(run.student, batch, num_tokens=num_tokens)
            run.backward(parts, batch)
        run.optimizer_step()
    return run.finish()
