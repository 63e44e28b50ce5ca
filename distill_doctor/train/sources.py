"""Training data the way Hugging Face users have it: TRL's row formats from any ``datasets`` source.

Sources (``data:``, also spelled ``dataset_name``):

- a JSONL file (``.jsonl``, ``.jsonl.gz``, any other suffix; streamed, errors name the line),
- a JSON, parquet, Arrow or CSV file (read with ``datasets``; errors name the row, 1-based),
- a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``,
- any other folder or a dataset name, through ``datasets.load_dataset(name, dataset_config,
  split=dataset_split)`` (offline where ``HF_DATASETS_OFFLINE=1``).

Row formats (TRL's names), decided by each row's fields (when the first row has a completion, every\nrow needs one):

=========================== ============================================== ======================
format                      fields                                         trained tokens
=========================== ============================================== ======================
language modelling          ``text``                                       all of them (+ EOS)
conversational              ``messages`` (last one the assistant's)        assistant turns
prompt/completion           ``prompt`` + ``completion`` (or ``response``)  the completion
conversational p/c          ``prompt``, ``completion`` as message lists    the completion turns
prompt-only                 ``prompt`` (a string or a message list)        none (on-policy only)
=========================== ============================================== ======================

``id`` is optional everywhere (``line-<N>`` / ``row-<N>`` otherwise); other columns are ignored.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill_doctor.errors import InputError

Message = dict  # {"role": str, "content": str}


class RowFormat(enum.Enum):
    TEXT = "language modelling (text)"
    MESSAGES = "conversational (messages)"
    PROMPT_COMPLETION = "prompt/completion"
    CHAT_PROMPT_COMPLETION = "conversational prompt/completion"
    PROMPT_ONLY = "prompt-only"
    CHAT_PROMPT_ONLY = "conversational prompt-only"

    @property
    def conversational(self) -> bool:
        return self in (RowFormat.MESSAGES, RowFormat.CHAT_PROMPT_COMPLETION, RowFormat.CHAT_PROMPT_ONLY)

    @property
    def has_completions(self) -> bool:
        return self not in (RowFormat.PROMPT_ONLY, RowFormat.CHAT_PROMPT_ONLY)


@dataclass(frozen=True)
class Example:
    """One training row.

    ``prompt``/``response`` always hold plain text (a conversation flattened to ``role: content``
    lines, for plain-text rendering and reports); ``messages`` holds a conversation as written,
    whose assistant turns from message ``train_from`` on are trained.
    """

    id: str
    prompt: str
    response: str
    messages: tuple[Message, ...] | None = None
    train_from: int = 0
    format: RowFormat = RowFormat.PROMPT_COMPLETION


@dataclass(frozen=True)
class Where:
    """Where a row came from, for error messages: JSONL rows by line, other sources by row."""

    path: str
    number: int
    is_line: bool

    def error(self, message: str, field: str | None = None) -> InputError:
        if self.is_line:
            return InputError(message, path=self.path, line=self.number, field=field)
        return InputError(f"row {self.number}: {message}", path=self.path, field=field)

    @property
    def default_id(self) -> str:
        return f"{'line' if self.is_line else 'row'}-{self.number}"


# ----------------------------------------------------------------------------- reading rows


def iter_source(spec: str | Path, *, split: str = "train", config_name: str | None = None):
    """Yield ``(Where, row dict)`` for every row of a file, a saved dataset, or a dataset name."""
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() not in _BUILDERS:  # .jsonl, .jsonl.gz, anything else
        from distill_doctor.data.jsonl import iter_jsonl

        for line, obj in iter_jsonl(path):
            yield Where(str(spec), line, True), obj
        return
    dataset = _load_dataset(spec, path, split=split, config_name=config_name)
    for i, obj in enumerate(dataset):
        yield Where(str(spec), i + 1, False), obj


_BUILDERS = {".json": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": None}


def _load_dataset(spec, path: Path, *, split: str, config_name: str | None):
    import datasets

    datasets.disable_progress_bars()
    try:
        if path.is_file():
            suffix = path.suffix.lower()
            if suffix == ".arrow":
                return datasets.Dataset.from_file(str(path))
            if suffix == ".csv":  # every cell is text: no guessed numbers, an empty cell stays ""
                import pandas as pd

                frame = pd.read_csv(path, dtype=str, keep_default_na=False)
                return datasets.Dataset.from_pandas(frame, preserve_index=False)
            return datasets.load_dataset(_BUILDERS[suffix], data_files=str(path), split="train")
        if path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
            loaded = datasets.load_from_disk(str(path))
        else:
            loaded = datasets.load_dataset(str(spec), config_name, split=split)
    except InputError:
        raise
    except Exception as err:  # datasets raises many types (ArrowInvalid, FileNotFoundError, ValueError ...)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"cannot read the training data: {first}", path=spec, field="data") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise InputError(
                f"has no split {split!r} (splits: {', '.join(loaded)}); set dataset_split",
                path=spec,
                field="dataset_split",
            )
        loaded = loaded[split]
    return loaded


# ----------------------------------------------------------------------------- row formats


def detect_format(row: dict, where: Where) -> RowFormat:
    """The TRL format a row's fields say; the first row decides for the whole dataset."""
    if row.get("messages") is not None:
        return RowFormat.MESSAGES
    if row.get("text") is not None and row.get("prompt") is None:
        return RowFormat.TEXT
    if row.get("prompt") is None:
        raise where.error(
            "no training fields: expected 'text', 'messages', 'prompt' + 'completion' (or 'response'), "
            f"or 'prompt' alone; found {', '.join(sorted(map(str, row))) or 'nothing'}"
        )
    chat = isinstance(row["prompt"], list)
    if _completion_key(row) is None:
        return RowFormat.CHAT_PROMPT_ONLY if chat else RowFormat.PROMPT_ONLY
    return RowFormat.CHAT_PROMPT_COMPLETION if chat else RowFormat.PROMPT_COMPLETION


def _completion_key(row: dict) -> str | None:
    for key in ("completion", "response"):
        if row.get(key) is not None:
            return key
    return None


def _type_name(value: Any) -> str:
    from distill_doctor.data.jsonl import type_name

    return type_name(value)


def _string(row: dict, key: str, where: Where) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise where.error(f"must be a string, found {_type_name(value)}", field=key)
    return value


def _messages(value: Any, key: str, where: Where) -> tuple[Message, ...]:
    if not isinstance(value, list) or not value:
        raise where.error(f"must be a non-empty list of messages, found {_type_name(value)}", field=key)
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise where.error(f"must be an object, found {_type_name(m)}", field=f"{key}[{i}]")
        for part in ("role", "content"):
            if not isinstance(m.get(part), str):
                raise where.error(
                    f"must be a string, found {_type_name(m.get(part))}", field=f"{key}[{i}].{part}"
                )
        out.append({"role": m["role"], "content": m["content"]})
    return tuple(out)


def _row_id(row: dict, where: Where) -> str:
    value = row.get("id")
    if value is None:
        return where.default_id
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise where.error(f"must be a string or an integer, found {_type_name(value)}", field="id")
    return str(value)


def flatten(messages: tuple[Message, ...]) -> str:
    """Plain text of a conversation: one ``role: content`` line per message."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def to_example(row: dict, fmt: RowFormat, where: Where) -> Example:
    """Validate one row against the dataset's format and return it as an :class:`Example`."""
    row_id = _row_id(row, where)
    if fmt is RowFormat.TEXT:
        return Example(row_id, "", _string(row, "text", where), format=fmt)
    if fmt is RowFormat.MESSAGES:
        messages = _messages(row.get("messages"), "messages", where)
        last = len(messages) - 1
        if messages[last]["role"] != "assistant":
            raise where.error(
                "the last message must be the assistant's (the response), found role "
                f"{messages[last]['role']!r}",
                field=f"messages[{last}].role",
            )
        return Example(row_id, flatten(messages[:-1]), messages[-1]["content"], messages, 0, fmt)
    if fmt in (RowFormat.PROMPT_COMPLETION, RowFormat.PROMPT_ONLY):
        prompt = _string(row, "prompt", where)
        if fmt is RowFormat.PROMPT_ONLY:
            return Example(row_id, prompt, "", format=fmt)
        key = _completion_key(row) or "completion"
        return Example(row_id, prompt, _string(row, key, where), format=fmt)
    prompt_msgs = _messages(row.get("prompt"), "prompt", where)
    if fmt is RowFormat.CHAT_PROMPT_ONLY:
        return Example(row_id, flatten(prompt_msgs), "", prompt_msgs, len(prompt_msgs), fmt)
    key = _completion_key(row) or "completion"
    completion = _messages(row.get(key), key, where)
    if not any(m["role"] == "assistant" for m in completion):
        raise where.error("holds no assistant message to train on", field=key)
    messages = prompt_msgs + completion
    return Example(row_id, flatten(prompt_msgs), flatten(completion), messages, len(prompt_msgs), fmt)


def iter_examples(
    spec: str | Path, *, split: str = "train", config_name: str | None = None
) -> Iterator[Example]:
    """Validated examples of a source. Formats may mix (plain and chat rows), but when the first row
    has a completion every row needs one: a row without it is an error, not a prompt-only row."""
    first: tuple[RowFormat, str] | None = None
    for where, row in iter_source(spec, split=split, config_name=config_name):
        fmt = detect_format(row, where)
        if first is None:
            first = (fmt, _completion_key(row) or "completion")
        elif first[0].has_completions and not fmt.has_completions:
            raise where.error(
                "is missing: the data's first row has a completion, so every row needs one", field=first[1]
            )
        yield to_example(row, fmt, where)
    if first is None:
        raise InputError("no training rows: the data is empty", path=spec, field="data")
