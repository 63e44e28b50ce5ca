"""Load a provenance manifest (SPEC "Provenance manifest"), YAML or JSON, with known fields type-checked.

Missing fields are not an error here (the provenance probe reports them); fields the SPEC
does not name are kept as they are. A known field of the wrong type is an ``InputError``
naming its path (``teacher.license``, ``prompts[2].count``). ``null`` counts as missing.
Dates that YAML parses (``2024-05-01``) come back as ISO strings, so the manifest can be
written into report.json unchanged.

Bounded: the file is at most ``MAX_MANIFEST_BYTES``, and once YAML aliases are expanded at most
``MAX_EXPANDED_BYTES`` (string bytes plus a little per node: 20 aliases of one 9 MiB string
would otherwise copy 180 MiB into every report). NaN and infinities are refused wherever they
appear (YAML ``.nan``/``.inf``, JSON ``NaN``/``Infinity``): no field means anything by them.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from pathlib import Path
from typing import Any

from distill_doctor.data.jsonl import check_text, load_json_text, type_name
from distill_doctor.errors import InputError
from distill_doctor.paths import check_input_file

MAX_MANIFEST_BYTES = 10 * 1024 * 1024
MAX_EXPANDED_BYTES = 16 * 1024 * 1024  # YAML aliases can make a small file a huge tree
_NODE_BYTES = 16  # what one node costs the budget besides its string bytes
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")

# field -> checker name; "str" accepts numbers too (YAML reads `revision: 1234` as an int)
_MODEL = {"name": "str", "revision": "str", "license": "str"}
_SCHEMA: dict[str, Any] = {
    "teacher": _MODEL,
    "student_base": _MODEL,
    "prompts": [{"source": "str", "license": "str", "count": "count"}],
    "generation": {
        "temperature": "nonneg",
        "top_p": "prob",
        "max_new_tokens": "posint",
        "samples_per_prompt": "posint",
        "seed": "int",
    },
    "filters": [{"name": "str", "rule": "str", "kept": "count", "dropped": "count"}],
    "decontamination": {
        "benchmarks": ["str"],
        "method": "str",
        "ngram": "count",  # 0: whole-text (exact) matching, no n-grams
        "threshold": "number",
        "removed": "count",
    },
    "dataset_sha256": "sha256",
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


_SCALARS = {
    "str": (lambda v: isinstance(v, str) or _is_number(v), "a string"),
    "int": (_is_int, "an integer"),
    "count": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "posint": (lambda v: _is_int(v) and v > 0, "an integer > 0"),
    "number": (_is_number, "a number"),
    "nonneg": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "prob": (lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "sha256": (lambda v: isinstance(v, str) and bool(_SHA256.match(v)), "a 64-digit hex sha256"),
}


def _check(value: Any, schema: Any, where: str, path: str) -> Any:
    if value is None:
        return None
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise InputError(f"must be a mapping, found {type_name(value)}", path=path, field=where)
        out = dict(value)
        for key, sub in schema.items():
            if key in out:
                out[key] = _check(out[key], sub, f"{where}.{key}" if where else key, path)
        return out
    if isinstance(schema, list):
        if not isinstance(value, list):
            raise InputError(f"must be a list, found {type_name(value)}", path=path, field=where)
        return [_check(v, schema[0], f"{where}[{i}]", path) for i, v in enumerate(value)]
    ok, wanted = _SCALARS[schema]
    if not ok(value):
        raise InputError(f"must be {wanted}, found {value!r:.60}", path=path, field=where)
    return str(value) if schema == "str" else value


def _plain(value: Any, budget: list[int], path: str, where: str = "") -> Any:
    """JSON-safe copy: string keys, dates as ISO strings; refuses alias bombs (a byte budget) and NaN/inf."""
    budget[0] -= _NODE_BYTES + (len(value) if isinstance(value, str) else 0)
    if budget[0] < 0:
        raise InputError(
            f"manifest is over {MAX_EXPANDED_BYTES // (1024 * 1024)} MiB once YAML aliases are expanded",
            path=path,
        )
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key = str(k)
            budget[0] -= len(key)
            out[key] = _plain(v, budget, path, f"{where}.{key}" if where else key)
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, budget, path, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"must be a finite number, found {value}", path=path, field=where or None)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _parse(text: str, path: Path) -> Any:
    if path.suffix.lower() == ".json":
        return load_json_text(text, path=path, allow_nan=False)
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        line = err.problem_mark.line + 1 if err.problem_mark is not None else None
        raise InputError(f"not valid YAML: {err.problem or err}", path=path, line=line) from None
    except (yaml.YAMLError, RecursionError, ValueError) as err:
        raise InputError(f"not valid YAML: {err}", path=path) from None


def load_manifest(path: str | Path) -> dict[str, Any]:
    """Read a provenance manifest (``.yaml``/``.yml``, or ``.json``; YAML is a superset of JSON).

    Returns a plain dict (known fields checked, unknown fields kept). An empty file or a
    top level that is not a mapping is an ``InputError``.
    """
    path = check_input_file(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError("file not found", path=path) from None
    except OSError as err:
        raise InputError(f"cannot read: {err.strerror or err}", path=path) from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise InputError(f"manifest is over {MAX_MANIFEST_BYTES // (1024 * 1024)} MB", path=path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise InputError("not valid UTF-8; save the file as UTF-8", path=path, line=line) from None
    data = _parse(text, path)
    if data is None:
        raise InputError("manifest is empty", path=path)
    if not isinstance(data, dict):
        raise InputError(f"the top level must be a mapping of fields, found {type_name(data)}", path=path)
    try:
        data = _plain(data, [MAX_EXPANDED_BYTES], str(path))
    except RecursionError:
        raise InputError(
            "manifest is nested too deeply (or refers to itself through YAML aliases)", path=path
        ) from None
    check_text(data, path=path, line=None)
    return _check(data, _SCHEMA, "", str(path))
