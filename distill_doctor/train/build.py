"""Building a run's parts: the accelerator, models and tokenizer (with the shared-vocabulary check),
the optimizer and the learning-rate schedule."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from distill_doctor.devices import model_load_errors
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


def load_tokenizer(path: str, *, field_name: str, **options):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, **options)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot load a tokenizer from {path!r}: {err}", field=field_name) from None


def load_model(path: str, *, field_name: str, dtype: torch.dtype | str = torch.float32, **options):
    """``AutoModelForCausalLM.from_pretrained`` with the run's options (revision, attention kernel, ...)."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **options)
    except model_load_errors() as err:  # incl. a truncated or corrupt model.safetensors
        raise InputError(f"cannot load a causal LM from {path!r}: {err}", field=field_name) from None


def model_options(cfg: TrainConfig) -> dict:
    """The from_pretrained options shared by student and teacher (unset ones left to transformers)."""
    options: dict = {"trust_remote_code": cfg.trust_remote_code}
    if cfg.revision:
        options["revision"] = cfg.revision
    if cfg.attn_implementation:
        options["attn_implementation"] = cfg.attn_implementation
    return options


def student_dtype(cfg: TrainConfig) -> torch.dtype | str:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(
        cfg.torch_dtype, "auto"
    )


def disable_dropout(model: torch.nn.Module) -> None:
    """Dropout off (as TRL's ``disable_dropout``): distillation matches distributions, noise only blurs them."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        # Llama/Qwen-style attention applies ``self.attention_dropout`` inside the kernel, not a Dropout module.
        if isinstance(getattr(module, "attention_dropout", None), float):
            setattr(module, "attention_dropout", 0.0)  # noqa: B010 (nn.Module's typed __setattr__ refuses floats)
    config: Any = getattr(model, "config", None)  # a transformers PretrainedConfig
    if isinstance(getattr(config, "attention_dropout", None), float):
        config.attention_dropout = 0.0


def prepare_student(model, cfg: TrainConfig):
    """Dropout, gradient checkpointing and LoRA adapters, as the config asks; returns the model to train."""
    if cfg.disable_dropout:
        disable_dropout(model)
    if cfg.gradient_checkpointing:
        enable_checkpointing(model)
    if cfg.use_peft:
        model = add_lora(model, cfg)
    return model


def enable_checkpointing(model) -> None:
    """Non-reentrant activation checkpointing (transformers >= 5.2x name, the older one before)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False  # sampling still passes use_cache=True explicitly


def add_lora(model, cfg: TrainConfig):
    """Wrap ``model`` with peft LoRA adapters; only the adapters train (the base weights are frozen)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise InputError("needs the peft package: pip install peft", field="use_peft") from None
    targets = cfg.lora_target_modules
    target_modules = (
        targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
    )
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=target_modules,
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, lora)
    except ValueError as err:
        raise InputError(str(err), field="lora_target_modules") from None


def check_same_vocab(student_tok, teacher_tok, student, teacher) -> None:
    """Refuse teacher/student pairs whose tokenizers differ; padded model rows beyond the tokenizer are fine."""
    check_same_tokenizer(student_tok, teacher_tok)
    for name, tok, model in (("student", student_tok, student), ("teacher", teacher_tok, teacher)):
        rows = output_rows(model)
        if rows < len(tok):
            raise InputError(
                f"model has {rows} output rows but its tokenizer has {len(tok)} tokens", field=name
            )


def output_rows(model) -> int:
    """Rows of a model's output layer (its vocabulary slots, padded ones included)."""
    weight = model.get_output_embeddings().weight
    return int(getattr(weight, "ds_shape", weight.shape)[0])  # ZeRO-3: a partitioned weight's shape


def check_same_tokenizer(student_tok, teacher_tok) -> None:
    """Refuse tokenizers that differ in any token or id (the distillation compares ids position by position)."""
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


def make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    from distill_doctor.train.distributed import check_supported, configure_deepspeed

    trackers = {} if cfg.report_to == "none" else {"log_with": cfg.report_to, "project_dir": cfg.output_dir}
    if cfg.report_to != "none":
        from accelerate.utils import is_tensorboard_available, is_wandb_available

        available = is_tensorboard_available if cfg.report_to == "tensorboard" else is_wandb_available
        if not available():
            raise InputError(
                f"needs the {cfg.report_to} package: pip install {cfg.report_to}", field="report_to"
            )
    try:
        accelerator = Accelerator(mixed_precision=cfg.mixed_precision, **trackers)
    except ValueError as err:
        if "already been initialized" not in str(err) or AcceleratorState().num_processes > 1:
            raise InputError(str(err), field="mixed_precision") from None
        AcceleratorState._reset_state(reset_partial_state=True)  # a new run in the same process
        accelerator = Accelerator(mixed_precision=cfg.mixed_precision, **trackers)
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
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
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
        return load_tokenizer(cfg.student, field_name="student", **_tokenizer_options(cfg))
    except InputError:
        if cfg.teacher:
            return load_tokenizer(cfg.teacher, field_name="teacher", **_tokenizer_options(cfg))
        raise


def _tokenizer_options(cfg: TrainConfig) -> dict:
    options = model_options(cfg)
    options.pop("attn_implementation", None)
    return options
