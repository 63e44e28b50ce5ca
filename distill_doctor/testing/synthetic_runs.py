"""Synthetic diagnosis inputs: clean runs and one planted failure per mode.

``make_run(kind, n, seed)`` returns a :class:`DiagnosisInputs` with items, teacher and
student outputs and their precomputed verdicts (no verifier is run), and for some kinds a
training set. Kinds:

- ``clean_high``: teacher ~90%, student ~80%, errors independent given the item's
  difficulty (both degrade with difficulty the same way, in logits); every item has an
  "attractor" wrong answer that any wrong model picks 30% of the time, so independent
  models do share some wrong answers, as real ones do.
- ``clean_low``: the same with teacher ~40%, student ~30%.
- ``tiny``: ``clean_high`` on n items (use n=8..20).
- ``error_transfer``: the student copies the teacher's wrong answer on 85% of the items
  the teacher gets wrong (with ``train=True``, the training targets are wrong at the
  teacher's own error rate: unfiltered teacher outputs).
- ``capacity_gap``: the student matches the teacher on difficulty 1-2 and collapses on 4-5.
- ``superficial``: original/perturbed pairs; the student passes originals like the
  teacher but fails most perturbed variants, while the teacher is robust; same style.
- ``data_quality``: ``clean_high`` plus a training set with 25% wrong targets, truncated
  and looping responses and duplicated rows.

Options (keyword-only): ``groups`` (bool: build original/perturbed pairs; default on for
``superficial`` and the clean kinds), ``train`` (bool: attach a clean training set;
default on for ``data_quality``), ``teacher_acc`` / ``student_acc`` overrides.

Also: ``make_edge(kind, n, seed)`` for degenerate runs (``EDGE_KINDS``: teacher all right,
student all wrong, no answers, no tags, one slice, empty, code items);
``make_train(items, operands, ...)`` for a training ``datasets.Dataset``;
``check_finding(finding)`` asserts the report contract (strict JSON, evidence <= 10, a
fail carries p < 0.05 and a guardrail); ``false_fail_sweep(probe_run, ...)`` counts a
probe's verdicts over many clean runs.
"""

from __future__ import annotations

import math

import numpy as np

from distill_doctor.data.records import Item, Judgement, ModelOutput
from distill_doctor.probes.base import DiagnosisInputs
from distill_doctor.vocabulary import Verdict

KINDS = ("clean_high", "clean_low", "tiny", "error_transfer", "capacity_gap", "superficial", "data_quality")
CLEAN_KINDS = ("clean_high", "clean_low", "tiny")
_ACC = {
    "clean_high": (0.9, 0.8),
    "clean_low": (0.4, 0.3),
    "tiny": (0.9, 0.8),
    "error_transfer": (0.8, 0.7),
    "capacity_gap": (0.9, 0.6),
    "superficial": (0.9, 0.85),
    "data_quality": (0.9, 0.8),
}
_SLOPE = 0.5  # logit change per difficulty level, shared by both models in clean runs


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def render(answer: int | str, a: int, b: int, style: str = "steps") -> str:
    """A model output in one of two styles ending in a final answer the verifier can extract."""
    if style == "steps":
        return f"Step 1: Add {a} and {b}.\nStep 2: {a} + {b} = {answer}.\nThe answer is {answer}."
    return f"We compute {a} plus {b}, which gives {answer}.\n#### {answer}"


def _wrong(rng: np.random.Generator, ref: int, attractor: int) -> int:
    if rng.random() < 0.3:
        return attractor
    w = ref + int(rng.integers(-50, 51))
    return w if w != ref else ref + 101


def make_run(
    kind: str,
    n: int = 200,
    seed: int = 0,
    *,
    groups: bool | None = None,
    train: bool | None = None,
    teacher_acc: float | None = None,
    student_acc: float | None = None,
) -> DiagnosisInputs:
    """Build one synthetic run of ``kind`` with ``n`` items (see the module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; one of {KINDS}")
    rng = np.random.default_rng(seed)
    t_acc, s_acc = _ACC[kind]
    t_acc = teacher_acc if teacher_acc is not None else t_acc
    s_acc = student_acc if student_acc is not None else s_acc
    with_groups = groups if groups is not None else kind in ("superficial", "clean_high", "clean_low")
    with_train = train if train is not None else kind == "data_quality"

    items: list[Item] = []
    teacher: dict[str, ModelOutput] = {}
    student: dict[str, ModelOutput] = {}
    tv: dict[str, Judgement] = {}
    sv: dict[str, Judgement] = {}
    operands: dict[str, tuple[int, int]] = {}

    difficulty = rng.integers(1, 6, size=n)
    centred = difficulty - 3.0
    p_t = _sigmoid(_logit(t_acc) - _SLOPE * centred)
    p_s = _sigmoid(_logit(s_acc) - _SLOPE * centred)
    if kind == "capacity_gap":
        p_t = np.full(n, t_acc)
        p_s = np.where(difficulty <= 2, t_acc - 0.03, np.where(difficulty == 3, 0.6, 0.2))
    for i in range(n):
        g = i // 2 if with_groups else None
        variant = None
        if with_groups:
            variant = "original" if i % 2 == 0 else ("numbers" if (i // 2) % 2 == 0 else "distractor")
        a, b = int(rng.integers(10, 500)), int(rng.integers(10, 500))
        ref = a + b
        item_id = f"q{i:05d}"
        operands[item_id] = (a, b)
        attractor = ref + 10 if rng.random() < 0.5 else ref - 1
        items.append(
            Item(
                id=item_id,
                prompt=f"What is {a} + {b}?" + " Think carefully." * int(difficulty[i]),
                reference=ref,
                verifier="numeric",
                tags={"difficulty": int(difficulty[i]), "domain": "arith" if i % 3 else "word"},
                group=f"g{g:05d}" if g is not None else None,
                variant=variant,
                line=i + 1,
            )
        )
        t_ok = bool(rng.random() < p_t[i])
        s_ok = bool(rng.random() < p_s[i])
        if kind == "superficial" and variant not in (None, "original"):
            t_ok = bool(rng.random() < p_t[i])
            s_ok = bool(rng.random() < 0.2)
        t_ans = ref if t_ok else _wrong(rng, ref, attractor)
        s_ans = ref if s_ok else _wrong(rng, ref, attractor)
        if kind == "error_transfer" and not t_ok and rng.random() < 0.85:
            s_ok, s_ans = False, t_ans
        style = "steps"
        teacher[item_id] = ModelOutput(item_id, render(t_ans, a, b, style))
        student[item_id] = ModelOutput(item_id, render(s_ans, a, b, style))
        tv[item_id] = Judgement(t_ok, str(t_ans), "" if t_ok else "wrong answer")
        sv[item_id] = Judgement(s_ok, str(s_ans), "" if s_ok else "wrong answer")

    train_ds = None
    if with_train:
        # error_transfer: the teacher's targets, unfiltered, wrong at the teacher's own error rate
        wrong_rate = 1 - t_acc if kind == "error_transfer" else 0.0
        train_ds = make_train(
            items, operands, seed=seed, corrupt=(kind == "data_quality"), wrong_rate=wrong_rate
        )
    return DiagnosisInputs(
        items=items,
        student=student,
        student_verdicts=sv,
        teacher=teacher,
        teacher_verdicts=tv,
        train=train_ds,
        seed=seed,
    )


def make_train(
    items: list[Item],
    operands: dict[str, tuple[int, int]],
    *,
    seed: int = 0,
    corrupt: bool = False,
    wrong_rate: float = 0.0,
    n_rows: int | None = None,
):
    """A ``datasets.Dataset`` of teacher-written targets for fresh problems like ``items``.

    Clean: every target is right and well-formed. ``corrupt``: 25% wrong final answers,
    8% truncated, 6% looping, 10% exact duplicate rows. ``wrong_rate``: that share of
    well-formed targets with a wrong final answer (a teacher's own mistakes).
    """
    from datasets import Dataset

    rng = np.random.default_rng(seed + 1)
    n_rows = n_rows or max(40, 2 * len(items))
    rows = []
    for r in range(n_rows):
        a, b = int(rng.integers(10, 900)), int(rng.integers(10, 900))
        ref = a + b
        ans = ref
        if rng.random() < wrong_rate:
            ans = ref + int(rng.integers(1, 30))
        response = render(ans, a, b, "steps" if r % 2 else "hashes")
        if corrupt:
            u = rng.random()
            if u < 0.25:
                ans = ref + int(rng.integers(1, 30))
                response = render(ans, a, b, "steps" if r % 2 else "hashes")
            elif u < 0.33:
                response = f"Step 1: Add {a} and {b}.\nStep 2: {a} + {b} ="
            elif u < 0.39:
                response = f"Step 1: Add {a} and {b}.\n" + f"Step 2: {a} + {b} is large.\n" * 6
        rows.append(
            {
                "id": f"t{r:06d}",
                "prompt": f"Compute {a} + {b}.",
                "response": response,
                "source": "synthetic",
                "reference": str(ref),
            }
        )
    if corrupt:
        k = len(rows) // 10
        rows.extend(dict(rows[j], id=f"dup{j:06d}") for j in range(k))
    return Dataset.from_list(rows)


EDGE_KINDS = (
    "teacher_all_right",
    "student_all_wrong",
    "both_all_wrong",
    "no_answers",
    "no_tags",
    "single_slice",
    "empty",
    "code",
)


def _int(reference: str | int | float | None) -> int:
    """A synthetic item's numeric reference as an int (every generated item has one)."""
    assert reference is not None
    return int(reference)


def make_edge(kind: str, n: int = 60, seed: int = 0) -> DiagnosisInputs:
    """Degenerate runs every probe must survive with a sensible verdict.

    ``teacher_all_right`` / ``student_all_wrong`` / ``both_all_wrong``: verdicts forced;
    ``no_answers``: every output lacks an extractable answer (all fail, answer None);
    ``no_tags``: items without tags or groups; ``single_slice``: one tag value for all;
    ``empty``: no items at all; ``code``: code items whose verdict answers are failure
    signatures (independent programs failing with the same exception type).
    """
    from dataclasses import replace

    if kind not in EDGE_KINDS:
        raise ValueError(f"unknown edge kind {kind!r}; one of {EDGE_KINDS}")
    base = make_run("clean_high", n, seed, groups=kind not in ("no_tags",))
    assert base.teacher_verdicts is not None and base.teacher is not None  # make_run sets both
    tv, sv = dict(base.teacher_verdicts), dict(base.student_verdicts)
    items = list(base.items)
    teacher, student = dict(base.teacher), dict(base.student)
    if kind == "teacher_all_right":
        tv = {i: Judgement(True, str(it.reference)) for it in items for i in [it.id]}
    elif kind in ("student_all_wrong", "both_all_wrong"):
        sv = {i: Judgement(False, str(_int(it.reference) + 7)) for it in items for i in [it.id]}
        if kind == "both_all_wrong":
            tv = {i: Judgement(False, str(_int(it.reference) + 3)) for it in items for i in [it.id]}
    elif kind == "no_answers":
        tv = {it.id: Judgement(False, None, "no answer") for it in items}
        sv = {it.id: Judgement(False, None, "no answer") for it in items}
        teacher = {i: ModelOutput(i, "I am not sure.") for i in teacher}
        student = {i: ModelOutput(i, "") for i in student}
    elif kind == "no_tags":
        items = [replace(it, tags={}, group=None, variant=None) for it in items]
    elif kind == "single_slice":
        items = [replace(it, tags={"domain": "arith", "difficulty": 2}) for it in items]
    elif kind == "empty":
        items, teacher, student, tv, sv = [], {}, {}, {}, {}
    elif kind == "code":
        rng = np.random.default_rng(seed)
        items = [
            replace(
                it, verifier="code", reference=None, tests="def check(c): assert c(1) == 2", entry_point="f"
            )
            for it in items
        ]
        for it in items:
            t_ok, s_ok = bool(rng.random() < 0.6), bool(rng.random() < 0.5)
            tv[it.id] = Judgement(t_ok, None if t_ok else "AssertionError")
            sv[it.id] = Judgement(s_ok, None if s_ok else "AssertionError")
            k = int(rng.integers(0, 1000))
            teacher[it.id] = ModelOutput(
                it.id,
                f"```python\ndef f(x):\n    total = x + {k}\n    for i in range(3):\n        total += i\n    return total\n```",
            )
            student[it.id] = ModelOutput(
                it.id,
                f"```python\ndef f(x):\n    y = x * {k + 1}\n    if y > 10:\n        y -= 1\n    return y\n```",
            )
    return DiagnosisInputs(
        items=items,
        student=student,
        student_verdicts=sv,
        teacher=teacher,
        teacher_verdicts=tv,
        train=base.train,
        seed=seed,
    )


def check_finding(finding) -> dict:
    """Assert the report contract every finding keeps; return its strict-JSON round trip."""
    import json

    d = json.loads(json.dumps(finding.to_dict(), allow_nan=False))
    assert d["verdict"] in tuple(Verdict)
    assert (d["verdict"] == Verdict.SKIPPED) == bool(d.get("skipped_reason"))  # untested says why
    assert d["summary"] and len(d["evidence"]) <= 10
    assert all(set(e) >= {"id", "why"} for e in d["evidence"])
    if d["verdict"] == Verdict.FAIL:
        assert d["p_value"] is not None and d["p_value"] < 0.05
        assert d["guardrail"]
    for t in d["tests"]:
        assert t["n"] >= 0 and (t["p_value"] is None or 0.0 <= t["p_value"] <= 1.0)
    return d


def false_fail_sweep(
    probe_run, kinds=("clean_high", "clean_low"), seeds: int = 100, n_range=(40, 200)
) -> dict:
    """Run ``probe_run`` on ``seeds`` clean runs of each kind (sizes drawn from ``n_range``); verdict counts."""
    from collections import Counter

    counts: Counter = Counter()
    for kind in kinds:
        for seed in range(seeds):
            n = int(np.random.default_rng(10_000 + seed).integers(*n_range))
            counts[probe_run(make_run(kind, n, seed)).verdict] += 1
    return dict(counts)
