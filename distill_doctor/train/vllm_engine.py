"""vLLM as the on-policy sampler of ``gkd`` and ``skd``: start the engine, sample, push the student's weights.

The engine runs in its own process and environment (``vllm_client``); this side owns the torch
work. At the start of a run the student (as it is then: fresh, or resumed from a checkpoint) is
saved as a plain model directory and the engine loads it; after every ``vllm_sync_every``
optimizer steps the student's state dict is written as one safetensors file (on /dev/shm where
there is one) and the engine loads it into the running model (``load_weights``), so samples
come from weights at most ``vllm_sync_every - 1`` steps old (the lag is logged as
``engine_weights_lag``). LoRA students are pushed with their adapters merged (peft's
``merge_adapter``/``unmerge_adapter``, as TRL does); the seconds a push took are logged with the
next step as ``engine_sync_s``. Sampling seeds are drawn from torch's global
RNG, which every checkpoint stores, so a resumed run asks the engine for the same samples.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from distill_doctor.train.checkpoint import latest_checkpoint
from distill_doctor.train.config import TrainConfig
from distill_doctor.train.engine import Run
from distill_doctor.train.vllm_client import (
    CompletionRequest,
    EngineError,
    EngineSpec,
    Transport,
    connect,
    parse_completions,
    start_colocated,
    start_server,
)

MODES = ("colocate", "server")


def _scratch_dir(nbytes: int) -> str:
    """Where weight files go: RAM-backed /dev/shm when it has room (no disk write per step; containers
    often give it only 64 MiB), else the temporary folder."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 2 * nbytes:
        return shm
    return tempfile.gettempdir()


@contextmanager
def merged_adapters(model):
    """A peft model with its LoRA adapters merged into the base weights for the duration (no-op otherwise)."""
    if not hasattr(model, "merge_adapter"):
        yield model
        return
    model.merge_adapter()
    try:
        yield model.get_base_model()
    finally:
        model.unmerge_adapter()


def engine_state_dict(model) -> dict[str, torch.Tensor]:
    """The weights the engine loads, under the HF checkpoint names its ``load_weights`` expects.

    LoRA wrappers are stripped (``base_layer.`` dropped, adapter tensors skipped); a tensor that
    shares storage with one already taken (tied embeddings) is left out, as safetensors requires."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for name, tensor in model.state_dict().items():
        if "lora_" in name or "modules_to_save" in name:
            continue
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen:
            continue
        seen.add(key)
        out[name.replace(".base_layer.", ".")] = tensor.detach().contiguous().cpu()
    return out


@dataclass
class PushStats:
    pushes: int = 0
    seconds: float = 0.0
    weights_step: int = 0  # the optimizer step whose weights the engine holds
    last_seconds: float = (
        0.0  # the latest after_step's push (0 when it pushed nothing), logged with the next step
    )


class VLLMSampler:
    """The engine as a sampler: ``complete`` for gkd, ``propose`` rounds for skd, ``push`` after steps."""

    def __init__(
        self, transport: Transport, *, tokenizer_vocab: int, model_vocab: int, sync_every: int
    ) -> None:
        self.transport = transport
        self.allowed_vocab = tokenizer_vocab if model_vocab > tokenizer_vocab else None
        self.sync_every = sync_every
        self.stats = PushStats()

    def complete(
        self, prompts: list[list[int]], *, max_new_tokens: int, temperature: float, stop_ids: list[int]
    ) -> list[list[int]]:
        """One completion per prompt, as ``generation.sample_completions`` returns them."""
        seeds = None
        if temperature > 0:  # from torch's RNG (checkpointed): resume asks for the same samples
            base = int(torch.randint(0, 2**31 - len(prompts), (1,)))
            seeds = [base + i for i in range(len(prompts))]
        request = CompletionRequest(
            prompts=prompts,
            max_tokens=max_new_tokens,
            temperature=temperature,
            stop_token_ids=list(stop_ids),
            seeds=seeds,
            allowed_vocab=self.allowed_vocab,
        )
        return parse_completions(self.transport.call("/v1/completions", request.to_json()), request)

    def push(self, model, step: int) -> None:
        """Write the student's weights to a file and have the engine load them into the running model."""
        start = time.perf_counter()
        from safetensors.torch import save_file

        with merged_adapters(model) as plain:
            weights = engine_state_dict(plain)
            nbytes = sum(t.numel() * t.element_size() for t in weights.values())
            fd, path = tempfile.mkstemp(
                prefix="distill-doctor-weights-", suffix=".safetensors", dir=_scratch_dir(nbytes)
            )
            os.close(fd)
            try:
                save_file(weights, path)
            except OSError as err:  # a full disk: an environment error like the engine's own
                Path(path).unlink(missing_ok=True)
                raise EngineError(
                    f"cannot write the weights for the engine to {path}: {err.strerror or err}"
                ) from None
        try:
            reply = self.transport.call("/update_weights", {"path": path, "version": step})
        finally:
            Path(path).unlink(missing_ok=True)
        if int(reply.get("tensors", -1)) < 1:
            raise EngineError(f"the engine loaded no weights from the update ({reply})")
        self.stats.pushes += 1
        self.stats.last_seconds = time.perf_counter() - start
        self.stats.seconds += self.stats.last_seconds
        self.stats.weights_step = step

    def after_step(self, model, step: int) -> None:
        self.stats.last_seconds = 0.0
        if step % self.sync_every == 0:
            self.push(model, step)

    def lag(self, step: int) -> int:
        """Optimizer steps between the student being trained (``step`` done) and the engine's weights."""
        return step - self.stats.weights_step

    def close(self) -> None:
        self.transport.close()


def open_sampler(run) -> VLLMSampler:
    """Start (or connect to) the engine for a run, on the student as it is now (after any resume)."""
    cfg = run.cfg
    if run.accelerator.num_processes > 1:
        raise EngineError("use_vllm runs on one process for now; launch without several processes")
    max_new = cfg.gkd.max_new_tokens if cfg.method == "gkd" else cfg.skd.max_new_tokens
    model_dir = tempfile.mkdtemp(prefix="distill-doctor-engine-")
    run.save_model(Path(model_dir), final=False)
    spec = EngineSpec(
        model=model_dir,
        dtype=_engine_dtype(run.unwrapped_student),
        max_model_len=cfg.max_len + max_new,
        seed=cfg.seed,
        gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
        start_timeout=cfg.vllm_server_timeout,
    )
    log = open(Path(run.output_dir) / "vllm_engine.log", "a")  # noqa: SIM115 (owned by the child's lifetime)
    start = time.perf_counter()
    try:
        if cfg.vllm_mode == "colocate":
            transport: Transport = start_colocated(spec, log=log)
        elif cfg.vllm_server_port:
            transport = connect(cfg.vllm_server_host, cfg.vllm_server_port, cfg.vllm_server_timeout)
        else:
            transport = start_server(spec, host=cfg.vllm_server_host, log=log)
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)  # loaded (or failed): the engine keeps it in memory
    config = run.unwrapped_student.config
    sampler = VLLMSampler(
        transport,
        tokenizer_vocab=len(run.tokenizer),
        model_vocab=int(config.vocab_size),
        sync_every=cfg.vllm_sync_every,
    )
    sampler.stats.weights_step = run.step
    if cfg.vllm_mode == "server" and cfg.vllm_server_port:
        sampler.push(run.unwrapped_student, run.step)  # a server started elsewhere holds other weights
    run._note(f"vLLM engine ({cfg.vllm_mode}) ready in {time.perf_counter() - start:.0f} s; log: {log.name}")
    return sampler


def _engine_dtype(model) -> str:
    dtype = next(model.parameters()).dtype
    return {torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(dtype, "float32")


def engine_failure(run, err: EngineError) -> EngineError:
    """The one-line error for an engine that failed mid-run, naming the step and the last good checkpoint."""
    last = latest_checkpoint(run.output_dir)
    return type(err)(
        f"{err} (at step {run.step + 1}); "
        + (f"last good checkpoint: {last}" if last else "no checkpoint was saved before it")
    )


def run_with_engine(cfg: TrainConfig, loop: Callable[[Run, VLLMSampler | None], None]) -> Path:
    """Start a run, open the vLLM engine when ``cfg.use_vllm`` (else sample with HF ``generate``),
    run ``loop(run, engine)`` and finish; an engine failure ends the run with exit 2, the last good
    checkpoint kept (:func:`engine_failure`). The engine process stops on every way out."""
    run = Run.start(cfg, needs_teacher=not cfg.teacher_use_vllm)  # a served teacher is not loaded here
    engine = None
    try:
        engine = open_sampler(run) if cfg.use_vllm else None
        loop(run, engine)
    except EngineError as err:
        raise engine_failure(run, err) from None
    finally:
        if engine is not None:
            engine.close()
    return run.finish()
