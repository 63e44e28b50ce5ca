"""One decontamination: whatever ``generate --decontaminate`` keeps passes ``diagnose``'s
contamination check on the same evaluation files (issue 13.5)."""

from __future__ import annotations

from datasets import Dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill_doctor.data.records import Item, Judgement, ModelOutput
from distill_doctor.probes.base import DiagnosisInputs
from distill_doctor.probes.contamination import run as contamination
from distill_doctor.produce.generate import GenerateOptions, generate_dataset

WORDS = "what is the sum of apples pencils she he buys gives half each class week river how many".split()
TOKENS = st.one_of(
    st.sampled_from(WORDS), st.integers(0, 99).map(str), st.sampled_from(["+", "-", "?", ",", "=", "."])
)
PROMPT = st.lists(TOKENS, min_size=1, max_size=30).map(" ".join)
PLAIN = GenerateOptions(samples_per_prompt=1, reject_with="none", filters=(), near_dedup=None)


def contamination_of(items: list[Item], rows: list[dict]) -> int:
    """Dirty items the diagnose probe finds for these training rows."""
    student = {it.id: ModelOutput(it.id, "0") for it in items}
    verdicts = {it.id: Judgement(False, "0") for it in items}
    train = Dataset.from_list(rows) if rows else Dataset.from_dict({"prompt": [], "response": []})
    finding = contamination(
        DiagnosisInputs(items=items, student=student, student_verdicts=verdicts, train=train)
    )
    return finding.metrics.get("dirty", 0)


def _variant(draw, evals: list[str]) -> str:
    how = draw(st.sampled_from(["fresh", "copy", "prefix", "edit", "repunct"]))
    if how == "fresh" or not evals:
        return draw(PROMPT)
    base = draw(st.sampled_from(evals))
    if how == "copy":
        return base
    if how == "prefix":
        return "Here is a question. " + base
    words = base.split()
    k = draw(st.integers(0, len(words) - 1))
    words[k] = "banana" if how == "edit" else words[k] + ","
    return " ".join(words)


@st.composite
def scenario(draw):
    evals = draw(st.lists(PROMPT, min_size=1, max_size=12, unique=True))
    prompts = [_variant(draw, evals) for _ in range(draw(st.integers(1, 15)))]
    responses = [draw(st.one_of(PROMPT, st.sampled_from(evals))) for _ in prompts]
    return evals, prompts, responses


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario())
def test_what_generate_keeps_is_clean_for_diagnose(case):
    evals, prompts, responses = case
    items = [Item(id=f"e{i}", prompt=p, reference=0, verifier="numeric") for i, p in enumerate(evals)]
    gen_items = [Item(id=f"g{i}", prompt=p, reference=None, verifier="exact") for i, p in enumerate(prompts)]
    answers = dict(zip(prompts, responses))
    result = generate_dataset(
        gen_items,
        lambda ps, n: [[answers[p]] * n for p in ps],
        options=PLAIN,
        decontaminate={"eval.jsonl": items},
    )
    assert contamination_of(items, result.rows) == 0
    if result.decontamination["removed"]:  # and what it dropped, diagnose would have flagged
        everything = [{"prompt": p, "response": answers[p]} for p in prompts]
        assert contamination_of(items, everything) > 0


def test_short_byte_identical_prompts_are_all_removed():
    """The reported case: 40 prompts identical to eval items, 27 of them short arithmetic such as
    ``12+5=?``, were partly kept by generate and then failed diagnose."""
    evals = [f"{a}+{a * 3 % 17}=?" for a in range(27)] + [f"Compute {a} * {a + 1}." for a in range(13)]
    items = [Item(id=f"e{i}", prompt=p, reference=0, verifier="numeric") for i, p in enumerate(evals)]
    gen_items = [Item(id=f"g{i}", prompt=p, reference=None, verifier="exact") for i, p in enumerate(evals)]
    result = generate_dataset(
        gen_items, lambda ps, n: [["ok"] * n for _ in ps], options=PLAIN, decontaminate={"eval.jsonl": items}
    )
    assert result.decontamination["removed"] == 40 and result.rows == []
    assert contamination_of(items, [{"prompt": p, "response": "ok"} for p in evals]) == 40
