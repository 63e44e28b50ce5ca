"""Inline SVG charts for report.html: no JavaScript, no fonts or files to fetch.

Each function is pure (data in, ``<svg>`` markup out): the geometry is computed from numbers,
and every label (a slice value or a series name can come from the user's data) is escaped
with :func:`~distill_doctor.reports.templating.escape_text`, the function the templates use.
The result is :class:`~markupsafe.Markup`, so a template inserts it as is. Nothing is drawn for
a missing or non-finite value (the label then says ``n/a``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from distill_doctor.reports.templating import escape_text as _e
from distill_doctor.reports.text import clean, finite, fmt_num, interval

TEACHER_COLOR = "#3b6ea8"
STUDENT_COLOR = "#d9822b"
WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 52, 16, 52, 58


@dataclass
class Series:
    """One coloured series: a value (and optionally an interval) per x label."""

    name: str
    color: str
    values: list[Any]
    cis: list[Any] | None = None
    dashed: bool = False


def _scale(series: list[Series], unit: bool) -> tuple[float, float, list[float]]:
    """(lo, hi, ticks) covering every value and interval; [0, 1] when ``unit`` and everything fits."""
    points = [v for s in series for v in map(finite, s.values) if v is not None]
    for s in series:
        points += [x for ci in (s.cis or []) if (pair := interval(ci)) for x in pair]
    lo, hi = min([0.0, *points]), max([0.0, *points])
    if unit and lo >= 0 and hi <= 1:
        return 0.0, 1.0, [0.0, 0.25, 0.5, 0.75, 1.0]
    if hi - lo < 1e-12:
        hi = lo + 1.0
    raw = (hi - lo) / 4
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    lo, hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
    ticks = [lo + i * step for i in range(int(round((hi - lo) / step)) + 1)]
    return lo, hi, ticks


def _tick_label(value: float, percent: bool) -> str:
    return f"{100 * value:g}%" if percent else fmt_num(round(value, 10))


def _frame(
    title: str, lo: float, hi: float, ticks: list[float], percent: bool, series: list[Series]
) -> list[str]:
    plot_h = HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{_e(title)}">',
        f"<title>{_e(title)}</title>",
        f'<text x="{LEFT}" y="16" class="title">{_e(title)}</text>',
    ]
    for t in ticks:
        y = TOP + plot_h * (hi - t) / (hi - lo)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{_tick_label(t, percent)}</text>'
        )
    x = LEFT
    for s in series:  # legend, top left
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        parts.append(
            f'<line x1="{x}" x2="{x + 18}" y1="34" y2="34" stroke="{s.color}" stroke-width="8"{dash}/>'
        )
        parts.append(f'<text x="{x + 24}" y="38" class="legend">{_e(s.name)}</text>')
        x += 34 + 7 * len(clean(s.name))
    return parts


def _y(value: float, lo: float, hi: float) -> float:
    return TOP + (HEIGHT - TOP - BOTTOM) * (hi - value) / (hi - lo)


def bar_chart(
    title: str,
    labels: list[Any],
    series: list[Series],
    *,
    percent: bool = True,
    unit: bool = True,
    notes: list[Any] | None = None,
) -> Markup:
    """Grouped bars: one group per label, one bar per series, with interval whiskers where given.

    ``percent`` formats values as percentages; ``unit`` fixes the axis at [0, 1] when the data
    fit (shares), else it is fitted to the data. ``notes`` (one per label, e.g. ``"n=40"``) are
    printed under the labels.
    """
    lo, hi, ticks = _scale(series, unit)
    parts = _frame(title, lo, hi, ticks, percent, series)
    groups = max(len(labels), 1)
    group_w = (WIDTH - LEFT - RIGHT) / groups
    bar_w = min(40.0, group_w * 0.8 / max(len(series), 1))
    zero = _y(0.0, lo, hi)
    for g, label in enumerate(labels):
        x0 = LEFT + g * group_w + (group_w - bar_w * len(series)) / 2
        for k, s in enumerate(series):
            value = finite(s.values[g]) if g < len(s.values) else None
            x = x0 + k * bar_w
            if value is None:
                parts.append(
                    f'<text x="{x + bar_w / 2:.1f}" y="{zero - 4:.1f}" text-anchor="middle" class="na">n/a</text>'
                )
                continue
            y = _y(value, lo, hi)
            top, height = min(y, zero), abs(zero - y)
            shown = _tick_label(value, percent) if percent else fmt_num(value)
            parts.append(
                f'<rect x="{x + 1:.1f}" y="{top:.1f}" width="{bar_w - 2:.1f}" height="{height:.1f}" '
                f'fill="{s.color}"><title>{_e(s.name)}, {_e(label)}: {_e(shown)}</title></rect>'
            )
            ci = interval(s.cis[g]) if s.cis and g < len(s.cis) else None
            if ci is not None:
                cx, y1, y2 = x + bar_w / 2, _y(ci[0], lo, hi), _y(ci[1], lo, hi)
                parts.append(
                    f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y1:.1f}" y2="{y2:.1f}" class="whisker"/>'
                )
        cx = LEFT + (g + 0.5) * group_w
        parts.append(
            f'<text x="{cx:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" class="label">{_e(_short(label))}</text>'
        )
        if notes and g < len(notes):
            parts.append(
                f'<text x="{cx:.1f}" y="{HEIGHT - BOTTOM + 32}" text-anchor="middle" class="note">{_e(notes[g])}</text>'
            )
    parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{zero:.1f}" y2="{zero:.1f}" class="axis"/>')
    parts.append("</svg>")
    return Markup("\n".join(parts))


def line_chart(
    title: str,
    labels: list[Any],
    series: list[Series],
    *,
    percent: bool = True,
    unit: bool = True,
    notes: list[Any] | None = None,
) -> Markup:
    """One polyline per series over ordered x labels (e.g. output-length buckets); gaps at missing values."""
    lo, hi, ticks = _scale(series, unit)
    parts = _frame(title, lo, hi, ticks, percent, series)
    step = (WIDTH - LEFT - RIGHT) / max(len(labels), 1)
    xs = [LEFT + (i + 0.5) * step for i in range(len(labels))]
    for s in series:
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        run: list[str] = []
        for i, x in enumerate(xs):
            value = finite(s.values[i]) if i < len(s.values) else None
            if value is None:
                if len(run) > 1:
                    parts.append(
                        f'<polyline points="{" ".join(run)}" fill="none" stroke="{s.color}" stroke-width="2.5"{dash}/>'
                    )
                run = []
                continue
            y = _y(value, lo, hi)
            run.append(f"{x:.1f},{y:.1f}")
            shown = _tick_label(value, percent) if percent else fmt_num(value)
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{s.color}">'
                f"<title>{_e(s.name)}, {_e(labels[i])}: {_e(shown)}</title></circle>"
            )
        if len(run) > 1:
            parts.append(
                f'<polyline points="{" ".join(run)}" fill="none" stroke="{s.color}" stroke-width="2.5"{dash}/>'
            )
    for i, x in enumerate(xs):
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" class="label">{_e(_short(labels[i]))}</text>'
        )
        if notes and i < len(notes):
            parts.append(
                f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 32}" text-anchor="middle" class="note">{_e(notes[i])}</text>'
            )
    parts.append("</svg>")
    return Markup("\n".join(parts))


def agreement_matrix(counts: dict[str, Any], n: Any = None) -> Markup:
    """The teacher-vs-student error-agreement matrix: 2x2, the both-wrong cell split into same/different."""
    get = {k: int(v) if finite(v) is not None else 0 for k, v in counts.items()}
    total = sum(get.values()) or 1
    size, left, top = 150, 130, 40
    cells = [
        (0, 0, "both right", get.get("both_right", 0)),
        (1, 0, "only teacher right", get.get("only_teacher_right", 0)),
        (0, 1, "only student right", get.get("only_student_right", 0)),
    ]
    parts = [
        f'<svg class="chart matrix" viewBox="0 0 {left + 2 * size + 20} {top + 2 * size + 20}" '
        f'width="{left + 2 * size + 20}" height="{top + 2 * size + 20}" role="img" aria-label="error-agreement matrix">',
        f"<title>Teacher vs student error agreement (n = {_e(fmt_num(n if n is not None else total))})</title>",
        f'<text x="{left + size / 2}" y="{top - 10}" text-anchor="middle" class="label">student right</text>',
        f'<text x="{left + 1.5 * size}" y="{top - 10}" text-anchor="middle" class="label">student wrong</text>',
        f'<text x="{left - 8}" y="{top + size / 2}" text-anchor="end" class="label">teacher right</text>',
        f'<text x="{left - 8}" y="{top + 1.5 * size}" text-anchor="end" class="label">teacher wrong</text>',
    ]

    def cell(col: float, row: float, w: float, h: float, label: str, count: int) -> None:
        shade = 0.12 + 0.78 * count / total
        x, y = left + col * size, top + row * size
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{STUDENT_COLOR}" '
            f'fill-opacity="{shade:.2f}" stroke="#fff" stroke-width="2"><title>{label}: {count}</title></rect>'
        )
        parts.append(
            f'<text x="{x + w / 2:.1f}" y="{y + h / 2:.1f}" text-anchor="middle" class="count">{count}</text>'
        )
        parts.append(
            f'<text x="{x + w / 2:.1f}" y="{y + h / 2 + 18:.1f}" text-anchor="middle" class="note">{label}</text>'
        )

    for col, row, label, count in cells:
        cell(col, row, size, size, label, count)
    cell(1, 1, size, size / 2, "same wrong answer", get.get("both_wrong_same", 0))
    cell(1, 1.5, size, size / 2, "different wrong answers", get.get("both_wrong_different", 0))
    parts.append("</svg>")
    return Markup("\n".join(parts))


def _short(label: Any, limit: int = 18) -> str:
    text = " ".join(clean(label).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
