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

import numpy as np

from distill_doctor.data.records import Item


@dataclass(frozen=True)
class FormatFilter:
    name: str
    rule: str
    check: Callable[[Item, str], str | None]


def is_empty(item: Item, text: str) -> str | None:
    return "empty response" if not text.strip() else None


def is_truncated(item: Item, text: str) -> str | None:
    return "stopped at max_new_tokens before EOS" if getattr(text, "truncated", False) else None


def periodic_runs(codes: np.ndarray, max_period: int, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """For each period ``p = 1..max_period``: the longest run of positions with
    ``codes[i] == codes[i + p]``, and where it starts. Returns ``(length, start)``, each ``(max_period,)``.

    All periods at once: rows of ``E[i, p - 1] = codes[i] == codes[i + p]`` are processed in blocks
    of ``block`` positions (memory ``block * max_period``), the run ending at each position is
    ``i - (last position <= i where E is False)``, via a running maximum carried across blocks.
    """
    n = len(codes)
    # Pad with values no character has (and that differ from each other): comparisons past the end fail.
    pad = np.arange(0x110000, 0x110000 + max_period, dtype=np.uint32)
    windows = np.lib.stride_tricks.sliding_window_view(np.concatenate([codes, pad]), max_period + 1)
    best_len = np.zeros(max_period, dtype=np.int64)
    best_end = np.zeros(max_period, dtype=np.int64)
    last_break = np.full(max_period, -1, dtype=np.int64)  # carried from the previous block
    for s in range(0, n, block):
        w = windows[s : min(s + block, n)]  # (b, P + 1)
        equal = w[:, 1:] == w[:, :1]  # (b, P)
        idx = np.arange(s, s + len(w), dtype=np.int64)[:, None]  # (b, 1)
        breaks = np.where(equal, -1, idx)  # (b, P)
        breaks[0] = np.maximum(breaks[0], last_break)
        breaks = np.maximum.accumulate(breaks, axis=0)
        run = idx - breaks  # (b, P): length of the run of equal comparisons ending at each position
        end = run.argmax(axis=0)  # (P,)
        length = run[end, np.arange(max_period)]
        better = length > best_len
        best_len[better], best_end[better] = length[better], end[better] + s
        last_break = breaks[-1]
    return best_len, best_end - best_len + 1


def repetition_loop(
    item: Item, text: str, *, min_repeats: int = 4, min_chars: int = 40, max_period: int = 200
) -> str | None:
    """A reason when ``text`` holds a back-to-back loop (see the module docstring), else None.

    A run of ``r`` positions with ``text[i] == text[i + p]`` means the stretch ``text[i : i + r + p]``
    repeats its first ``p`` characters; the smallest period that qualifies is reported.
    """
    if len(text) < min_chars:
        return None
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # one code point per entry
    periods = min(max_period, len(codes) // min_repeats)
    if periods < 1:
        return None
    run, start = periodic_runs(codes, periods)
    p = np.arange(1, periods + 1)
    ok = (run > 0) & (run + p >= np.maximum(min_chars, min_repeats * p))
    if not ok.any():
        return None
    k = int(np.flatnonzero(ok)[0])
    first, period = int(start[k]), k + 1
    return f"loop of {text[first : first + period][:40]!r} over {int(run[k]) + period} characters"


def no_final_answer(item: Item, text: str) -> str | None:
    from distill_doctor.verify.extract import KINDS, extract_answer

    kind = item.verifier_kind
    if kind not in KINDS:
        return None
    return f"no {kind} final answer found" if extract_answer(text, kind) is None else None


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
