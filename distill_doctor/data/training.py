"""Load the training data the student was distilled on, as a memory-mapped ``datasets.Dataset``.

Rows (JSONL, or a parquet file with the same columns): ``{"prompt", "response"}`` or chat ``{"messages": [{"role", "content"}, ...]}``, with
optional ``id``, ``source`` and ``reference``. Columns of the result: ``prompt``,
``response``, ``id`` (given, or ``line-<N>``), ``source`` (str or None), ``reference``
(str or None; numbers are written as their JSON text). Ids need not be unique: several
samples of one prompt may share an id.

Chat rendering: the last message must be the assistant's and is the response; every
message before it becomes one ``<role>: <content>`` line of the prompt, joined by newlines
(``system: Be brief.\\nuser: 2+2?``). Simple and visible; the training side may re-render
with a tokenizer's chat template from its own reader.

Millions of rows never sit in Python lists: one streaming pass validates each line (line
numbers in every error) and writes Arrow record batches to a file in a cache folder
(``$DISTILL_DOCTOR_CACHE`` or ``~/.cache/distill-doctor/datasets``), keyed by the file's
path, size and modification time; ``datasets.Dataset.from_file`` memory-maps it. (This is
what ``Dataset.from_generator`` does, about four times faster, with errors kept as
``InputError``; a half-written cache file never replaces a good one.)
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distill_doctor.data.jsonl import get_id, get_str, get_str_or_number, iter_jsonl, type_name
from distill_doctor.errors import InputError

COLUMNS = ("prompt", "response", "id", "source", "reference")
_FORMAT = "train-arrow-v1"  # bump when the rows written change


def render_messages(messages: list[dict[str, str]]) -> str:
    """The prompt text of a chat: one ``role: content`` line per message."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def _from_messages(messages: Any, path: str, line: int) -> tuple[str, str]:
    if not isinstance(messages, list) or not messages:
        raise InputError(
            f"must be a non-empty list of messages, found {type_name(messages)}",
            path=path,
            line=line,
            field="messages",
        )
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InputError(
                f"must be an object, found {type_name(m)}", path=path, line=line, field=f"messages[{i}]"
            )
        for key in ("role", "content"):
            if not isinstance(m.get(key), str):
                raise InputError(
                    f"must be a string, found {type_name(m.get(key))}",
                    path=path,
                    line=line,
                    field=f"messages[{i}].{key}",
                )
    if messages[-1]["role"] != "assistant":
        raise InputError(
            f"the last message must be the assistant's (the response), found role {messages[-1]['role']!r}",
            path=path,
            line=line,
            field=f"messages[{len(messages) - 1}].role",
        )
    return render_messages(messages[:-1]), messages[-1]["content"]


def _reference(obj: dict[str, Any], path: str, line: int) -> str | None:
    ref = get_str_or_number(obj, "reference", path=path, line=line)
    if ref is None:
        return None
    return ref if isinstance(ref, str) else json.dumps(ref)


def parse_row(obj: dict[str, Any], path: str, line: int) -> dict[str, str | None]:
    """One validated training row with the five columns."""
    if "prompt" not in obj and "messages" in obj:
        prompt, response = _from_messages(obj["messages"], path, line)
    else:
        prompt = get_str(obj, "prompt", path=path, line=line)
        response = get_str(obj, "response", path=path, line=line)
    row_id = get_id(obj, path=path, line=line, required=False)
    return {
        "prompt": prompt,
        "response": response,
        "id": row_id if row_id is not None else f"line-{line}",
        "source": get_str(obj, "source", path=path, line=line, required=False),
        "reference": _reference(obj, path, line),
    }


def iter_training_rows(path: str | Path) -> Iterator[dict[str, str | None]]:
    """Stream validated rows (each an ``InputError`` with file/line/field when bad). A ``.parquet``
    file is read by record batch with the same columns; its "line" numbers are 1-based row numbers."""
    spath = str(path)
    if spath.endswith(".parquet"):
        yield from _iter_parquet(path)
        return
    for line, obj in iter_jsonl(path):
        yield parse_row(obj, spath, line)


def _iter_parquet(path: str | Path) -> Iterator[dict[str, str | None]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(str(path))
    except Exception as err:  # not a parquet file, or a damaged one
        raise InputError(f"cannot read as parquet: {err}", path=path) from None
    row = 0
    for batch in pf.iter_batches(batch_size=10_000):
        for obj in batch.to_pylist():
            row += 1
            yield parse_row({k: v for k, v in obj.items() if v is not None}, str(path), row)


def default_cache_dir() -> Path:
    env = os.environ.get("DISTILL_DOCTOR_CACHE")
    base = (
        Path(env)
        if env
        else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "distill-doctor"
    )
    return base / "datasets"


def _cache_key(path: Path, probe_bytes: int = 1 << 20) -> str:
    """Path, size, modification time and the first and last MiB: cheap, and a rewrite shows."""
    st = os.stat(path)
    digest = hashlib.sha256(f"{path}|{st.st_size}|{st.st_mtime_ns}|{_FORMAT}".encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(probe_bytes))
        if st.st_size > probe_bytes:
            fh.seek(max(probe_bytes, st.st_size - probe_bytes))
            digest.update(fh.read(probe_bytes))
    return digest.hexdigest()[:32]


def _write_arrow(path: Path, target: Path, schema, batch_rows: int) -> int:
    """Validate ``path`` row by row and write it to the Arrow stream file ``target``; returns rows."""
    import pyarrow as pa

    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    n = 0
    try:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            batch: dict[str, list] = {name: [] for name in COLUMNS}
            for row in iter_training_rows(path):
                for name in COLUMNS:
                    batch[name].append(row[name])
                n += 1
                if n % batch_rows == 0:
                    writer.write_batch(pa.RecordBatch.from_pydict(batch, schema=schema))
                    batch = {name: [] for name in COLUMNS}
            if batch["prompt"]:
                writer.write_batch(pa.RecordBatch.from_pydict(batch, schema=schema))
        if n == 0:
            raise InputError("no training rows: the file is empty", path=path)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return n


def load_training(path: str | Path, *, cache_dir: str | Path | None = None, batch_rows: int = 10_000):
    """Validate the training JSONL (streaming) and return it as a memory-mapped ``datasets.Dataset``.

    Columns: prompt, response, id, source, reference (see the module docstring). An empty
    file, a bad line or field raises ``InputError`` naming the file and line. One pass
    validates and writes Arrow record batches of ``batch_rows`` rows, so memory stays flat;
    a file already converted (same path, size, modification time) is served from the cache.
    """
    import datasets

    src = Path(path).resolve()
    if not src.is_file():
        raise InputError("file not found" if not src.exists() else "is not a file", path=path)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    try:
        target = cache / f"train-{_cache_key(src)}.arrow"
    except OSError as err:
        raise InputError(f"cannot read: {err.strerror or err}", path=path) from None
    features = datasets.Features({name: datasets.Value("string") for name in COLUMNS})
    if not target.exists():
        _write_arrow(src, target, features.arrow_schema, batch_rows)
    return datasets.Dataset.from_file(str(target))
