"""Training configuration: typed dataclasses, loadable from YAML, overridable with ``--set a.b=value``.

One :class:`TrainConfig` describes a whole run; the four methods (``sft``, ``logit_kd``, ``gkd``,
``skd``) read the parts they need. Every field carries its help text in ``metadata["help"]``
(``describe_fields()`` prints them). Mistakes raise :class:`~distill_doctor.errors.InputError`
naming the config file and the dotted field, e.g. ``cfg.yaml: field 'loss.beta': must be in [0, 1]``.

>>> cfg = TrainConfig(method="sft", student="s", data="d.jsonl", output_dir="out")
>>> cfg.loss.divergence, cfg.schedule
('forward_kl', 'cosine')
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distill_doctor.errors import InputError
from distill_doctor.losses.table import DIVERGENCES, topk_refusal
from distill_doctor.paths import check_input_file

METHODS = ("sft", "logit_kd", "gkd", "skd")
SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("no", "bf16", "fp16")
DTYPES = ("auto", "float32", "bfloat16", "float16")
TURNS = ("all", "last")
TRACKERS = ("none", "tensorboard", "wandb")


def _f(default: Any, help: str, **kw) -> Any:
    """A dataclass field with help text (mutable defaults go through ``default_factory``)."""
    if isinstance(default, type) and dataclasses.is_dataclass(default):
        return field(default_factory=default, metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise InputError(message, field=name)


@dataclass
class LossConfig:
    """How the student's distribution is pulled towards the target."""

    divergence: str = _f(
        "forward_kl", f"soft loss between teacher and student, one of {', '.join(DIVERGENCES)}"
    )
    beta: float = _f(0.5, "mixture weight of generalized JSD (0 = forward KL, 1 = reverse KL)")
    alpha: float = _f(0.1, "skew of skew_forward_kl / skew_reverse_kl, in [0, 1]")
    temperature: float = _f(1.0, "softmax temperature applied to both teacher and student logits in the loss")
    hard_weight: float = _f(
        0.0, "logit_kd: loss = hard_weight * CE(labels) + (1 - hard_weight) * soft divergence"
    )
    chunked: bool = _f(
        False, "sft/logit_kd: compute the loss chunk by chunk from hidden states (full logits never stored)"
    )
    chunk_size: int = _f(1024, "tokens per chunk of the chunked loss")

    def __post_init__(self) -> None:
        _check(
            self.divergence in DIVERGENCES,
            "loss.divergence",
            f"must be one of {', '.join(DIVERGENCES)}, got {self.divergence!r}",
        )
        _check(0.0 <= self.beta <= 1.0, "loss.beta", f"must be in [0, 1], got {self.beta}")
        _check(0.0 <= self.alpha <= 1.0, "loss.alpha", f"must be in [0, 1], got {self.alpha}")
        _check(self.temperature > 0, "loss.temperature", f"must be > 0, got {self.temperature}")
        _check(
            0.0 <= self.hard_weight <= 1.0, "loss.hard_weight", f"must be in [0, 1], got {self.hard_weight}"
        )
        _check(self.chunk_size >= 1, "loss.chunk_size", f"must be >= 1, got {self.chunk_size}")


@dataclass
class GKDConfig:
    """On-policy distillation (Agarwal et al. 2024; TRL GKDTrainer semantics)."""

    lmbda: float = _f(0.5, "probability that a micro-batch's completions are sampled from the student")
    beta: float = _f(
        0.5, "generalized JSD mixture weight used as the GKD loss (0 = forward KL, 1 = reverse KL)"
    )
    temperature: float = _f(0.9, "sampling temperature for on-policy (and seq_kd teacher) completions")
    max_new_tokens: int = _f(128, "longest sampled completion, in tokens")
    seq_kd: bool = _f(
        False, "off-policy batches use the teacher's own samples instead of the dataset's responses"
    )
    divergence: str = _f(
        "jsd",
        f"the GKD loss, one of {', '.join(DIVERGENCES)}: jsd uses gkd.beta; tv (total variation) "
        "targets speculative-decoding acceptance (DistillSpec, configs/distillspec.yaml)",
    )

    def __post_init__(self) -> None:
        _check(
            self.divergence in DIVERGENCES,
            "gkd.divergence",
            f"must be one of {', '.join(DIVERGENCES)}, got {self.divergence!r}",
        )
        _check(0.0 <= self.lmbda <= 1.0, "gkd.lmbda", f"must be in [0, 1], got {self.lmbda}")
        _check(0.0 <= self.beta <= 1.0, "gkd.beta", f"must be in [0, 1], got {self.beta}")
        _check(self.temperature >= 0, "gkd.temperature", f"must be >= 0 (0 = greedy), got {self.temperature}")
        _check(self.max_new_tokens >= 1, "gkd.max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")


@dataclass
class SKDConfig:
    """Speculative KD (Xu et al. 2024): student proposals outside the teacher's top-K are replaced."""

    top_k: int = _f(25, "a student proposal outside the teacher's top-K at its position is replaced")
    temperature: float = _f(1.0, "sampling temperature of student proposals and teacher replacements")
    max_new_tokens: int = _f(128, "longest generated completion, in tokens")

    def __post_init__(self) -> None:
        _check(self.top_k >= 1, "skd.top_k", f"must be >= 1, got {self.top_k}")
        _check(self.temperature >= 0, "skd.temperature", f"must be >= 0 (0 = greedy), got {self.temperature}")
        _check(self.max_new_tokens >= 1, "skd.max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")


@dataclass
class TrainConfig:
    """One distillation run."""

    method: str = _f("sft", f"training method, one of {', '.join(METHODS)}")
    student: str = _f("", "student model directory (from_pretrained), e.g. a randomly initialised tiny model")
    teacher: str | None = _f(None, "teacher model directory (logit_kd without topk_cache, gkd, skd)")
    data: str = _f(
        "",
        "training data: a .jsonl/.json/.parquet/.arrow/.csv file, a save_to_disk folder or a dataset name; "
        "rows in a TRL format (text, messages, prompt + completion/response, prompt alone)",
    )
    dataset_split: str = _f("train", "split of a saved dataset folder or dataset name to train on")
    dataset_config: str | None = _f(None, "configuration name passed to datasets.load_dataset")
    chat_template: str | None = _f(
        None,
        "conversations: null = the tokenizer's chat template (none: refused), a Jinja file replacing it, "
        "or 'plain' for 'role: content' text",
    )
    train_turns: str = _f(
        "all", f"conversations: which assistant turns carry loss, one of {', '.join(TURNS)}"
    )
    eval_data: str | None = _f(None, "held-out data (same sources and formats as data) for eval loss and KL")
    eval_split: str | None = _f(None, "held-out split of data (a saved dataset or dataset name), e.g. test")
    eval_steps: int = _f(0, "evaluate every N optimizer steps (0 = never); the best checkpoint goes to best/")
    torch_dtype: str = _f(
        "float32",
        f"dtype the student is loaded in, one of {', '.join(DTYPES)} (the teacher follows autocast)",
    )
    attn_implementation: str | None = _f(
        None, "attention kernel: eager, sdpa, flash_attention_2 (null = default)"
    )
    revision: str | None = _f(None, "model revision (branch, tag or commit) for hub names")
    trust_remote_code: bool = _f(False, "allow model code from the checkpoint (hub models with custom code)")
    gradient_checkpointing: bool = _f(False, "recompute activations in backward: less memory, more compute")
    disable_dropout: bool = _f(True, "set every dropout of the student (and teacher) to 0, as TRL does")
    use_peft: bool = _f(False, "train LoRA adapters (peft) on the student instead of all its weights")
    lora_r: int = _f(16, "LoRA rank")
    lora_alpha: int = _f(32, "LoRA scaling numerator (scale = lora_alpha / lora_r)")
    lora_dropout: float = _f(0.0, "dropout on the LoRA input")
    lora_target_modules: str = _f(
        "all-linear", "modules that get adapters: all-linear, or comma-separated names (q_proj,v_proj)"
    )
    report_to: str = _f("none", f"metrics trackers through accelerate, one of {', '.join(TRACKERS)}")
    output_dir: str = _f("", "where the final model, resolved config, metrics.jsonl and checkpoints go")
    seed: int = _f(0, "seed for initial RNG states, data order and sampling")
    steps: int = _f(100, "optimizer steps (ignored when epochs is set)")
    epochs: float | None = _f(
        None, "passes over the data; sets steps = ceil(epochs * examples / examples_per_step)"
    )
    batch_size: int = _f(8, "examples per micro-batch (per process)")
    grad_accum: int = _f(
        1, "micro-batches per optimizer step; the loss is normalised by the step's global token count"
    )
    lr: float = _f(5e-4, "peak learning rate of AdamW")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    warmup_steps: int = _f(0, "linear warm-up steps before the schedule")
    schedule: str = _f("cosine", f"learning-rate schedule after warm-up, one of {', '.join(SCHEDULES)}")
    max_len: int = _f(
        512, "longest training sequence (prompt + response) in tokens; longer ones are truncated"
    )
    packing: bool = _f(False, "sft: pack several examples into each max_len row (labels reset at boundaries)")
    max_grad_norm: float | None = _f(1.0, "clip the global gradient norm to this value (null = no clipping)")
    save_every: int = _f(
        0, "save a resumable checkpoint every N optimizer steps (0 = never, except at stop_at_step)"
    )
    keep_checkpoints: int = _f(2, "how many recent checkpoints to keep")
    resume: bool = _f(False, "continue from the latest checkpoint in output_dir")
    overwrite: bool = _f(False, "allow writing into an existing non-empty output_dir without resuming")
    stop_at_step: int | None = _f(
        None, "stop (after a checkpoint) once this step is done; schedule still follows steps"
    )
    mixed_precision: str = _f("no", f"autocast precision, one of {', '.join(PRECISIONS)}")
    quiet: bool = _f(False, "no progress bar")
    log_every: int = _f(1, "write a metrics line every N optimizer steps")
    topk_cache: str | None = _f(
        None, "logit_kd: directory of a top-k teacher cache to use instead of a live teacher"
    )
    # vLLM as the on-policy sampler of gkd and skd (TRL's names; docs/training.md, "Generation engines").
    use_vllm: bool = _f(
        False, "gkd/skd: sample on-policy completions with vLLM (.venv-vllm) instead of HF generate"
    )
    vllm_mode: str = _f(
        "colocate",
        "colocate (a child engine on a pipe; under several processes rank 0's child over HTTP) or server "
        "(an HTTP engine on vllm_server_host)",
    )
    vllm_server_host: str = _f("127.0.0.1", "server mode: host of the engine")
    vllm_server_port: int | None = _f(
        None, "server mode: port of an engine already running there (null = start one on a free port)"
    )
    vllm_server_timeout: float = _f(240.0, "seconds to wait for the engine to load the model and answer")
    vllm_gpu_memory_utilization: float = _f(0.3, "GPU memory fraction the engine may take (ignored on CPU)")
    vllm_sync_every: int = _f(1, "push the student's weights to the engine every N optimizer steps")
    # A teacher served by vLLM for gkd (docs/training.md, "A teacher served by vLLM").
    teacher_use_vllm: bool = _f(
        False,
        "gkd: score with the teacher on a vLLM engine (its top-k log-probs per position, teacher_top_k) "
        "instead of loading it in the trainer",
    )
    teacher_vllm_server_port: int | None = _f(
        None,
        "teacher_use_vllm: port of a teacher engine already running on vllm_server_host "
        "(null = start one, as vllm_mode says)",
    )
    teacher_top_k: int | None = _f(
        None,
        "gkd: train against the teacher's top-k log-probs and tail mass per position "
        "(null = its full distribution; required by teacher_use_vllm)",
    )
    loss: LossConfig = _f(LossConfig, "the soft/hard loss")
    gkd: GKDConfig = _f(GKDConfig, "gkd method settings")
    skd: SKDConfig = _f(SKDConfig, "skd method settings")

    def __post_init__(self) -> None:
        for name, cls in (("loss", LossConfig), ("gkd", GKDConfig), ("skd", SKDConfig)):
            if isinstance(getattr(self, name), dict):  # Python callers may pass plain mappings
                setattr(self, name, _build(cls, getattr(self, name), prefix=name + "."))
        _check(self.method in METHODS, "method", f"must be one of {', '.join(METHODS)}, got {self.method!r}")
        _check(bool(self.student), "student", "is required (a model directory)")
        _check(bool(self.data), "data", "is required (a training JSONL file)")
        _check(bool(self.output_dir), "output_dir", "is required")
        _check(0 <= self.seed < 2**32, "seed", f"must be in [0, 2**32), got {self.seed}")
        _check(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        _check(self.epochs is None or self.epochs > 0, "epochs", f"must be > 0, got {self.epochs}")
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.grad_accum >= 1, "grad_accum", f"must be >= 1, got {self.grad_accum}")
        _check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        _check(
            self.schedule in SCHEDULES,
            "schedule",
            f"must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}",
        )
        _check(self.max_len >= 2, "max_len", f"must be >= 2, got {self.max_len}")
        _check(self.max_grad_norm is None or self.max_grad_norm > 0, "max_grad_norm", "must be > 0 or null")
        _check(self.save_every >= 0, "save_every", f"must be >= 0, got {self.save_every}")
        _check(self.keep_checkpoints >= 1, "keep_checkpoints", f"must be >= 1, got {self.keep_checkpoints}")
        _check(self.stop_at_step is None or self.stop_at_step >= 1, "stop_at_step", "must be >= 1 or null")
        _check(
            self.mixed_precision in PRECISIONS,
            "mixed_precision",
            f"must be one of {', '.join(PRECISIONS)}, got {self.mixed_precision!r}",
        )
        _check(self.log_every >= 1, "log_every", f"must be >= 1, got {self.log_every}")
        _check(
            self.train_turns in TURNS,
            "train_turns",
            f"must be one of {', '.join(TURNS)}, got {self.train_turns!r}",
        )
        _check(
            self.torch_dtype in DTYPES,
            "torch_dtype",
            f"must be one of {', '.join(DTYPES)}, got {self.torch_dtype!r}",
        )
        _check(
            self.report_to in TRACKERS,
            "report_to",
            f"must be one of {', '.join(TRACKERS)}, got {self.report_to!r}",
        )
        _check(self.eval_steps >= 0, "eval_steps", f"must be >= 0, got {self.eval_steps}")
        _check(
            not (self.eval_data and self.eval_split), "eval_split", "set eval_data or eval_split, not both"
        )
        _check(self.lora_r >= 1, "lora_r", f"must be >= 1, got {self.lora_r}")
        _check(0.0 <= self.lora_dropout < 1.0, "lora_dropout", f"must be in [0, 1), got {self.lora_dropout}")
        if self.eval_steps:
            _check(bool(self.eval_data or self.eval_split), "eval_steps", "needs eval_data or eval_split")
        needs_teacher = self.method in ("gkd", "skd") or (self.method == "logit_kd" and not self.topk_cache)
        if needs_teacher:
            _check(
                bool(self.teacher),
                "teacher",
                f"is required by method {self.method!r}"
                + (" (or set topk_cache)" if self.method == "logit_kd" else ""),
            )
        if self.topk_cache:
            _check(self.method == "logit_kd", "topk_cache", "is only used by method 'logit_kd'")
            _check(
                not self.loss.chunked, "loss.chunked", "the chunked path needs a live teacher, not topk_cache"
            )
            loss = self.loss
            why = topk_refusal(
                loss.divergence,
                beta=loss.beta,
                alpha=loss.alpha,
                full_teacher="teacher: instead of topk_cache",
            )
            _check(why is None, "loss.divergence", f"with topk_cache: {why}")
        if self.packing:
            _check(self.method == "sft", "packing", "is only supported by method 'sft'")
        if self.loss.chunked:
            _check(
                self.method in ("sft", "logit_kd"),
                "loss.chunked",
                "is only supported by methods sft and logit_kd",
            )
        if self.use_vllm:
            self._check_vllm()
        if self.teacher_use_vllm or self.teacher_top_k is not None or self.teacher_vllm_server_port:
            self._check_topk_teacher()
        if self.method == "skd":
            _check(
                self.loss.hard_weight == 0.0,
                "loss.hard_weight",
                "skd trains on generated text: no hard labels",
            )

    def _check_vllm(self) -> None:
        _check(self.method in ("gkd", "skd"), "use_vllm", "is only used by methods gkd and skd")
        _check(
            self.vllm_mode in ("colocate", "server"),
            "vllm_mode",
            f"must be colocate or server, got {self.vllm_mode!r}",
        )
        _check(self.vllm_sync_every >= 1, "vllm_sync_every", f"must be >= 1, got {self.vllm_sync_every}")
        _check(self.vllm_server_timeout > 0, "vllm_server_timeout", "must be > 0")
        _check(
            0 < self.vllm_gpu_memory_utilization <= 1,
            "vllm_gpu_memory_utilization",
            f"must be in (0, 1], got {self.vllm_gpu_memory_utilization}",
        )
        port = self.vllm_server_port
        _check(
            port is None or 0 < port < 65536, "vllm_server_port", f"must be in 1..65535 or null, got {port}"
        )

    def _check_topk_teacher(self) -> None:
        """A top-k teacher (served by vLLM or in-process): gkd only, a divergence it can stand in for."""
        _check(
            self.teacher_use_vllm or self.teacher_vllm_server_port is None,
            "teacher_vllm_server_port",
            "is only used with teacher_use_vllm",
        )
        what = "teacher_use_vllm" if self.teacher_use_vllm else "teacher_top_k"
        _check(self.method == "gkd", what, "is only used by method gkd")
        k = self.teacher_top_k
        _check(
            k is not None,
            "teacher_top_k",
            "is required by teacher_use_vllm: the served teacher sends its top-k log-probs per position "
            "(8-64 are usual; above 20 the engine is started with a higher --max-logprobs)",
        )
        _check(k is not None and k >= 1, "teacher_top_k", f"must be >= 1, got {k}")
        why = topk_refusal(self.gkd.divergence, beta=self.gkd.beta, alpha=self.loss.alpha)
        _check(why is None, "gkd.divergence", f"with teacher_top_k: {why}")
        if not self.teacher_use_vllm:
            return
        _check(
            self.loss.temperature == 1.0,
            "loss.temperature",
            f"must be 1 with teacher_use_vllm, got {self.loss.temperature}: vLLM's prompt log-probs are "
            "the teacher's at temperature 1, and a tail mass cannot be re-tempered",
        )
        _check(
            self.vllm_mode in ("colocate", "server"),
            "vllm_mode",
            f"must be colocate or server, got {self.vllm_mode!r}",
        )
        _check(self.vllm_server_timeout > 0, "vllm_server_timeout", "must be > 0")
        port = self.teacher_vllm_server_port
        _check(
            port is None or 0 < port < 65536,
            "teacher_vllm_server_port",
            f"must be in 1..65535 or null, got {port}",
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ----------------------------------------------------------------------------- loading


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, annotation: Any, name: str) -> Any:
    """Check ``value`` against a field annotation (int -> float allowed); nested dataclasses recurse."""
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise InputError(
                f"must be a mapping of {annotation.__name__} fields, got {type(value).__name__}", field=name
            )
        return _build(annotation, value, prefix=name + ".")
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None:
        if type(None) in options:
            return None
        raise InputError("must not be null", field=name)
    if name == "mixed_precision" and value is False:  # YAML 1.1 reads an unquoted `no` as false
        return "no"
    for kind in options:
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return _finite(float(value), name)
        if kind is float and isinstance(value, str):  # YAML 1.1 reads 5e-3 (no dot) as a string
            try:
                return _finite(float(value), name)
            except (ValueError, OverflowError):
                pass
        if kind is str and isinstance(value, (str, Path)):
            return str(value)
    wanted = " or ".join("null" if k is type(None) else k.__name__ for k in options)
    raise InputError(f"must be {wanted}, got {type(value).__name__} {value!r}", field=name)


def _finite(value: float, name: str) -> float:
    """NaN passes every ``x > 0`` check and ``inf`` breaks ``ceil``: refuse both wherever a number is read."""
    if value != value or value in (float("inf"), float("-inf")):
        raise InputError(f"must be a finite number, got {value}", field=name)
    return value


def _build(cls: type, raw: dict, prefix: str = "") -> Any:
    hints = _field_types(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = [str(k) for k in raw if k not in known]  # in file order
    if unknown:
        raise InputError(_unknown_message(unknown, known, top=not prefix), field=prefix + unknown[0])
    kwargs = {key: _coerce(value, hints[key], prefix + key) for key, value in raw.items()}
    return cls(**kwargs)


def _unknown_message(unknown: list[str], known: set[str], *, top: bool) -> str:
    """``unknown field (did you mean 'lr'?); also unknown: 'foo' (did you mean 'seed'?)``."""
    candidates = sorted(known | (set(TRL_ALIASES) | set(METHOD_ALIASES) if top else set()))

    def one(name: str) -> str:
        close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
        return f" (did you mean {close[0]!r}?)" if close else ""

    text = "unknown field" + one(unknown[0])
    if len(unknown) > 1:
        text += "; also unknown: " + ", ".join(f"{name!r}{one(name)}" for name in unknown[1:])
    if not any(one(name) for name in unknown):
        text += f"; known fields: {', '.join(sorted(known))}"
    return text


# ----------------------------------------------------------------------------- TRL's names

# TRL / transformers TrainingArguments names accepted for the same concept (docs use ours).
TRL_ALIASES = {
    "model_name_or_path": "student",
    "teacher_model_name_or_path": "teacher",
    "dataset_name": "data",
    "dataset_train_split": "dataset_split",
    "dataset_test_split": "eval_split",
    "learning_rate": "lr",
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "max_steps": "steps",
    "num_train_epochs": "epochs",
    "lr_scheduler_type": "schedule",
    "max_length": "max_len",
    "max_seq_length": "max_len",
    "save_steps": "save_every",
    "save_total_limit": "keep_checkpoints",
    "logging_steps": "log_every",
    "dtype": "torch_dtype",
    "model_revision": "revision",
    "chat_template_path": "chat_template",
    "bf16": "mixed_precision",
    "fp16": "mixed_precision",
}
# Names whose home depends on the method (TRL's GKDConfig puts them at the top level).
METHOD_ALIASES = {
    "lmbda": {"": "gkd.lmbda"},
    "seq_kd": {"": "gkd.seq_kd"},
    "beta": {"gkd": "gkd.beta", "": "loss.beta"},
    "temperature": {"gkd": "gkd.temperature", "skd": "skd.temperature", "": "loss.temperature"},
    "max_new_tokens": {"gkd": "gkd.max_new_tokens", "skd": "skd.max_new_tokens", "": "gkd.max_new_tokens"},
}


def alias_target(key: str, method: str | None) -> str | None:
    """The dotted field a TRL name stands for (None when ``key`` is not an alias)."""
    if key in TRL_ALIASES:
        return TRL_ALIASES[key]
    if key in METHOD_ALIASES:
        homes = METHOD_ALIASES[key]
        return homes.get(method or "", homes[""])
    return None


def _alias_value(key: str, value: Any) -> Any:
    if key in ("bf16", "fp16"):
        if not isinstance(value, bool):
            raise InputError(f"must be true or false, got {value!r}", field=key)
        return key if value else None
    if key == "lr_scheduler_type" and value == "constant_with_warmup":
        return "constant"
    return value


def rename_aliases(raw: dict, method: str | None = None) -> dict:
    """Replace TRL's names by ours (``learning_rate`` -> ``lr``, ``lmbda`` -> ``gkd.lmbda``, ``bf16: true`` ->
    ``mixed_precision: bf16``); a concept set under two names is an error."""
    method = raw.get("method", method)
    out = {
        k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items() if alias_target(k, method) is None
    }
    for key, value in raw.items():
        target = alias_target(key, method)
        if target is None:
            continue
        value = _alias_value(key, value)
        if value is None and key in ("bf16", "fp16"):
            continue
        *groups, last = target.split(".")
        node = out
        for group in groups:
            child = node.get(group)
            node[group] = child = dict(child) if isinstance(child, dict) else {}
            node = child
        if last in node:
            raise InputError(f"is set twice, also as {target!r} (one name per setting)", field=key)
        node[last] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"loss.beta=0.3"`` -> ``(["loss", "beta"], 0.3)``; the value is parsed as YAML (``null``, ``true``, numbers)."""
    if "=" not in text:
        raise InputError(f"--set expects key=value, got {text!r}")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise InputError(f"--set expects a dotted key such as loss.beta, got {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, RecursionError, ValueError):  # e.g. 3,000 nested '[' or a bad date
        value = raw
    return key.split("."), value


def apply_overrides(raw: dict, overrides: list[str], method: str | None = None) -> dict:
    """Return a copy of the raw config mapping with every ``a.b=value`` override applied (TRL names too)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for text in overrides:
        parts, value = parse_override(text)
        target = alias_target(parts[0], raw.get("method", method)) if len(parts) == 1 else None
        if target is not None:
            value = _alias_value(parts[0], value)
            if value is None and parts[0] in ("bf16", "fp16"):
                continue
            parts = target.split(".")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = {}
            if not isinstance(child, dict):
                raise InputError(f"cannot set a sub-field of a non-mapping (from --set {text})", field=part)
            node[part] = child = dict(child)
            node = child
        node[parts[-1]] = value
    return out


def config_from_dict(raw: dict, *, source: str | Path | None = None) -> TrainConfig:
    """Build and validate a :class:`TrainConfig`; errors name ``source`` and the dotted field."""
    try:
        return _build(TrainConfig, rename_aliases(raw))
    except InputError as err:
        raise InputError(err.message, path=source, field=err.field) from None


def load_config(
    path: str | Path | None,
    overrides: list[str] | tuple[str, ...] = (),
    **fields: Any,
) -> TrainConfig:
    """Read a YAML config (or start empty when ``path`` is None), apply ``--set`` overrides, then ``fields``.

    ``fields`` are top-level values from dedicated CLI flags (``method``, ``seed``, ``quiet``,
    ``output_dir``, ``resume``); ``None`` values are ignored. Relative ``student``, ``teacher``,
    ``data``, ``topk_cache`` paths in the file resolve against the file's folder.
    """
    raw: dict = {}
    if path is not None:
        path = Path(path)
        try:
            check_input_file(path)
        except InputError as err:
            raise InputError(f"cannot read config: {err.message}", path=path) from None
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise InputError(f"cannot read config: {err.strerror}", path=path) from None
        except UnicodeDecodeError as err:
            line = text_line_of_byte(path, err.start)
            raise InputError("not valid UTF-8; save the config as UTF-8", path=path, line=line) from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            raise InputError(
                f"not valid YAML: {getattr(err, 'problem', err)}", path=path, line=line
            ) from None
        except RecursionError:
            raise InputError("not valid YAML here: nested too deeply", path=path) from None
        except ValueError as err:  # a date YAML cannot build (2024-13-45), a too-long integer
            raise InputError(f"not valid YAML: {err}", path=path) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise InputError("a config file must be a YAML mapping of fields", path=path)
        try:
            raw = _resolve_paths(rename_aliases(loaded, fields.get("method")), path.parent)
        except InputError as err:
            raise InputError(
                err.message, path=path, line=_line_of(path, err.field), field=err.field
            ) from None
    source = path if path is not None else "--set"
    try:
        raw = apply_overrides(raw, list(overrides), fields.get("method"))
    except InputError as err:
        raise InputError(err.message, path=source, field=err.field) from None
    method = fields.get("method")
    if method is not None and raw.get("method") not in (None, method):
        # `train sft --config gkd.yaml` must not silently run sft with a gkd config.
        raise InputError(
            f"says method {raw['method']!r} but the command is `train {method}`; "
            "run that method or change the config",
            path=source,
            field="method",
        )
    raw.update({k: v for k, v in fields.items() if v is not None})
    try:
        return config_from_dict(raw, source=source)
    except InputError as err:
        overridden = {".".join(parse_override(t)[0]) for t in overrides} | set(fields)
        if err.field in overridden:
            err = InputError(err.message + " (set on the command line)", path=source, field=err.field)
        elif path is not None and err.field and err.line is None:
            err = InputError(err.message, path=path, line=_line_of(path, err.field), field=err.field)
        raise err from None


def text_line_of_byte(path: Path, offset: int) -> int | None:
    """1-based line holding byte ``offset`` of the file (for UTF-8 errors)."""
    try:
        return path.read_bytes()[:offset].count(b"\n") + 1
    except OSError:
        return None


def _line_of(path: Path, dotted: str | None) -> int | None:
    """1-based line of ``dotted`` (e.g. ``loss.beta``) in the YAML file, or None when it is not there."""
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, RecursionError, ValueError):
        return None
    if not dotted:
        return None
    if "." not in dotted:  # written under a TRL name?
        names = [dotted] + [a for a in (*TRL_ALIASES, *METHOD_ALIASES) if alias_target(a, None) == dotted]
    else:
        names = [dotted] + [a for a in METHOD_ALIASES if dotted in METHOD_ALIASES[a].values()]
    for name in names:
        found = _line_of_key(node, name)
        if found is not None:
            return found
    return None


def _line_of_key(node, dotted: str) -> int | None:
    line = None
    for part in dotted.split("."):
        if not isinstance(node, yaml.MappingNode):
            return line
        for key, value in node.value:
            if key.value == part:
                line, node = key.start_mark.line + 1, value
                break
        else:
            return line
    return line


PATH_FIELDS = ("student", "teacher", "data", "topk_cache", "eval_data", "chat_template")


def _resolve_paths(raw: dict, base: Path) -> dict:
    out = dict(raw)
    for key in PATH_FIELDS:
        value = out.get(key)
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            candidate = base / value
            # Only rewrite when it points at something there: a path relative to the working
            # directory, or a hub-style name such as "org/model", stays as written.
            if candidate.exists():
                out[key] = str(candidate)
    return out


def describe_fields(cls: type = TrainConfig, prefix: str = "") -> list[tuple[str, str, Any]]:
    """``(dotted name, help, default)`` for every field, nested groups flattened (for docs and --help)."""
    rows: list[tuple[str, str, Any]] = []
    for f in dataclasses.fields(cls):
        hint = _field_types(cls)[f.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            rows.extend(describe_fields(hint, prefix + f.name + "."))
        else:
            rows.append((prefix + f.name, f.metadata.get("help", ""), f.default))
    return rows
