"""report.json schema_version 1: load a report and check it against ``schema.json``.

``schema.json`` (JSON Schema draft 2020-12, shipped as package data) is the one source
of truth; ``jsonschema`` (a core dependency) validates against it with the validator of the
draft the schema declares. Checks JSON Schema cannot express (``primary_suspect`` names the
first failing mode) are in :func:`consistency_errors`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from distill_doctor.errors import InputError
from distill_doctor.vocabulary import Stage, Verdict

SCHEMA_VERSION = 1


@functools.lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The report schema (``distill_doctor/reports/schema.json``)."""
    text = resources.files("distill_doctor.reports").joinpath("schema.json").read_text(encoding="utf-8")
    return json.loads(text)


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    """A validator for the draft ``schema.json`` declares (``$schema``), built once.

    ``check_schema`` first, so a broken schema fails loudly here rather than passing reports.
    """
    schema = load_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _where(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def schema_errors(report: Any) -> list[tuple[str, str]]:
    """Schema violations as ``(where, message)`` pairs, e.g. ``("findings[2].verdict", "...")``.

    ``where`` is the JSON path of the offending value (for a missing key: of the object that
    lacks it); the pairs are sorted by path so the first one is stable from run to run.
    """
    errors = sorted(_validator().iter_errors(report), key=lambda e: [str(p) for p in e.absolute_path])
    return [(_where(list(e.absolute_path)), e.message) for e in errors]


def consistency_errors(report: dict[str, Any]) -> list[tuple[str, str]]:
    """Rules across fields: unique modes, and ``primary_suspect`` = first failing mode in debug order."""
    errors: list[tuple[str, str]] = []
    findings = report.get("findings") or []
    seen: set[str] = set()
    for i, f in enumerate(findings):
        if f["mode"] in seen:
            errors.append((f"findings[{i}].mode", f"mode {f['mode']!r} appears twice"))
        seen.add(f["mode"])
    failing = {f["mode"]: Stage(f["stage"]).rank for f in findings if f["verdict"] == Verdict.FAIL}
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
