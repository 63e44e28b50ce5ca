"""report.json -> one self-contained HTML page (pure: dict in, str out).

The page opens offline: inline CSS, inline SVG charts, no scripts, no external URLs,
and a Content-Security-Policy that forbids scripts and remote loads anyway. The markup is in
``templates/report.html.j2`` and ``templates/parts.html.j2`` (Jinja2, autoescaped: every piece
of text from the report is cleaned and escaped, see ``templating.py``); this module chooses what
to show: the findings in debug order, their charts (SVG built from numbers) and examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from distill_doctor.reports import charts, speculative_section, templating
from distill_doctor.reports.charts import STUDENT_COLOR, TEACHER_COLOR, Series
from distill_doctor.reports.text import (
    MULTI_SAMPLE_HEADER,
    clean,
    finding_for,
    fmt_num,
    multi_sample_rows,
    ordered_findings,
    samples_for,
    scalar_metrics,
)
from distill_doctor.vocabulary import Mode, Verdict

MAX_BARS = 12  # per chart
MAX_SLICE_CHARTS = 4  # slice keys drawn (e.g. difficulty, domain)
MAX_EVIDENCE_ROWS = 50
MAX_EXAMPLES = 5  # evidence items shown side by side (prompt, reference, outputs)


@dataclass(frozen=True)
class AccuracyView:
    """What the accuracy section shows: the scores per role, the multi-sample table, the chart."""

    roles: list[str]
    scores: dict[str, Any]
    missing: dict[str, Any]
    multi_header: list[str]
    multi_rows: list[list[str]]
    chart: Markup


@dataclass(frozen=True)
class FindingView:
    """One finding's section: the finding itself and what is derived from it for display."""

    finding: dict[str, Any]
    flagged: bool  # it fails or warns: its guardrail is shown
    tests: list[dict[str, Any]]
    charts: Markup
    metrics: list[tuple[str, Any]]
    evidence: list[dict[str, Any]]
    scored: bool  # the evidence has kind/score columns
    examples: list[tuple[dict[str, Any], dict[str, Any], bool]]  # (evidence, sample, unfolded)


def _accuracy(report: dict[str, Any]) -> AccuracyView:
    acc = report.get("accuracy") or {}
    roles = [r for r in ("teacher", "student") if acc.get(r) is not None or r == "student"]
    colors = {"teacher": TEACHER_COLOR, "student": STUDENT_COLOR}
    chart = charts.bar_chart(
        "Accuracy with 95% intervals",
        ["all items"],
        [Series(r, colors[r], [acc.get(r)], [acc.get(f"{r}_ci")]) for r in roles],
        notes=[f"n={fmt_num(acc.get('n'))}"],
    )
    multi = multi_sample_rows(report)  # several samples per item: accuracy is pass@1 (SPEC)
    return AccuracyView(roles, acc, acc.get("missing") or {}, MULTI_SAMPLE_HEADER, multi, chart)


def _pairs(
    rows: Any, label_of, *fields: tuple[str, str, str | None, bool]
) -> tuple[list[str], list[Series], list[str]]:
    """Chart inputs from a list of dict rows: labels, one Series per (field, name, ci_field, dashed), n notes."""
    rows = [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
    labels = [label_of(r) for r in rows]
    colors = {"teacher": TEACHER_COLOR, "student": STUDENT_COLOR}
    series = [
        Series(
            name,
            colors["teacher" if "teacher" in key else "student"],
            [r.get(key) for r in rows],
            [r.get(ci) for r in rows] if ci else None,
            dashed,
        )
        for key, name, ci, dashed in fields
    ]
    notes = [f"n={fmt_num(r.get('n', r.get('n_pairs')))}" for r in rows]
    return labels, series, notes


# teacher and student accuracy with their intervals, as ``_pairs`` fields
_ACCURACY_FIELDS = (("teacher", "teacher", "teacher_ci", False), ("student", "student", "student_ci", False))


def _charts_for(report: dict[str, Any], f: dict[str, Any]) -> Markup:
    """The charts of one finding, by its mode (none for modes without a chart)."""
    metrics = f.get("metrics")
    m: dict[str, Any] = metrics if isinstance(metrics, dict) else {}
    mode = f.get("mode")
    out: list[Markup] = []
    if mode == Mode.TEACHER_ERROR_TRANSFER:
        out = _agreement_charts(report)
    if mode == Mode.CAPACITY_GAP:
        out = _slice_charts(m) + _length_charts(m)
    if mode == Mode.SUPERFICIAL_IMITATION:
        out = _perturbation_charts(m)
    if mode == Mode.EXPOSURE_BIAS:
        out = _exposure_charts(m)
    if mode == Mode.CONTAMINATION:
        out = [_contamination_chart(m)]
    return Markup("").join(out)


def _agreement_charts(report: dict[str, Any]) -> list[Markup]:
    """The teacher x student correctness matrix of the report's failure table, if any."""
    if not isinstance(report.get("failure_table"), dict):
        return []
    table = report["failure_table"]
    return [charts.agreement_matrix(table.get("counts") or {}, table.get("n"))]


def _slice_charts(m: dict[str, Any]) -> list[Markup]:
    """Accuracy per slice value, one chart per slice key (at most MAX_SLICE_CHARTS of MAX_BARS bars)."""
    if not isinstance(m.get("slices"), list):
        return []
    by_key: dict[str, list[dict[str, Any]]] = {}
    for row in m["slices"]:
        if isinstance(row, dict):
            by_key.setdefault(clean(row.get("key", "")), []).append(row)
    out = []
    for key, rows in list(by_key.items())[:MAX_SLICE_CHARTS]:
        labels, series, notes = _pairs(
            rows[:MAX_BARS],
            lambda r: f"{clean(r.get('key', ''))}={clean(r.get('value', ''))}",
            *_ACCURACY_FIELDS,
        )
        more = f", first {MAX_BARS} of {len(rows)}" if len(rows) > MAX_BARS else ""
        title = f"Accuracy per slice of {key} (95% intervals{more})"
        out.append(charts.bar_chart(title, labels, series, notes=notes))
    return out


def _length_charts(m: dict[str, Any]) -> list[Markup]:
    """Accuracy per length bucket (capacity gap), if the probe bucketed by length."""
    if not (isinstance(m.get("length_buckets"), list) and m["length_buckets"]):
        return []
    first = m["length_buckets"][0] if isinstance(m["length_buckets"][0], dict) else {}
    by = clean(first.get("by", "length")).replace("_", " ")
    labels, series, notes = _pairs(m["length_buckets"], lambda r: r.get("bucket", ""), *_ACCURACY_FIELDS)
    return [charts.bar_chart(f"Accuracy by {by}", labels, series, notes=notes)]


def _perturbation_charts(m: dict[str, Any]) -> list[Markup]:
    """Teacher and student accuracy drop on perturbed problems, overall and per variant."""
    if not isinstance(m.get("perturbation"), dict):
        return []
    p = m["perturbation"]
    rows = [{"variant": "all variants", **p}] + [r for r in p.get("by_variant") or [] if isinstance(r, dict)]
    labels, series, notes = _pairs(
        rows,
        lambda r: r.get("variant", ""),
        ("teacher_drop", "teacher drop", None, False),
        ("student_drop", "student drop", None, False),
    )
    return [charts.bar_chart("Accuracy drop on perturbed problems", labels, series, unit=False, notes=notes)]


def _exposure_charts(m: dict[str, Any]) -> list[Markup]:
    """Accuracy and degeneration per output-length bucket, both models (exposure bias)."""
    if not m.get("by_length"):
        return []
    labels, series, notes = _pairs(
        m["by_length"],
        lambda r: r.get("bucket", ""),
        ("teacher_acc", "teacher accuracy", None, False),
        ("student_acc", "student accuracy", None, False),
        ("teacher_degenerate", "teacher degenerate", None, True),
        ("student_degenerate", "student degenerate", None, True),
    )
    return [charts.line_chart("Accuracy and degeneration vs output length", labels, series, notes=notes)]


def _contamination_chart(m: dict[str, Any]) -> Markup:
    """Accuracy on dirty vs clean items for each model the probe scored (its ``<role>_acc_dirty`` /
    ``<role>_acc_clean`` metrics); nothing when no model was scored."""
    series = [
        Series(role, STUDENT_COLOR if role == "student" else TEACHER_COLOR, [dirty, clean_])
        for role in ("teacher", "student")
        for dirty, clean_ in [(m.get(f"{role}_acc_dirty"), m.get(f"{role}_acc_clean"))]
        if dirty is not None or clean_ is not None
    ]
    if not series:
        return Markup("")
    n_dirty, n_items = m.get("dirty"), m.get("n_items")
    n_clean = n_items - n_dirty if isinstance(n_dirty, int) and isinstance(n_items, int) else None
    return charts.bar_chart(
        "Accuracy on contaminated (dirty) vs clean items",
        ["dirty", "clean"],
        series,
        notes=[f"n={fmt_num(n_dirty)}", f"n={fmt_num(n_clean)}"],
    )


def _finding(report: dict[str, Any], f: dict[str, Any]) -> FindingView:
    evidence = [ev for ev in f.get("evidence") or [] if isinstance(ev, dict)]
    first_open = f.get("verdict") == Verdict.FAIL  # the failing mode's first example is shown unfolded
    examples = [
        (ev, sample, first_open and k == 0)
        for k, ev in enumerate(evidence[:MAX_EXAMPLES])
        if (sample := samples_for(report, ev.get("id")))
    ]
    return FindingView(
        finding=f,
        flagged=f.get("verdict") in (Verdict.FAIL, Verdict.WARN),
        tests=[t for t in f.get("tests") or [] if isinstance(t, dict)],
        charts=_charts_for(report, f),
        # folded: the summary, the tests and the chart tell the story; these are the numbers
        metrics=scalar_metrics(f.get("metrics")),
        evidence=evidence[:MAX_EVIDENCE_ROWS],
        scored=any("kind" in ev or "score" in ev for ev in evidence),
        examples=examples,
    )


def _inputs(report: dict[str, Any]) -> list[list[Any]]:
    """Rows of the inputs table: name, path, the other metadata as ``key=value`` pairs."""
    rows: list[list[Any]] = []
    for name, meta in (report.get("inputs") or {}).items():
        if isinstance(meta, dict):
            detail = ", ".join(f"{clean(k)}={clean(fmt_num(v))}" for k, v in meta.items() if k != "path")
            rows.append([name, meta.get("path", ""), detail])
        elif meta is not None:
            rows.append([name, meta, ""])
    return rows


def render_html(report: dict[str, Any]) -> str:
    """The whole report as one self-contained HTML document."""
    findings = ordered_findings(report)
    suspect = report.get("primary_suspect")
    return (
        templating.environment()
        .get_template("report.html.j2")
        .render(
            report=report,
            findings=findings,
            suspect=(finding_for(report, suspect) or {}) if suspect else {},
            accuracy=_accuracy(report),
            speculative=speculative_section.html_section(report),
            finding_views=[_finding(report, f) for f in findings],
            inputs=_inputs(report),
        )
    )
