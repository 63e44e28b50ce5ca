"""Format filters for generated responses: each a pure ``(item, text) -> reason | None`` check.

A filter returns ``None`` to keep the response, else a short reason. Each has a ``RULE`` string,
recorded verbatim in the provenance manifest so a reader knows exactly what was dropped.

- ``empty``: nothing but whitespace.
- ``truncated``: the sampler stopped at ``max_new_tokens`` before the model's EOS (known when the
  sampler returns :class:`~distill_doctor.produce.sampling.Completion` texts; plain strings are
  never considered truncated).
- ``repetition_loop``: a degenerate loop: some unit of ``p`` characters (``p <= max_period``)
  repeated back to back over a stretch of at least ``max(min_chars, min_repeats * p)``
  characters, e.g. ``"The answer is 5. The answer is 5. The answer is 5. ..."``.
- ``no_final_answer``: no final answer can be extracted the way the item's verifier would
  (``numeric``, ``exact``, ``choice`` items; ``regex`` and ``code`` items are not checked here).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from distill_doctor.data.records import Item
from distill_doctor.text.text_features import has_final_answer, periodic_loop


@dataclass(frozen=True)
class FormatFilter:
    name: str
    rule: str
    check: Callable[[Item, str], str | None]


def is_empty(item: Item, text: str) -> str | None:
    return "empty response" if not text.strip() else None


def is_truncated(item: Item, text: str) -> str | None:
    return "stopped at max_new_tokens before EOS" if getattr(text, "truncated", False) else None


def repetition_loop(
    item: Item, text: str, *, min_repeats: int = 4, min_chars: int = 40, max_period: int = 200
) -> str | None:
    """A reason when ``text`` holds a back-to-back loop (see the module docstring), else None."""
    loop = periodic_loop(text, min_repeats=min_repeats, min_chars=min_chars, max_period=max_period)
    if loop is None:
        return None
    first, period, length = loop
    return f"loop of {text[first : first + period][:40]!r} over {length} characters"


def no_final_answer(item: Item, text: str) -> str | None:
    from distill_doctor.verify.extract import KINDS

    kind = item.verifier_kind
    if kind not in KINDS:
        return None
    return None if has_final_answer(text, kind) else f"no {kind} final answer found"


def default_filters(
    *, min_repeats: int = 4, min_chars: int = 40, max_period: int = 200
) -> list[FormatFilter]:
    """The standard format filters, in the order they run."""
    return [
        FormatFilter("empty", "response is empty or whitespace only", is_empty),
        FormatFilter(
            "truncated", "generation stopped at max_new_tokens before the model's EOS", is_truncated
        ),
        FormatFilter(
            "repetition_loop",
            f"a unit of p <= {max_period} characters repeated back to back over "
            f">= max({min_chars}, {min_repeats} * p) characters",
            lambda item, text: repetition_loop(
                item, text, min_repeats=min_repeats, min_chars=min_chars, max_period=max_period
            ),
        ),
        FormatFilter(
            "no_final_answer",
            "no final answer extractable as the item's verifier would (boxed, ####, 'answer is', "
            "then the last number/line/option); regex and code items not checked",
            no_final_answer,
        ),
    ]
