"""Gate checks on the report's ``speculative`` block (see ``docs/ci.md``).

- ``[speculative]``: the acceptance rate and greedy agreement are at least the policy's minimum.
- with a baseline (``baseline.speculative = true``, the default): the acceptance rate did not
  drop significantly. When both reports scored acceptance on at least ``MIN_PAIRED`` common items
  (``per_item``, along the same outputs), the test is paired by item: a bootstrap over the common
  items of the difference in token-weighted acceptance, failing when its one-sided upper
  ``1 - alpha`` bound is below 0. Otherwise the two reports' intervals give an unpaired z-test.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from distill_doctor.reports.checks import CheckResult, bound_check
from distill_doctor.reports.policy import Policy
from distill_doctor.reports.text import fmt_num, fmt_pct, interval, is_number

MIN_PAIRED = 10
N_BOOT = 4000
Z95 = 1.959963984540054


def _block(report: dict[str, Any]) -> dict[str, Any] | None:
    block = report.get("speculative")
    return block if isinstance(block, dict) else None


def bound_checks(report: dict[str, Any], policy: Policy) -> list[CheckResult]:
    """``[speculative]`` minimums on acceptance_rate and greedy_agreement."""
    bounds = policy.speculative
    if bounds is None:
        return []
    block = _block(report)
    out = []
    for key, low in (
        ("acceptance_rate", bounds.min_acceptance),
        ("greedy_agreement", bounds.min_greedy_agreement),
    ):
        if low is None:
            continue
        name = f"speculative.{key}"
        if block is None:
            status = "failed" if bounds.if_missing == "fail" else "skipped"
            why = "no speculative block in the report (diagnose needs --teacher-model and --student-model)"
            out.append(CheckResult(name, "speculative", status, f"{why}; if_missing = {bounds.if_missing!r}"))
        else:
            out.append(bound_check(name, "speculative", block.get(key), low, None, pct=True))
    return out


def _paired(
    new: dict[str, Any], old: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Per-item (accepted sum, tokens) of both reports on their common items, or None if too few."""
    a, b = new.get("per_item") or {}, old.get("per_item") or {}
    if new.get("along") != old.get("along"):
        return None
    ids = [i for i in a if i in b and _usable(a[i]) and _usable(b[i])]
    if len(ids) < MIN_PAIRED:
        return None
    cols = [np.array([float(src[i][k]) for i in ids]) for src in (a, b) for k in ("acceptance", "n_tokens")]
    return cols[0] * cols[1], cols[1], cols[2] * cols[3], cols[3]


def _usable(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and is_number(entry.get("acceptance"))
        and is_number(entry.get("n_tokens"))
        and entry["n_tokens"] > 0
    )


def paired_drop(new_sum, new_n, old_sum, old_n, *, alpha: float, seed: int = 0) -> tuple[float, float, float]:
    """(difference new - old, one-sided upper 1 - alpha bound, bootstrap p of H1 'new < old')."""
    diff = float(new_sum.sum() / new_n.sum() - old_sum.sum() / old_n.sum())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(new_n), size=(N_BOOT, len(new_n)))
    reps = new_sum[idx].sum(1) / new_n[idx].sum(1) - old_sum[idx].sum(1) / old_n[idx].sum(1)
    upper = float(np.quantile(reps, 1 - alpha))
    p = float((np.sum(reps >= 0) + 1) / (N_BOOT + 1))
    return diff, upper, p


def baseline_check(report: dict[str, Any], baseline: dict[str, Any], policy: Policy) -> list[CheckResult]:
    """No significant drop of acceptance_rate against the baseline (paired by item where possible)."""
    if not policy.baseline_speculative:
        return []
    name = "baseline speculative.acceptance_rate"
    new, old = _block(report), _block(baseline)
    if new is None and old is None:
        return []  # neither run measured it: nothing to compare, nothing to report
    if (
        new is None
        or old is None
        or not (is_number(new.get("acceptance_rate")) and is_number(old.get("acceptance_rate")))
    ):
        return [
            CheckResult(
                name, "baseline", "skipped", "not compared (no speculative block in one of the reports)"
            )
        ]
    alpha = policy.baseline_alpha
    change = f"{fmt_pct(old['acceptance_rate'])} -> {fmt_pct(new['acceptance_rate'])}"
    pairs = _paired(new, old)
    if pairs is not None:
        diff, upper, p = paired_drop(*pairs, alpha=alpha)
        detail = (
            f"{change}; paired by item on {len(pairs[1])} common items: difference {fmt_num(diff)}, "
            f"one-sided upper {100 * (1 - alpha):g}% bound {fmt_num(upper)} (bootstrap p={fmt_num(p)}, alpha={fmt_num(alpha)})"
        )
        dropped = upper < 0
    else:
        se_new, se_old = _se(new), _se(old)
        if se_new is None or se_old is None:
            return [
                CheckResult(
                    name, "baseline", "skipped", f"not compared ({change}; no intervals and no common items)"
                )
            ]
        z = (old["acceptance_rate"] - new["acceptance_rate"]) / max(math.hypot(se_new, se_old), 1e-12)
        p = 0.5 * math.erfc(z / math.sqrt(2))
        detail = f"{change}; unpaired z-test from the two intervals (no common items): p={fmt_num(p)}, alpha={fmt_num(alpha)}"
        dropped = p < alpha
    if dropped:
        return [CheckResult(name, "baseline", "failed", f"draft acceptance dropped significantly: {detail}")]
    return [CheckResult(name, "baseline", "passed", detail)]


def _se(block: dict[str, Any]) -> float | None:
    ci = interval(block.get("acceptance_ci"))
    return None if ci is None else (ci[1] - ci[0]) / (2 * Z95)
