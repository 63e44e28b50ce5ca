"""report.json -> one self-contained HTML page (pure: dict in, str out).

The page opens offline: inline CSS, inline SVG charts, no scripts, no external URLs,
and a Content-Security-Policy that forbids scripts and remote loads anyway. Every piece
of text from the report goes through :func:`_e` (``html.escape(..., quote=True)`` after
:func:`~distill_doctor.reports.text.clean`).
"""

from __future__ import annotations

import re
from html import escape
from typing import Any

from distill_doctor.reports import charts, speculative_section
from distill_doctor.reports.charts import STUDENT_COLOR, TEACHER_COLOR, Series
from distill_doctor.reports.text import (
    MULTI_SAMPLE_HEADER,
    clean,
    finding_for,
    fmt_ci,
    fmt_num,
    fmt_p,
    fmt_pct,
    multi_sample_rows,
    ordered_findings,
    samples_for,
    scalar_metrics,
    truncate,
)

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
OUTPUT_LIMIT = 4000
MAX_BARS = 12  # per chart
MAX_SLICE_CHARTS = 4  # slice keys drawn (e.g. difficulty, domain)
VERDICTS = ("pass", "warn", "fail", "skipped")
CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1100px;padding:0 20px 40px;color:#1d232b}
h1{margin:24px 0 4px}h2{margin-top:36px;border-bottom:1px solid #d8dde3;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #d8dde3;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f7}.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{font-weight:600;border-radius:4px;padding:1px 8px;white-space:nowrap}
.v-pass{background:#dcf2e0;color:#17602a}.v-warn{background:#fff1c9;color:#7a5300}
.v-fail{background:#fbdada;color:#8d1c1c}.v-skipped{background:#eceff2;color:#56606b}
.suspect{border-left:6px solid #c62828;background:#fdf3f3;padding:10px 16px;margin:16px 0}
.ok{border-left:6px solid #2e7d32;background:#f1f8f2;padding:10px 16px;margin:16px 0}
pre{background:#f6f8fa;border:1px solid #d8dde3;padding:8px;white-space:pre-wrap;word-break:break-word;max-height:360px;overflow:auto;margin:4px 0}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:12px}.muted{color:#5f6b77}
section.finding{margin-top:28px}.chart{max-width:100%;height:auto;display:block;margin:8px 0}
.chart .grid{stroke:#e3e7eb}.chart .axis{stroke:#7d8791}.chart .whisker{stroke:#222;stroke-width:1.5}
.chart text{font:11px system-ui,sans-serif;fill:#333}.chart .count{font-size:20px;font-weight:600}
.chart .na{fill:#999}.chart .title{font-size:14px;font-weight:600}
"""


def _e(value: Any) -> str:
    return escape(clean(value), quote=True)


def _slug(value: Any) -> str:
    return re.sub(r"[^a-z0-9_]+", "-", clean(value).lower())[:60] or "x"


def _badge(verdict: Any) -> str:
    cls = verdict if verdict in VERDICTS else "skipped"
    return f'<span class="verdict v-{cls}">{_e(verdict)}</span>'


def _level(value: Any) -> str:
    """`` (98.3%)`` for an interval that is not the usual 95% one."""
    if isinstance(value, (int, float)) and 0 < value < 1 and abs(value - 0.95) > 1e-9:
        return f" ({100 * value:.3g}%)"
    return ""


def _table(header: list[str], rows: list[list[str]]) -> str:
    """``rows`` are already-escaped cell HTML; the header is escaped here."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pre(value: Any) -> str:
    return f"<pre>{_e(truncate(clean(value), OUTPUT_LIMIT))}</pre>"


def _overview(report: dict[str, Any], findings: list[dict[str, Any]]) -> str:
    suspect = report.get("primary_suspect")
    if suspect:
        f = finding_for(report, suspect) or {}
        guard = f"<p>What to do first:</p>{_pre(f['guardrail'])}" if f.get("guardrail") else ""
        head = (
            f'<div class="suspect"><strong>Primary suspect: <a href="#mode-{_slug(suspect)}">{_e(suspect)}</a></strong>'
            f" (stage {_e(f.get('stage', '?'))}). Fix this first.<p>{_e(f.get('summary', ''))}</p>{guard}</div>"
        )
    else:
        head = '<div class="ok"><strong>No failing mode.</strong></div>'
    rows = [
        [
            _e(f.get("stage", "")),
            f'<a href="#mode-{_slug(f.get("mode", ""))}">{_e(f.get("mode", ""))}</a>',
            _badge(f.get("verdict")),
            f'<span class="num">{_e(fmt_num(f.get("n")))}</span>',
            f'<span class="num">{_e(fmt_p(f.get("p_adjusted")))}</span>',
            _e(f.get("summary", "")),
        ]
        for f in findings
    ]
    order = " → ".join(_e(s) for s in report.get("debug_order") or [])
    return (
        head
        + f"<h2>Verdicts</h2><p class='muted'>Debug order: {order}.</p>"
        + _table(["stage", "mode", "verdict", "n", "p (Holm)", "summary"], rows)
    )


def _accuracy(report: dict[str, Any]) -> str:
    acc = report.get("accuracy") or {}
    missing = acc.get("missing") or {}
    roles = [r for r in ("teacher", "student") if acc.get(r) is not None or r == "student"]
    rows = [
        [
            _e(r),
            _e(fmt_pct(acc.get(r))),
            _e(fmt_ci(acc.get(f"{r}_ci"), pct=True)),
            _e(fmt_num(acc.get("n"))),
            _e(fmt_num(missing.get(r))),
        ]
        for r in roles
    ]
    colors = {"teacher": TEACHER_COLOR, "student": STUDENT_COLOR}
    chart = charts.bar_chart(
        "Accuracy with 95% intervals",
        ["all items"],
        [Series(r, colors[r], [acc.get(r)], [acc.get(f"{r}_ci")]) for r in roles],
        notes=[f"n={fmt_num(acc.get('n'))}"],
    )
    multi = multi_sample_rows(report)  # several samples per item: accuracy is pass@1 (SPEC)
    multi_html = (
        "<p>Several samples per item: accuracy is pass@1.</p>"
        + _table(MULTI_SAMPLE_HEADER, [[_e(c) for c in row] for row in multi])
        if multi
        else ""
    )
    return (
        "<h2>Accuracy</h2>"
        + _table(["model", "accuracy", "95% CI", "n scored", "outputs missing"], rows)
        + multi_html
        + chart
    )


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


def _charts_for(report: dict[str, Any], f: dict[str, Any]) -> str:
    m = f.get("metrics") if isinstance(f.get("metrics"), dict) else {}
    mode, out = f.get("mode"), []
    if mode == "teacher_error_transfer" and isinstance(report.get("failure_table"), dict):
        table = report["failure_table"]
        out.append(charts.agreement_matrix(table.get("counts") or {}, table.get("n")))
    if mode == "capacity_gap":
        if isinstance(m.get("slices"), list):
            by_key: dict[str, list[dict[str, Any]]] = {}
            for row in m["slices"]:
                if isinstance(row, dict):
                    by_key.setdefault(clean(row.get("key", "")), []).append(row)
            for key, rows in list(by_key.items())[:MAX_SLICE_CHARTS]:
                labels, series, notes = _pairs(
                    rows[:MAX_BARS],
                    lambda r: f"{clean(r.get('key', ''))}={clean(r.get('value', ''))}",
                    ("teacher", "teacher", "teacher_ci", False),
                    ("student", "student", "student_ci", False),
                )
                more = f", first {MAX_BARS} of {len(rows)}" if len(rows) > MAX_BARS else ""
                title = f"Accuracy per slice of {key} (95% intervals{more})"
                out.append(charts.bar_chart(title, labels, series, notes=notes))
        if isinstance(m.get("length_buckets"), list) and m["length_buckets"]:
            first = m["length_buckets"][0] if isinstance(m["length_buckets"][0], dict) else {}
            by = clean(first.get("by", "length")).replace("_", " ")
            labels, series, notes = _pairs(
                m["length_buckets"],
                lambda r: r.get("bucket", ""),
                ("teacher", "teacher", "teacher_ci", False),
                ("student", "student", "student_ci", False),
            )
            out.append(charts.bar_chart(f"Accuracy by {by}", labels, series, notes=notes))
    if mode == "superficial_imitation" and isinstance(m.get("perturbation"), dict):
        p = m["perturbation"]
        rows = [{"variant": "all variants", **p}] + [
            r for r in p.get("by_variant") or [] if isinstance(r, dict)
        ]
        labels, series, notes = _pairs(
            rows,
            lambda r: r.get("variant", ""),
            ("teacher_drop", "teacher drop", None, False),
            ("student_drop", "student drop", None, False),
        )
        out.append(
            charts.bar_chart("Accuracy drop on perturbed problems", labels, series, unit=False, notes=notes)
        )
    if mode == "exposure_bias" and m.get("by_length"):
        labels, series, notes = _pairs(
            m["by_length"],
            lambda r: r.get("bucket", ""),
            ("teacher_acc", "teacher accuracy", None, False),
            ("student_acc", "student accuracy", None, False),
            ("teacher_degenerate", "teacher degenerate", None, True),
            ("student_degenerate", "student degenerate", None, True),
        )
        out.append(
            charts.line_chart("Accuracy and degeneration vs output length", labels, series, notes=notes)
        )
    if mode == "contamination":
        out.append(_contamination_chart(m))
    return "".join(out)


def _contamination_chart(m: dict[str, Any]) -> str:
    """Accuracy on dirty vs clean items for each model the probe scored (its ``<role>_acc_dirty`` /
    ``<role>_acc_clean`` metrics); nothing when no model was scored."""
    series = [
        Series(role, STUDENT_COLOR if role == "student" else TEACHER_COLOR, [dirty, clean_])
        for role in ("teacher", "student")
        for dirty, clean_ in [(m.get(f"{role}_acc_dirty"), m.get(f"{role}_acc_clean"))]
        if dirty is not None or clean_ is not None
    ]
    if not series:
        return ""
    n_dirty, n_items = m.get("dirty"), m.get("n_items")
    n_clean = n_items - n_dirty if isinstance(n_dirty, int) and isinstance(n_items, int) else None
    return charts.bar_chart(
        "Accuracy on contaminated (dirty) vs clean items",
        ["dirty", "clean"],
        series,
        notes=[f"n={fmt_num(n_dirty)}", f"n={fmt_num(n_clean)}"],
    )


def _finding(report: dict[str, Any], f: dict[str, Any]) -> str:
    parts = [
        f'<section class="finding" id="mode-{_slug(f.get("mode", ""))}">',
        f"<h2>{_e(f.get('mode', ''))} {_badge(f.get('verdict'))}</h2>",
        f"<p>{_e(f.get('summary', ''))}</p>",
    ]
    if f.get("guardrail") and f.get("verdict") in ("fail", "warn"):
        parts.append(f"<p>Guardrail:</p>{_pre(f['guardrail'])}")
    tests = [t for t in f.get("tests") or [] if isinstance(t, dict)]
    if tests:
        rows = [
            [
                _e(t.get("name", "")),
                _e(fmt_num(t.get("n"))),
                _e(t.get("effect_name", "")),
                _e(fmt_num(t.get("effect"))),
                _e(fmt_ci(t.get("ci")) + _level(t.get("ci_level"))),
                _e(fmt_p(t.get("p_value"))),
            ]
            for t in tests
        ]
        parts.append(_table(["test", "n", "effect", "estimate", "interval", "p"], rows))
    parts.append(_charts_for(report, f))
    metrics = scalar_metrics(f.get("metrics"))
    if metrics:  # folded: the summary, the tests and the chart tell the story; these are the numbers
        table = _table(
            ["metric", "value"],
            [[_e(k), f'<span class="num">{_e(fmt_num(v))}</span>'] for k, v in metrics],
        )
        parts.append(f'<details class="raw"><summary>All metrics ({len(metrics)})</summary>{table}</details>')
    evidence = [ev for ev in f.get("evidence") or [] if isinstance(ev, dict)]
    if evidence:
        scored = any("kind" in ev or "score" in ev for ev in evidence)
        rows = [
            [_e(ev.get("id", "")), _e(ev.get("why", ""))]
            + ([_e(ev.get("kind", "")), _e(fmt_num(ev.get("score")))] if scored else [])
            for ev in evidence[:50]
        ]
        parts.append(_table(["item", "why", "kind", "score"] if scored else ["item", "why"], rows))
        first_open = f.get("verdict") == "fail"  # the failing mode's first example is shown unfolded
        parts += [
            _side_by_side(report, ev, unfold=first_open and k == 0) for k, ev in enumerate(evidence[:5])
        ]
    parts.append("</section>")
    return "".join(parts)


def _side_by_side(report: dict[str, Any], ev: dict[str, Any], *, unfold: bool = False) -> str:
    sample = samples_for(report, ev.get("id"))
    if not sample:
        return ""
    cols = []
    for role in ("teacher", "student"):
        if role not in sample:
            continue
        passed = sample.get(f"{role}_passed")
        mark = "right" if passed else ("wrong" if passed is False else "not scored")
        cols.append(
            f"<div><strong>{role}</strong> ({mark}; answer {_e(fmt_num(sample.get(f'{role}_answer')))})"
            f"{_pre(sample.get(role) if sample.get(role) is not None else '(no output)')}</div>"
        )
    return (
        f"<details{' open' if unfold else ''}><summary>{_e(ev.get('id', ''))}: prompt, reference and outputs</summary>"
        f"{_pre(sample.get('prompt', ''))}<p>Reference: <code>{_e(fmt_num(sample.get('reference')))}</code></p>"
        f'<div class="pair">{"".join(cols)}</div></details>'
    )


def _footer(report: dict[str, Any]) -> str:
    rows = []
    for name, meta in (report.get("inputs") or {}).items():
        if isinstance(meta, dict):
            detail = ", ".join(f"{clean(k)}={clean(fmt_num(v))}" for k, v in meta.items() if k != "path")
            rows.append([_e(name), _e(meta.get("path", "")), _e(detail)])
        elif meta is not None:
            rows.append([_e(name), _e(meta), ""])
    settings = report.get("settings") or {}
    tool = report.get("tool") or {}
    sandbox = report.get("code_sandbox") or {}
    return (
        "<h2>Inputs and settings</h2>"
        + (_table(["input", "path", "details"], rows) if rows else "")
        + (f"<p>Code items ran in the sandbox: {_e(sandbox.get('detail', ''))}.</p>" if sandbox else "")
        + f"<p class='muted'>{_e(tool.get('name', 'distill-doctor'))} {_e(tool.get('version', ''))}; "
        f"alpha {_e(fmt_num(settings.get('alpha')))}, multiplicity control {_e(settings.get('multiplicity', 'n/a'))}, "
        f"seed {_e(fmt_num(settings.get('seed')))}; created {_e(report.get('created_at', ''))}.</p>"
    )


def render_html(report: dict[str, Any]) -> str:
    """The whole report as one self-contained HTML document."""
    findings = ordered_findings(report)
    body = [
        "<h1>distill-doctor report</h1>",
        _overview(report, findings),
        _accuracy(report),
        speculative_section.html_section(report),
        *(_finding(report, f) for f in findings),
        _footer(report),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="referrer" content="no-referrer">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>distill-doctor report: {_e(report.get('primary_suspect') or 'no failing mode')}</title>"
        f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
