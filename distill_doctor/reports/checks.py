"""One evaluated check of the CI gate and the bound check most gate rules are made of; shared by
the gate (``gate.py``) and its speculative-decoding rules (``speculative_gate.py``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from distill_doctor.reports.text import fmt_num, fmt_pct, is_number, one_line


@dataclass
class CheckResult:
    """One evaluated check: ``status`` is ``passed``, ``failed`` or ``skipped`` (not applicable)."""

    name: str
    group: str  # "verdict" | "accuracy" | "rule" | "baseline" | "speculative"
    status: str
    reason: str


def bound_check(
    name: str, group: str, value: Any, low: float | None, high: float | None, pct: bool = False
) -> CheckResult:
    """Passed when ``value`` is a number within [low, high] (either may be None), failed otherwise."""
    show = fmt_pct if pct else fmt_num
    if not is_number(value) or math.isnan(value):
        return CheckResult(name, group, "failed", f"no number in the report (got {one_line(value, 60)})")
    if low is not None and value < low:
        return CheckResult(name, group, "failed", f"{show(value)} is below the minimum {show(low)}")
    if high is not None and value > high:
        return CheckResult(name, group, "failed", f"{show(value)} is above the maximum {show(high)}")
    bounds = " and ".join(
        b for b in (low is not None and f">= {show(low)}", high is not None and f"<= {show(high)}") if b
    )
    return CheckResult(name, group, "passed", f"{show(value)} ({bounds})")
