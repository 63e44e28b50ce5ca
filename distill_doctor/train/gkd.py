"""On-policy generalized KD (Agarwal et al. 2024), with the semantics of TRL's GKDTrainer.

For each micro-batch, with probability ``gkd.lmbda`` the completions are sampled from the
current student (``gkd.temperature``, ``gkd.max_new_tokens``); otherwise they are the dataset's
responses, or the teacher's own samples with ``gkd.seq_kd: true``. The teacher then scores the
prompt + completion, and the loss is the generalized JSD(``gkd.beta``) between the two next-token
distributions on completion tokens only (``loss.temperature`` scales both; beta 0 = forward KL,
1 = reverse KL), or another divergence named by ``gkd.divergence`` (``tv`` for DistillSpec, whose
target is speculative-decoding acceptance 1 - TV). The coin flip uses python's ``random`` and sampling uses torch's global RNG: both
are part of every checkpoint, so a resumed run draws the same coins and samples. With ``use_vllm``
the student's samples come from a vLLM engine (``vllm_engine``) that gets the student's weights
every ``vllm_sync_every`` steps; the teacher's (seq_kd) samples still come from HF generate.
"""

from __future__ import annotations

import random
from contextlib import nullcontext
from pathlib import Path

from distill_doctor.losses.kd import dense_kd_loss
from distill_doctor.train.config import TrainConfig
from distill_doctor.train.data import collate, completion_rows, prompt_ids
from distill_doctor.train.distributed import full_student
from distill_doctor.train.engine import Run
from distill_doctor.train.generation import sample_completions
from distill_doctor.train.vllm_engine import VLLMSampler, run_with_engine, shared_sampling


def with_completions(run: Run, batch: dict, student, engine: VLLMSampler | None = None) -> dict:
    """Replace a micro-batch's responses by student (on-policy) or teacher (seq_kd) samples, or keep them.

    ``student`` is the module to sample from (``distributed.full_student``: gathered under FSDP2);
    ``engine``, when given, samples the student's completions instead.
    """
    g = run.cfg.gkd
    on_policy = random.random() < g.lmbda
    if not on_policy and not g.seq_kd:
        return {**batch, "on_policy": False}
    rows = [run.rows[i] for i in batch["index"]]
    prompts = [prompt_ids(r) for r in rows]
    if on_policy and engine is not None:
        completions = engine.complete(
            prompts, max_new_tokens=g.max_new_tokens, temperature=g.temperature, stop_ids=run.stop_ids
        )
    else:
        completions = sample_completions(
            student if on_policy else run.teacher,
            prompts,
            pad_id=run.tokenizer.pad_token_id,
            eos_id=run.stop_ids,
            vocab_size=len(run.tokenizer),
            max_new_tokens=g.max_new_tokens,
            temperature=g.temperature,
        )
    new_rows = completion_rows(prompts, completions, [r.id for r in rows], run.cfg.max_len)
    new = run.to_device(collate(new_rows, run.tokenizer.pad_token_id))
    return {**new, "index": batch["index"], "micro_index": batch["micro_index"], "on_policy": on_policy}


def train_gkd(cfg: TrainConfig) -> Path:
    return run_with_engine(cfg, _loop)


def _loop(run: Run, engine: VLLMSampler | None) -> None:
    cfg = run.cfg
    share = 1.0 / (cfg.grad_accum * run.accelerator.num_processes)
    for micro_batches in run:
        # Gathering a sharded student is a collective: every process enters it once per step,
        # decided from the config alone (the coin flips inside need not agree across processes).
        gather = (
            full_student(run.accelerator, run.student)
            if cfg.gkd.lmbda > 0 and engine is None
            else nullcontext(None)
        )
        with gather as student, shared_sampling(engine):
            micro_batches = [
                with_completions(run, b, student, engine) for b in micro_batches
            ]  # before counting
        num_tokens = run.count_loss_tokens(micro_batches)
        for batch in run.accumulate(micro_batches):
            parts = dense_kd_loss(
                run.student,
                run.teacher,
                batch,
                divergence_name=cfg.gkd.divergence,
                beta=cfg.gkd.beta,
                alpha=cfg.loss.alpha,
                temperature=cfg.loss.temperature,
                hard_weight=0.0,
                num_tokens=num_tokens,
            )
            parts.extra["on_policy_fraction"] = share * batch["on_policy"]
            if engine is not None:
                parts.extra["engine_weights_lag"] = share * engine.lag(run.step)
                parts.extra["engine_sync_s"] = share * engine.stats.last_seconds
            run.backward(parts, batch)
        run.optimizer_step()
        if engine is not None:
            engine.after_step(run.unwrapped_student, run.step)
