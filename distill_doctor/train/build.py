"""Building a run's parts: the accelerator, models and tokenizer (with the shared-vocabulary check),
the optimizer and the learning-rate schedule."""

from __future__ import annotations

import contextlib

import torch

from distill_doctor.errors import InputError
from distill_doctor.train.config import TrainConfig


@contextlib.contextmanager
def hf_progress_bars(enabled: bool):
    """Silence transformers' loading/saving progress bars for quiet runs (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled()
    if not enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if before:
            hf_logging.enable_progress_bar()


def check_chunked_supported(*models) -> None:
    """The chunked losses apply the plain output head; refuse models that post-process their logits."""
    for model in models:
        if getattr(model.config, "final_logit_softcapping", None):
            raise InputError(
                f"{model.config.model_type} applies final logit soft-capping, which the chunked loss "
                "does not; set loss.chunked: false",
                field="loss.chunked",
            )


def load_tokenizer(path: str, *, field_name: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot load a tokenizer from {path!r}: {err}", field=field_name) from None


def load_model(path: str, *, field_name: str, dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot load a causal LM from {path!r}: {err}", field=field_name) from None


def check_same_vocab(student_tok, teacher_tok, student, teacher) -> None:
    """Refuse teacher/student pairs whose tokenizers differ; padded model rows beyond the tokenizer are fine."""
    s_vocab, t_vocab = student_tok.get_vocab(), teacher_tok.get_vocab()
    if s_vocab != t_vocab:
        only_s = sorted(set(s_vocab) - set(t_vocab))
        only_t = sorted(set(t_vocab) - set(s_vocab))
        moved = sorted(k for k in set(s_vocab) & set(t_vocab) if s_vocab[k] != t_vocab[k])
        detail = "; ".join(
            f"{what}: {len(keys)} (e.g. {keys[:3]!r})"
            for what, keys in (
                ("only in student", only_s),
                ("only in teacher", only_t),
                ("different ids", moved),
            )
            if keys
        )
        raise InputError(
            f"teacher and student tokenizers differ ({detail}); token-level distillation needs one shared "
            "vocabulary (use method 'sft' on teacher text for cross-tokenizer distillation)",
            field="teacher",
        )
    for name, tok, model in (("student", student_tok, student), ("teacher", teacher_tok, teacher)):
        weight = model.get_output_embeddings().weight
        rows = getattr(weight, "ds_shape", weight.shape)[0]  # a ZeRO-3 partitioned weight keeps its shape there
        if rows < len(tok):
            raise InputError(
                f"model has {rows} output rows but its tokenizer has {len(tok)} tokens", field=name
            )


def make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    from distill_doctor.train.distributed import check_supported, configure_deepspeed

    try:
        accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
    except ValueError as err:
        if "already been initialized" not in str(err) or AcceleratorState().num_processes > 1:
            raise InputError(str(err), field="mixed_precision") from None
        AcceleratorState._reset_state(reset_partial_state=True)  # a new run in the same process
        accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
    if cfg.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise InputError("fp16 autocast needs a GPU; use bf16 or no on CPU", field="mixed_precision")
    if accelerator.distributed_type == DistributedType.DEEPSPEED and cfg.grad_accum > 1:
        # accelerate's DeepSpeed backward also steps the engine, so our own accumulation cannot work.
        raise InputError("must be 1 under DeepSpeed (raise batch_size instead)", field="grad_accum")
    configure_deepspeed(accelerator, cfg.batch_size)
    check_supported(accelerator, cfg)
    return accelerator


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only (not on norms and biases)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)


def build_scheduler(optimizer, cfg: TrainConfig, total_steps: int):
    from transformers import get_scheduler

    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[cfg.schedule]
    return get_scheduler(name, optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=total_steps)


def student_tokenizer(cfg: TrainConfig):
    """The student's tokenizer; a bare model directory without one borrows the teacher's."""
    try:
        return load_tokenizer(cfg.student, field_name="student")
    except InputError:
        if cfg.teacher:
            return load_tokenizer(cfg.teacher, field_name="teacher")
        raise
