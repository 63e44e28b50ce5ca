"""Shared JSONL reading: plain or gzip, UTF-8 checked, line numbers in every error, bounded lines.

Every loader in ``distill_doctor.data`` reads its file through :func:`iter_jsonl`, so all of
them report problems the same way (``InputError`` with file, line and field) and none of
them can be made to allocate without bound by one enormous line: a line longer than
``max_line_bytes`` is refused after reading at most that many bytes of it.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from distill_doctor.errors import InputError

MAX_LINE_BYTES = 16 * 1024 * 1024  # 16 MiB: far above any sane record, far below memory trouble
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"


def open_binary(path: str | Path) -> BinaryIO:
    """Open ``path`` for reading bytes, transparently gunzipping (by magic bytes, not by name)."""
    path = Path(path)
    try:
        if path.is_dir():
            raise InputError("is a folder, expected a file", path=path)
        fh = open(path, "rb")
    except FileNotFoundError:
        raise InputError("file not found", path=path) from None
    except OSError as err:
        raise InputError(f"cannot read: {err.strerror or err}", path=path) from None
    if fh.peek(2)[:2] == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]
    return fh


def iter_lines(path: str | Path, *, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line_number, raw_bytes)`` for each line (1-based), newline stripped.

    A line longer than ``max_line_bytes`` raises ``InputError`` naming it, after reading at
    most ``max_line_bytes + 1`` bytes of it; corrupt gzip data raises ``InputError`` too.
    """
    fh = open_binary(path)
    lineno = 0
    with fh:
        while True:
            try:
                raw = fh.readline(max_line_bytes + 1)
            except (OSError, EOFError, zlib.error) as err:
                raise InputError(
                    f"corrupt or truncated gzip data after line {lineno}: {err}", path=path
                ) from None
            if not raw:
                return
            lineno += 1
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                raise InputError(
                    f"line is longer than {max_line_bytes:,} bytes (the limit for one record); "
                    "is this really a JSONL file?",
                    path=path,
                    line=lineno,
                )
            if lineno == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            yield lineno, raw.rstrip(b"\r\n")


def decode_line(raw: bytes, *, path: str | Path, line: int) -> str:
    """UTF-8 decode one line; a bad byte raises ``InputError`` naming the line and byte column."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(
            f"not valid UTF-8 (byte {err.start + 1} of the line is {raw[err.start : err.start + 1]!r}); "
            "save the file as UTF-8",
            path=path,
            line=line,
        ) from None


def parse_json_line(text: str, *, path: str | Path, line: int) -> dict[str, Any]:
    """Parse one JSONL line into a dict; anything else raises ``InputError`` naming the line."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"not valid JSON: {err.msg} (column {err.colno})", path=path, line=line) from None
    except RecursionError:
        raise InputError("not valid JSON here: nested too deeply", path=path, line=line) from None
    except ValueError as err:  # e.g. an integer with more digits than Python will convert
        raise InputError(f"not valid JSON here: {err}", path=path, line=line) from None
    if not isinstance(obj, dict):
        raise InputError(
            f"each line must be a JSON object ({{...}}), found {type(obj).__name__}", path=path, line=line
        )
    return obj


def iter_jsonl(
    path: str | Path, *, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for every non-blank line of a JSONL or JSONL.gz file.

    Blank (whitespace-only) lines are skipped. Errors: missing file, corrupt gzip, a line
    over ``max_line_bytes``, bad UTF-8, bad JSON, or a line that is not a JSON object; each
    one an ``InputError`` that names the file and the line.
    """
    for lineno, raw in iter_lines(path, max_line_bytes=max_line_bytes):
        if not raw.strip():
            continue
        text = decode_line(raw, path=path, line=lineno)
        if not text.strip():
            continue
        yield lineno, parse_json_line(text, path=path, line=lineno)


# ---- field helpers shared by the loaders -------------------------------------------------


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def get_str(
    obj: dict[str, Any], name: str, *, path: str | Path, line: int, required: bool = True
) -> str | None:
    """``obj[name]`` as a string; missing/null is ``None`` (an error when ``required``)."""
    value = obj.get(name)
    if value is None:
        if required:
            raise InputError("required, missing", path=path, line=line, field=name)
        return None
    if not isinstance(value, str):
        raise InputError(f"must be a string, found {_type_name(value)}", path=path, line=line, field=name)
    return value


def get_id(obj: dict[str, Any], name: str = "id", *, path: str | Path, line: int, required: bool = True):
    """An id: a string, or an integer (used as its decimal string). Missing/null -> ``None``."""
    value = obj.get(name)
    if value is None:
        if required:
            raise InputError("required, missing", path=path, line=line, field=name)
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(f"must be a string, found {_type_name(value)}", path=path, line=line, field=name)
    text = str(value)
    if not text.strip():
        raise InputError("must not be empty", path=path, line=line, field=name)
    return text


def get_str_or_number(
    obj: dict[str, Any], name: str, *, path: str | Path, line: int
) -> str | int | float | None:
    """An optional ``obj[name]`` that is a string or a number (not a boolean); missing/null -> ``None``."""
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InputError(
            f"must be a string or a number, found {_type_name(value)}", path=path, line=line, field=name
        )
    return value


def type_name(value: Any) -> str:
    """A short, human name of a JSON value's type ("a string", "null", ...) for error messages."""
    return _type_name(value)
