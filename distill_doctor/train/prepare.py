"""From a config to token rows: read the data, check it suits the method, tokenise; and ``--dry-run``.

``dry_run(cfg)`` loads the student, its tokenizer and the data exactly as a run does (the
teacher's tokenizer too, compared with the student's) and returns the first training example as
``{"input_text": ..., "trained_text": ...}``: the decoded tokens of the example, and the decoded
tokens that carry loss, in order. It is how a user checks masking before spending GPU hours.
"""

from __future__ import annotations

from dataclasses import dataclass

from distill_doctor.errors import InputError
from distill_doctor.train.config import TrainConfig
from distill_doctor.train.data import IGNORE_INDEX, TokenizedExample, read_examples, tokenize_all
from distill_doctor.train.sources import Example, RowFormat


@dataclass(frozen=True)
class PreparedData:
    examples: list[Example]
    rows: list[TokenizedExample]
    conversational: bool  # rendered through a chat template (on-policy sampling stops at its end of turn)


def check_formats(examples: list[Example], cfg: TrainConfig, source: str) -> None:
    """Refuse data a method cannot learn from (e.g. prompt-only rows for sft), naming the format."""
    formats = {ex.format for ex in examples}
    no_completion = [f for f in formats if not f.has_completions]
    needs_completions = cfg.method in ("sft", "logit_kd") or (
        cfg.method == "gkd" and cfg.gkd.lmbda < 1.0 and not cfg.gkd.seq_kd
    )
    if no_completion and needs_completions:
        why = (
            ""
            if cfg.method != "gkd"
            else " (gkd with lmbda < 1 and seq_kd: false trains on dataset completions)"
        )
        raise InputError(
            f"is {no_completion[0].value}: method {cfg.method} needs completions{why}",
            path=source,
            field="data",
        )
    if RowFormat.TEXT in formats and cfg.method in ("gkd", "skd"):
        raise InputError(
            f"is {RowFormat.TEXT.value}: method {cfg.method} samples completions and needs prompts",
            path=source,
            field="data",
        )


def prepare_data(
    cfg: TrainConfig, tokenizer, *, data: str | None = None, split: str | None = None
) -> PreparedData:
    """Examples and token rows of ``data`` (default: the config's training data and split)."""
    from pathlib import Path

    from distill_doctor.train.chat import apply_template_choice

    source = data or cfg.data
    split = split or cfg.dataset_split
    if Path(source).expanduser().is_file() and split != "train":
        # A single file has one split: reading it for another would silently evaluate on training rows.
        raise InputError(
            f"{source} is a single file (one split); splits other than train exist only in saved datasets "
            "and dataset names: use eval_data for a held-out file",
            field="eval_split" if split == cfg.eval_split else "dataset_split",
        )
    examples = read_examples(source, split=split, config_name=cfg.dataset_config)
    check_formats(examples, cfg, source)
    plain = apply_template_choice(tokenizer, cfg.chat_template)
    try:
        rows = tokenize_all(
            tokenizer, examples, cfg.max_len, source=source, plain_chat=plain, turns=cfg.train_turns
        )
    except InputError as err:
        if err.path is not None:
            raise
        raise InputError(err.message, path=source, field=err.field) from None
    conversational = not plain and any(ex.messages is not None for ex in examples)
    return PreparedData(examples, rows, conversational)


def eval_source(cfg: TrainConfig) -> tuple[str, str] | None:
    """``(data, split)`` of the held-out set, or None."""
    if cfg.eval_data:
        return cfg.eval_data, cfg.dataset_split
    if cfg.eval_split:
        return cfg.data, cfg.eval_split
    return None


def describe_row(tokenizer, row: TokenizedExample) -> dict:
    """The decoded example and its loss-carrying tokens, in order (special tokens kept)."""
    trained = [t for t in row.labels if t != IGNORE_INDEX]
    return {
        "input_text": tokenizer.decode(row.input_ids, skip_special_tokens=False),
        "trained_text": tokenizer.decode(trained, skip_special_tokens=False),
    }


def dry_run(cfg: TrainConfig) -> dict:
    """Load student, tokenizer and data as a run would; return the first example (nothing is trained)."""
    from distill_doctor.train.build import (
        hf_progress_bars,
        load_model,
        load_tokenizer,
        model_options,
        student_dtype,
        student_tokenizer,
    )

    with hf_progress_bars(False):
        load_model(cfg.student, field_name="student", dtype=student_dtype(cfg), **model_options(cfg))
        tokenizer = student_tokenizer(cfg)
    if cfg.teacher:
        teacher_tok = load_tokenizer(cfg.teacher, field_name="teacher")
        if teacher_tok.get_vocab() != tokenizer.get_vocab():
            raise InputError(
                "teacher and student tokenizers differ; token-level distillation needs one shared vocabulary",
                field="teacher",
            )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    prepared = prepare_data(cfg, tokenizer)
    return describe_row(tokenizer, prepared.rows[0])
