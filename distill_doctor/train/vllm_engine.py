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
Under several processes one engine, owned by the main process, serves them all
(:class:`SharedSampler`; the protocol that keeps the processes in step is in ``vllm_shared``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from distill_doctor.train.checkpoint import latest_checkpoint
from distill_doctor.train.config import TrainConfig
from distill_doctor.train.distributed import Sharding, first_failure, sharding_of
from distill_doctor.train.engine import Run
from distill_doctor.train.vllm_client import (
    CompletionRequest,
    EngineError,
    EngineSpec,
    HttpTransport,
    Transport,
    connect,
    parse_completions,
    start_colocated,
    start_server,
)
from distill_doctor.train.vllm_shared import check_reachable, failing_together, shared_transport

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
    return engine_tensors(model.state_dict())


def tied_aliases(model) -> set[str]:
    """Names under which a parameter appears a second time (tied embeddings: ``lm_head.weight``).

    A gathered state dict holds them as separate copies, which :func:`engine_tensors` cannot tell
    from distinct weights; the engine must get each parameter once (measured: vLLM 0.32's in-place
    reload given both names of a tied embedding sampled wrongly from then on)."""
    seen: set[int] = set()
    aliases: set[str] = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            aliases.add(name)
        seen.add(id(param))
    return aliases


def engine_tensors(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """:func:`engine_state_dict` of a state dict already taken (a sharded student's gathered one)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for name, tensor in state_dict.items():
        if "lora_" in name or "modules_to_save" in name:
            continue
        key = (tensor.untyped_storage().data_ptr(), int(tensor.storage_offset()))
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
        seeds = self._seeds(len(prompts)) if temperature > 0 else None
        request = CompletionRequest(
            prompts=prompts,
            max_tokens=max_new_tokens,
            temperature=temperature,
            stop_token_ids=list(stop_ids),
            seeds=seeds,
            allowed_vocab=self.allowed_vocab,
        )
        return parse_completions(self.transport.call("/v1/completions", request.to_json()), request)

    def _seeds(self, count: int) -> list[int]:
        """One seed per prompt, from torch's RNG (checkpointed): a resumed run asks for the same samples."""
        return prompt_seeds(count)

    def together(self):
        """Where sampling runs: one process needs no agreement on failures (see ``vllm_shared``)."""
        return nullcontext()

    def push(self, model, step: int) -> None:
        """Write the student's weights to a file and have the engine load them into the running model."""
        start = time.perf_counter()
        with merged_adapters(model) as plain:
            self.push_tensors(engine_state_dict(plain), step, start=start)

    def push_tensors(
        self, weights: dict[str, torch.Tensor], step: int, *, start: float | None = None
    ) -> None:
        """Have the engine load ``weights`` (HF checkpoint names) as the student after optimizer step ``step``."""
        start = time.perf_counter() if start is None else start
        from safetensors.torch import save_file

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
    if run.accelerator.num_processes > 1:  # one engine for all processes, owned by the main one
        return open_shared_sampler(run)
    model_dir = tempfile.mkdtemp(prefix="distill-doctor-engine-")
    run.save_model(Path(model_dir), final=False)
    spec = engine_spec(run, model_dir)
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


def engine_spec(run, model_dir: str) -> EngineSpec:
    """How to start the engine on the student saved in ``model_dir``."""
    cfg = run.cfg
    max_new = cfg.gkd.max_new_tokens if cfg.method == "gkd" else cfg.skd.max_new_tokens
    return EngineSpec(
        model=model_dir,
        dtype=_engine_dtype(run.unwrapped_student),
        max_model_len=cfg.max_len + max_new,
        seed=cfg.seed,
        gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
        start_timeout=cfg.vllm_server_timeout,
    )


def prompt_seeds(count: int, rank: int = 0, world: int = 1) -> list[int]:
    """Sampling seeds for ``count`` prompts of process ``rank`` of ``world``: ``base + i * world + rank``.

    ``base`` is one draw from torch's global RNG (checkpointed, so a resumed run asks for the same
    samples). Every process seeds torch alike and draws the same base, so the seeds interleave:
    no two prompts of one step share a seed, on one process or across processes (equal seeds
    would correlate the samples of different prompts and repeat those of equal ones)."""
    base = int(torch.randint(0, 2**31 - count * world, (1,)))
    return [base + i * world + rank for i in range(count)]


def shared_sampling(engine: VLLMSampler | None):
    """Around a step's sampling: under several processes an engine failure on one raises on all."""
    return engine.together() if engine is not None else nullcontext()


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


# ----------------------------------------------------------------------------- several processes


class SharedSampler(VLLMSampler):
    """:class:`VLLMSampler` for one of several processes sharing the main process's engine."""

    def __init__(
        self, transport: Transport, *, run, tokenizer_vocab: int, model_vocab: int, sync_every: int
    ) -> None:
        super().__init__(
            transport, tokenizer_vocab=tokenizer_vocab, model_vocab=model_vocab, sync_every=sync_every
        )
        self.run = run
        self.rank = run.accelerator.process_index
        self.world = run.accelerator.num_processes
        self.is_main = run.accelerator.is_main_process
        self._whole_peft = None  # the main process's whole copy of a sharded LoRA student, for merging

    def _seeds(self, count: int) -> list[int]:
        return prompt_seeds(count, self.rank, self.world)

    def together(self):
        """Sampling on every process, then an exchange: an engine failure on any raises on all."""
        return failing_together(self.world)

    def push(self, model, step: int) -> None:
        """Every process: gather the student (a collective under FSDP2/ZeRO-3); the main process pushes
        it; all wait for the outcome (the barrier that keeps stale weights from being sampled)."""
        start = time.perf_counter()
        pushes, seconds = self.stats.pushes, self.stats.seconds  # push_tensors counts on the main process
        accelerator = self.run.accelerator
        sharded = sharding_of(accelerator) is not Sharding.NONE
        state = accelerator.get_state_dict(self.run.student) if sharded else None
        message = None
        if self.is_main:
            try:
                if state is None:  # DDP, ZeRO-1/2: this process holds the whole student
                    super().push(model, step)
                else:
                    self._push_gathered(state, step)
            except EngineError as err:
                message = str(err)
        message = first_failure(message, self.world)
        if message is not None:
            raise EngineError(message)
        elapsed = time.perf_counter() - start
        self.stats = PushStats(pushes + 1, seconds + elapsed, step, elapsed)  # the same on every process

    def _push_gathered(self, state: dict, step: int) -> None:
        """Push a gathered full state dict; a LoRA student's through a whole peft copy that merges it."""
        if not self.run.cfg.use_peft:
            aliases = tied_aliases(self.run.unwrapped_student)
            self.push_tensors(engine_tensors({k: v for k, v in state.items() if k not in aliases}), step)
            return
        if self._whole_peft is None:
            from distill_doctor.train.lora import whole_peft_model

            with torch.random.fork_rng(devices=[]):  # LoRA's init draws: keep this process's stream intact
                self._whole_peft = whole_peft_model(self.run.cfg, self.run.accelerator, state)
        else:
            self._whole_peft.load_state_dict(state, strict=True)
        with merged_adapters(self._whole_peft) as plain:  # written before the adapters come out again
            self.push_tensors(engine_state_dict(plain), step)


def open_shared_sampler(run) -> SharedSampler:
    """Start (main process) or reach (all) the one engine of a multi-process run, on the student as it is now."""
    cfg, accelerator = run.cfg, run.accelerator
    num_processes = accelerator.num_processes
    check_reachable(
        cfg.vllm_mode,
        cfg.vllm_server_host,
        num_processes,
        int(os.environ.get("LOCAL_WORLD_SIZE", num_processes)),
    )
    external = cfg.vllm_mode == "server" and bool(cfg.vllm_server_port)
    model_dir = None
    if not external:
        model_dir = tempfile.mkdtemp(prefix="distill-doctor-engine-")  # the main process's is written
        with torch.random.fork_rng(devices=[]):  # a sharded LoRA student is rebuilt (LoRA's init draws)
            run.save_model(Path(model_dir), final=False)  # a collective: the gathered student
    log_path = Path(run.output_dir) / "vllm_engine.log"

    def start() -> HttpTransport:
        if external:
            assert cfg.vllm_server_port is not None
            return connect(cfg.vllm_server_host, cfg.vllm_server_port, cfg.vllm_server_timeout)
        assert model_dir is not None
        host = cfg.vllm_server_host if cfg.vllm_mode == "server" else "127.0.0.1"
        log = open(log_path, "a")  # noqa: SIM115 (owned by the child's lifetime)
        return start_server(engine_spec(run, model_dir), host=host, log=log)

    began = time.perf_counter()
    try:
        transport = shared_transport(start, is_main=accelerator.is_main_process, num_processes=num_processes)
    finally:
        if model_dir is not None:
            shutil.rmtree(model_dir, ignore_errors=True)
    config = run.unwrapped_student.config
    sampler = SharedSampler(
        transport,
        run=run,
        tokenizer_vocab=len(run.tokenizer),
        model_vocab=int(config.vocab_size),
        sync_every=cfg.vllm_sync_every,
    )
    sampler.stats.weights_step = run.step
    if external:
        sampler.push(run.unwrapped_student, run.step)  # a server started elsewhere holds other weights
    run._note(
        f"vLLM engine ({cfg.vllm_mode}, {transport.base_url}) ready for {num_processes} processes in "
        f"{time.perf_counter() - began:.0f} s; log: {log_path}"
    )
    return sampler
