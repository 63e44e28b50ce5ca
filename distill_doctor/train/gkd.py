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
every ``vllm_sync_every`` steps; the teacher's (seq_kd) samples come from HF generate, or from the
teacher's own engine when it is served (``vllm_teacher``).
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
from distill_doctor.train.vllm_teacher import (
    TARGETS,
    ServedTeacher,
    TopKTeacher,
    open_topk_teacher,
    topk_teacher_loss,
)


def with_completions(
    run: Run,
    batch: dict,
    student,
    engine: VLLMSampler | None = None,
    teacher_engine: VLLMSampler | None = None,
) -> dict:
    """Replace a micro-batch's responses by student (on-policy) or teacher (seq_kd) samples, or keep them.

    ``student`` is the module to sample from (``distributed.full_student``: gathered under FSDP2);
    ``engine``, when given, samples the student's completions instead, ``teacher_engine`` (a served
    teacher's) the teacher's.
    """
    g = run.cfg.gkd
    on_policy = random.random() < g.lmbda
    if not on_policy and not g.seq_kd:
        return {**batch, "on_policy": False}
    rows = [run.rows[i] for i in batch["index"]]
    prompts = [prompt_ids(r) for r in rows]
    sampler = engine if on_policy else teacher_engine
    if sampler is not None:
        completions = sampler.complete(
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
    return run_with_engine(cfg, _with_topk_teacher)


def _with_topk_teacher(run: Run, engine: VLLMSampler | None) -> None:
    with open_topk_teacher(run) as topk:  # None: the teacher's full distribution, in-process
        _loop(run, engine, topk)


def _loop(run: Run, engine: VLLMSampler | None, topk: TopKTeacher | None = None) -> None:
    cfg = run.cfg
    teacher_engine = topk.sampler if isinstance(topk, ServedTeacher) else None
    share = 1.0 / (cfg.grad_accum * run.accelerator.num_processes)
    for micro_batches in run:
        # Gathering a sharded student is a collective: every process enters it once per step,
        # decided from the config alone (the coin flips inside need not agree across processes).
        gather = (
            full_student(run.accelerator, run.student)
            if cfg.gkd.lmbda > 0 and engine is None
            else nullcontext(None)
        )
        # Under several processes an engine failure while sampling (the student's engine, or the
        # served teacher's with seq_kd: one exchange covers both) raises on every process.
        with gather as student, shared_sampling(engine if engine is not None else teacher_engine):
            micro_batches = [
                with_completions(run, b, student, engine, teacher_engine) for b in micro_batches
            ]  # before counting
        num_tokens = run.count_loss_tokens(micro_batches)
        if topk is not None:  # one scoring of the step's sequences
            micro_batches = [{**b, TARGETS: t} for b, t in zip(micro_batches, topk.score(micro_batches))]
        for batch in run.accumulate(micro_batches):
            parts = gkd_loss(run, batch, topk, num_tokens)
            parts.extra["on_policy_fraction"] = share * batch["on_policy"]
            if isinstance(topk, ServedTeacher):
                parts.extra["teacher_score_s"] = share * topk.last_seconds
            if engine is not None:
                parts.extra["engine_weights_lag"] = share * engine.lag(run.step)
                parts.extra["engine_sync_s"] = share * engine.stats.last_seconds
            run.backward(parts, batch)
        run.optimizer_step()
        if engine is not None:
            engine.after_step(run.unwrapped_student, run.step)


def gkd_loss(run: Run, batch: dict, topk: TopKTeacher | None, num_tokens: int):
    """One micro-batch's gkd loss: against the teacher's full distribution, or its top-k targets
    stored in the batch when the run has a top-k teacher (``vllm_teacher``)."""
    cfg = run.cfg
    if topk is None:
        return dense_kd_loss(
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
    return topk_teacher_loss(
        run.student,
        batch,
        batch[TARGETS],
        rows=topk.rows,
        divergence=cfg.gkd.divergence,
        beta=cfg.gkd.beta,
        alpha=cfg.loss.alpha,
        temperature=cfg.loss.temperature,
        num_tokens=num_tokens,
    )
