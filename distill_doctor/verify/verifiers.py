"""Verifiers: did an output get an item right? One function per verifier kind, one dispatcher.

- ``numeric``: the extracted number equals the reference's (exact rational comparison of
  canonical values, plus a relative tolerance of 1e-6 for non-integers written with
  different precision, e.g. ``3.14159265`` vs ``3.1415926``).
- ``exact``: canonical strings equal (trimmed, quotes/backticks/trailing period stripped, case-folded).
- ``choice``: the extracted option letter equals the reference letter, case-insensitively.
- ``regex:<pattern>``: ``regex.search(pattern, final answer)`` (``re`` syntax; each search
  limited to ``REGEX_TIMEOUT_S``, a timeout is a failed match with that reason) where the final answer is the
  marked answer (boxed / ``####`` / ``answer is``) or else the last non-empty line; when
  that does not match, ``regex.search(pattern, whole output)``. ``Judgement.reason`` says which
  one matched. ``Judgement.answer`` is the final answer in exact-canonical form.
- ``math``: LaTeX and symbolic equivalence with Hugging Face's math-verify (``math_answers.py``);
  ``Judgement.answer`` is SymPy's form of the parsed answer.
- ``code``: the HumanEval program runs in the sandbox (``code.py``); ``Judgement.answer`` is
  the failure signature (``"pass"``, ``"AssertionError"``, ``"timeout"`` ...).

Every verifier reads only the answer part of an output (``extract.answer_text``): what follows
the last closing reasoning tag (``</think>`` and its variants). An output cut off inside its
reasoning has no answer: it fails with ``Judgement.answer`` None, whatever its kind.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import replace
from fractions import Fraction

import regex

from distill_doctor.data.answers import (
    answer_text,
    canonical_exact,
    extract_answer,
    parse_choice,
    parse_number,
    raw_final_answer,
)
from distill_doctor.data.records import Item, Judgement, ModelOutput
from distill_doctor.verify.code import verify_code
from distill_doctor.verify.math_answers import judge_bounded

_REL_TOL = 1e-6
MATH_TIMEOUT_S = 3  # per math-verify step (parse the reference, parse the answer, compare)
CUT_OFF = Judgement(False, None, "cut off inside its reasoning block: no answer")
REGEX_TIMEOUT_S = 1.0  # per search; the regex package checks it periodically, so allow a few s on a busy host


def reference_answer(item: Item) -> str | None:
    """The item's reference in the canonical form of its verifier kind (None if it has none)."""
    ref = item.reference
    if ref is None:
        return None
    kind = item.verifier_kind
    if kind == "math":
        return " ".join(str(ref).split())
    if kind == "numeric":
        if isinstance(ref, (int, float)) and not isinstance(ref, bool):
            return parse_number(ref)
        return extract_answer(str(ref), "numeric")
    if kind == "choice":
        return parse_choice(str(ref))
    return canonical_exact(str(ref))


def _as_fraction(canon: str) -> Fraction | None:
    try:
        return Fraction(canon)
    except (ValueError, ZeroDivisionError):
        return None


def numbers_equal(answer: str, reference: str) -> bool:
    """Canonical numeric strings equal, or within a relative 1e-6 when either is not an integer."""
    if answer == reference:
        return True
    a, b = _as_fraction(answer), _as_fraction(reference)
    if a is None or b is None or (a.denominator == 1 and b.denominator == 1):
        return False
    return abs(a - b) <= _REL_TOL * max(abs(a), abs(b))


def _verify_regex(item: Item, text: str, *, timeout_s: float = REGEX_TIMEOUT_S) -> Judgement:
    """``regex`` (re-compatible V0 syntax) with a time limit per search: a timeout is a failed match."""
    try:
        pattern = regex.compile(item.verifier.split(":", 1)[1])
    except regex.error as err:  # the loader checked it with re; the two differ only at the edges
        return Judgement(False, None, f"the pattern does not compile with the regex package: {err}")
    final = raw_final_answer(text)
    answer = extract_answer(text, "exact")
    try:
        if final is not None and pattern.search(final, timeout=timeout_s):
            return Judgement(True, answer, "pattern matched the final answer")
        if pattern.search(text, timeout=timeout_s):
            return Judgement(True, answer, "pattern matched the output (not the final answer)")
    except TimeoutError:
        return Judgement(
            False,
            answer,
            f"regex timed out after {timeout_s:g} s (catastrophic backtracking?): counted as no match",
        )
    return Judgement(False, answer, "pattern matched neither the final answer nor the output")


def verify(item: Item, text: str, *, timeout_s: float = 10.0) -> Judgement:
    """Judge one output ``text`` for ``item``. Code items run in the sandbox (see ``code.py``)."""
    kind = item.verifier_kind
    text = text if isinstance(text, str) else ""
    body = answer_text(text)
    if body is None:
        return CUT_OFF
    if kind == "code":
        return verify_code(item, body, timeout_s=timeout_s)
    if kind == "regex":
        return _verify_regex(item, body)
    if kind == "math":
        if item.reference is None:
            raise ValueError(f"item {item.id!r}: the math verifier needs a reference")
        return judge_bounded(item.reference, body, timeout_s=MATH_TIMEOUT_S)
    if kind not in ("numeric", "exact", "choice"):
        raise ValueError(f"item {item.id!r}: unknown verifier {item.verifier!r}")
    answer = extract_answer(text, kind)
    ref = reference_answer(item)
    if ref is None:
        raise ValueError(f"item {item.id!r}: the reference {item.reference!r} has no {kind} answer")
    if answer is None:
        return Judgement(False, None, f"no {kind} final answer found")
    passed = numbers_equal(answer, ref) if kind == "numeric" else answer == ref
    return Judgement(
        passed, answer, "matches the reference" if passed else f"{answer!r} != reference {ref!r}"
    )


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def sample_texts(out: ModelOutput) -> tuple[str, ...]:
    """The texts scored for one output: its ``samples`` when there are several, else its ``output``."""
    return out.samples if len(out.samples) > 1 else (out.output,)


def combine_samples(verdicts: list[Judgement]) -> Judgement:
    """One item's verdict from its samples' (in order): the first sample's, carrying them all."""
    if len(verdicts) == 1:
        return verdicts[0]
    return replace(verdicts[0], samples=tuple(verdicts))


def verify_outputs(
    items: list[Item],
    outputs: Mapping[str, ModelOutput],
    *,
    workers: int | None = None,
    timeout_s: float = 10.0,
    progress: bool = False,
    announce: bool = False,
) -> dict[str, Judgement]:
    """Verdicts for every item that has an output (keyed by item id, in item order).

    Every sample of an output is verified (``sample_texts``) and the item's verdict combines
    them (``combine_samples``). Non-code items are verified inline; code items run in the
    sandbox, ``workers`` at a time (default ``min(4, cpu_count)``), each with a wall-clock
    ``timeout_s``. ``progress`` shows a bar; ``announce`` says on stderr which isolation runs the code.
    """
    per_sample: dict[str, list[Judgement | None]] = {}
    code_jobs: list[tuple[Item, int, str]] = []
    for item in items:
        out = outputs.get(item.id)
        if out is None:
            continue
        texts = sample_texts(out)
        per_sample[item.id] = [None] * len(texts)
        for k, text in enumerate(texts):
            if item.verifier_kind == "code":
                code_jobs.append((item, k, text))
            else:
                per_sample[item.id][k] = verify(item, text)
    if code_jobs:
        n_workers = workers if workers and workers > 0 else default_workers()
        bar = None
        if announce:
            from distill_doctor.verify.sandbox import containment

            detail = containment()["isolation_detail"]
            print(
                f"distill-doctor: {len(code_jobs)} code outputs run in the sandbox: {detail}", file=sys.stderr
            )
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(code_jobs), desc="running code", unit="output", leave=False)
        with ThreadPoolExecutor(max_workers=n_workers) as pool:
            futures = {
                pool.submit(verify, item, text, timeout_s=timeout_s): (item.id, k)
                for item, k, text in code_jobs
            }
            for fut in as_completed(futures):
                item_id, k = futures[fut]
                per_sample[item_id][k] = fut.result()
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
    return {
        item.id: combine_samples([v for v in per_sample[item.id] if v is not None])
        for item in items
        if item.id in per_sample
    }
