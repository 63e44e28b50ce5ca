"""References read as mathematics by Hugging Face's math-verify, with a time bound.

Here in ``data`` because the items loader refuses a ``math`` item whose reference math-verify
cannot read; the ``math`` verifier (:mod:`distill_doctor.verify.math_answers`) parses answers
with the same :func:`parse_math` and judges them against :func:`parse_reference`.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

TIMEOUT_S = 3  # whole seconds per math-verify step (parse the reference, parse the answer, compare)


def math_verify_module() -> Any:
    """The math-verify package (a core dependency; a clear error when the install is broken)."""
    try:
        import math_verify
    except ImportError as err:  # a core dependency: only a broken install lands here
        raise RuntimeError(
            "the math verifier needs math-verify: pip install 'math-verify[antlr4_13_2]'"
        ) from err
    return math_verify


def gold_text(reference: object) -> str:
    """The reference as math-verify should read it: bare LaTeX wrapped in ``$..$``."""
    text = str(reference).strip()
    if "$" in text or "\\(" in text or "\\[" in text or "\\boxed" in text:
        return text
    return f"${text}$"


class MathOverrun(Exception):
    """math-verify gave up on a step at its time limit."""


def parse_math(text: str, timeout_s: int) -> list:
    """math-verify's parse; ``[]`` when nothing parses, :class:`MathOverrun` when parsing ran out of time."""
    mv = math_verify_module()
    from math_verify.errors import TimeoutException

    on_main = threading.current_thread() is threading.main_thread()
    try:  # off the main thread only references are parsed here (the user's own data, see items.py)
        return mv.parse(text, parsing_timeout=timeout_s if on_main else None, raise_on_error=True)
    except TimeoutException as err:
        raise MathOverrun(f"parsing took over {timeout_s} s") from err
    except Exception:  # untrusted text: an unparseable answer is no answer
        return []


def parse_reference(reference: object, timeout_s: int = TIMEOUT_S) -> list:
    """math-verify's parse of the reference (empty when it cannot be read as mathematics).

    Cached: every sample of every output is judged against the same few references."""
    return list(_parse_gold(gold_text(reference), timeout_s))


def readable_reference(reference: object) -> bool:
    """Whether math-verify reads the reference as mathematics (a bare string fallback is no reading)."""
    return any(not isinstance(form, str) for form in parse_reference(reference))


@functools.lru_cache(maxsize=4096)
def _parse_gold(text: str, timeout_s: int) -> tuple:
    return tuple(parse_math(text, timeout_s))
