"""The report's "Speculative decoding readiness" section, for Markdown and HTML (pure renderers).

Renders the top-level ``speculative`` block (``distill_doctor.speculative.report``): the draft
acceptance rate with its interval, expected tokens per teacher call and speedup by draft length,
acceptance by output position (a chart) and by slice. Empty when the block is absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from distill_doctor.reports.markdown_text import fenced, md_table, md_text
from distill_doctor.reports.text import fmt_ci, fmt_num, fmt_pct, is_number

BAR_WIDTH = 30
MAX_SLICE_ROWS = 12


def _block(report: dict[str, Any]) -> dict[str, Any] | None:
    block = report.get("speculative")
    return block if isinstance(block, dict) else None


def _headline(b: dict[str, Any]) -> str:
    cost = f"c = {fmt_num(b.get('draft_cost'))} ({b.get('draft_cost_source', 'n/a')})"
    return (
        f"As a draft for its teacher (temperature {fmt_num(b.get('temperature'))}, along the "
        f"{b.get('along', 'outputs')}): acceptance alpha = {fmt_pct(b.get('acceptance_rate'))} "
        f"(95% CI {fmt_ci(b.get('acceptance_ci'), pct=True)}, bootstrap by item; "
        f"{fmt_num(b.get('n_tokens'))} tokens, {fmt_num(b.get('n_items'))} items); greedy agreement "
        f"{fmt_pct(b.get('greedy_agreement'))}. Draft/teacher cost {cost}; best draft length "
        f"{fmt_num(b.get('best_gamma'))} for an expected {fmt_num(b.get('best_speedup'))}x speedup."
    )


def _gamma_rows(b: dict[str, Any]) -> list[list[str]]:
    eff, seq, spd = (b.get(k) or {} for k in ("block_efficiency", "block_efficiency_sequential", "speedup"))
    cis = b.get("block_efficiency_ci") or {}
    return [
        [g, fmt_num(eff.get(g)), fmt_ci(cis.get(g)), fmt_num(seq.get(g)), fmt_num(spd.get(g))]
        for g in sorted(eff, key=int)
    ]


GAMMA_HEADER = [
    "gamma",
    "tokens per teacher call (i.i.d.)",
    "95% CI",
    "per-position replay",
    "expected speedup",
]
NOTE = (
    "The i.i.d. column is Leviathan et al.'s (1 - alpha^(gamma+1)) / (1 - alpha); speedup divides it "
    "by (gamma c + 1). The replay uses each position's own acceptance and stops at the end of each "
    "output, so it is lower where outputs are short or acceptance varies along them."
)


def _position_bars(b: dict[str, Any]) -> str:
    lines = []
    for p in b.get("by_position") or []:
        rate = p.get("acceptance_rate")
        bar = "█" * round(BAR_WIDTH * rate) if is_number(rate) else ""
        lines.append(
            f"{p['start']:>4}-{p['end'] - 1:<4} {bar:<{BAR_WIDTH}} {fmt_pct(rate):>6}  n={p.get('n_tokens')}"
        )
    return "\n".join(lines)


def _slice_rows(b: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    rows = [
        (key, str(e.get("value")), e) for key, entries in (b.get("by_slice") or {}).items() for e in entries
    ]
    return rows[:MAX_SLICE_ROWS]


def markdown_section(report: dict[str, Any]) -> list[str]:
    """Markdown lines of the section (none without a ``speculative`` block)."""
    b = _block(report)
    if b is None:
        return []

    lines = ["## Speculative decoding readiness", "", md_text(_headline(b)), ""]
    lines += md_table(GAMMA_HEADER, _gamma_rows(b)) + ["", md_text(NOTE), ""]
    if b.get("by_position"):
        lines += [
            "Acceptance by output position (token index):",
            "",
            fenced(_position_bars(b), limit=None),
            "",
        ]
    slices = _slice_rows(b)
    if slices:
        rows = [
            [
                md_text(f"{k} = {v}"),
                fmt_pct(e.get("acceptance_rate")),
                fmt_ci(e.get("acceptance_ci"), pct=True),
                fmt_num(e.get("n_tokens")),
                fmt_num(e.get("n_items")),
            ]
            for k, v, e in slices
        ]
        lines += md_table(["slice", "acceptance", "95% CI", "tokens", "items"], rows) + [""]
    return lines


def html_section(report: dict[str, Any]) -> Markup:
    """The HTML section with its charts (empty without a ``speculative`` block).

    The markup is ``templates/speculative.html.j2``; this chooses the rows and draws the charts.
    """
    b = _block(report)
    if b is None:
        return Markup("")
    from distill_doctor.reports import charts, templating
    from distill_doctor.reports.charts import STUDENT_COLOR, TEACHER_COLOR, Series

    positions = b.get("by_position") or []
    position_chart = (
        charts.bar_chart(
            "Draft acceptance by output position",
            [f"{p['start']}-{p['end'] - 1}" for p in positions],
            [Series("acceptance", STUDENT_COLOR, [p.get("acceptance_rate") for p in positions])],
            notes=[f"n={p.get('n_tokens')}" for p in positions],
        )
        if positions
        else None
    )
    eff = b.get("block_efficiency") or {}
    gamma_chart = None
    if eff:
        gammas = sorted(eff, key=int)
        seq = b.get("block_efficiency_sequential") or {}
        spd = b.get("speedup") or {}
        gamma_chart = charts.line_chart(
            "Expected tokens per teacher call and speedup by draft length gamma",
            [f"gamma={g}" for g in gammas],
            [
                Series("tokens/call (i.i.d.)", TEACHER_COLOR, [eff.get(g) for g in gammas]),
                Series("tokens/call (replay)", TEACHER_COLOR, [seq.get(g) for g in gammas], dashed=True),
                Series("speedup", STUDENT_COLOR, [spd.get(g) for g in gammas]),
            ],
            percent=False,
            unit=False,
        )
    slice_rows = [
        [
            f"{k} = {v}",
            fmt_pct(e.get("acceptance_rate")),
            fmt_ci(e.get("acceptance_ci"), pct=True),
            fmt_num(e.get("n_tokens")),
            fmt_num(e.get("n_items")),
        ]
        for k, v, e in _slice_rows(b)
    ]
    view = SpeculativeView(
        _headline(b), GAMMA_HEADER, _gamma_rows(b), NOTE, position_chart, gamma_chart, slice_rows
    )
    return templating.macro("speculative.html.j2", "section")(view)


@dataclass(frozen=True)
class SpeculativeView:
    """What the HTML section shows (plain text is escaped by the template; charts are markup)."""

    headline: str
    gamma_header: list[str]
    gamma_rows: list[list[str]]
    note: str
    position_chart: Markup | None
    gamma_chart: Markup | None
    slice_rows: list[list[str]]
