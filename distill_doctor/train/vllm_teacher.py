"""A top-k teacher for gkd: served by a vLLM engine (``teacher_use_vllm``), or in the trainer.

With ``teacher_top_k: k`` gkd trains against the teacher's k most likely next tokens and the mass
outside them (the tail) at every position, not its full distribution. Two sources give the same
targets:

* **served** (``teacher_use_vllm: true``): the teacher runs in a vLLM engine (``vllm_server.py`` in
  ``.venv-vllm``, started like the student's engine, or one already running at
  ``teacher_vllm_server_port``: ours, or vLLM's own OpenAI server) and is never loaded in the
  trainer. Under several processes the main process starts or reaches it and each process scores
  its own sequences (``vllm_shared``: the address broadcast, failures raised on every process). Each step's sequences (prompt +
  completion token ids, no re-tokenisation) are scored in one request, the one TRL's async
  distillation and verl send: the OpenAI completions body with ``max_tokens: 1`` and vLLM's
  ``prompt_logprobs: k``. vLLM returns, per position, the top-k log-probs of log_softmax over the
  teacher's vocabulary (float32, temperature 1) plus the scored token's own; the tail is
  ``log(1 - sum of the top-k)`` (``losses.topk.tail_from_topk``).
* **in-process** (``teacher_top_k`` alone): the trainer's teacher forward, cut to its top-k with the
  exact tail (``losses.topk.topk_targets``), the reference the served teacher is checked against.

The loss is the top-k loss the top-k cache uses (``losses.topk.sparse_kd_loss``: the divergence
between the two distributions collapsed to k + 1 buckets). What it misses lies inside the tail
(``losses.table.TOPK_TAIL_ERROR``); reverse KL is refused (``losses.table.topk_refusal``). Each
step logs ``teacher_tail_mass`` and ``student_tail_mass`` (mean mass outside the teacher's top-k per
loss token) so a run shows how much was approximated, and ``teacher_score_s`` for the served teacher.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from distill_doctor.losses.batch import LossParts, model_inputs, shifted
from distill_doctor.losses.kd import teacher_logits
from distill_doctor.losses.topk import sparse_kd_loss, tail_from_topk, tail_masses, topk_targets
from distill_doctor.train.build import check_same_tokenizer, load_tokenizer, model_options, output_rows
from distill_doctor.train.vllm_client import (
    EngineError,
    EngineSpec,
    HttpTransport,
    Transport,
    connect,
    start_colocated,
    start_server,
)
from distill_doctor.train.vllm_engine import SharedSampler, VLLMSampler
from distill_doctor.train.vllm_shared import check_reachable, shared_transport

TARGETS = "teacher_topk"  # the micro-batch key its teacher targets are stored under


class TeacherEngineError(EngineError):
    """The teacher's engine cannot answer, or answered something that is not a scoring of our tokens."""

    role = "teacher engine"


@dataclass(frozen=True)
class TopK:
    """Teacher targets at next-token positions: position t's top-k predict token t + 1.

    ids (..., k) long, logprobs (..., k) float32 (log p_T of those ids), tail (...) float32
    (log of the mass outside them)."""

    ids: torch.Tensor
    logprobs: torch.Tensor
    tail: torch.Tensor


@dataclass(frozen=True)
class ScoreRequest:
    """Score token sequences: the teacher's top-k log-probs at every position (vLLM's prompt log-probs)."""

    sequences: list[list[int]]
    top_k: int

    def to_json(self) -> dict[str, Any]:
        """The OpenAI completions body with token ids in; one token is generated (vLLM needs >= 1)."""
        return {
            "prompt": self.sequences,
            "max_tokens": 1,
            "temperature": 0.0,
            "prompt_logprobs": self.top_k,
            "ignore_eos": True,
        }


def parse_scores(reply: dict[str, Any], request: ScoreRequest) -> list[TopK]:
    """Per sequence of the request, its (L - 1, k) targets; TeacherEngineError on any other reply."""
    choices = reply.get("choices")
    n = len(request.sequences)
    if not isinstance(choices, list) or len(choices) != n:
        got = len(choices) if isinstance(choices, list) else "no"
        raise TeacherEngineError(f"the teacher engine answered {got} scorings for {n} sequences")
    out: list[TopK | None] = [None] * n
    for choice in choices:
        index = choice.get("index") if isinstance(choice, dict) else None
        if not isinstance(index, int) or not 0 <= index < n or out[index] is not None:
            raise TeacherEngineError("the teacher engine's reply has a choice without a valid index")
        out[index] = sequence_topk(choice.get("prompt_logprobs"), request.sequences[index], request.top_k)
    return [t for t in out if t is not None]


def sequence_topk(positions: Any, sequence: list[int], k: int) -> TopK:
    """One sequence's prompt log-probs (vLLM's shape: ``None``, then per position ``{"<id>": {"logprob",
    "rank", ...}}`` holding the top-k and the scored token) -> its (L - 1, k) targets, by rank.

    Each position must score the token the request sent there: a reply about other tokens (another
    tokenizer, a server that re-tokenised) is refused rather than trained on."""
    if not isinstance(positions, list) or len(positions) != len(sequence):
        got = len(positions) if isinstance(positions, list) else "no"
        raise TeacherEngineError(
            f"the teacher engine sent {got} prompt log-prob positions for a sequence of {len(sequence)} "
            "tokens (does it support vLLM's prompt_logprobs?)"
        )
    ids = torch.empty((len(sequence) - 1, k), dtype=torch.long)
    values = torch.empty((len(sequence) - 1, k), dtype=torch.float64)
    for t in range(1, len(sequence)):
        entries = positions[t]
        if not isinstance(entries, dict) or str(sequence[t]) not in entries:
            raise TeacherEngineError(
                f"the teacher engine's log-probs at position {t} do not score the token sent there "
                f"({sequence[t]}): it scored other tokens"
            )
        if len(entries) < k:
            raise TeacherEngineError(
                f"the teacher engine sent {len(entries)} log-probs at position {t}, fewer than "
                f"teacher_top_k = {k}"
            )
        ranked = sorted(entries.items(), key=lambda item: (_rank(item[1]), -float(item[1]["logprob"])))
        ids[t - 1] = torch.tensor([int(token) for token, _ in ranked[:k]])
        values[t - 1] = torch.tensor([float(entry["logprob"]) for _, entry in ranked[:k]])
    return TopK(ids=ids, logprobs=values.float(), tail=tail_from_topk(values))


def _rank(entry: dict[str, Any]) -> float:
    rank = entry.get("rank")
    return float(rank) if isinstance(rank, int) else float("inf")


def batch_targets(batch: dict[str, Any], rows: list[TopK], k: int) -> TopK:
    """A micro-batch's targets on its shifted positions (B, T-1, k), from its rows' (L_i - 1, k) ones.

    Positions past a row's end get distinct placeholder ids and -inf: they carry no loss (masked)."""
    B, T = batch["input_ids"].shape
    ids = torch.arange(k).expand(B, T - 1, k).clone()
    logprobs = torch.full((B, T - 1, k), float("-inf"))
    tail = torch.full((B, T - 1), float("-inf"))
    for i, row in enumerate(rows):
        n = row.ids.shape[0]
        ids[i, :n], logprobs[i, :n], tail[i, :n] = row.ids, row.logprobs, row.tail
    device = batch["input_ids"].device
    return TopK(ids.to(device), logprobs.to(device), tail.to(device))


def sequences_of(batch: dict[str, Any]) -> list[list[int]]:
    """The micro-batch's rows as token-id lists, without their right padding."""
    lengths = batch["lengths"].tolist()
    return [batch["input_ids"][i, :n].tolist() for i, n in enumerate(lengths)]


# ----------------------------------------------------------------------------- the two sources


class TopKTeacher(Protocol):
    rows: int  # vocabulary slots the student and teacher share (the smaller model's output rows)
    last_seconds: float

    def score(self, batches: list[dict[str, Any]]) -> list[TopK]: ...


class ServedTeacher:
    """The teacher in a vLLM engine: one scoring request per optimizer step; seq_kd samples too."""

    def __init__(self, transport: Transport, *, top_k: int, rows: int, sampler: VLLMSampler) -> None:
        self.transport, self.top_k, self.rows = transport, top_k, rows
        self.sampler = sampler  # the same engine sampling the teacher's own completions (seq_kd)
        self.last_seconds = 0.0

    def score(self, batches: list[dict[str, Any]]) -> list[TopK]:
        """This process's micro-batches, scored in one request; under several processes each sends its
        own and a failure on any raises on all (``vllm_shared.failing_together``), in the same step."""
        with self.sampler.together():
            return self._score(batches)

    def _score(self, batches: list[dict[str, Any]]) -> list[TopK]:
        start = time.perf_counter()
        per_batch = [sequences_of(b) for b in batches]
        request = ScoreRequest([s for seqs in per_batch for s in seqs], self.top_k)
        try:
            reply = self.transport.call("/v1/completions", request.to_json())
        except TeacherEngineError:
            raise
        except EngineError as err:
            raise TeacherEngineError(str(err)) from None
        scored = parse_scores(reply, request)
        top = max((int(t.ids.max()) for t in scored if t.ids.numel()), default=0)
        if top >= self.rows:
            raise TeacherEngineError(
                f"the served teacher ranks id {top} among its top-{self.top_k}, beyond the {self.rows} "
                "vocabulary rows it shares with the student: its padded rows carry probability"
            )
        out, start_row = [], 0
        for batch, seqs in zip(batches, per_batch):
            out.append(batch_targets(batch, scored[start_row : start_row + len(seqs)], self.top_k))
            start_row += len(seqs)
        self.last_seconds = time.perf_counter() - start
        return out

    def close(self) -> None:
        self.transport.close()


class InProcessTeacher:
    """The trainer's own teacher cut to its top-k (exact tail): the served teacher's reference."""

    def __init__(self, model: Any, *, top_k: int, rows: int, temperature: float) -> None:
        self.model, self.top_k, self.rows, self.temperature = model, top_k, rows, temperature
        self.last_seconds = 0.0

    @torch.no_grad()
    def score(self, batches: list[dict[str, Any]]) -> list[TopK]:
        out = []
        for batch in batches:
            logits = teacher_logits(self.model, batch)[:, :-1, : self.rows].float()  # (B, T-1, V)
            out.append(TopK(*topk_targets(logits, self.top_k, self.temperature)))
        return out


def topk_teacher_loss(
    student: Any,
    batch: dict[str, Any],
    targets: TopK,
    *,
    rows: int,
    divergence: str,
    beta: float,
    alpha: float,
    temperature: float,
    num_tokens: int,
) -> LossParts:
    """One micro-batch's loss against top-k teacher targets (B, T-1, k), over the shared ``rows``.

    The student's padded rows beyond the teacher's are cut as the dense path cuts them (``align_vocab``);
    the extras are the mean teacher and student mass outside the teacher's top-k per loss token."""
    s_logits = student(**model_inputs(batch)).logits[..., :rows].float()  # (B, T, V)
    s_logits, _, mask = shifted(s_logits, batch["labels"])  # (B, T-1, V), (B, T-1)
    soft = sparse_kd_loss(
        s_logits,
        targets.ids,
        targets.logprobs,
        targets.tail,
        mask=mask,
        temperature=temperature,
        divergence=divergence,
        num_tokens=num_tokens,
        beta=beta,
        alpha=alpha,
    )
    extra = tail_masses(
        s_logits, targets.ids, targets.tail, mask=mask, temperature=temperature, num_tokens=num_tokens
    )
    return LossParts(loss=soft, soft=soft.detach(), extra=extra)


# ----------------------------------------------------------------------------- opening one for a run


@contextmanager
def open_topk_teacher(run: Any) -> Iterator[TopKTeacher | None]:
    """The run's top-k teacher (None without ``teacher_top_k``); a served one is stopped on the way out."""
    cfg = run.cfg
    if cfg.teacher_top_k is None:
        yield None
        return
    student_rows = output_rows(run.unwrapped_student)
    if not cfg.teacher_use_vllm:
        rows = min(student_rows, output_rows(run.teacher))
        yield InProcessTeacher(
            run.teacher, top_k=cfg.teacher_top_k, rows=rows, temperature=cfg.loss.temperature
        )
        return
    served = open_served_teacher(run, student_rows)
    try:
        yield served
    finally:
        served.close()


def open_served_teacher(run: Any, student_rows: int) -> ServedTeacher:
    """Check the teacher's tokenizer against the student's, then start (or connect to) its engine."""
    cfg = run.cfg
    assert cfg.teacher is not None  # TrainConfig requires one for gkd
    options = model_options(cfg)
    check_same_tokenizer(
        run.tokenizer, load_tokenizer(cfg.teacher, field_name="teacher", **_tok_options(options))
    )
    teacher_rows = _config_rows(cfg.teacher, options)
    spec = EngineSpec(
        model=cfg.teacher,
        dtype={"bf16": "bfloat16", "fp16": "float16"}.get(cfg.mixed_precision, "float32"),
        max_model_len=cfg.max_len + cfg.gkd.max_new_tokens + 1,  # + the one token a scoring generates
        seed=cfg.seed,
        gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
        start_timeout=cfg.vllm_server_timeout,
        max_logprobs=max(cfg.teacher_top_k, 20),
    )
    start = time.perf_counter()
    log_path = Path(run.output_dir) / "vllm_teacher.log"
    accelerator = run.accelerator
    try:
        if accelerator.num_processes > 1:  # the main process starts or reaches it; all speak HTTP to it
            check_reachable(
                "server" if cfg.teacher_vllm_server_port else cfg.vllm_mode,
                cfg.vllm_server_host,
                accelerator.num_processes,
                int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes)),
            )
            transport: Transport = shared_transport(
                lambda: _start_http(cfg, spec, log_path),
                is_main=accelerator.is_main_process,
                num_processes=accelerator.num_processes,
            )
        elif cfg.teacher_vllm_server_port or cfg.vllm_mode == "server":
            transport = _start_http(cfg, spec, log_path)
        else:
            transport = start_colocated(spec, log=open(log_path, "a"))  # noqa: SIM115 (the child's)
    except EngineError as err:
        raise TeacherEngineError(str(err)) from None
    tokenizer_vocab = len(run.tokenizer)
    sampler: VLLMSampler
    if accelerator.num_processes > 1:  # rank-distinct seeds (seq_kd); failures agreed across processes
        sampler = SharedSampler(
            transport, run=run, tokenizer_vocab=tokenizer_vocab, model_vocab=teacher_rows, sync_every=1
        )
    else:
        sampler = VLLMSampler(
            transport, tokenizer_vocab=tokenizer_vocab, model_vocab=teacher_rows, sync_every=1
        )
    where = f"port {cfg.teacher_vllm_server_port}" if cfg.teacher_vllm_server_port else f"log: {log_path}"
    run._note(
        f"vLLM teacher engine ready for {accelerator.num_processes} process(es) in "
        f"{time.perf_counter() - start:.0f} s; {where}"
    )
    return ServedTeacher(
        transport, top_k=cfg.teacher_top_k, rows=min(student_rows, teacher_rows), sampler=sampler
    )


def _start_http(cfg: Any, spec: EngineSpec, log_path: Path) -> HttpTransport:
    """The teacher's HTTP engine: one started elsewhere at ``teacher_vllm_server_port`` (checked to
    serve long enough sequences), else our own child (``colocate`` under several processes too: the
    pipe of a colocated child reaches one process only, so it listens on 127.0.0.1)."""
    if cfg.teacher_vllm_server_port:  # on the teacher, with --max-logprobs >= k
        transport = connect(cfg.vllm_server_host, cfg.teacher_vllm_server_port, cfg.vllm_server_timeout)
        check_served_model(transport, spec.max_model_len)
        return transport
    host = cfg.vllm_server_host if cfg.vllm_mode == "server" else "127.0.0.1"
    return start_server(spec, host=host, log=open(log_path, "a"))  # noqa: SIM115 (the child's)


def check_served_model(transport: Transport, needed_len: int) -> None:
    """A server with vLLM's OpenAI routes (``vllm serve``) lists its model at ``/v1/models``: refuse one
    whose ``max_model_len`` is shorter than the sequences a step scores, before training starts.

    ``vllm_server.py`` has no such route (a 404: nothing to check here); that the served model is the
    teacher, on the student's tokenizer, is checked on every scoring (each position must score the
    token sent there, no ranked id may lie beyond the shared vocabulary rows)."""
    try:
        models = transport.call("/v1/models", {}).get("data")
    except EngineError:
        return
    if not isinstance(models, list) or not models or not isinstance(models[0], dict):
        raise TeacherEngineError(f"the teacher server's /v1/models lists no model ({models!r})")
    length = models[0].get("max_model_len")
    if isinstance(length, int) and length < needed_len:
        raise TeacherEngineError(
            f"the teacher server's model {models[0].get('id')!r} takes {length} tokens "
            f"(max_model_len), fewer than the {needed_len} a step scores (max_len + "
            "gkd.max_new_tokens + 1): restart it with a larger --max-model-len"
        )


def _tok_options(options: dict) -> dict:
    return {k: v for k, v in options.items() if k in ("trust_remote_code", "revision")}


def _config_rows(path: str, options: dict) -> int:
    """The teacher's output rows from its config.json (its weights are never loaded here)."""
    from transformers import AutoConfig

    from distill_doctor.errors import InputError

    try:
        config = AutoConfig.from_pretrained(path, **_tok_options(options))
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read the teacher's config from {path!r}: {err}", field="teacher") from None
    return int(config.get_text_config().vocab_size)
