"""Exposure bias: the student degenerates as its own generations grow longer, much faster than the teacher.

Trained only on teacher-written prefixes, a student never learns to continue from its own mistakes.
Measured per item, for both models: degeneration (a loop, no final answer or a derivation cut off
mid-way, a truncated ending, a switch of writing system) and derailment (the first wrong
``a op b = c`` step carried on rather than corrected), by the TEACHER's output length (the student's
own length would be circular: a looping output is long because it degenerated). Tests, on
d = student - teacher degeneration per item: the DiD of d between the long and short halves
(permutation test, bootstrap CI), and exact McNemar on the long half and on all items. With models
(:mod:`exposure_models`): Arora et al.'s R_l = L_FR / L_TF.

Rule (:data:`RULE`): ``fail`` when the DiD and the long-half excess are both significant and
>= 0.10 (DiD CI above 0) on >= 40 items with >= 15 per half; a uniform excess, a small sample or
carried-on wrong steps give at most ``warn``. Strong model evidence (R_l CI above 1.5 on >= 32
prompts) lifts ``pass`` to ``warn``, and to ``fail`` a big-sample ``warn`` with a significant excess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from scipy.stats import ttest_ind

from distill_doctor.probes.base import DiagnosisInputs, Finding, Probe, Ruling, StatTest, skipped
from distill_doctor.stats import (
    binom_test_greater,
    bootstrap_distribution,
    fisher_exact,
    json_float,
    json_interval,
    percentile_ci,
    permutation_test,
)
from distill_doctor.text.text_features import (
    cut_off_in_reasoning,
    explicit_answer_format,
    mixed_script,
    repetition_loop,
    truncated,
    word_count,
)
from distill_doctor.vocabulary import Mode, Verdict

if TYPE_CHECKING:  # exposure_models imports torch: loaded only when models are given
    from distill_doctor.probes.exposure_models import ModelExposure, RatioAt

MODE = Mode.EXPOSURE_BIAS
MIN_ITEMS = 40
MIN_SIDE = 15
DID_MARGIN = 0.10
LONG_MARGIN = 0.10
OVERALL_MARGIN = 0.05
N_BUCKETS = 4
R_MARGIN = 1.5
R_MIN_PROMPTS = 32
DERAIL_MARGIN = 0.2
PERMUTATION_MAX_N = 2000
EXPLICIT_SHARE = 0.8
MIN_REASONING_WORDS = 20
MIN_DERAILED = 10
GUARDRAIL = (
    "distill-doctor train gkd --config gkd.yaml --set gkd.lmbda=0.5  "
    "# on-policy GKD: the student learns from its own generations; meanwhile cap max_new_tokens "
    "and add a repetition penalty at inference"
)


@dataclass(frozen=True)
class ExposureRule:
    """The verdict rule's thresholds (see the module docstring)."""

    min_items: int = MIN_ITEMS
    min_side: int = MIN_SIDE  # items per half (long / short by teacher length)
    did_margin: float = DID_MARGIN
    long_margin: float = LONG_MARGIN
    overall_margin: float = OVERALL_MARGIN
    r_margin: float = R_MARGIN  # model evidence: R_l CI lower bound above this
    r_min_prompts: int = R_MIN_PROMPTS
    derail_margin: float = DERAIL_MARGIN
    small_min_student_only: int = 3  # small-sample warn: >= 3 long items only the student degenerates on

    def as_metrics(self, alpha: float) -> dict[str, Any]:
        """``metrics["rules"]`` (this probe records no alpha there)."""
        return {
            "min_items": self.min_items,
            "min_side": self.min_side,
            "did_margin": self.did_margin,
            "long_margin": self.long_margin,
            "overall_margin": self.overall_margin,
            "r_margin": self.r_margin,
        }

    def describe(self) -> str:
        return "degeneration grows with length significantly faster than the teacher's"


RULE = ExposureRule()


@dataclass(frozen=True)
class McNemar:
    """One-sided exact McNemar on paired degeneration: items only the student degenerates on
    against items only the teacher does, out of ``n`` items."""

    student_only: int
    teacher_only: int
    p_value: float
    n: int

    @property
    def excess(self) -> float:
        """Student minus teacher degeneration rate."""
        return (self.student_only - self.teacher_only) / self.n if self.n else 0.0


@dataclass(frozen=True)
class Compounding:
    """DiD of d = student - teacher degeneration between the long and short halves."""

    did: float
    p_value: float
    test: str  # "permutation test" or "Welch t-test"
    ci: tuple[float, float]  # percentile bootstrap over items
    accuracy_did: float  # the same DiD of the teacher - student accuracy gap


@dataclass(frozen=True)
class Derailment:
    """How often a model's outputs carry their first wrong step on, recover, or stop."""

    carried: int = 0
    recovered: int = 0
    stopped: int = 0

    @property
    def decided(self) -> int:
        return self.carried + self.recovered

    def as_metrics(self) -> dict[str, Any]:
        share = json_float(self.carried / self.decided) if self.decided else None
        return {
            "carried": self.carried,
            "recovered": self.recovered,
            "stopped": self.stopped,
            "carried_share": share,
        }


@dataclass(frozen=True)
class CarryOn:
    """Fisher exact, one-sided: does the student carry a first wrong step on more often than the
    teacher? Values as reported (6 digits)."""

    n: int
    p_value: float | None
    effect: float | None  # carried share, student - teacher
    odds_ratio: float | None


@dataclass(frozen=True)
class LengthBucket:
    bucket: str  # "lo-hi" words
    n: int
    teacher_acc: float
    student_acc: float
    teacher_degenerate: float
    student_degenerate: float

    def as_metrics(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "n": self.n,
            "teacher_acc": json_float(self.teacher_acc),
            "student_acc": json_float(self.student_acc),
            "teacher_degenerate": json_float(self.teacher_degenerate),
            "student_degenerate": json_float(self.student_degenerate),
        }


@dataclass(frozen=True)
class ExposureMeasured:
    """What the probe measured, item-aligned with ``ids``; no verdict."""

    ids: tuple[str, ...]
    length_measure: str
    lengths: tuple[float, ...]
    long: tuple[bool, ...]  # teacher length above the median
    teacher_signs: tuple[tuple[str, ...], ...]
    student_signs: tuple[tuple[str, ...], ...]
    overall: McNemar
    long_half: McNemar
    compounding: Compounding | None  # None when a half is empty
    derail_teacher: Derailment
    derail_student: Derailment
    carry_on: CarryOn | None  # None with too few student outputs with a wrong step
    by_length: tuple[LengthBucket, ...]
    models: ModelExposure | None  # with --teacher-model and --student-model

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def n_long(self) -> int:
        return sum(self.long)

    @property
    def n_short(self) -> int:
        return self.n - self.n_long

    @property
    def teacher_degenerate(self) -> float:
        return sum(bool(x) for x in self.teacher_signs) / self.n

    @property
    def student_degenerate(self) -> float:
        return sum(bool(x) for x in self.student_signs) / self.n


@dataclass(frozen=True)
class ExposureRuling(Ruling):
    """The verdict with the findings it rests on (the summary names them)."""

    compounding: bool = False
    uniform: bool = False
    carries: bool = False


# ---------------------------------------------------------------------------------------------
# features: degeneration and derailment of one output


_NUM = r"-?\d+(?:\.\d+)?"
_EQ = re.compile(rf"({_NUM})\s*([-+*/×x])\s*({_NUM})\s*=\s*({_NUM})")


def _apply(a: float, op: str, b: float) -> float | None:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op in "*×x":
        return a * b
    return a / b if b != 0 else None


def _same(x: float, y: float) -> bool:
    return abs(x - y) <= 1e-6 * max(1.0, abs(x), abs(y))


def derailment(text: str | None, final_answer: str | None = None) -> str | None:
    """How an output continues after its first wrong ``a op b = c`` step.

    Returns ``None`` (no wrong checkable step), ``"carried"`` (the wrong value is reused by a later
    step or is the final answer, and the right value never appears), ``"recovered"`` (the right
    value appears later) or ``"stopped"`` (nothing after the wrong step uses either value).
    """
    if not text:
        return None
    eqs = list(_EQ.finditer(text[:20_000]))
    for k, m in enumerate(eqs):
        a, op, b, c = float(m.group(1)), m.group(2), float(m.group(3)), float(m.group(4))
        right = _apply(a, op, b)
        if right is None or _same(right, c):
            continue
        later = [float(x) for x in re.findall(_NUM, text[m.end() :])]
        if any(_same(x, right) for x in later):
            return "recovered"
        reused = any(_same(float(e.group(1)), c) or _same(float(e.group(3)), c) for e in eqs[k + 1 :])
        try:
            ends_on_it = final_answer is not None and _same(float(final_answer), c) and bool(later)
        except ValueError:
            ends_on_it = False
        return "carried" if reused or ends_on_it else "stopped"
    return None


def degeneration(text: str | None, answer_missing: bool, *, is_code: bool) -> list[str]:
    """The degeneration signs of one output (empty when none)."""
    signs = []
    if repetition_loop(text):
        signs.append("loop")
    if answer_missing and not is_code:
        signs.append("no final answer")
    if cut_off_in_reasoning(text):
        signs.append("cut off inside reasoning")
    elif truncated(text):
        signs.append("truncated")
    if mixed_script(text):
        signs.append("mixed script")
    return signs


def student_degeneration(inputs: DiagnosisInputs, ids: list[str]) -> dict[str, list[str]]:
    """This probe's degeneration signs of the student's outputs on ``ids``, by item id.

    The same definition :func:`measure` uses, so other probes (capacity_gap's degenerate-collapse rule)
    count exactly what this probe counts: "no final answer" includes a reasoning-length output
    without an answer marker in a run whose teacher marks its answers (a derivation cut off mid-way,
    where a last-number fallback still extracts a number). The convention is read from the
    teacher's outputs on every scored item, as in :func:`measure`.
    """
    if inputs.teacher is None:
        return {}
    items = {it.id: it for it in inputs.items}
    scored = [i for i in inputs.scored_ids() if i in inputs.teacher and i in inputs.student]
    explicit = _explicit_convention(
        [inputs.teacher[i].output for i in scored], [items[i].verifier_kind == "code" for i in scored]
    )
    out = {}
    for i in ids:
        text, answer = inputs.student[i].output, inputs.student_verdicts[i].answer
        is_code = items[i].verifier_kind == "code"
        out[i] = degeneration(text, _answer_missing(text, answer, explicit), is_code=is_code)
    return out


def _explicit_convention(teacher_texts: list[str], is_code: list[bool]) -> bool:
    """Whether the teacher marks its final answers explicitly (boxed, ####, "answer is") in >= 80% of outputs."""
    texts = [x for x, c in zip(teacher_texts, is_code) if not c]
    if not texts:
        return False
    return sum(explicit_answer_format(x) is not None for x in texts) >= EXPLICIT_SHARE * len(texts)


def _answer_missing(text: str | None, answer: str | None, explicit: bool) -> bool:
    """No final answer: none extracted, or (when the run marks answers explicitly) a reasoning-length
    output without a marker. The numeric fallback "last number in the text" finds an "answer" in a
    derivation cut off mid-way; a terse output ("42") is not flagged."""
    if answer is None:
        return True
    return explicit and word_count(text) >= MIN_REASONING_WORDS and explicit_answer_format(text) is None


def _did_stat(d: np.ndarray, long: np.ndarray) -> np.ndarray:
    """(B, n) d and long-labels -> (B,) mean(d | long) - mean(d | short); nan when a side is empty."""
    lf = long.astype(float)
    nl, ns = lf.sum(-1), (1 - lf).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (d * lf).sum(-1) / nl - (d * (1 - lf)).sum(-1) / ns


def _did_test(d: np.ndarray, long: np.ndarray, seed: int) -> tuple[float, float, str]:
    """DiD and its one-sided p: a permutation test of the long/short labels (2,000 permutations);
    above ``PERMUTATION_MAX_N`` items Welch's t-test, whose normal approximation is then excellent."""
    if len(d) <= PERMUTATION_MAX_N:
        did, p, _ = permutation_test(
            lambda lab: _did_stat(d[None, :], lab),
            long.astype(int),
            n_perm=2000,
            seed=seed,
            alternative="greater",
        )
        return float(did), float(p), "permutation test"
    did = float(_did_stat(d[None, :], long[None, :])[0])
    res = ttest_ind(d[long], d[~long], equal_var=False, alternative="greater")
    p = float(res.pvalue) if np.isfinite(res.pvalue) else (0.0 if did > 0 else 1.0)
    return did, p, "Welch t-test"


def _length_measure(items: list, teacher_texts: list[str]) -> tuple[str, np.ndarray]:
    """The generation length an item needs, never the student's own: the teacher's output words;
    when those barely vary (a median split leaves fewer than ``MIN_SIDE`` on a side), the
    reference's words, then the prompt's words."""
    candidates = [
        ("teacher output words", [word_count(x) for x in teacher_texts]),
        (
            "reference words",
            [word_count(str(it.reference)) if it.reference is not None else 0 for it in items],
        ),
        ("prompt words", [word_count(it.prompt) for it in items]),
    ]
    for name, values in candidates:
        arr = np.asarray(values, dtype=float)
        long = arr > np.median(arr)
        if min(int(long.sum()), int((~long).sum())) >= MIN_SIDE:
            return name, arr
    return candidates[0][0], np.asarray(candidates[0][1], dtype=float)


def _mcnemar_greater(s: np.ndarray, t: np.ndarray) -> McNemar:
    """One-sided exact McNemar: does the student degenerate where the teacher does not, more than the reverse?"""
    b = int((s & ~t).sum())
    c = int((t & ~s).sum())
    return McNemar(b, c, binom_test_greater(b, b + c, 0.5), len(s))


def _compounding(
    d: np.ndarray, long: np.ndarray, t_ok: np.ndarray, s_ok: np.ndarray, seed: int
) -> Compounding | None:
    if not (long.any() and (~long).any()):
        return None
    did, p_did, test = _did_test(d, long, seed)
    n_boot = 2000 if len(d) <= PERMUTATION_MAX_N else 1000
    ci = percentile_ci(bootstrap_distribution(_did_stat, d, long, n_boot=n_boot, seed=seed))
    acc_d = t_ok.astype(float) - s_ok.astype(float)
    acc_did = float(_did_stat(acc_d[None, :], long[None, :])[0])
    return Compounding(did, p_did, test, ci, acc_did)


def _by_length(lengths, t_ok, s_ok, t_deg, s_deg) -> tuple[LengthBucket, ...]:
    edges = _bucket_edges(lengths)
    which = np.searchsorted(edges, lengths, side="left")
    rows = []
    for b in range(len(edges) + 1):
        sel = which == b
        if not sel.any():
            continue
        lo, hi = int(lengths[sel].min()), int(lengths[sel].max())
        means = (t_ok[sel].mean(), s_ok[sel].mean(), t_deg[sel].mean(), s_deg[sel].mean())
        rows.append(LengthBucket(f"{lo}-{hi}", int(sel.sum()), *(float(x) for x in means)))
    return tuple(rows)


def _bucket_edges(lengths: np.ndarray) -> list[float]:
    qs = np.quantile(lengths, np.linspace(0, 1, N_BUCKETS + 1)[1:-1])
    return sorted(set(float(q) for q in qs))


def _derail_counts(texts: list[str], answers: list[str | None]) -> Derailment:
    counts = {"carried": 0, "recovered": 0, "stopped": 0}
    for x, a in zip(texts, answers):
        kind = derailment(x, a)
        if kind:
            counts[kind] += 1
    return Derailment(**counts)


def _carry_on(s: Derailment, t: Derailment) -> CarryOn | None:
    """Fisher exact, one-sided: after a first wrong step, does the student carry the error on more often?"""
    if s.decided < MIN_DERAILED or t.decided == 0:
        return None
    odds, p = fisher_exact(s.carried, s.recovered, t.carried, t.recovered, alternative="greater")
    effect = s.carried / s.decided - t.carried / t.decided
    return CarryOn(s.decided + t.decided, json_float(p), json_float(effect), json_float(odds))


def _compared_ids(inputs: DiagnosisInputs) -> list[str]:
    teacher = inputs.teacher or {}
    return [i for i in inputs.scored_ids() if i in teacher and i in inputs.student]


def _signs(inputs: DiagnosisInputs, ids: list[str], teacher: bool) -> list[tuple[str, ...]]:
    """Degeneration signs of the teacher's (or the student's) outputs on ``ids``."""
    items = {it.id: it for it in inputs.items}
    outputs = (inputs.teacher or {}) if teacher else inputs.student
    verdicts = (inputs.teacher_verdicts or {}) if teacher else inputs.student_verdicts
    is_code = [items[i].verifier_kind == "code" for i in ids]
    explicit = _explicit_convention([(inputs.teacher or {})[i].output for i in ids], is_code)
    return [
        tuple(
            degeneration(
                outputs[i].output, _answer_missing(outputs[i].output, verdicts[i].answer, explicit), is_code=c
            )
        )
        for i, c in zip(ids, is_code)
    ]


def _models(inputs: DiagnosisInputs, ids: list[str]) -> ModelExposure | None:
    if inputs.teacher_model is None or inputs.student_model is None:
        return None
    from distill_doctor.probes import exposure_models

    items = {it.id: it for it in inputs.items}
    return exposure_models.measure_exposure_bias(
        inputs.teacher_model, inputs.student_model, [items[i] for i in ids], seed=inputs.seed
    )


def measure(inputs: DiagnosisInputs) -> ExposureMeasured | None:
    """Degeneration of both models by teacher length; None when no item has both outputs."""
    ids = _compared_ids(inputs)
    tv, sv = inputs.teacher_verdicts, inputs.student_verdicts
    if not ids or tv is None or inputs.teacher is None:
        return None
    items = {it.id: it for it in inputs.items}
    t_text = [inputs.teacher[i].output for i in ids]
    s_text = [inputs.student[i].output for i in ids]
    t_signs, s_signs = _signs(inputs, ids, teacher=True), _signs(inputs, ids, teacher=False)
    t_deg, s_deg = np.array([bool(x) for x in t_signs]), np.array([bool(x) for x in s_signs])
    t_ok = np.array([tv[i].passed for i in ids], dtype=bool)
    s_ok = np.array([sv[i].passed for i in ids], dtype=bool)
    length_measure, lengths = _length_measure([items[i] for i in ids], t_text)
    long = lengths > np.median(lengths)
    derail_t = _derail_counts(t_text, [tv[i].answer for i in ids])
    derail_s = _derail_counts(s_text, [sv[i].answer for i in ids])
    d = s_deg.astype(float) - t_deg.astype(float)
    return ExposureMeasured(
        ids=tuple(ids),
        length_measure=length_measure,
        lengths=tuple(float(x) for x in lengths),
        long=tuple(bool(x) for x in long),
        teacher_signs=tuple(t_signs),
        student_signs=tuple(s_signs),
        overall=_mcnemar_greater(s_deg, t_deg),
        long_half=_mcnemar_greater(s_deg[long], t_deg[long]),
        compounding=_compounding(d, long, t_ok, s_ok, inputs.seed),
        derail_teacher=derail_t,
        derail_student=derail_s,
        carry_on=_carry_on(derail_s, derail_t),
        by_length=_by_length(lengths, t_ok, s_ok, t_deg, s_deg),
        models=_models(inputs, ids),
    )


# ---------------------------------------------------------------------------------------------
# decide


def _with_models(verdict: Verdict, models: ModelExposure, rule: ExposureRule, upgradable: bool) -> Verdict:
    """Model evidence upgrades conservatively: a pass to warn, a big-sample warn with a significant
    output-level excess (``upgradable``) to fail, only when R_l's CI lies above the margin."""
    longest = models.longest
    if longest is None or longest.block.ci is None or longest.block.ci[0] is None:
        return verdict
    strong = models.n_prompts >= rule.r_min_prompts and longest.block.ci[0] > rule.r_margin
    if strong and verdict == Verdict.PASS:
        return Verdict.WARN
    if strong and verdict == Verdict.WARN and upgradable:
        return Verdict.FAIL
    return verdict


def decide(m: ExposureMeasured, rule: ExposureRule, alpha: float) -> ExposureRuling:
    """Apply ``rule`` (see the module docstring); a small sample gives at most ``warn``."""
    c, lh = m.compounding, m.long_half
    compounding = (
        c is not None
        and c.p_value < alpha
        and lh.p_value < alpha
        and c.did >= rule.did_margin
        and c.ci[0] > 0
        and lh.excess >= rule.long_margin
    )
    uniform = m.overall.p_value < alpha and m.overall.excess >= rule.overall_margin
    did = c.did if c is not None else 0.0
    small_signal = (
        lh.excess >= 2 * rule.long_margin
        and lh.student_only >= rule.small_min_student_only
        and did >= rule.did_margin
    )
    co = m.carry_on
    carries = (
        co is not None
        and co.p_value is not None
        and co.p_value < alpha
        and (co.effect or 0) >= rule.derail_margin
    )
    big = m.n >= rule.min_items and min(m.n_long, m.n_short) >= rule.min_side
    if compounding and big:
        verdict = Verdict.FAIL
    elif compounding or uniform or small_signal or carries:
        verdict = Verdict.WARN
    else:
        verdict = Verdict.PASS
    if m.models is not None:
        verdict = _with_models(verdict, m.models, rule, big and (uniform or compounding))
    primary = max(c.p_value, lh.p_value) if c is not None else m.overall.p_value
    return ExposureRuling(
        verdict, json_float(primary), compounding=compounding, uniform=uniform, carries=carries
    )


# ---------------------------------------------------------------------------------------------
# summarize


def _tests(m: ExposureMeasured) -> list[StatTest]:
    tests = []
    c = m.compounding
    if c is not None:
        tests.append(
            StatTest(
                f"{c.test}, one-sided (DiD of degeneration, long vs short)",
                m.n,
                json_float(c.p_value),
                json_float(c.did),
                "DiD (student - teacher degeneration)",
                ci=cast(tuple[float, float], (json_float(c.ci[0]), json_float(c.ci[1]))),  # None: not finite
            )
        )
    for mc, what, effect in (
        (m.overall, "student degenerates more than teacher, all items", "student - teacher degeneration"),
        (m.long_half, "long half by teacher length", "student - teacher degeneration (long)"),
    ):
        tests.append(
            StatTest(
                f"exact McNemar, one-sided ({what})",
                mc.n,
                json_float(mc.p_value),
                json_float(mc.excess),
                effect,
                statistic=float(mc.student_only),
            )
        )
    if m.carry_on is not None:
        co = m.carry_on
        tests.append(
            StatTest(
                "Fisher exact, one-sided (student carries its first wrong step on more often than the teacher)",
                co.n,
                co.p_value,
                co.effect,
                "carried share student - teacher",
                statistic=co.odds_ratio,
            )
        )
    longest = m.models.longest if m.models is not None else None
    if (
        m.models is not None
        and longest is not None
        and longest.block.ci is not None
        and longest.block.ci[0] is not None
    ):
        tests.append(_ratio_test(m.models.n_prompts, longest))
    return tests


def _ratio_test(n_prompts: int, longest: RatioAt) -> StatTest:
    ci = cast(list[float], longest.block.ci)
    return StatTest(
        f"R_l = L_FR / L_TF at l = {longest.length} (bootstrap over prompts)",
        n_prompts,
        None,
        longest.block.ratio,
        "R_l",
        ci=(ci[0], ci[1]),
    )


def _sign_counts(signs: tuple[tuple[str, ...], ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in signs:
        for k in s:
            out[k] = out.get(k, 0) + 1
    return out


def _metrics(m: ExposureMeasured, r: ExposureRuling, rule: ExposureRule, alpha: float) -> dict[str, Any]:
    c = m.compounding
    metrics: dict[str, Any] = {
        "n": m.n,
        "length_measure": m.length_measure,
        "median_length": json_float(float(np.median(m.lengths))),
        "n_long": m.n_long,
        "n_short": m.n_short,
        "teacher_degenerate": json_float(m.teacher_degenerate),
        "student_degenerate": json_float(m.student_degenerate),
        "student_signs": _sign_counts(m.student_signs),
        "teacher_signs": _sign_counts(m.teacher_signs),
        "did_degeneration": json_float(c.did if c is not None else None),
        "did_ci": json_interval(c.ci if c is not None else None),
        "excess_long": json_float(m.long_half.excess),
        "excess_all": json_float(m.overall.excess),
        "did_accuracy_gap": json_float(c.accuracy_did if c is not None else None),
        "derailment": {"teacher": m.derail_teacher.as_metrics(), "student": m.derail_student.as_metrics()},
        "by_length": [b.as_metrics() for b in m.by_length],
        "rules": rule.as_metrics(alpha),
        "derailment_warn": bool(r.carries),
    }
    if m.models is not None:
        metrics["model_based"] = m.models.as_metrics()
    return metrics


def _summary(m: ExposureMeasured, r: ExposureRuling) -> str:
    s, t = json_float(m.student_degenerate), json_float(m.teacher_degenerate)
    if r.verdict == Verdict.PASS:
        return (
            f"No compounding degeneration: student {s:.0%} vs teacher {t:.0%} degenerate outputs, "
            "with no excess growing with length."
        )
    if r.compounding and m.compounding is not None:
        return (
            f"Student degeneration grows with generation length faster than the teacher's (DiD "
            f"{json_float(m.compounding.did):+.2f}, long-half excess {json_float(m.long_half.excess):+.2f}): "
            "train on-policy."
        )
    if r.uniform:
        return (
            f"The student degenerates more often than the teacher ({s:.0%} vs {t:.0%}) but not clearly "
            "more on long generations: check loops and missing answers."
        )
    if r.carries:
        ds, dt = (
            m.derail_student.as_metrics()["carried_share"],
            m.derail_teacher.as_metrics()["carried_share"],
        )
        return (
            f"After a first wrong step the student carries the error on ({ds:.0%}) far more often than "
            f"the teacher ({dt:.0%}), which corrects itself: it never learned to recover from its own mistakes."
        )
    longest = m.models.longest if m.models is not None else None
    if longest is not None and longest.block.ratio is not None:
        return (
            f"The student diverges from the teacher {longest.block.ratio:.2f}x more on its own prefixes than on the "
            f"teacher's (R_l at {longest.length} tokens): exposure bias at the model level."
        )
    return "Signs of exposure bias too weak or too few to be conclusive: inspect the listed outputs."


def _evidence(m: ExposureMeasured) -> list[dict[str, str]]:
    only_student = [k for k in range(m.n) if m.student_signs[k] and not m.teacher_signs[k]]
    only_student.sort(key=lambda k: (not m.long[k], -m.lengths[k]))
    return [
        {
            "id": m.ids[k],
            "why": f"student output: {', '.join(m.student_signs[k])}; the teacher's "
            f"({int(m.lengths[k])} words) is clean",
        }
        for k in only_student[:10]
    ]


def summarize(m: ExposureMeasured, ruling: ExposureRuling, rule: ExposureRule, alpha: float) -> Finding:
    """The finding: text, metrics (with ``rule`` as applied), tests and evidence."""
    return Finding(
        MODE,
        ruling.verdict,
        _summary(m, ruling),
        metrics=_metrics(m, ruling, rule, alpha),
        evidence=_evidence(m),
        guardrail=GUARDRAIL,
        tests=_tests(m),
        p_value=ruling.p_value,
        n=m.n,
    )


def run(inputs: DiagnosisInputs) -> Finding:
    measured = measure(inputs)
    if measured is None:  # nothing tested: never a pass
        return skipped(MODE, "no item has both a teacher and a student output to compare")
    return summarize(measured, decide(measured, RULE, inputs.alpha), RULE, inputs.alpha)


PROBE = Probe(
    mode=MODE,
    needs=("teacher",),
    run=run,
    describe="Degeneration (loops, missing answers, truncation) of student vs teacher as a function of "
    "the teacher's output length; with models, Arora et al.'s R_l = L_FR / L_TF.",
)
