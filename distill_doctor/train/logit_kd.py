"""Token-level (logit) KD (Hinton et al. 2015) on the dataset's responses.

``loss = hard_weight * CE(labels) + (1 - hard_weight) * divergence(student || teacher)`` on response
tokens, with the teacher either live (``teacher:``) or read from a top-k cache (``topk_cache:``,
built by ``build_topk_cache``; the cache stores, per example, the teacher's top-k log-probs and
the log of the remaining tail mass at each response position).

``loss.chunked: true`` computes the same loss from the final hidden states chunk by chunk
(``chunked_distill_loss``), so the (tokens x vocabulary) logits of the two models never exist in
full: the models are called with ``logits_to_keep=1`` and the output heads are applied per chunk.
"""

from __future__ import annotations

from pathlib import Path

import torch

from distill_doctor.errors import InputError
from distill_doctor.losses.batch import IGNORE_INDEX, LossParts, final_hidden, model_inputs, shifted
from distill_doctor.losses.cross_entropy import cross_entropy
from distill_doctor.losses.kd import dense_kd_loss
from distill_doctor.train.build import check_chunked_supported
from distill_doctor.train.config import LossConfig, TrainConfig
from distill_doctor.train.engine import Run


def chunked_kd_loss(
    student, student_head, teacher, batch: dict, *, loss_cfg: LossConfig, num_tokens: int
) -> LossParts:
    """The dense loss's value and gradient, computed chunk by chunk from final hidden states.

    ``student`` may be wrapped (DDP); ``student_head`` is its output layer (``get_output_embeddings()``).
    """
    from distill_doctor.losses.chunked import chunked_distill_loss

    s_hidden = final_hidden(student, batch)[:, :-1]  # (B, T-1, H_s)
    with torch.no_grad():
        t_hidden = final_hidden(teacher, batch)[:, :-1].to(s_hidden.dtype)  # (B, T-1, H_t)
    labels = batch["labels"][:, 1:]  # (B, T-1)
    loss, soft, hard = chunked_distill_loss(
        s_hidden,
        student_head,
        t_hidden,
        teacher.get_output_embeddings(),
        mask=labels != IGNORE_INDEX,
        labels=labels,
        divergence=loss_cfg.divergence,
        beta=loss_cfg.beta,
        alpha=loss_cfg.alpha,
        temperature=loss_cfg.temperature,
        hard_weight=loss_cfg.hard_weight,
        num_tokens=num_tokens,
        chunk_size=loss_cfg.chunk_size,
    )
    return LossParts(
        loss=loss,
        soft=None if soft is None else soft.detach(),
        hard=None if hard is None or loss_cfg.hard_weight == 0 else hard.detach(),
    )


def cached_kd_loss(run: Run, cache, batch: dict, *, num_tokens: int) -> LossParts:
    """Soft loss against the top-k teacher cache (+ optional CE), for one micro-batch; the extras are
    the mean teacher and student mass outside the teacher's top-k per loss token (as gkd's top-k
    teacher logs them)."""
    from distill_doctor.losses.topk import sparse_kd_loss, tail_masses

    loss_cfg = run.cfg.loss
    logits = run.student(**model_inputs(batch)).logits  # (B, T, V)
    logits, labels, mask = shifted(logits, batch["labels"])  # (B, T-1, V), (B, T-1), (B, T-1)
    topk_ids, topk_logprobs, tail = cache_targets(cache, batch, like=logits)
    soft = sparse_kd_loss(
        logits,
        topk_ids,
        topk_logprobs,
        tail,
        mask=mask,
        temperature=loss_cfg.temperature,
        divergence=loss_cfg.divergence,
        num_tokens=num_tokens,
        beta=loss_cfg.beta,
        alpha=loss_cfg.alpha,
    )
    loss = (1.0 - loss_cfg.hard_weight) * soft
    hard = None
    if loss_cfg.hard_weight > 0:
        hard = cross_entropy(logits, labels, mask=mask, num_tokens=num_tokens)
        loss = loss + loss_cfg.hard_weight * hard
    extra = tail_masses(
        logits, topk_ids, tail, mask=mask, temperature=loss_cfg.temperature, num_tokens=num_tokens
    )
    return LossParts(loss=loss, soft=soft.detach(), hard=None if hard is None else hard.detach(), extra=extra)


def cache_targets(
    cache, batch: dict, *, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack the cached teacher targets of a micro-batch onto the shifted positions (B, T-1, K)."""
    B, T1 = like.shape[:2]
    first = cache.get(batch["index"][0])
    K = first.ids.shape[-1]
    ids = torch.zeros((B, T1, K), dtype=torch.long)
    logprobs = torch.full((B, T1, K), float("-inf"))
    tail = torch.full((B, T1), float("-inf"))
    for row, example_index in enumerate(batch["index"]):
        targets = cache.get(example_index)
        start = int(batch["prompt_lens"][row]) - 1  # the position that predicts the first response token
        n = min(targets.ids.shape[0], T1 - start)
        ids[row, start : start + n] = targets.ids[:n].long()
        logprobs[row, start : start + n] = targets.logprobs[:n].float()
        tail[row, start : start + n] = targets.tail_logprob[:n].float()
    device = like.device
    return ids.to(device), logprobs.to(device), tail.to(device)


def check_cache_matches(cache, run: Run) -> None:
    """The cache's rows must be this run's rows (same data, tokenizer, max_len) at this temperature."""
    ids = [r.id for r in run.rows]
    if cache.example_ids != ids:
        raise InputError(
            f"the cache holds {len(cache.example_ids)} rows that are not this run's {len(ids)} rows "
            "(rebuild it from the same data, tokenizer and max_len)",
            path=cache.path,
            field="topk_cache",
        )
    lengths = [len(r.input_ids) - r.prompt_len for r in run.rows]
    cached = [int(n) for n in (cache._offsets[1:] - cache._offsets[:-1])]
    if cached != lengths:
        first = next(i for i, (a, b) in enumerate(zip(cached, lengths)) if a != b)
        raise InputError(
            f"row {ids[first]!r} has {cached[first]} cached positions but {lengths[first]} in this run: the "
            "cache was tokenised differently (another tokenizer, chat_template, train_turns or max_len)",
            path=cache.path,
            field="topk_cache",
        )
    if abs(cache.temperature - run.cfg.loss.temperature) > 1e-9:
        raise InputError(
            f"the cache was built at temperature {cache.temperature} but loss.temperature is "
            f"{run.cfg.loss.temperature}; cached teacher log-probs cannot be re-tempered",
            path=cache.path,
            field="loss.temperature",
        )


def train_logit_kd(cfg: TrainConfig) -> Path:
    run = Run.start(cfg, needs_teacher=not cfg.topk_cache)
    cache = None
    if cfg.topk_cache:
        from distill_doctor.train.topk_cache import TopKCache

        cache = TopKCache(cfg.topk_cache)
        check_cache_matches(cache, run)
    elif cfg.loss.chunked:
        check_chunked_supported(run.unwrapped_student, run.teacher)
    loss = cfg.loss
    for micro_batches in run:
        num_tokens = run.count_loss_tokens(micro_batches)
        for batch in run.accumulate(micro_batches):
            if cache is not None:
                parts = cached_kd_loss(run, cache, batch, num_tokens=num_tokens)
            elif loss.chunked:
                head = run.unwrapped_student.get_output_embeddings()
                parts = chunked_kd_loss(
                    run.student, head, run.teacher, batch, loss_cfg=loss, num_tokens=num_tokens
                )
            else:
                parts = dense_kd_loss(
                    run.student,
                    run.teacher,
                    batch,
                    divergence_name=loss.divergence,
                    beta=loss.beta,
                    alpha=loss.alpha,
                    temperature=loss.temperature,
                    hard_weight=loss.hard_weight,
                    num_tokens=num_tokens,
                )
            run.backward(parts, batch)
        run.optimizer_step()
    return run.finish()
