"""The shared training engine: setup, the optimizer step, metrics, checkpoints and exact resume.

Each method (``sft.py``, ``logit_kd.py``, ``gkd.py``, ``skd.py``) is a plain loop over this::

    run = Run.start(cfg, needs_teacher=...)
    for micro_batches in run:                       # one optimizer step per iteration
        num_tokens = run.count_loss_tokens(micro_batches)   # global: all micro-batches, all processes
        for batch in run.accumulate(micro_batches):
            parts = some_loss(run.student, batch, num_tokens=num_tokens)
            run.backward(parts, batch)
        run.optimizer_step()
    return run.finish()

Every loss is "sum over this micro-batch's loss tokens / the step's global loss-token count", so
summing the micro-batch gradients gives exactly the gradient of one big batch (TRL issue 4719).
DDP averages gradients over processes, so ``backward`` multiplies by the process count.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from distill_doctor.atomic import atomic_write_text
from distill_doctor.errors import InputError
from distill_doctor.losses.batch import LossParts, loss_token_count
from distill_doctor.paths import check_output_dir
from distill_doctor.train.build import (
    build_optimizer,
    build_scheduler,
    check_same_vocab,
    disable_dropout,
    hf_progress_bars,
    load_model,
    load_tokenizer,
    make_accelerator,
    model_options,
    prepare_student,
    student_dtype,
    student_tokenizer,
)
from distill_doctor.train.checkpoint import latest_checkpoint, load_resumable, save_checkpoint
from distill_doctor.train.config import TrainConfig
from distill_doctor.train.data import BatchOrder, TokenizedExample, collate, pack_examples
from distill_doctor.train.distributed import Sharding, process_note, replicated_loading, sharding_of

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "train_config.yaml"


class TrainingError(RuntimeError):
    """The run cannot go on (non-finite loss or gradient). The last good checkpoint is kept."""


# ----------------------------------------------------------------------------- small pieces


def prepare_output_dir(cfg: TrainConfig) -> Path | None:
    """Refuse to clobber a non-empty output_dir (or to resume where there is nothing to resume);
    return the newest checkpoint when resuming."""
    out = Path(cfg.output_dir)
    try:
        check_output_dir(out)
    except InputError as err:
        raise InputError(err.message, path=out, field="output_dir") from None
    if cfg.resume:
        latest = latest_checkpoint(out)
        if latest is None:
            raise InputError(
                "resume was asked for, but there is no checkpoint to resume in it (checkpoints/step-*); "
                "drop --resume (resume: false) to start a new run",
                path=out,
                field="output_dir",
            )
        return latest
    if out.is_dir() and any(out.iterdir()):
        if not cfg.overwrite:
            raise InputError(
                "is not empty; set resume: true (--resume) to continue its run, or overwrite: true "
                "(--set overwrite=true) to start over",
                path=out,
                field="output_dir",
            )
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        (out / METRICS_FILE).unlink(missing_ok=True)
    return None


# ----------------------------------------------------------------------------- the run


class Run:
    """Everything a method loop needs; build with :meth:`start`."""

    def __init__(self, cfg: TrainConfig, accelerator, tokenizer, student, teacher, rows, total_steps):
        self.cfg = cfg
        self.accelerator = accelerator
        self.tokenizer = tokenizer
        self.student = student
        self.teacher = teacher
        self.rows: list[TokenizedExample] = rows
        self.total_steps = total_steps
        self.order = BatchOrder(
            len(rows), cfg.batch_size, cfg.seed, accelerator.process_index, accelerator.num_processes
        )
        self.output_dir = Path(cfg.output_dir)
        self.step = 0  # optimizer steps done
        self.micro_index = 0  # micro-batches consumed from the data order (this process)
        self.optimizer: Any = None  # accelerate's wrapped AdamW, set by start()
        self.scheduler: Any = None  # the learning-rate schedule, set by start()
        self.stop_ids: list[int] = []  # on-policy sampling stops at these (EOS, the template's end of turn)
        self.eval_rows: list[TokenizedExample] = []
        self._bar: Any = None  # the tqdm progress bar while iterating
        self._last_batch: dict[str, Any] = {}  # named in a failure message
        self._reset_step_stats()

    # -- setup ---------------------------------------------------------------------------------

    @classmethod
    def start(cls, cfg: TrainConfig, *, needs_teacher: bool) -> Run:
        from accelerate.utils import set_seed

        resume_from = prepare_output_dir(cfg)
        accelerator = make_accelerator(cfg)
        set_seed(cfg.seed)
        with hf_progress_bars(not cfg.quiet and accelerator.is_local_main_process):
            options = model_options(cfg)
            student = load_model(cfg.student, field_name="student", dtype=student_dtype(cfg), **options)
            student = prepare_student(student, cfg)
            tokenizer = student_tokenizer(cfg)
            teacher = None
            if needs_teacher:
                assert cfg.teacher is not None  # TrainConfig requires one wherever a method needs it
                t_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(
                    cfg.mixed_precision, torch.float32
                )
                if accelerator.device.type == "cpu":
                    t_dtype = torch.float32
                with replicated_loading(accelerator):  # never partitioned by ZeRO-3
                    teacher = load_model(cfg.teacher, field_name="teacher", dtype=t_dtype, **options)
                check_same_vocab(
                    tokenizer, load_tokenizer(cfg.teacher, field_name="teacher"), student, teacher
                )
                disable_dropout(teacher)
                teacher.requires_grad_(False).eval().to(accelerator.device)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

        from distill_doctor.train.chat import end_of_turn_ids
        from distill_doctor.train.prepare import eval_source, prepare_data

        prepared = prepare_data(cfg, tokenizer)
        rows = prepared.rows
        if cfg.packing:
            rows = pack_examples(rows, cfg.max_len)
        per_step = cfg.batch_size * cfg.grad_accum * accelerator.num_processes
        total = cfg.steps if cfg.epochs is None else max(1, math.ceil(cfg.epochs * len(rows) / per_step))

        run = cls(cfg, accelerator, tokenizer, student, teacher, rows, total)
        stop = end_of_turn_ids(tokenizer) if prepared.conversational else [tokenizer.eos_token_id]
        run.stop_ids = [t for t in stop if t is not None]
        held_out = eval_source(cfg)
        if held_out is not None:
            run.eval_rows = prepare_data(cfg, tokenizer, data=held_out[0], split=held_out[1]).rows
        run.optimizer = build_optimizer(student, cfg)
        run.scheduler = build_scheduler(run.optimizer, cfg, total)
        run.student, run.optimizer = accelerator.prepare(student, run.optimizer)
        accelerator.register_for_checkpointing(run.scheduler)  # stepped per optimizer step, not per process
        run.student.train()

        if resume_from is not None:
            resume_from, state = load_resumable(accelerator, run.output_dir, run._warn)
            _check_resume_config(state.get("config", {}), cfg, resume_from)
            run.step, run.micro_index = int(state["step"]), int(state["micro_index"])
            run._truncate_metrics(run.step)
            if accelerator.is_main_process:
                from distill_doctor.train.evaluation import truncate_eval_metrics

                truncate_eval_metrics(run.output_dir, run.step)
        if cfg.report_to != "none":
            accelerator.init_trackers("distill-doctor", config=tracker_config(cfg))
        if accelerator.is_main_process:
            atomic_write_text(run.output_dir / CONFIG_FILE, cfg.to_yaml())
            run._note(
                f"{cfg.method}: {len(rows)} rows, {total} steps of {per_step} rows"
                + process_note(accelerator)
                + (f", resuming at step {run.step} from {resume_from}" if resume_from else "")
            )
        return run

    # -- the loop ------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def unwrapped_student(self):
        return self.accelerator.unwrap_model(self.student)

    def __iter__(self):
        from tqdm.auto import tqdm

        stop = (
            self.total_steps
            if self.cfg.stop_at_step is None
            else min(self.total_steps, self.cfg.stop_at_step)
        )
        quiet = self.cfg.quiet or not self.accelerator.is_local_main_process
        self._bar = tqdm(total=self.total_steps, initial=self.step, disable=quiet, desc=self.cfg.method)
        while self.step < stop:
            self._step_start = time.perf_counter()
            yield self.next_micro_batches()
        self._bar.close()

    def next_micro_batches(self) -> list[dict]:
        """The next ``grad_accum`` micro-batches of the deterministic data order, on the device."""
        batches = []
        for _ in range(self.cfg.grad_accum):
            index = self.order.indices(self.micro_index)
            self.micro_index += 1
            batch = collate(
                [self.rows[i] for i in index], self.tokenizer.pad_token_id, packed=self.cfg.packing
            )
            batch["index"] = index
            batch["micro_index"] = self.micro_index - 1
            batches.append(self.to_device(batch))
        return batches

    def to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def count_loss_tokens(self, batches: list[dict]) -> int:
        """Loss tokens of the whole optimizer step: all micro-batches, summed over processes."""
        local = torch.tensor(sum(loss_token_count(b) for b in batches), device=self.device)
        total = int(self.accelerator.reduce(local, reduction="sum"))
        return max(total, 1)

    def accumulate(self, batches: list[dict]):
        """Yield the micro-batches; gradients are synchronised across processes only on the last."""
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            ctx = contextlib.nullcontext() if last else self.accelerator.no_sync(self.student)
            with ctx:
                yield batch

    def backward(self, parts: LossParts, batch: dict) -> None:
        if not torch.isfinite(parts.loss.detach()).all():
            self._fail(f"non-finite loss ({float(parts.loss.detach()):g})", batch)
        self.accelerator.backward(parts.loss * self.accelerator.num_processes)
        s = self._stats
        s["loss"] += float(parts.loss.detach())
        for name in ("soft", "hard", "kl"):
            value = getattr(parts, name)
            if value is not None:
                s[name] = s.get(name, 0.0) + float(value.detach())
        for name, value in parts.extra.items():
            s[name] = s.get(name, 0.0) + float(value)
        s["tokens"] += int(batch["lengths"].sum())
        s["loss_tokens"] += loss_token_count(batch)
        self._last_batch = batch

    def optimizer_step(self) -> None:
        params = [p for p in self.student.parameters() if p.requires_grad]
        max_norm = self.cfg.max_grad_norm if self.cfg.max_grad_norm is not None else float("inf")
        norm = self.accelerator.clip_grad_norm_(params, max_norm)  # None under DeepSpeed (clips itself)
        grad_norm = float(norm) if norm is not None else float("nan")
        if norm is not None and not math.isfinite(grad_norm) and self.cfg.mixed_precision != "fp16":
            self._fail(f"non-finite gradient norm ({grad_norm:g})", self._last_batch)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self._log(lr, grad_norm)
        self._bar.update(1)
        if self.cfg.eval_steps and (self.step % self.cfg.eval_steps == 0 or self.step == self.total_steps):
            from distill_doctor.train.evaluation import evaluate_and_keep_best

            evaluate_and_keep_best(self)
        stopping = self.cfg.stop_at_step is not None and self.step == self.cfg.stop_at_step
        if (self.cfg.save_every and self.step % self.cfg.save_every == 0) or (
            stopping and self.step < self.total_steps
        ):
            self.save_checkpoint()

    def save_checkpoint(self) -> Path:
        state = {"step": self.step, "micro_index": self.micro_index, "config": self.cfg.to_dict()}
        return save_checkpoint(self.accelerator, self.output_dir, state, keep=self.cfg.keep_checkpoints)

    def finish(self) -> Path:
        """Save the final model (safetensors), tokenizer and config when the run is complete; return output_dir."""
        self.accelerator.wait_for_everyone()
        if self.cfg.report_to != "none":
            self.accelerator.end_training()
        if self.step < self.total_steps:
            self._note(f"stopped at step {self.step} of {self.total_steps}; resume with resume: true")
            return self.output_dir
        self.save_model(self.output_dir)
        self._note(f"saved the student to {self.output_dir}")
        return self.output_dir

    def save_model(self, directory: Path, *, final: bool = True) -> None:
        """The student as a plain checkpoint (safetensors) + tokenizer; with LoRA also ``adapter/``, and the
        adapters merged into a copy of the base weights, so every reader loads it without peft.

        The full state dict is gathered on every process first (a collective under FSDP2 and ZeRO-3);
        only the main process writes.
        """
        state_dict = self.accelerator.get_state_dict(self.student)
        if self.accelerator.is_main_process:
            with hf_progress_bars(not self.cfg.quiet):
                if self.cfg.use_peft:
                    self._save_lora(directory, state_dict, final=final)
                else:
                    self.unwrapped_student.save_pretrained(str(directory), state_dict=state_dict)
            self.tokenizer.save_pretrained(str(directory))
        self.accelerator.wait_for_everyone()

    def _save_lora(self, directory: Path, state_dict: dict, *, final: bool) -> None:
        """``adapter/`` and the merged model; a sharded student is first rebuilt whole from ``state_dict``
        (peft saves and merges only modules that hold their full weights)."""
        from distill_doctor.train.lora import save_merged, whole_peft_model

        if sharding_of(self.accelerator) is Sharding.NONE:
            save_merged(self.unwrapped_student, directory, in_place=final)
        else:
            save_merged(whole_peft_model(self.cfg, self.accelerator, state_dict), directory, in_place=True)

    # -- metrics -------------------------------------------------------------------------------

    def _reset_step_stats(self) -> None:
        self._stats: dict[str, float] = {"loss": 0.0, "tokens": 0, "loss_tokens": 0}
        self._last_batch = {}
        self._step_start = time.perf_counter()

    def _log(self, lr: float, grad_norm: float) -> None:
        names = sorted(self._stats)
        values = torch.tensor([float(self._stats[n]) for n in names], dtype=torch.float64, device=self.device)
        values = self.accelerator.reduce(values, reduction="sum").tolist()
        s = dict(zip(names, values))
        elapsed = max(time.perf_counter() - self._step_start, 1e-9)
        record = {
            "step": self.step,
            "loss": s.pop("loss"),
            "soft_loss": s.pop("soft", None),
            "hard_loss": s.pop("hard", None),
            "kl": s.pop("kl", None),
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens": int(s.pop("tokens")),
            "loss_tokens": int(s.pop("loss_tokens")),
        }
        record["tokens_per_s"] = record["tokens"] / elapsed
        record.update(s)  # method extras
        self.last_metrics = record
        if self.accelerator.is_main_process and (
            self.step % self.cfg.log_every == 0 or self.step == self.total_steps
        ):
            with open(self.output_dir / METRICS_FILE, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
        if self.cfg.report_to != "none":
            self.accelerator.log(
                {f"train/{k}": v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"},
                step=self.step,
            )
        if self._bar is not None:
            self._bar.set_postfix(
                loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}", refresh=False
            )
        self._reset_step_stats()

    def _truncate_metrics(self, step: int) -> None:
        path = self.output_dir / METRICS_FILE
        if not self.accelerator.is_main_process or not path.exists():
            return
        kept = []
        for ln in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(ln)
            except ValueError:  # a line cut by a kill or a full disk: dropped with the steps after it
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
                kept.append(ln)
        atomic_write_text(path, "".join(ln + "\n" for ln in kept))

    def _fail(self, what: str, batch: dict) -> None:
        last = latest_checkpoint(self.output_dir)
        ids = batch.get("ids", [])[:3]
        raise TrainingError(
            f"{what} at step {self.step + 1} (micro-batch {batch.get('micro_index', '?')} of the data order, "
            f"first example ids {ids}); "
            + (f"last good checkpoint: {last}" if last else "no checkpoint was saved before it")
        )

    def _warn(self, text: str) -> None:
        """Said even under ``quiet``: something the user must know (a checkpoint was skipped)."""
        if self.accelerator.is_main_process:
            print(f"[distill-doctor train] warning: {text}", file=sys.stderr, flush=True)

    def _note(self, text: str) -> None:
        if not self.cfg.quiet and self.accelerator.is_main_process:
            print(f"[distill-doctor train] {text}", flush=True)


def tracker_config(cfg: TrainConfig) -> dict:
    """The config flattened to scalars (``loss.beta``...), as TensorBoard's hparams need."""
    flat: dict = {}
    for key, value in cfg.to_dict().items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, v in items:
            name = key if sub is None else f"{key}.{sub}"
            flat[name] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return flat


# Changing these between a checkpoint and its resumption would silently change the data order or batches.
RESUME_FIXED = (
    "method",
    "data",
    "seed",
    "batch_size",
    "grad_accum",
    "max_len",
    "packing",
    "dataset_split",
    "dataset_config",
    "chat_template",
    "train_turns",
    "use_peft",
    "lora_r",
    "lora_target_modules",
)


def _check_resume_config(saved: dict, cfg: TrainConfig, checkpoint: Path) -> None:
    for name in RESUME_FIXED:
        if name in saved and saved[name] != getattr(cfg, name):
            raise InputError(
                f"differs from the checkpoint being resumed ({saved[name]!r} there, {getattr(cfg, name)!r} now)",
                path=checkpoint,
                field=name,
            )
