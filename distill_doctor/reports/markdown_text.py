"""Markdown building blocks for untrusted text: escaped prose and table cells, code spans and
fenced blocks that no backtick inside can close, and GFM tables. Shared by the report's renderer
(``markdown.py``) and its speculative-decoding section."""

from __future__ import annotations

import re
from typing import Any

from distill_doctor.reports.text import clean, fmt_num, is_number, one_line, truncate

OUTPUT_LIMIT = 600
_MD_SPECIAL = re.compile(r"([\\`*_\[\]#|~>])")


def md_text(value: Any, limit: int | None = None) -> str:
    """One line of untrusted text, safe in Markdown prose and table cells."""
    text = one_line(value, limit)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text)


def _num(value: Any) -> str:
    """A number formatted for people; anything else is escaped like other untrusted text."""
    if value is None or isinstance(value, bool) or is_number(value):
        return fmt_num(value)
    return md_text(value, 60)


def md_code(value: Any, limit: int | None = 120, *, in_table: bool = False) -> str:
    """A short inline code span (ids, metric keys) that no backtick inside can close early.

    In a table cell a pipe splits the cell even inside a code span (GFM), so it is escaped there.
    """
    text = one_line(value, limit)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    if in_table:
        text = text.replace("|", "\\|")
    return f"{ticks}{pad}{text}{pad}{ticks}"


def fenced(value: Any, *, info: str = "text", limit: int | None = OUTPUT_LIMIT) -> str:
    """A fenced code block holding ``value``; the fence is longer than any backtick run inside."""
    text = clean(value)
    if limit is not None:
        text = truncate(text, limit)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text.rstrip()}\n{fence}"


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A GFM table: the header row, the rule, one line per row (cells already escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines
