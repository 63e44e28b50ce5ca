"""What every renderer shares: safe text, number formats, and the report read in debug order.

Model text and item ids are untrusted. :func:`clean` makes any string safe to *encode*
(lone surrogates, NUL and other control characters become visible ``\\uXXXX`` escapes)
and safe to *read* (bidirectional override characters, the "Trojan Source" trick, are
made visible too). Each renderer then escapes for its own format.
"""

from __future__ import annotations

import math
import re
from typing import Any, TypeGuard

from distill_doctor.vocabulary import MODE_ORDER, STAGE_ORDER

# C0/C1 controls except tab, newline, carriage return; lone surrogates; bidi embeddings,
# overrides and isolates; non-characters U+FFFE/U+FFFF (not allowed in XML).
_UNSAFE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069\ufffe\uffff]"
)


def clean(value: Any) -> str:
    """``str(value)`` with unsafe characters replaced by visible escapes (``\\x00`` -> ``\\u0000``)."""
    text = value if isinstance(value, str) else str(value)
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def one_line(value: Any, limit: int | None = None) -> str:
    """:func:`clean`, with runs of whitespace (newlines included) collapsed to one space."""
    text = " ".join(clean(value).split())
    return truncate(text, limit) if limit else text


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit].rstrip() + f" [... {len(text) - limit} more characters]"


def is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number, else None."""
    if is_number(value) and math.isfinite(value):
        return float(value)
    return None


def fmt_num(value: Any, digits: int = 3) -> str:
    """A number for people: integers as is, floats to ``digits`` significant figures; ``n/a`` for None."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.{digits}g}"
    return clean(value)


def fmt_pct(value: Any) -> str:
    x = finite(value)
    return "n/a" if x is None else f"{100 * x:.1f}%"


def fmt_p(value: Any) -> str:
    x = finite(value)
    if x is None:
        return "n/a"
    return "<0.001" if x < 0.001 else f"{x:.3f}"


def interval(value: Any) -> tuple[float, float] | None:
    """A ``[lo, hi]`` pair of finite numbers, else None."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        lo, hi = finite(value[0]), finite(value[1])
        if lo is not None and hi is not None:
            return lo, hi
    return None


def fmt_ci(value: Any, *, pct: bool = False) -> str:
    ci = interval(value)
    if ci is None:
        return "n/a"
    if pct:
        return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]%"
    return f"[{fmt_num(ci[0])}, {fmt_num(ci[1])}]"


def ordered_findings(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The findings in debug order: by stage, then by the SPEC's mode order (unknown modes last)."""

    def key(finding: dict[str, Any]) -> tuple[int, int]:
        stage = finding.get("stage")
        mode = finding.get("mode")
        return (
            STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER),
            MODE_ORDER.index(mode) if mode in MODE_ORDER else len(MODE_ORDER),
        )

    return sorted(report.get("findings") or [], key=key)


def finding_for(report: dict[str, Any], mode: str) -> dict[str, Any] | None:
    return next((f for f in report.get("findings") or [] if f.get("mode") == mode), None)


def scalar_metrics(metrics: Any, prefix: str = "", depth: int = 0) -> list[tuple[str, Any]]:
    """Flatten the scalar entries of a metrics dict to ``(dotted.key, value)`` (lists are skipped)."""
    rows: list[tuple[str, Any]] = []
    if not isinstance(metrics, dict) or depth > 3:
        return rows
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(scalar_metrics(value, f"{name}.", depth + 1))
        elif value is None or isinstance(value, (str, int, float, bool)):
            rows.append((name, value))
    return rows


def samples_for(report: dict[str, Any], item_id: Any) -> dict[str, Any] | None:
    samples = report.get("samples")
    if isinstance(samples, dict):
        row = samples.get(item_id if isinstance(item_id, str) else str(item_id))
        return row if isinstance(row, dict) else None
    return None


MULTI_SAMPLE_HEADER = ["model", "samples per item", "pass@1", "first sample", "maj@k", "pass@k"]


def multi_sample_rows(report: dict[str, Any]) -> list[list[str]]:
    """Rows of the several-samples table (``accuracy.multi_sample``); empty when it is absent."""
    multi = (report.get("accuracy") or {}).get("multi_sample")
    if not isinstance(multi, dict):
        return []
    rows = []
    for role in ("teacher", "student"):
        m = multi.get(role)
        if not isinstance(m, dict):
            continue
        lo, hi = m.get("samples_min"), m.get("samples_max")
        k = fmt_num(lo) if lo == hi else f"{fmt_num(lo)}-{fmt_num(hi)}"
        found = m.get("pass_at_k")
        at_k: dict[str, Any] = found if isinstance(found, dict) else {}
        top = max(at_k, key=lambda s: int(s) if str(s).isdigit() else 0) if at_k else None
        pass_k = f"{fmt_pct(at_k[top])} (k={clean(top)})" if top is not None else "n/a"
        rows.append(
            [
                role,
                k,
                fmt_pct(m.get("pass_at_1")),
                fmt_pct(m.get("first_sample")),
                fmt_pct(m.get("maj_at_k")),
                pass_k,
            ]
        )
    return rows
