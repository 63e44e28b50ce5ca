"""report.json schema_version 1: load a report and check it against ``schema.json``.

``schema.json`` (JSON Schema draft 2020-12, shipped as package data) is the one source
of truth. With ``jsonschema`` installed (the ``dev`` extra) it validates fully; without it,
:func:`schema_errors` walks the same schema with a small interpreter of the keywords
``schema.json`` uses (``type``, ``enum``, ``const``, ``required``, ``properties``,
``additionalProperties``, ``items``, ``minItems``/``maxItems``, ``minimum``/``maximum``,
``minLength``, ``$ref``, ``allOf``, ``if``/``then``). Checks JSON Schema cannot express
(``primary_suspect`` names the first failing mode) are in :func:`consistency_errors`.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any

from distill_doctor.errors import InputError

SCHEMA_VERSION = 1
STAGE_RANK = {"data": 0, "capacity": 1, "mismatch": 2, "provenance": 3}


@functools.lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The report schema (``distill_doctor/reports/schema.json``)."""
    text = resources.files("distill_doctor.reports").joinpath("schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def _where(path: list[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def schema_errors(report: Any, *, use_jsonschema: bool | None = None) -> list[tuple[str, str]]:
    """Schema violations as ``(where, message)`` pairs, e.g. ``("findings[2].verdict", "...")``.

    ``use_jsonschema=None`` uses the ``jsonschema`` package when it is importable.
    """
    schema = load_schema()
    if use_jsonschema is not False:
        try:
            import jsonschema
        except ImportError:
            if use_jsonschema:
                raise
        else:
            validator = jsonschema.Draft202012Validator(schema)
            errors = sorted(validator.iter_errors(report), key=lambda e: [str(p) for p in e.absolute_path])
            return [(_where(list(e.absolute_path)), e.message) for e in errors]
    errors: list[tuple[str, str]] = []
    _check(report, schema, schema, [], errors)
    return errors


def consistency_errors(report: dict[str, Any]) -> list[tuple[str, str]]:
    """Rules across fields: unique modes, and ``primary_suspect`` = first failing mode in debug order."""
    errors: list[tuple[str, str]] = []
    findings = report.get("findings") or []
    seen: set[str] = set()
    for i, f in enumerate(findings):
        if f["mode"] in seen:
            errors.append((f"findings[{i}].mode", f"mode {f['mode']!r} appears twice"))
        seen.add(f["mode"])
    failing = {f["mode"]: STAGE_RANK[f["stage"]] for f in findings if f["verdict"] == "fail"}
    suspect = report.get("primary_suspect")
    if failing and suspect is None:
        errors.append(("primary_suspect", "is null but a finding fails"))
    elif suspect is not None and suspect not in failing:
        errors.append(("primary_suspect", f"{suspect!r} is not a failing mode"))
    elif failing and failing[suspect] > min(failing.values()):
        errors.append(("primary_suspect", f"{suspect!r} is not the first failing mode in debug order"))
    return errors


def validate_report(report: Any, *, path: str | Path | None = None) -> None:
    """Raise :class:`InputError` (naming the file and the first bad field) unless ``report`` is valid."""
    errors = schema_errors(report)
    if not errors:
        errors = consistency_errors(report)
    if errors:
        where, message = errors[0]
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise InputError(
            f"not a valid report.json (schema_version 1): {message}{more}", path=path, field=where
        )


def load_report(path: str | Path) -> dict[str, Any]:
    """Read and validate a saved report.json; every problem is an :class:`InputError` naming the file."""
    from distill_doctor.data.jsonl import load_json_text
    from distill_doctor.paths import check_input_file

    path = Path(path)
    if path.is_dir():
        raise InputError("is a directory, expected a report.json file", path=path)
    check_input_file(path)  # a FIFO or device would block or never end
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("file not found", path=path) from None
    except UnicodeDecodeError as err:
        raise InputError(f"not UTF-8 text ({err.reason} at byte {err.start})", path=path) from None
    except OSError as err:
        raise InputError(f"cannot read: {err.strerror}", path=path) from None
    # NaN/Infinity are refused: we never write them (strict JSON), and a NaN accuracy would turn
    # the gate's accuracy rule into "not applicable" instead of an error.
    report = load_json_text(text, path=path, allow_nan=False, invalid="invalid JSON")
    if not isinstance(report, dict):
        raise InputError(f"expected a JSON object, got {type(report).__name__}", path=path)
    if report.get("schema_version") != SCHEMA_VERSION:
        raise InputError(
            f"unsupported schema_version {report.get('schema_version')!r}; this distill-doctor reads {SCHEMA_VERSION}",
            path=path,
            field="schema_version",
        )
    validate_report(report, path=path)
    return report


# --- the fallback interpreter (a subset of JSON Schema 2020-12: the keywords schema.json uses) ---

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())
    ),
}


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    if not ref.startswith("#/"):
        raise ValueError(f"only local $ref is supported, got {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _check(value: Any, schema: dict[str, Any], root: dict, path: list, errors: list) -> None:
    if "$ref" in schema:
        _check(value, _resolve(schema["$ref"], root), root, path, errors)
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else types
        if not any(_TYPES[name](value) for name in names):
            errors.append((_where(path), f"{value!r:.60} is not of type {' or '.join(names)}"))
            return
    if "const" in schema and not _same(value, schema["const"]):
        errors.append((_where(path), f"{schema['const']!r} was expected, got {value!r:.60}"))
    if "enum" in schema and not any(_same(value, option) for option in schema["enum"]):
        errors.append((_where(path), f"{value!r:.60} is not one of {schema['enum']}"))
    if _TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append((_where(path), f"{value} is less than the minimum of {schema['minimum']}"))
        if "maximum" in schema and value > schema["maximum"]:
            errors.append((_where(path), f"{value} is greater than the maximum of {schema['maximum']}"))
    if isinstance(value, str) and len(value) < schema.get("minLength", 0):
        errors.append((_where(path), f"{value!r} is too short"))
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append((_where(path), f"should have at least {schema['minItems']} items"))
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append((_where(path), f"should have at most {schema['maxItems']} items"))
        if "items" in schema:
            for i, element in enumerate(value):
                _check(element, schema["items"], root, [*path, i], errors)
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append((_where(path), f"{key!r} is a required property"))
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, element in value.items():
            if key in props:
                _check(element, props[key], root, [*path, key], errors)
            elif extra is False:
                errors.append((_where(path), f"additional property {key!r} is not allowed"))
            elif isinstance(extra, dict):
                _check(element, extra, root, [*path, key], errors)
    for sub in schema.get("allOf", []):
        _check(value, sub, root, path, errors)
    if "if" in schema:
        probe: list = []
        _check(value, schema["if"], root, path, probe)
        if not probe and "then" in schema:
            _check(value, schema["then"], root, path, errors)


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``1 == 1.0`` but ``True != 1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b
