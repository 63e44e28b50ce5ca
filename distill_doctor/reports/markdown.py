"""report.json -> Markdown ready to paste into a pull request (pure: dict in, str out).

Untrusted text outside code blocks goes through :func:`md_text` (HTML-escaped and
Markdown-escaped, one line); model text goes in fenced blocks whose fence is longer
than any backtick run inside (:func:`fenced`).
"""

from __future__ import annotations

from typing import Any

from distill_doctor.reports import speculative_section
from distill_doctor.reports.markdown_text import _num, fenced, md_code, md_table, md_text
from distill_doctor.reports.text import (
    MULTI_SAMPLE_HEADER,
    clean,
    fmt_ci,
    fmt_p,
    fmt_pct,
    is_number,
    multi_sample_rows,
    ordered_findings,
    samples_for,
    scalar_metrics,
)
from distill_doctor.vocabulary import Verdict

VERDICT_LABEL = {
    Verdict.PASS: "✅ pass",
    Verdict.WARN: "⚠️ warn",
    Verdict.FAIL: "❌ fail",
    Verdict.SKIPPED: "➖ skipped",
}
EVIDENCE_PER_FINDING = 3
EVIDENCE_TOTAL = 9


def _level(value: Any) -> str:
    return f"{100 * value:.3g}%" if is_number(value) and 0 < value < 1 else "95%"


def _accuracy(report: dict[str, Any]) -> list[str]:
    acc = report.get("accuracy") or {}
    n = acc.get("n")
    missing = acc.get("missing") or {}
    rows = []
    for role in ("teacher", "student"):
        if acc.get(role) is None and role == "teacher":
            continue
        gone = missing.get(role)
        rows.append(
            [
                role,
                fmt_pct(acc.get(role)),
                fmt_ci(acc.get(f"{role}_ci"), pct=True),
                _num(n),
                _num(gone) if gone is not None else "n/a",
            ]
        )
    header = ["model", "accuracy", "95% CI", "n scored", "outputs missing"]
    sandbox = report.get("code_sandbox") or {}
    note = [f"Code items ran in the sandbox: {clean(sandbox.get('detail', ''))}.", ""] if sandbox else []
    lines = ["## Accuracy", "", *md_table(header, rows), "", *note]
    multi = multi_sample_rows(report)
    if multi:  # several samples per item: accuracy is pass@1 (SPEC)
        lines += [
            "Several samples per item: accuracy is pass@1.",
            "",
            *md_table(MULTI_SAMPLE_HEADER, multi),
            "",
        ]
    return lines + _lm_eval_agreement(report)


def _lm_eval_agreement(report: dict[str, Any]) -> list[str]:
    """lm-eval samples as outputs: lm-eval's own metric, labelled as lm-eval's, and its per-item
    agreement with the verifier; a disagreement above 1% of items is a warning (SPEC)."""
    lines = []
    for role, block in (report.get("lm_eval_agreement") or {}).items():
        if not block or not block.get("n"):
            continue
        label = block["metric"] + (f" ({block['filter']})" if block["filter"] != "none" else "")
        lines.append(
            f"- {role}: lm-eval's own {md_code(label)} is {fmt_pct(block.get('lm_eval_accuracy'))}; "
            f"it agrees with the verifier on {block['agree']} of {block['n']} items."
        )
        if block.get("warning"):
            lines.append(f"  **Warning:** {md_text(block['warning'])}")
    return ["lm-eval's own scores (the accuracy above is the verifier's):", "", *lines, ""] if lines else []


def _verdict_label(finding: dict[str, Any]) -> str:
    """The finding's verdict with its sign (``❌ fail``); an unknown word as escaped text."""
    verdict = finding.get("verdict")
    return VERDICT_LABEL[verdict] if verdict in VERDICT_LABEL else md_text(finding.get("verdict", ""))


def _flagged(finding: dict[str, Any]) -> bool:
    """True for a finding a reader must act on (it fails or warns)."""
    verdict = finding.get("verdict")
    return verdict in (Verdict.FAIL, Verdict.WARN)


def _suspect(report: dict[str, Any], findings: list[dict[str, Any]]) -> list[str]:
    suspect = report.get("primary_suspect")
    if not suspect:
        warned = [f for f in findings if f.get("verdict") == Verdict.WARN]
        note = f" {len(warned)} finding(s) warn; see below." if warned else ""
        return ["**No failing mode.**" + note, ""]
    finding = next((f for f in findings if f.get("mode") == suspect), {})
    lines = [
        f"**Primary suspect: {md_code(suspect)}** (stage {md_code(finding.get('stage', '?'))}). "
        "Fix this first; later stages are read in its light.",
        "",
        md_text(finding.get("summary", "")),
        "",
    ]
    if finding.get("guardrail"):
        lines += ["What to do first:", "", fenced(finding["guardrail"], info="sh", limit=None), ""]
    return lines


def _verdicts(report: dict[str, Any], findings: list[dict[str, Any]]) -> list[str]:
    order = " → ".join(md_text(s) for s in report.get("debug_order") or [])
    rows = [
        [
            md_text(f.get("stage", "")),
            md_code(f.get("mode", ""), in_table=True),
            _verdict_label(f),
            _num(f.get("n")),
            fmt_p(f.get("p_adjusted")),
            md_text(f.get("summary", ""), 300),
        ]
        for f in findings
    ]
    header = ["stage", "mode", "verdict", "n", "p (Holm)", "summary"]
    return [f"## Verdicts (debug order: {order})", "", *md_table(header, rows), ""]


def _key_numbers(findings: list[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for f in findings:
        if not _flagged(f):
            continue
        lines += [f"### {md_code(f.get('mode', ''))}: {VERDICT_LABEL[f['verdict']]}", ""]
        tests = [t for t in f.get("tests") or [] if isinstance(t, dict)]
        if tests:
            rows = [
                [
                    md_text(t.get("name", "")),
                    _num(t.get("n")),
                    md_text(t.get("effect_name", "")) + " = " + _num(t.get("effect")),
                    _level(t.get("ci_level")) + " CI " + fmt_ci(t.get("ci")),
                    fmt_p(t.get("p_value")),
                ]
                for t in tests
            ]
            lines += md_table(["test", "n", "effect", "interval", "p"], rows) + [""]
        metrics = scalar_metrics(f.get("metrics"))[:12]
        if metrics:
            lines.append("Metrics: " + "; ".join(f"{md_code(k, 60)} = {_num(v)}" for k, v in metrics))
            lines.append("")
    return ["## Key numbers", "", *lines] if lines else []


def _failure_table(report: dict[str, Any]) -> list[str]:
    table = report.get("failure_table")
    if not isinstance(table, dict):
        return []
    c = table.get("counts") or {}
    wrong_both = (c.get("both_wrong_same") or 0) + (c.get("both_wrong_different") or 0)
    rows = [
        ["**teacher right**", _num(c.get("both_right")), _num(c.get("only_teacher_right"))],
        [
            "**teacher wrong**",
            _num(c.get("only_student_right")),
            f"{wrong_both} (same answer: {_num(c.get('both_wrong_same'))}, "
            f"different: {_num(c.get('both_wrong_different'))})",
        ],
    ]
    return [
        f"## Teacher vs student failures (n = {_num(table.get('n'))})",
        "",
        *md_table(["", "student right", "student wrong"], rows),
        "",
    ]


def _evidence(report: dict[str, Any], findings: list[dict[str, Any]]) -> list[str]:
    """Up to 3 evidence items per failing or warning finding (9 in all), outputs side by side."""
    lines: list[str] = []
    shown = 0
    for f in findings:
        if not _flagged(f):
            continue
        for ev in [e for e in f.get("evidence") or [] if isinstance(e, dict)][:EVIDENCE_PER_FINDING]:
            shown += 1
            if shown > EVIDENCE_TOTAL:
                break
            lines += [
                f"### {md_code(f.get('mode', ''))} · {md_code(ev.get('id', ''))}",
                "",
                md_text(ev.get("why", "")),
                "",
            ]
            sample = samples_for(report, ev.get("id"))
            if not sample:
                continue
            lines += ["Prompt:", "", fenced(sample.get("prompt", ""), limit=300), ""]
            lines.append(f"Reference: {md_code(sample.get('reference'))}")
            lines.append("")
            for role in ("teacher", "student"):
                if sample.get(role) is None:
                    continue
                passed = sample.get(f"{role}_passed")
                mark = "right" if passed else ("wrong" if passed is False else "not scored")
                answer = sample.get(f"{role}_answer")
                lines += [
                    f"{role.capitalize()} ({mark}, answer {md_code(answer) if answer is not None else 'none'}):",
                    "",
                    fenced(sample[role]),
                    "",
                ]
    return ["## Evidence", "", *lines] if lines else []


def render_markdown(report: dict[str, Any]) -> str:
    """The whole report as GitHub-flavoured Markdown."""
    findings = ordered_findings(report)
    tool = report.get("tool") or {}
    lines = ["# distill-doctor report", ""]
    lines += _suspect(report, findings)
    lines += _verdicts(report, findings)
    lines += _accuracy(report)
    lines += speculative_section.markdown_section(report)
    lines += _key_numbers(findings)
    lines += _failure_table(report)
    lines += _evidence(report, findings)
    settings = report.get("settings") or {}
    lines.append(
        f"<sub>{md_text(tool.get('name', 'distill-doctor'))} {md_text(tool.get('version', ''))}, "
        f"{md_text(report.get('created_at', ''))}; alpha = {_num(settings.get('alpha'))}, "
        f"multiplicity control: {md_text(settings.get('multiplicity', 'n/a'))}, seed {_num(settings.get('seed'))}.</sub>"
    )
    return "\n".join(lines) + "\n"
