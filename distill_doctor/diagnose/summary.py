"""A one-screen terminal summary of a report (the full story is in report.md / report.html)."""

from __future__ import annotations

from typing import Any

MARK = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skipped": "skip"}


def _pct(x: float | None) -> str:
    return "  n/a" if x is None else f"{100 * x:5.1f}%"


def format_summary(report: dict[str, Any], *, width: int = 100) -> str:
    acc = report.get("accuracy") or {}
    lines = [
        f"accuracy on {acc.get('n', 0)} items: teacher {_pct(acc.get('teacher'))}, "
        f"student {_pct(acc.get('student'))}",
    ]
    for role, block in (report.get("lm_eval_agreement") or {}).items():
        if block and block.get("n"):
            label = block["metric"] + (f" ({block['filter']})" if block["filter"] != "none" else "")
            lines.append(
                f"  {role}: lm-eval's own {label} {_pct(block.get('lm_eval_accuracy'))}, "
                f"agrees with the verifier on {block['agree']}/{block['n']} items"
                + ("  <-- WARNING" if block.get("warning") else "")
            )
    stage = None
    for f in report.get("findings", []):
        if f["stage"] != stage:
            stage = f["stage"]
            lines.append(f"[{stage}]")
        text = f.get("skipped_reason") if f["verdict"] == "skipped" else f.get("summary", "")
        line = f"  {MARK.get(f['verdict'], f['verdict']):4}  {f['mode']:<24} {text}"
        lines.append(line if len(line) <= width else line[: width - 3] + "...")
    suspect = report.get("primary_suspect")
    if suspect:
        first = next(f for f in report["findings"] if f["mode"] == suspect)
        lines.append(f"primary suspect: {suspect}")
        if first.get("guardrail"):
            lines.append(f"  fix first: {first['guardrail']}")
    else:
        lines.append("primary suspect: none (no failing mode)")
    return "\n".join(lines)
