"""Teacher error transfer: does the student reproduce the teacher's *specific* wrong answers?

Measures, on the items both models get wrong with extracted answers, how often the student's
wrong answer is the teacher's (code: same failure signature *and* the same program), against a
chance rate p0 estimated from the answer space (:mod:`wrong_answer_chance`: other items with the
same reference, shared default answers, coinciding code stubs, choice options, a 0.25 floor).
Reported beside it: error consistency (kappa, context only), repeated teacher format faults
(Fisher) and, with a training set, the student's echo of wrong training targets (eval items seen
in training are kept out of the primary test: memorisation is contamination's finding).

Rule (:data:`RULE`): ``fail`` when the exact one-sided binomial test of the same-wrong-answer rate
against p0 is significant and the rate is at least max(0.5, 2 p0) on >= 10 both-wrong items of
>= 30 scored items; a smaller sample, a smaller significant rate or a repeated-target echo give
at most ``warn``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np

from distill_doctor.data.records import Item, Judgement, ModelOutput
from distill_doctor.probes.base import DiagnosisInputs, Finding, Probe, Ruling, StatTest
from distill_doctor.probes.wrong_answer_chance import (
    CodePair,
    choice_chance,
    code_chance,
    code_completion,
    cross_item_chance,
    global_chance,
    same_code,
)
from distill_doctor.stats import (
    binom_test_greater,
    bootstrap_ci,
    clopper_pearson,
    cohen_kappa,
    fisher_exact,
    json_float,
    json_interval,
    kappa_statistic,
)
from distill_doctor.text import text_features as tf
from distill_doctor.vocabulary import Mode, Verdict

MODE = Mode.TEACHER_ERROR_TRANSFER
MIN_BOTH_WRONG = 10
MIN_ITEMS = 30  # a run this small gives at most warn, however many errors it shares
CHANCE_FLOOR = 0.25
MIN_RATE = 0.5
GUARDRAIL = (
    "Filter the teacher's targets with the verifier before training: "
    "`distill-doctor generate --reject-with verifier ...`, then retrain; for items without a "
    "reference, sample several teacher answers and keep the majority answer."
)


@dataclass(frozen=True)
class TransferRule:
    """The verdict rule's thresholds (see the module docstring)."""

    min_items: int = MIN_ITEMS
    min_both_wrong: int = MIN_BOTH_WRONG
    min_rate: float = MIN_RATE
    chance_multiple: float = 2.0  # fail: rate >= max(min_rate, chance_multiple * p0)
    warn_chance_multiple: float = 1.5  # warn: a significant rate >= 1.5 p0
    small_min_shared: int = 3  # warn on fewer both-wrong items: >= 3 shared at the fail rate
    echo_min_repeated: int = 3  # warn on the echo: >= 3 wrong training targets repeated ...
    echo_min_share: float = 0.5  # ... and at least half of them

    def threshold(self, p0: float) -> float:
        """The same-wrong-answer rate a fail needs at chance rate ``p0``."""
        return max(self.min_rate, self.chance_multiple * p0)

    def as_metrics(self, alpha: float, p0: float = CHANCE_FLOOR) -> dict[str, Any]:
        """``metrics["fail_rule"]``: ``min_rate`` is the threshold at the measured chance ``p0``."""
        return {
            "min_items": self.min_items,
            "min_both_wrong": self.min_both_wrong,
            "min_rate": json_float(self.threshold(p0)),
            "alpha": alpha,
        }

    def describe(self) -> str:
        return (
            f"the same-wrong-answer rate is significant and at least max({self.min_rate:g}, "
            f"{self.chance_multiple:g}x chance) on >= {self.min_both_wrong} both-wrong items"
        )


RULE = TransferRule()


@dataclass(frozen=True)
class Chance:
    """The chance rate of a shared wrong answer, by estimate; ``p0`` is the largest."""

    cross_item: float
    cross_item_pairs: int
    global_: float
    code: float
    choice: float
    floor: float = CHANCE_FLOOR

    @property
    def p0(self) -> float:
        return max(self.cross_item, self.global_, self.code, self.choice, self.floor)

    def as_metrics(self) -> dict[str, Any]:
        return {
            "p0": json_float(self.p0),
            "cross_item": json_float(self.cross_item),
            "global": json_float(self.global_),
            "code": json_float(self.code),
            "cross_item_pairs": self.cross_item_pairs,
            "choice": json_float(self.choice),
            "floor": self.floor,
        }


@dataclass(frozen=True)
class TrainEcho:
    """Eval items seen in training whose training target is wrong (``n``, with a student verdict)
    and those where the student repeats that wrong answer (``k``, first ids in ``ids``)."""

    n: int
    k: int
    ids: tuple[str, ...]

    @property
    def rate(self) -> float:
        return self.k / self.n if self.n else float("nan")


@dataclass(frozen=True)
class FormatFaults:
    """Teacher format faults (no answer, truncation, loop) and the student's repeats (Fisher)."""

    teacher_faults: int
    student_faults: int
    both: int | None = None  # the table and test exist only when the teacher has some but not all faults
    odds_ratio: float | None = None
    p_value: float | None = None

    def as_metrics(self) -> dict[str, Any]:
        d: dict[str, Any] = {"teacher_faults": self.teacher_faults, "student_faults": self.student_faults}
        if self.both is not None:
            d.update(
                both=self.both, odds_ratio=json_float(self.odds_ratio), p_value=json_float(self.p_value, 8)
            )
        return d


@dataclass(frozen=True)
class SharedWrong:
    """One both-wrong item where the student gave the teacher's wrong answer."""

    id: str
    answer: str | None
    reference: object


@dataclass(frozen=True)
class TransferMeasured:
    """What the probe measured; no verdict."""

    n: int  # scored items
    teacher_wrong: int  # teacher wrong with an answer, not seen in training
    both_wrong: int  # ... and the student wrong with an answer too
    shared: tuple[SharedWrong, ...]  # the both-wrong items with the same wrong answer
    chance: Chance
    p_value: float | None  # exact binomial, shared rate vs p0 (None without both-wrong items)
    kappa: float
    kappa_ci: tuple[float, float] | None
    acc_when_teacher_wrong: float | None
    acc_when_teacher_right: float | None
    faults: FormatFaults
    echo: TrainEcho | None  # None without a training set with references
    echo_p_value: float | None  # exact binomial, echo rate vs p0 (None when the echo is empty)
    excluded_seen_in_train: int

    @property
    def same_wrong(self) -> int:
        return len(self.shared)

    @property
    def rate(self) -> float:
        return self.same_wrong / self.both_wrong if self.both_wrong else float("nan")


# ---------------------------------------------------------------------------------------------
# measure


def _text(outputs: dict[str, ModelOutput], i: str, missing: str | None = "") -> str | None:
    return outputs[i].output if i in outputs else missing


def _same_wrong(item: Item, t: Judgement, s: Judgement, t_text: str, s_text: str) -> bool:
    if t.answer is None or s.answer is None or t.answer != s.answer:
        return False
    if item.verifier_kind != "code":
        return True
    return same_code(code_completion(item, t_text), code_completion(item, s_text))


def _format_faults(item: Item, text: str | None, verdict: Judgement) -> bool:
    """No extractable answer (not for code, whose passing verdicts carry no answer), truncation or a loop."""
    no_answer = item.verifier_kind != "code" and verdict.answer is None
    return no_answer or tf.truncated(text) or tf.repetition_loop(text)


def _norm(prompt: object) -> str:
    return " ".join(str(prompt).split())


def _train_keys(prompt: object) -> list[str]:
    """Normalised forms of a training prompt: as is, and (chat rows, rendered by the loader
    as ``role: content`` lines) the content of the last ``user:`` message."""
    text = str(prompt)
    keys = [_norm(text)]
    marker = text.rfind("user: ")
    if marker != -1 and (marker == 0 or text[marker - 1] == "\n"):
        keys.append(_norm(text[marker + len("user: ") :]))
    return keys


def _train_rows(ds: Any, has_ref: bool) -> Iterator[tuple[str, Any, Any]]:
    """``(prompt, response, reference)`` of every training row (response and reference None
    without references), read shard by shard (columnar, bounded memory; ``probes/shards.py``)."""
    from distill_doctor.probes.shards import source_of

    src = source_of(ds)
    for shard in src.shards():
        cols = src.read(shard, ["prompt", "response", "reference"] if has_ref else ["prompt"])
        for row, prompt in enumerate(cols["prompt"]):
            if has_ref:
                yield prompt or "", cols["response"][row], cols["reference"][row]
            else:
                yield prompt or "", None, None


def _wrong_target(item: Item, response: Any, reference: Any) -> str | None:
    """The answer of a training target when it differs from the training reference, else None."""
    from distill_doctor.verify import extract_answer, verify

    if item.verifier_kind == "code":
        return None
    if item.verifier_kind == "math":  # equal forms differ as strings: compare with math-verify
        v = verify(replace(item, reference=reference), str(response or ""))
        return v.answer if not v.passed and v.answer is not None else None
    try:
        ans = extract_answer(str(response or ""), item.verifier_kind)
        ref_ans = extract_answer(str(reference), item.verifier_kind)
    except Exception:
        return None
    return ans if ans is not None and ref_ans is not None and ans != ref_ans else None


def _train_overlap(inputs: DiagnosisInputs, items: dict[str, Item]) -> tuple[set[str], TrainEcho | None]:
    """Eval item ids whose prompt is in the training set, and (with references) the echo:
    of those whose training target is wrong, how many the student answers the same way."""
    ds = inputs.train
    if ds is None or "prompt" not in getattr(ds, "column_names", []):
        return set(), None
    wanted: dict[str, list[Item]] = defaultdict(list)
    for it in items.values():
        wanted[_norm(it.prompt)].append(it)
    has_ref = "reference" in ds.column_names and "response" in ds.column_names
    seen: set[str] = set()
    hits: dict[str, str] = {}  # item id -> wrong target answer
    for prompt, response, reference in _train_rows(ds, has_ref):
        matches = next((wanted[k] for k in _train_keys(prompt) if k in wanted), None)
        if not matches:
            continue
        seen.update(it.id for it in matches)
        if reference is None:
            continue
        for it in matches:
            wrong = _wrong_target(it, response, reference)
            if wrong is not None:
                hits[it.id] = wrong
    if not has_ref:
        return seen, None
    sv = inputs.student_verdicts
    scored = [(i, a) for i, a in hits.items() if i in sv]
    repeated = [i for i, a in scored if sv[i].answer == a]
    return seen, TrainEcho(n=len(scored), k=len(repeated), ids=tuple(repeated[:10]))


def _answers(verdicts: dict[str, Judgement], ids: list[str]) -> list[str]:
    """The extracted answers on ``ids`` (callers pass ids whose answer is not None)."""
    return [a for i in ids if (a := verdicts[i].answer) is not None]


def _chance(inputs: DiagnosisInputs, items: dict[str, Item], both_wrong: list[str]) -> Chance:
    """Every chance estimate on the both-wrong items (code signatures are not answers)."""
    tv, sv = inputs.teacher_verdicts or {}, inputs.student_verdicts
    t_out, s_out = inputs.teacher or {}, inputs.student
    plain = [i for i in both_wrong if items[i].verifier_kind != "code"]
    code_items = [i for i in both_wrong if items[i].verifier_kind == "code"]
    code_pairs = [
        CodePair(
            teacher=code_completion(items[i], _text(t_out, i) or ""),
            student=code_completion(items[i], _text(s_out, i) or ""),
            teacher_signature=tv[i].answer or "",
            student_signature=sv[i].answer or "",
        )
        for i in code_items
    ]
    cross, cross_pairs = cross_item_chance(
        [str(items[i].reference) for i in plain],
        _answers(tv, plain),
        _answers(sv, plain),
        [items[i].group or f"#{i}" for i in plain],
    )
    return Chance(
        cross_item=cross,
        cross_item_pairs=cross_pairs,
        global_=global_chance(_answers(tv, plain), _answers(sv, plain)),
        code=code_chance(code_pairs, inputs.seed),
        choice=choice_chance([items[i] for i in both_wrong], CHANCE_FLOOR) if both_wrong else 0.0,
    )


def _fault_table(inputs: DiagnosisInputs, items: dict[str, Item], ids: list[str]) -> FormatFaults:
    tv, sv = inputs.teacher_verdicts or {}, inputs.student_verdicts
    t_out, s_out = inputs.teacher or {}, inputs.student
    t_fault = np.array([_format_faults(items[i], _text(t_out, i, None), tv[i]) for i in ids], bool)
    s_fault = np.array([_format_faults(items[i], _text(s_out, i, None), sv[i]) for i in ids], bool)
    counts = FormatFaults(teacher_faults=int(t_fault.sum()), student_faults=int(s_fault.sum()))
    if not (t_fault.any() and (~t_fault).any()):
        return counts
    a, b = int((t_fault & s_fault).sum()), int((t_fault & ~s_fault).sum())
    c, d = int((~t_fault & s_fault).sum()), int((~t_fault & ~s_fault).sum())
    odds, p = fisher_exact(a, b, c, d, alternative="greater")
    return replace(counts, both=a, odds_ratio=odds, p_value=p)


def _shared(
    inputs: DiagnosisInputs, items: dict[str, Item], both_wrong: list[str]
) -> tuple[SharedWrong, ...]:
    tv, sv = inputs.teacher_verdicts or {}, inputs.student_verdicts
    t_out, s_out = inputs.teacher or {}, inputs.student
    return tuple(
        SharedWrong(i, tv[i].answer, items[i].reference)
        for i in both_wrong
        if _same_wrong(items[i], tv[i], sv[i], _text(t_out, i) or "", _text(s_out, i) or "")
    )


def _mean_where(values: np.ndarray, where: np.ndarray) -> float | None:
    return float(values[where].mean()) if where.any() else None


def measure(inputs: DiagnosisInputs) -> TransferMeasured:
    """Shared wrong answers, their chance rate and the supporting measurements."""
    items = {it.id: it for it in inputs.items}
    ids = inputs.scored_ids()
    tv, sv = inputs.teacher_verdicts or {}, inputs.student_verdicts
    t_ok = np.array([tv[i].passed for i in ids], dtype=bool)
    s_ok = np.array([sv[i].passed for i in ids], dtype=bool)
    seen, echo = _train_overlap(inputs, items)
    teacher_wrong = [i for i in ids if not tv[i].passed and tv[i].answer is not None and i not in seen]
    both_wrong = [i for i in teacher_wrong if not sv[i].passed and sv[i].answer is not None]
    shared = _shared(inputs, items, both_wrong)
    chance = _chance(inputs, items, both_wrong)
    kappa_ci = (
        bootstrap_ci(kappa_statistic, t_ok, s_ok, n_boot=1000, seed=inputs.seed) if len(ids) >= 2 else None
    )
    return TransferMeasured(
        n=len(ids),
        teacher_wrong=len(teacher_wrong),
        both_wrong=len(both_wrong),
        shared=shared,
        chance=chance,
        p_value=binom_test_greater(len(shared), len(both_wrong), chance.p0) if both_wrong else None,
        kappa=cohen_kappa(t_ok, s_ok) if ids else float("nan"),
        kappa_ci=kappa_ci,
        acc_when_teacher_wrong=_mean_where(s_ok, ~t_ok),
        acc_when_teacher_right=_mean_where(s_ok, t_ok),
        faults=_fault_table(inputs, items, ids),
        echo=echo,
        echo_p_value=binom_test_greater(echo.k, echo.n, chance.p0) if echo is not None and echo.n else None,
        excluded_seen_in_train=len(seen & set(ids)),
    )


# ---------------------------------------------------------------------------------------------
# decide


def decide(m: TransferMeasured, rule: TransferRule, alpha: float) -> Ruling:
    """Apply ``rule`` (see the module docstring); a small sample gives at most ``warn``."""
    p0, rate, threshold = m.chance.p0, m.rate, rule.threshold(m.chance.p0)
    significant = m.p_value is not None and m.p_value < alpha
    big = m.n >= rule.min_items and m.both_wrong >= rule.min_both_wrong
    if significant and big and rate >= threshold:
        return Ruling(Verdict.FAIL, m.p_value)
    if significant and rate >= rule.warn_chance_multiple * p0:
        return Ruling(Verdict.WARN, m.p_value)
    few = 0 < m.both_wrong < rule.min_both_wrong
    if few and m.same_wrong >= rule.small_min_shared and rate >= threshold:
        return Ruling(Verdict.WARN, m.p_value)
    echo = m.echo
    if echo is not None and echo.n and echo.k >= rule.echo_min_repeated and echo.rate >= rule.echo_min_share:
        return Ruling(Verdict.WARN, json_float(m.echo_p_value, 8))
    return Ruling(Verdict.PASS, m.p_value)


# ---------------------------------------------------------------------------------------------
# summarize


def _tests(m: TransferMeasured) -> list[StatTest]:
    p0 = m.chance.p0
    kappa_ci = cast(tuple[float, float], tuple(json_float(x) for x in m.kappa_ci)) if m.kappa_ci else None
    tests = [
        StatTest(
            name=f"exact binomial, same wrong answer vs chance p0={p0:.3f} (one-sided)",
            n=m.both_wrong,
            p_value=m.p_value,
            effect=json_float(m.rate),
            effect_name="same-wrong-answer rate among both-wrong items",
            ci=clopper_pearson(m.same_wrong, m.both_wrong),
        ),
        StatTest(
            name="error consistency (Cohen's kappa, paired bootstrap CI)",
            n=m.n,
            p_value=None,
            effect=json_float(m.kappa),
            effect_name="kappa",
            ci=kappa_ci,  # a non-finite end is the report's null
        ),
    ]
    if m.echo is not None and m.echo.n:
        tests.append(
            StatTest(
                name=f"exact binomial, student repeats wrong training target vs p0={p0:.3f}",
                n=m.echo.n,
                p_value=m.echo_p_value,
                effect=json_float(m.echo.rate),
                effect_name="share of wrong training targets repeated",
                ci=clopper_pearson(m.echo.k, m.echo.n),
            )
        )
    if m.faults.both is not None:
        tests.append(
            StatTest(
                "Fisher exact, student format fault given teacher fault",
                m.n,
                m.faults.p_value,
                json_float(m.faults.odds_ratio),
                "odds ratio",
            )
        )
    return tests


def _echo_metrics(m: TransferMeasured) -> dict[str, Any] | None:
    if m.echo is None:
        return None
    d: dict[str, Any] = {"n": m.echo.n, "k": m.echo.k, "ids": list(m.echo.ids)}
    if m.echo.n:
        d.update(rate=json_float(m.echo.rate), p_value=json_float(m.echo_p_value, 8))
    return d


def _metrics(m: TransferMeasured, fail_rule: dict[str, Any]) -> dict[str, Any]:
    k, n_tw = m.same_wrong, m.teacher_wrong
    return {
        "n": m.n,
        "teacher_wrong": n_tw,
        "both_wrong": m.both_wrong,
        "same_wrong": k,
        "inherited_rate": json_float(k / n_tw) if n_tw else None,
        "inherited_rate_ci": list(clopper_pearson(k, n_tw)),
        "same_wrong_rate": json_float(m.rate),
        "same_wrong_rate_ci": list(clopper_pearson(k, m.both_wrong)),
        "chance": m.chance.as_metrics(),
        "fail_rule": fail_rule,
        "kappa": json_float(m.kappa),
        "kappa_ci": json_interval(m.kappa_ci),
        "student_acc_when_teacher_wrong": json_float(m.acc_when_teacher_wrong),
        "student_acc_when_teacher_right": json_float(m.acc_when_teacher_right),
        "format_faults": m.faults.as_metrics(),
        "train_echo": _echo_metrics(m),
        "excluded_seen_in_train": m.excluded_seen_in_train,
    }


def _summary(m: TransferMeasured, verdict: Verdict) -> str:
    k, n_bw, p0 = m.same_wrong, m.both_wrong, m.chance.p0
    pct = f"{m.rate:.0%}" if n_bw else "n/a"
    if verdict == Verdict.FAIL:
        return (
            f"The student repeats the teacher's exact wrong answer on {k} of {n_bw} items both get wrong "
            f"({pct}, chance {p0:.0%}): it learned the teacher's mistakes; filter the teacher's targets."
        )
    if verdict == Verdict.WARN:
        return (
            f"Some sign of inherited teacher errors ({k}/{n_bw} shared wrong answers, {pct} vs chance {p0:.0%}), "
            "not enough for a firm verdict; check the listed items."
        )
    if n_bw == 0:
        return (
            "No items where both models are wrong with extracted answers, so no teacher error could transfer."
        )
    return (
        f"No sign of inherited teacher errors: {k} of {n_bw} shared wrong answers ({pct}), "
        f"consistent with chance ({p0:.0%})."
    )


def _evidence(m: TransferMeasured) -> list[dict[str, Any]]:
    evidence = [
        {
            "id": s.id,
            "why": f"teacher and student both answered {s.answer!s:.60} (reference {s.reference!s:.60})",
        }
        for s in m.shared[:8]
    ]
    if m.echo is not None:
        evidence += [
            {"id": i, "why": "student repeats the wrong answer of its training target"}
            for i in m.echo.ids[:2]
        ]
    return evidence[:10]


def summarize(m: TransferMeasured, ruling: Ruling, rule: TransferRule, alpha: float) -> Finding:
    """The finding: text, metrics (with ``rule`` as applied at ``alpha``), tests and evidence."""
    return Finding(
        mode=MODE,
        verdict=ruling.verdict,
        summary=_summary(m, ruling.verdict),
        metrics=_metrics(m, rule.as_metrics(alpha, m.chance.p0)),
        evidence=_evidence(m),
        guardrail=GUARDRAIL if ruling.verdict != Verdict.PASS else "",
        tests=_tests(m),
        p_value=ruling.p_value,
        n=m.n,
    )


def run(inputs: DiagnosisInputs) -> Finding:
    measured = measure(inputs)
    return summarize(measured, decide(measured, RULE, inputs.alpha), RULE, inputs.alpha)


PROBE = Probe(
    mode=MODE,
    needs=("teacher",),
    run=run,
    describe="Does the student give the teacher's specific wrong answers more often than chance?",
)
