"""The CI gate: check a report against a policy and, optionally, against a baseline report.

Checks (each gives one :class:`CheckResult`; see ``docs/ci.md``):
- every finding's verdict is no worse than the policy allows (``pass < warn < fail``);
  a required mode must not be ``skipped``;
- accuracy bounds (``[accuracy]``) and metric thresholds (``[[rules]]``);
- with a baseline (which must be a report on the same items: :func:`same_items`, else the gate
  refuses it): a verdict regression, per ``baseline.verdicts``: ``"fail"`` (default) fails on a
  mode that now fails where the baseline did not, ``"any"`` on every regression (pass -> warn
  too), ``"off"`` never; ``max_verdict`` is not consulted here: it caps each verdict on its own in
  the verdict checks, so pass -> warn under the default policy passes, and a known failure that
  ``max_verdict = "fail"`` tolerates still fails the gate when it is new; student accuracy did not drop
  significantly (one-sided two-proportion z-test at ``baseline.alpha``); each
  ``[[baseline.metrics]]`` entry did not get significantly worse, meaning the new
  interval lies entirely on the bad side of the baseline's estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

from distill_doctor.reports import speculative_gate
from distill_doctor.reports.checks import CheckResult, bound_check
from distill_doctor.reports.policy import BaselineMetric, Policy
from distill_doctor.reports.text import (
    finding_for,
    fmt_num,
    fmt_p,
    fmt_pct,
    interval,
    is_number,
    one_line,
)
from distill_doctor.vocabulary import Verdict

MISSING = object()


@dataclass
class GateResult:
    checks: list[CheckResult]

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == "failed"]

    @property
    def passed(self) -> bool:
        return not self.failed


def resolve(finding: dict[str, Any], path: str) -> Any:
    """A dotted path (``did.ci.0``) looked up in ``finding["metrics"]``, then in ``finding`` itself."""
    for root in (finding.get("metrics"), finding):
        node: Any = root
        for part in path.split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif (
                isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node)
            ):
                node = node[int(part)]
            else:
                node = MISSING
                break
        if node is not MISSING:
            return node
    return MISSING


def two_proportion_p(k_old: int, n_old: int, k_new: int, n_new: int) -> float:
    """One-sided p-value of the pooled two-proportion z-test for H1: p_new < p_old."""
    pooled = (k_old + k_new) / (n_old + n_new)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_old + 1 / n_new))
    if se == 0:
        return 1.0  # both all-right or both all-wrong: no evidence of a drop
    z = (k_old / n_old - k_new / n_new) / se
    return 0.5 * math.erfc(z / math.sqrt(2))


# The verdicts a gate compares; a skipped probe has no severity to compare with another verdict.
_COMPARABLE = frozenset({Verdict.PASS, Verdict.WARN, Verdict.FAIL})


def _severity(verdict: Any) -> int:
    """A verdict's rank; a word that is not a comparable verdict counts as a fail (never a pass)."""
    return Verdict(verdict).rank if verdict in _COMPARABLE else Verdict.FAIL.rank


def _verdict_checks(report: dict[str, Any], policy: Policy) -> list[CheckResult]:
    out = []
    present = {f.get("mode") for f in report.get("findings") or []}
    for f in report.get("findings") or []:
        mode, verdict = f.get("mode"), f.get("verdict")
        name = f"verdict {mode}"
        if verdict == Verdict.SKIPPED:
            why = one_line(f.get("skipped_reason") or f.get("summary", ""), 200)
            if policy.is_required(mode):
                out.append(CheckResult(name, "verdict", "failed", f"required mode was skipped ({why})"))
            else:
                out.append(CheckResult(name, "verdict", "skipped", f"probe skipped ({why})"))
            continue
        allowed = policy.allowed(mode)
        if _severity(verdict) > _severity(allowed):
            reason = f"{verdict} exceeds max_verdict {allowed}: {one_line(f.get('summary', ''), 200)}"
            out.append(CheckResult(name, "verdict", "failed", reason))
        else:
            out.append(CheckResult(name, "verdict", "passed", f"{verdict} (max_verdict {allowed})"))
    for mode in policy.required:
        if policy.required[mode] and mode not in present:
            out.append(
                CheckResult(f"verdict {mode}", "verdict", "failed", "required mode is not in the report")
            )
    return out


def _accuracy_checks(report: dict[str, Any], policy: Policy) -> list[CheckResult]:
    acc = report.get("accuracy") or {}
    out = []
    if policy.min_student is not None:
        out.append(
            bound_check("accuracy.student", "accuracy", acc.get("student"), policy.min_student, None, True)
        )
    if policy.min_teacher is not None:
        out.append(
            bound_check("accuracy.teacher", "accuracy", acc.get("teacher"), policy.min_teacher, None, True)
        )
    if policy.max_gap is not None:
        t, s = acc.get("teacher"), acc.get("student")
        gap = t - s if is_number(t) and is_number(s) else None
        out.append(
            bound_check("accuracy.gap (teacher - student)", "accuracy", gap, None, policy.max_gap, True)
        )
    if policy.min_n is not None:
        out.append(bound_check("accuracy.n", "accuracy", acc.get("n"), policy.min_n, None))
    return out


def _rule_checks(report: dict[str, Any], policy: Policy) -> list[CheckResult]:
    out = []
    for rule in policy.rules:
        name = f"{rule.key} {rule.mode}.{rule.metric}"
        finding = finding_for(report, rule.mode)
        value = resolve(finding, rule.metric) if finding else MISSING
        if value is MISSING or value is None:
            where = (
                "mode not in the report"
                if finding is None
                else f"not in the report (verdict {finding.get('verdict')})"
            )
            status = "failed" if rule.if_missing == "fail" else "skipped"
            out.append(CheckResult(name, "rule", status, f"metric {where}; if_missing = {rule.if_missing!r}"))
            continue
        out.append(bound_check(name, "rule", value, rule.min, rule.max))
    return out


def same_items(report: dict[str, Any], baseline: dict[str, Any]) -> str | None:
    """Why ``baseline`` cannot be compared with ``report`` (None when both are on the same items).

    Both reports must carry ``items_fingerprint.sha256`` (:func:`data.fingerprint.items_sha256`),
    and the two must be equal: accuracy and verdicts on other items say nothing about a regression.
    """
    fingerprints = []
    for name, rep in (("report", report), ("baseline", baseline)):
        found = rep.get("items_fingerprint")
        fp: dict[str, Any] = found if isinstance(found, dict) else {}
        sha = fp.get("sha256")
        if not isinstance(sha, str):
            return (
                f"the {name} has no items_fingerprint.sha256 (written before distill-doctor recorded "
                "it): re-run diagnose to compare against it"
            )
        fingerprints.append((sha, fp.get("n")))
    (new_sha, new_n), (old_sha, old_n) = fingerprints
    if new_sha != old_sha:
        return (
            f"the baseline is a report on other items (items_fingerprint.sha256 {old_sha[:12]}... over "
            f"{old_n} items, this report {new_sha[:12]}... over {new_n}): compare runs on the same items"
        )
    return None


def _baseline_checks(report: dict[str, Any], baseline: dict[str, Any], policy: Policy) -> list[CheckResult]:
    out = []
    if policy.baseline_verdicts != "off":
        for f in report.get("findings") or []:
            mode, new = f.get("mode"), f.get("verdict")
            old_f = finding_for(baseline, mode)
            name = f"baseline verdict {mode}"
            old = old_f.get("verdict") if old_f else None
            if old not in _COMPARABLE or new not in _COMPARABLE:
                out.append(
                    CheckResult(
                        name, "baseline", "skipped", f"not compared (baseline {old or 'absent'}, now {new})"
                    )
                )
            elif _severity(new) > _severity(old) and (
                policy.baseline_verdicts == "any" or new == Verdict.FAIL
            ):
                rule = f"baseline.verdicts = {policy.baseline_verdicts!r}"
                out.append(
                    CheckResult(name, "baseline", "failed", f"verdict got worse: {old} -> {new} ({rule})")
                )
            elif _severity(new) > _severity(old):
                rule = 'baseline.verdicts = "fail": only a new fail fails'
                out.append(CheckResult(name, "baseline", "passed", f"{old} -> {new} (got worse; {rule})"))
            else:
                out.append(CheckResult(name, "baseline", "passed", f"{old} -> {new}"))
    if policy.baseline_accuracy:
        out.append(_accuracy_drop(report, baseline, policy.baseline_alpha))
    for spec in policy.baseline_metrics:
        out.append(_metric_drift(report, baseline, spec))
    return out


def _accuracy_drop(report: dict[str, Any], baseline: dict[str, Any], alpha: float) -> CheckResult:
    name = "baseline accuracy.student"
    new, old = report.get("accuracy") or {}, baseline.get("accuracy") or {}
    values = (old.get("student"), old.get("n"), new.get("student"), new.get("n"))
    if not all(is_number(v) and math.isfinite(v) for v in values) or not old.get("n") or not new.get("n"):
        return CheckResult(name, "baseline", "skipped", "not compared (student accuracy or n missing)")
    p_old, n_old, p_new, n_new = cast(tuple[float, float, float, float], values)  # all numbers (checked)
    p = two_proportion_p(round(p_old * n_old), int(n_old), round(p_new * n_new), int(n_new))
    change = f"{fmt_pct(p_old)} (n={n_old}) -> {fmt_pct(p_new)} (n={n_new})"
    shown_p = fmt_p(p)
    shown_p = shown_p if shown_p.startswith("<") else f"={shown_p}"
    test = f"one-sided two-proportion z-test p{shown_p}, alpha={fmt_num(alpha)}"
    if p < alpha:
        return CheckResult(
            name, "baseline", "failed", f"student accuracy dropped significantly: {change}; {test}"
        )
    return CheckResult(name, "baseline", "passed", f"{change}; {test}")


def _metric_drift(report: dict[str, Any], baseline: dict[str, Any], spec: BaselineMetric) -> CheckResult:
    name = f"baseline {spec.mode}.{spec.metric}"
    new_f, old_f = finding_for(report, spec.mode), finding_for(baseline, spec.mode)
    new = resolve(new_f, spec.metric) if new_f else MISSING
    old = resolve(old_f, spec.metric) if old_f else MISSING
    if not (is_number(new) and is_number(old) and math.isfinite(new) and math.isfinite(old)):
        return CheckResult(name, "baseline", "skipped", "not compared (metric missing in one of the reports)")
    higher_bad = spec.worse == "higher"
    if spec.ci is not None:
        assert new_f is not None  # its metric was found above
        ci = interval(resolve(new_f, spec.ci))
        if ci is None:
            return CheckResult(name, "baseline", "skipped", f"not compared (no interval at {spec.ci!r})")
        worse = ci[0] > old if higher_bad else ci[1] < old
        detail = (
            f"baseline {fmt_num(old)}, now {fmt_num(new)} with interval [{fmt_num(ci[0])}, {fmt_num(ci[1])}]"
        )
        if worse:
            return CheckResult(
                name,
                "baseline",
                "failed",
                f"significantly {spec.worse} (worse): {detail} excludes the baseline",
            )
        return CheckResult(name, "baseline", "passed", detail)
    assert spec.tolerance is not None  # parse_policy requires exactly one of ci and tolerance
    limit = old + spec.tolerance if higher_bad else old - spec.tolerance
    worse = new > limit if higher_bad else new < limit
    detail = f"baseline {fmt_num(old)}, now {fmt_num(new)}, tolerance {fmt_num(spec.tolerance)}"
    return CheckResult(
        name, "baseline", "failed" if worse else "passed", ("got worse: " if worse else "") + detail
    )


def evaluate(report: dict[str, Any], policy: Policy, baseline: dict[str, Any] | None = None) -> GateResult:
    """Every check of ``policy`` on ``report`` (and against ``baseline`` when given). Pure."""

    checks = _verdict_checks(report, policy) + _accuracy_checks(report, policy) + _rule_checks(report, policy)
    checks += speculative_gate.bound_checks(report, policy)
    if baseline is not None:
        checks += _baseline_checks(report, baseline, policy)
        checks += speculative_gate.baseline_check(report, baseline, policy)
    return GateResult(checks)
