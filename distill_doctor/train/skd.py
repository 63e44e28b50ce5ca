"""Speculative knowledge distillation (Xu et al. 2024, "Speculative Knowledge Distillation").

For each micro-batch the student generates a completion token by token; at every position a
proposal outside the teacher's top-K (``skd.top_k``) is replaced by a sample from the teacher's
top-K distribution, and generation continues from the corrected prefix (see
``generation.speculative_completions``). The student is then trained on the corrected
sequence's completion tokens with the configured divergence (``loss.divergence``, teacher as
the target). Small K keeps the text close to what the teacher would write; K = vocabulary size
is plain on-policy distillation. The dataset's responses are never used, only its prompts.
With ``use_vllm`` the student's proposals come from a vLLM engine in rounds
(``generation.speculative_by_rounds``): whole continuations, cut at the first rejected token.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

from distill_doctor.losses.kd import dense_kd_loss
from distill_doctor.train.config import TrainConfig
from distill_doctor.train.data import collate, completion_rows, prompt_ids
from distill_doctor.train.distributed import full_student
from distill_doctor.train.engine import Run
from distill_doctor.train.generation import speculative_by_rounds, speculative_completions
from distill_doctor.train.vllm_engine import VLLMSampler, run_with_engine, shared_sampling


def speculative_batch(run: Run, batch: dict, student, engine: VLLMSampler | None = None) -> dict:
    """Replace a micro-batch's responses by teacher-corrected student completions.

    ``student`` is the module to sample from (``distributed.full_student``: gathered under FSDP2);
    ``engine``, when given, makes the student's proposals instead.
    """
    s = run.cfg.skd
    rows = [run.rows[i] for i in batch["index"]]
    prompts = [prompt_ids(r) for r in rows]
    options = dict(
        top_k=s.top_k,
        pad_id=run.tokenizer.pad_token_id,
        eos_id=run.stop_ids,
        vocab_size=len(run.tokenizer),
        max_new_tokens=s.max_new_tokens,
        temperature=s.temperature,
    )
    if engine is not None:

        def propose(sequences: list[list[int]], budget: int) -> list[list[int]]:
            return engine.complete(
                sequences, max_new_tokens=budget, temperature=s.temperature, stop_ids=run.stop_ids
            )

        out = speculative_by_rounds(propose, run.teacher, prompts, **options)
    else:
        out = speculative_completions(student, run.teacher, prompts, **options)
    new_rows = completion_rows(prompts, out.completions, [r.id for r in rows], run.cfg.max_len)
    new = run.to_device(collate(new_rows, run.tokenizer.pad_token_id))
    return {
        **new,
        "index": batch["index"],
        "micro_index": batch["micro_index"],
        "replaced": out.replaced_fraction,
    }


def train_skd(cfg: TrainConfig) -> Path:
    return run_with_engine(cfg, _loop)


def _loop(run: Run, engine: VLLMSampler | None) -> None:
    cfg = run.cfg
    share = 1.0 / (cfg.grad_accum * run.accelerator.num_processes)
    for micro_batches in run:
        gather = full_student(run.accelerator, run.student) if engine is None else nullcontext(None)
        with gather as student, shared_sampling(engine):  # one gather per step under FSDP2
            micro_batches = [
                speculative_batch(run, b, student, engine) for b in micro_batches
            ]  # before counting
        num_tokens = run.count_loss_tokens(micro_batches)
        for batch in run.accumulate(micro_batches):
            parts = dense_kd_loss(
                run.student,
                run.teacher,
                batch,
                divergence_name=cfg.loss.divergence,
                beta=cfg.loss.beta,
                alpha=cfg.loss.alpha,
                temperature=cfg.loss.temperature,
                hard_weight=0.0,
                num_tokens=num_tokens,
            )
            parts.extra["replaced_fraction"] = share * batch["replaced"]
            if engine is not None:
                parts.extra["engine_weights_lag"] = share * engine.lag(run.step)
                parts.extra["engine_sync_s"] = share * engine.stats.last_seconds
            run.backward(parts, batch)
        run.optimizer_step()
        if engine is not None:
            engine.after_step(run.unwrapped_student, run.step)
