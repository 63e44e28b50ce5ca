"""Save a report: ``report.json``, ``report.md`` and ``report.html`` in one folder, written as one set.

Rendering is pure (``render_*``); this module only serialises and writes. Everything is
rendered before the first file is written, so a rendering error leaves the folder as it was;
the three files are then replaced together (``atomic_write_set``): a full disk or a failed
rename leaves the old set whole, never a mix of old and new files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from distill_doctor.atomic import atomic_write_set
from distill_doctor.reports.html import render_html
from distill_doctor.reports.markdown import render_markdown
from distill_doctor.reports.schema import consistency_errors, schema_errors

REPORT_FILES = ("report.json", "report.md", "report.html")


def strict_json(value: Any) -> Any:
    """A copy of ``value`` that is valid RFC 8259 JSON: NaN and +-inf become ``null``; tuples,
    NumPy arrays and NumPy scalars become lists and Python numbers."""
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        value = value.tolist()  # scalar -> int/float/bool, array -> (nested) list
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def report_json(report: dict[str, Any]) -> str:
    """``report`` as indented, strict JSON text (UTF-8 kept readable; lone surrogates escaped)."""
    clean = strict_json(report)
    text = json.dumps(clean, indent=2, ensure_ascii=False, allow_nan=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from untrusted text: keep it, as a \\uXXXX escape
        text = json.dumps(clean, indent=2, ensure_ascii=True, allow_nan=False)
    return text + "\n"


def save_report(report: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Validate ``report``, render it, and write the three files into ``out_dir`` (created if needed).

    Raises ``ValueError`` when ``report`` does not match the schema: that is a bug in whatever
    built it, not a user error. Returns the paths written, JSON first.
    """
    data = strict_json(report)
    errors = schema_errors(data) or consistency_errors(data)
    if errors:
        where, message = errors[0]
        raise ValueError(f"refusing to save an invalid report: {where}: {message}")
    texts = {
        "report.json": report_json(data),
        "report.md": render_markdown(data),
        "report.html": render_html(data),
    }
    # One set: all three new files, or (on a full disk, a failed rename) the old three.
    return atomic_write_set(out_dir, {name: texts[name].encode("utf-8") for name in REPORT_FILES})
