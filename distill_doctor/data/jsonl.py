"""Shared JSONL reading: plain or gzip, UTF-8 checked, line numbers in every error, bounded lines.

Every loader in ``distill_doctor.data`` reads its file through :func:`iter_jsonl`, so all of
them report problems the same way (``InputError`` with file, line and field) and none of
them can be made to allocate without bound by one enormous line: a line longer than
``max_line_bytes`` is refused after reading at most that many bytes of it.

Work is bounded too: only regular files are opened (a FIFO would block forever), and a gzip
file may inflate to at most ``MAX_INFLATED_BYTES`` and, past its first ``RATIO_CHECK_AFTER``
bytes, at most ``MAX_GZIP_RATIO`` times its compressed size (real JSONL compresses 3-20x; a
2 MB file of blank lines inflating to 2 GiB is 1000x and took 13 minutes to skip through).
A lone UTF-16 surrogate (``"\\ud800"``: valid JSON, not valid text) is refused where it is read.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Literal, overload

from distill_doctor.errors import InputError
from distill_doctor.paths import check_input_file

MAX_LINE_BYTES = 16 * 1024 * 1024  # 16 MiB: far above any sane record, far below memory trouble
MAX_INFLATED_BYTES = 8 * 1024**3  # 8 GiB of JSONL is more than any evaluation or training file here
MAX_GZIP_RATIO = 200
RATIO_CHECK_AFTER = 1024 * 1024
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"


def open_binary(path: str | Path) -> BinaryIO:
    """Open a regular file for reading bytes, transparently gunzipping (by magic bytes, not by name)."""
    path = check_input_file(path)
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise InputError("file not found", path=path) from None
    except OSError as err:
        raise InputError(f"cannot read: {err.strerror or err}", path=path) from None
    if fh.peek(2)[:2] == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]
    return fh


def _check_inflation(fh: BinaryIO, inflated: int, path: str | Path) -> None:
    """Refuse a gzip stream that inflates past the caps (see the module docstring)."""
    if inflated > MAX_INFLATED_BYTES:
        raise InputError(
            f"gzip data inflates to over {MAX_INFLATED_BYTES:,} bytes (the limit); refusing to read on",
            path=path,
        )
    if inflated > RATIO_CHECK_AFTER:
        compressed = max(fh.fileobj.tell(), 1)  # type: ignore[attr-defined]
        if inflated > MAX_GZIP_RATIO * compressed:
            raise InputError(
                f"gzip data inflates more than {MAX_GZIP_RATIO}x ({compressed:,} bytes to over "
                f"{inflated:,}): a decompression bomb, or not a JSONL file",
                path=path,
            )


def iter_lines(path: str | Path, *, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line_number, raw_bytes)`` for each line (1-based), newline stripped.

    A line longer than ``max_line_bytes`` raises ``InputError`` naming it, after reading at
    most ``max_line_bytes + 1`` bytes of it; corrupt gzip data, and gzip data that inflates
    past the caps, raise ``InputError`` too.
    """
    fh = open_binary(path)
    gzipped = isinstance(fh, gzip.GzipFile)
    lineno = inflated = 0
    next_check = RATIO_CHECK_AFTER
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
            if gzipped:
                inflated += len(raw)
                if inflated > next_check:  # not on every line: telling the position costs time
                    _check_inflation(fh, inflated, path)
                    next_check = inflated + RATIO_CHECK_AFTER
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


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def load_json_text(
    text: str,
    *,
    path: str | Path,
    line: int | None = None,
    allow_nan: bool = True,
    invalid: str = "not valid JSON",
) -> Any:
    """``json.loads`` with every failure an ``InputError``: bad syntax, nesting too deep for the
    parser, an integer longer than Python converts (4,300 digits), and (``allow_nan=False``) the
    ``NaN`` / ``Infinity`` constants that Python's parser accepts but JSON does not."""
    try:
        if allow_nan:
            return json.loads(text)
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as err:
        err_line = err.lineno if line is None else line
        raise InputError(f"{invalid}: {err.msg} (column {err.colno})", path=path, line=err_line) from None
    except RecursionError:
        raise InputError(f"{invalid}: nested too deeply", path=path, line=line) from None
    except ValueError as err:  # an integer with too many digits, or a refused NaN/Infinity
        raise InputError(f"{invalid}: {err}", path=path, line=line) from None


def parse_json_line(text: str, *, path: str | Path, line: int) -> dict[str, Any]:
    """Parse one JSONL line into a dict; anything else raises ``InputError`` naming the line."""
    obj = load_json_text(text, path=path, line=line)
    if not isinstance(obj, dict):
        raise InputError(
            f"each line must be a JSON object ({{...}}), found {type(obj).__name__}", path=path, line=line
        )
    if _SURROGATE_ESCAPE.search(text):
        check_text(obj, path=path, line=line)
    return obj


def _surrogate_field(value: Any, where: str) -> str | None:
    """The dotted path of the first string (key or value) holding a lone surrogate, else ``None``."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return (where or "(the record)").encode("utf-8", "backslashreplace").decode("utf-8")
        return None
    items: Iterable[tuple[str, Any]]
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return None
    for key, sub in items:
        inner = f"{where}.{key}" if where else str(key)
        found = _surrogate_field(key, inner) or _surrogate_field(sub, inner)
        if found:
            return found
    return None


def check_text(obj: Any, *, path: str | Path, line: int | None) -> None:
    """Refuse strings holding a lone UTF-16 surrogate: they cannot be hashed, tokenized or written as
    UTF-8, so the record cannot be read with certainty."""
    where = _surrogate_field(obj, "")
    if where is not None:
        raise InputError(
            "holds a lone UTF-16 surrogate (an escape such as \\ud800 without its pair), which is "
            "not valid Unicode text; fix the text that produced it",
            path=path,
            line=line,
            field=where,
        )


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


@overload
def get_str(
    obj: dict[str, Any], name: str, *, path: str | Path, line: int, required: Literal[True] = True
) -> str: ...
@overload
def get_str(obj: dict[str, Any], name: str, *, path: str | Path, line: int, required: bool) -> str | None: ...
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
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"must be a finite number, found {value}", path=path, line=line, field=name)
    return value


def type_name(value: Any) -> str:
    """A short, human name of a JSON value's type ("a string", "null", ...) for error messages."""
    return _type_name(value)
