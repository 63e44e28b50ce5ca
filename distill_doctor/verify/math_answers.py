"""The ``math`` verifier: answers compared as mathematics with Hugging Face's math-verify.

math-verify (the grader of open-r1 and lighteval) parses LaTeX and plain expressions into
SymPy and compares them symbolically and numerically: ``\\frac{1}{\\sqrt{2}}`` equals
``\\frac{\\sqrt{2}}{2}``, ``1 + 2x + x^{2}`` equals ``x^2+2x+1``, ``\\{1,2\\}`` equals
``\\{2,1\\}``, ``50\\%`` equals ``0.5``, and the interval ``(-2,2)`` differs from ``[-2,2]``.

Which text is compared: reasoning blocks are removed first (by the caller, ``verifiers.py``);
then the first marked answer in SPEC order (the last ``\\boxed{..}``, the last ``#### X``, the
last ``answer is X``) that math-verify can parse; when none parses, math-verify's own
extraction over the whole answer text (the last LaTeX or plain expression). The reference is
parsed as LaTeX (wrapped in ``$..$`` when it carries no math delimiters of its own).

Time: SymPy can run for ever (``9^{9^{9^{9}}}``). Every parse and comparison is bounded by
``timeout_s`` (whole seconds). math-verify enforces that with ``signal.alarm``, which only
works on the main thread; off the main thread the judgement runs in a helper process that is
killed when it overruns. A judgement that times out counts as wrong, and says so in its reason.
"""

from __future__ import annotations

import json
import math
import os
import select
import subprocess
import sys
import threading
from pathlib import Path

from distill_doctor.data.answers import marked_answers
from distill_doctor.data.math_reference import TIMEOUT_S, gold_text, parse_reference, readable_reference
from distill_doctor.data.math_reference import MathOverrun as _Overrun
from distill_doctor.data.math_reference import math_verify_module as _math_verify
from distill_doctor.data.math_reference import parse_math as _parse
from distill_doctor.data.records import Judgement

__all__ = ["TIMEOUT_S", "gold_text", "judge", "judge_bounded", "parse_reference", "readable_reference"]
_MAX_ANSWER_CHARS = 2000  # longer marked answers are not parsed (the canonical form is cut too)
_MAX_CANONICAL_CHARS = 200
_worker_lock = threading.Lock()  # one request at a time to the helper process (see judge_bounded)


def _candidates(body: str) -> list[tuple[str, str]]:
    """``(where, text to parse)``: each marked answer in SPEC order, then the whole answer text."""
    out = []
    for marker, content in marked_answers(body):
        if content.strip() and len(content) <= _MAX_ANSWER_CHARS:
            text = f"$\\boxed{{{content}}}$" if marker == "boxed" else content
            out.append((marker, text))
    out.append(("text", body))
    return out


def _canonical(parsed: list, timeout_s: int) -> str:
    """A short canonical string of a parse (SymPy's ``str``), so equal wrong answers compare equal."""
    from math_verify.utils import timeout

    @timeout(timeout_seconds=timeout_s)
    def as_text() -> str:
        return str(parsed[0])

    try:
        text = as_text()
    except Exception:  # str() of a huge expression can overrun; the written form will do
        text = str(parsed[-1])
    text = " ".join(text.split())
    return text[:_MAX_CANONICAL_CHARS]


def judge(reference: object, body: str, timeout_s: int = TIMEOUT_S) -> Judgement:
    """Judge the answer text ``body`` (reasoning already removed) against ``reference``.

    Runs on the calling thread with math-verify's signal timeouts: call it on a main thread
    (see :func:`judge_bounded`).
    """
    try:
        gold = parse_reference(reference, timeout_s)
        if not gold:
            return Judgement(
                False, None, f"the reference {str(reference)[:60]!r} is not readable as mathematics"
            )
        for where, text in _candidates(body):
            parsed = _parse(text, timeout_s)
            if parsed:
                return _compare(gold, parsed, where, timeout_s)
    except _Overrun as err:
        return Judgement(False, None, f"math-verify {err}: counted wrong")
    return Judgement(False, None, "no math final answer found")


def _compare(gold: list, parsed: list, where: str, timeout_s: int) -> Judgement:
    mv = _math_verify()
    from math_verify.errors import TimeoutException

    answer = _canonical(parsed, timeout_s)
    try:
        passed = bool(mv.verify(gold, parsed, timeout_seconds=timeout_s, raise_on_error=True))
    except TimeoutException:
        return Judgement(False, answer, f"math-verify's comparison took over {timeout_s} s: counted wrong")
    except Exception:  # one pair of forms failed in SymPy: let math-verify try the others, as it does
        passed = bool(mv.verify(gold, parsed, timeout_seconds=timeout_s))
    why = "equals the reference" if passed else f"{answer!r} is not equal to the reference"
    return Judgement(passed, answer, f"{why} (math-verify, {where})")


def _worker_main() -> None:
    """The helper process: one JSON request per stdin line -> one JSON verdict per stdout line."""
    for line in sys.stdin:
        req = json.loads(line)
        v = judge(req["reference"], req["body"], req["timeout_s"])
        sys.stdout.write(json.dumps([v.passed, v.answer, v.reason]) + "\n")
        sys.stdout.flush()


class _Helper:
    """One helper process (``python -m distill_doctor.verify.math_answers``), restarted after an overrun."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        if self.proc is None or self.proc.poll() is not None:
            root = str(Path(__file__).resolve().parents[2])  # the folder that holds distill_doctor/
            path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "distill_doctor.verify.math_answers"],
                env={**os.environ, "PYTHONPATH": path},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        return self.proc

    def ask(self, reference: object, body: str, timeout_s: int, budget: float) -> Judgement | None:
        """The helper's verdict, or None when it did not answer within ``budget`` seconds (then killed)."""
        proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None
        request = {"reference": reference, "body": body, "timeout_s": timeout_s}
        try:
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], budget)
            line = proc.stdout.readline() if ready else ""
        except OSError:
            line = ""
        if not line:
            proc.kill()
            proc.wait()
            self.proc = None
            return None
        passed, answer, reason = json.loads(line)
        return Judgement(bool(passed), answer, reason)


_helper = _Helper()


def judge_bounded(reference: object, body: str, timeout_s: int = TIMEOUT_S) -> Judgement:
    """:func:`judge` within a time bound on any thread.

    On the main thread math-verify's own alarms bound each step. Elsewhere (signals are
    main-thread only) the judgement runs in a helper process, one request at a time, killed
    when it overruns a budget of its three steps plus the process start.
    """
    timeout_s = max(1, math.ceil(timeout_s))
    if threading.current_thread() is threading.main_thread():
        return judge(reference, body, timeout_s)
    if isinstance(reference, float) and not math.isfinite(reference):
        return Judgement(False, None, "the reference is not a finite number")
    budget = 3 * timeout_s + 10  # parse the reference, parse the answer, compare; plus the helper's start
    with _worker_lock:
        verdict = _helper.ask(reference, body, timeout_s, budget)
    if verdict is None:
        return Judgement(False, None, f"math-verify did not finish in {budget} s: counted wrong")
    return verdict


if __name__ == "__main__":
    _worker_main()
