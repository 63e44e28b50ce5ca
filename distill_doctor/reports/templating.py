"""The Jinja2 environment that renders report.html from ``reports/templates/*.html.j2``.

Autoescaping is on, and every ``{{ value }}`` first passes :func:`escape_text`: the report's
text is untrusted (model outputs, item ids, file names), so it is made safe to read
(:func:`~distill_doctor.reports.text.clean`) and then escaped, quotes included. Only values
that are already markup pass unchanged: the output of a template macro, and the SVG charts
that ``charts.py`` builds from numbers (escaping each label itself, with the same function).

Whitespace is explicit: the page's bytes are a contract (the demo reports are compared byte
for byte), so templates use ``trim_blocks``/``lstrip_blocks`` and the ``-``/``+`` markers.
"""

from __future__ import annotations

import functools
import re
from html import escape
from typing import Any

import jinja2
from markupsafe import Markup

from distill_doctor.reports.text import clean, fmt_ci, fmt_num, fmt_p, fmt_pct, truncate
from distill_doctor.vocabulary import Verdict

OUTPUT_LIMIT = 4000  # characters of one model output shown in a <pre>


def escape_text(value: Any) -> Markup:
    """``value`` as HTML text: :func:`clean`, then ``html.escape(..., quote=True)``; markup passes as is."""
    if isinstance(value, Markup):
        return value
    return Markup(escape(clean(value), quote=True))


def slug(value: Any) -> str:
    """An anchor id fragment: lower-case ``[a-z0-9_]`` runs joined by ``-`` (at most 60 characters)."""
    return re.sub(r"[^a-z0-9_]+", "-", clean(value).lower())[:60] or "x"


def ci_level(value: Any) -> str:
    """`` (98.3%)`` for an interval that is not the usual 95% one, else ``""``."""
    if isinstance(value, (int, float)) and 0 < value < 1 and abs(value - 0.95) > 1e-9:
        return f" ({100 * value:.3g}%)"
    return ""


def verdict_class(value: Any) -> str:
    """The CSS class suffix of a verdict badge: the verdict, or ``skipped`` for an unknown word."""
    return str(value) if value in tuple(Verdict) else Verdict.SKIPPED.value


def output_text(value: Any) -> str:
    """A model output (or prompt) cut to :data:`OUTPUT_LIMIT` characters for a ``<pre>``."""
    return truncate(clean(value), OUTPUT_LIMIT)


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The environment (built once): package templates, autoescape, :func:`escape_text` on output."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("distill_doctor.reports", "templates"),
        autoescape=True,
        finalize=escape_text,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        extensions=["jinja2.ext.do"],
    )
    env.filters.update(
        num=fmt_num,
        pct=fmt_pct,
        p=fmt_p,
        ci=fmt_ci,
        level=ci_level,
        slug=slug,
        output=output_text,
        verdict_class=verdict_class,
    )
    return env


def macro(template: str, name: str) -> Any:
    """The macro ``name`` of ``template`` (a callable returning :class:`Markup`)."""
    return getattr(environment().get_template(template).module, name)
