"""Superficial imitation: the student copies the teacher's style but not its competence.

Measures style similarity to the teacher on the same items (length, step lines, answer markers,
answer format; word bigrams and a cross-item template baseline reported beside them) and, on
perturbed variants paired with their group's original, both models' drop rate 1 - acc_perturbed /
acc_original: exact McNemar on the student's pairs, a sign-flip test by group on the student's extra
drop over the teacher's, a cluster-bootstrap CI of the drop difference, and the uniform-shift test
(:func:`_uniform_shift`), which asks whether the extra drop exceeds a student uniformly behind in
logits.

Rule (:class:`SuperficialRule`): ``fail`` on >= 20 pairs when McNemar and sign-flip p < alpha (the
larger is the primary p-value, an intersection-union test) with more breaks than repairs, a drop
difference >= 0.15 with its CI above 0, an excess shift >= 0.5 logits with uniform-shift p < alpha
(a guard at alpha, outside the Holm family), style score >= 0.5, and a student competent on the
originals (>= 50%, or >= 75% of the teacher). A significant drop that misses the rest is ``warn``.
Without pairs: ``warn`` when the student looks like the teacher (style >= 0.6) yet reaches at most
half its accuracy on >= 20 items and fails as teacher-like as it passes; otherwise ``skipped``.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from distill_doctor.probes.base import DiagnosisInputs, Finding, Probe, Ruling, StatTest
from distill_doctor.stats import (
    cluster_bootstrap_means,
    exact_mcnemar,
    json_float,
    json_interval,
    percentile_ci,
    smoothed_log_odds,
)
from distill_doctor.text import text_features as tf
from distill_doctor.vocabulary import ALPHA, Mode, Verdict

MODE = Mode.SUPERFICIAL_IMITATION
N_BOOT = 2000
N_FLIPS = 4000
GUARDRAIL = (
    "Train on substance, not surface: add verified perturbed variants of the training prompts and "
    "reject targets that fail the verifier (`distill-doctor generate --reject-with verifier ...`), "
    "then distil on-policy (`distill-doctor train gkd --config gkd.yaml`, lambda 0.5) and re-check "
    "the perturbation drop."
)


# --- the rule ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SuperficialRule:
    """The thresholds :func:`decide` applies (module docstring)."""

    min_pairs: int = 20  # perturbation pairs for a fail; also items for the style-only warn
    margin: float = 0.15  # student drop - teacher drop
    shift_margin: float = 0.5  # logits: the student loses at least this much more on variants
    style_fail: float = 0.5
    style_warn: float = 0.6  # style-only warn (no pairs)
    min_original: float = 0.5  # the student must look competent on the familiar form ...
    original_retention: float = 0.75  # ... or, with a weak teacher, keep 75% of its accuracy there
    style_only_teacher: float = 0.5  # style-only warn: the teacher is at least this accurate ...
    style_only_share: float = 0.5  # ... and the student reaches at most this share of it ...
    style_only_slack: float = 0.05  # ... failing outputs as teacher-like as passing ones, within this

    def as_metrics(self, alpha: float) -> dict[str, Any]:
        return {
            "min_pairs": self.min_pairs,
            "margin": self.margin,
            "diff_ci_low_above": 0.0,
            "excess_shift_margin": self.shift_margin,
            "style_fail": self.style_fail,
            "style_warn": self.style_warn,
            "min_student_original": self.min_original,
            "or_share_of_teacher_original": self.original_retention,
            "alpha": alpha,
        }

    def describe(self) -> str:
        return (
            f"the student's perturbation drop exceeds the teacher's significantly (by >= {self.margin:g}, "
            "CI above 0) and beyond what a student uniformly behind in logits would lose (a conditional "
            "test on the items only one model gets right) while its style matches"
        )


RULE = SuperficialRule()


# --- what is measured -------------------------------------------------------------------------


@dataclass(frozen=True)
class Style:
    """Style similarity, student vs teacher output per item, averaged: the report block and the
    values the rule reads from it."""

    block: dict[str, Any]  # metrics["style"]
    score: float | None  # mean of the length, line, marker and format similarities
    of_failing: float | None  # mean style score of the student's failing outputs
    of_passing: float | None


def _report() -> Any:
    """A :class:`Perturbation` field that goes into metrics["perturbation"]."""
    return field(metadata={"report": True})


@dataclass(frozen=True)
class Perturbation:
    """Both models on the (original, perturbed variant) pairs; values rounded as reported."""

    n_pairs: int = _report()
    n_groups: int = _report()
    teacher_original: float | None = _report()
    teacher_perturbed: float | None = _report()
    student_original: float | None = _report()
    student_perturbed: float | None = _report()
    teacher_drop: float | None = _report()
    student_drop: float | None = _report()
    diff: float | None = _report()  # student drop - teacher drop
    diff_ci: list[float | None] | None = _report()
    log_odds_diff: float | None = _report()
    log_odds_diff_ci: list[float | None] | None = _report()
    shift_original: float | None = _report()  # uniform-shift test (_uniform_shift)
    shift_perturbed: float | None = _report()
    discordant_original: dict[str, int] = _report()
    discordant_perturbed: dict[str, int] = _report()
    excess_shift: float | None = _report()
    excess_shift_ci: list[float | None] | None = _report()
    uniform_shift_p: float = _report()
    student_breaks: int = _report()  # student passes the original, fails the variant
    student_repairs: int = _report()
    mcnemar_p: float = _report()
    diff_sign_flip_p: float = _report()
    by_variant: list[dict[str, Any]] = _report()
    broken: tuple[str, ...] = ()  # perturbed ids the student breaks on, in pair order
    teacher_passes: frozenset[str] = frozenset()  # perturbed ids the teacher passes

    @property
    def primary_p(self) -> float:
        """Intersection-union test: a fail needs both McNemar and the sign-flip test."""
        return max(self.mcnemar_p, self.diff_sign_flip_p)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("report")}


@dataclass(frozen=True)
class SuperficialMeasured:
    """What :func:`measure` found: accuracies, style and the perturbation pairs (no verdict)."""

    n: int
    teacher: float  # accuracy on the scored items (nan with none)
    student: float
    style: Style
    perturbation: Perturbation | None  # None without perturbation pairs
    teacher_only_failures: tuple[str, ...]  # items the student fails and the teacher passes


def _sim(a: float, b: float) -> float:
    return 1.0 if max(a, b) == 0 else min(a, b) / max(a, b)


def _style_pair(s: str, t: str) -> dict[str, float]:
    ls, lt = tf.word_count(s), tf.word_count(t)
    parts = {
        "length_similarity": _sim(ls, lt),
        "line_similarity": _sim(tf.step_lines(s), tf.step_lines(t)),
        "marker_jaccard": tf.jaccard(set(tf.markers(s)), set(tf.markers(t))),
        "format_match": float(tf.explicit_answer_format(s) == tf.explicit_answer_format(t)),
    }
    parts["style_score"] = float(np.mean(list(parts.values())))
    parts["bigram_jaccard"] = tf.ngram_jaccard(s, t, 2)
    parts["length_ratio"] = ls / lt if lt else float("nan")
    return parts


def _cross_item(inputs: DiagnosisInputs, ids: list[str]) -> dict[str, Any]:
    """The template baseline: the student's output against the teacher's on another item."""
    t_out, s_out = inputs.teacher or {}, inputs.student
    sample = np.random.default_rng(inputs.seed).permutation(len(ids))[: min(len(ids), 500)]
    cross = [
        _style_pair(
            s_out[ids[j]].output if ids[j] in s_out else "",
            t_out[ids[(j + 1) % len(ids)]].output if ids[(j + 1) % len(ids)] in t_out else "",
        )
        for j in sample
    ]
    return {
        "cross_item_style_score": json_float(float(np.mean([c["style_score"] for c in cross]))),
        "cross_item_bigram_jaccard": json_float(float(np.mean([c["bigram_jaccard"] for c in cross]))),
    }


def _style(inputs: DiagnosisInputs, ids: list[str], s_ok: np.ndarray) -> Style:
    """Mean style similarity over ``ids`` (the length ratio's median), the cross-item baseline, and
    the style of the student's failing and passing outputs."""
    t_out, s_out = inputs.teacher or {}, inputs.student
    rows = [
        _style_pair(s_out[i].output if i in s_out else "", t_out[i].output if i in t_out else "") for i in ids
    ]
    block: dict[str, Any] = {"n": len(rows)}
    for key in rows[0] if rows else ():
        vals = np.array([r[key] for r in rows], dtype=float)
        vals = vals[np.isfinite(vals)]
        stat = float(np.median(vals) if key == "length_ratio" else vals.mean()) if vals.size else None
        block[key] = json_float(stat)
    if len(ids) >= 2:
        block.update(_cross_item(inputs, ids))
    per_item = np.array([r["style_score"] for r in rows]) if rows else np.zeros(0)
    block["style_of_failing"] = json_float(per_item[~s_ok].mean()) if (~s_ok).any() else None
    block["style_of_passing"] = json_float(per_item[s_ok].mean()) if s_ok.any() else None
    return Style(block, block.get("style_score"), block["style_of_failing"], block["style_of_passing"])


@dataclass(frozen=True)
class _Pair:
    group: str
    original: str  # item ids
    perturbed: str
    variant: str


def _pairs(inputs: DiagnosisInputs, scored: set[str]) -> list[_Pair]:
    """Every perturbed item with a scored original of its group (the group's first original)."""
    by_group: dict[str, list] = defaultdict(list)
    for it in inputs.items:
        if it.group is not None and it.id in scored:
            by_group[it.group].append(it)
    pairs = []
    for g, members in by_group.items():
        originals = [it for it in members if it.is_original]
        if not originals:
            continue
        for it in members:
            if not it.is_original:
                pairs.append(_Pair(g, originals[0].id, it.id, str(it.variant)))
    return pairs


def _drop(orig: np.ndarray, pert: np.ndarray) -> float:
    o = orig.mean() if orig.size else 0.0
    return float(1 - pert.mean() / o) if o > 0 else float("nan")


def _shift(c: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smoothed log odds that the teacher, not the student, is the one right on a discordant item."""
    return np.log((c + 0.5) / (b + 0.5))


def _discordant_counts(inputs: DiagnosisInputs, pairs: list[_Pair]) -> tuple[list[str], np.ndarray]:
    """Group names and, per group, teacher-only and student-only counts on originals and on
    perturbed variants (columns c_orig, b_orig, c_pert, b_pert); each item counted once."""
    tv, sv = inputs.teacher_verdicts or {}, inputs.student_verdicts
    items: dict[str, tuple[str, bool]] = {}
    for p in pairs:
        items[p.original] = (p.group, True)
        items[p.perturbed] = (p.group, False)
    names = sorted({g for g, _ in items.values()})
    index = {g: k for k, g in enumerate(names)}
    counts = np.zeros((len(names), 4))
    for i, (g, is_orig) in items.items():
        t, s = tv[i].passed, sv[i].passed
        if t != s:
            counts[index[g], (0 if is_orig else 2) + (0 if t else 1)] += 1
    return names, counts


def _uniform_shift(inputs: DiagnosisInputs, pairs: list[_Pair]) -> dict[str, Any]:
    """Is the student's extra drop more than a student uniformly behind in logits would show?

    Where exactly one model is right, the chance that it is the teacher is sigmoid(delta) whatever
    the item's difficulty when logit S = logit T - delta on every item (as in conditional logistic
    regression). So under a uniform shift the teacher-only / student-only split of the discordant
    items is the same on originals and on variants; shift = log((c + 1/2) / (b + 1/2)) estimates
    delta on each side, and excess shift = shift_perturbed - shift_original is the student's extra
    loss on variants beyond a uniform shift. CI: cluster bootstrap by group; one-sided p: the share
    of replicates <= 0. Where the student is right almost only where the teacher is (student-only
    counts near 0 on both sides, common after distillation) the split saturates and the excess shift
    mostly compares the teacher-only counts; capacity_gap does not use this test for that reason."""
    names, counts = _discordant_counts(inputs, pairs)
    c_o, b_o, c_p, b_p = counts.sum(axis=0)
    excess = float(_shift(c_p, b_p) - _shift(c_o, b_o))
    rng = np.random.default_rng(inputs.seed + 2)
    weights = rng.multinomial(len(names), np.full(len(names), 1 / len(names)), size=N_BOOT)  # (B, G)
    reps = weights @ counts  # (B, 4)
    excess_b = _shift(reps[:, 2], reps[:, 3]) - _shift(reps[:, 0], reps[:, 1])
    return {
        "shift_original": json_float(float(_shift(c_o, b_o))),
        "shift_perturbed": json_float(float(_shift(c_p, b_p))),
        "discordant_original": {"teacher_only": int(c_o), "student_only": int(b_o)},
        "discordant_perturbed": {"teacher_only": int(c_p), "student_only": int(b_p)},
        "excess_shift": json_float(excess),
        "excess_shift_ci": json_interval(percentile_ci(excess_b)),
        "uniform_shift_p": float((1 + np.sum(excess_b <= 0)) / (1 + N_BOOT)),
    }


@dataclass(frozen=True)
class _Scores:
    """Per-pair scores: the share of passing samples (means, bootstrap, sign flips) and, for the
    student, the first sample's outcome (exact McNemar needs binary outcomes; SPEC)."""

    groups: np.ndarray
    to: np.ndarray
    tp: np.ndarray
    so: np.ndarray
    sp: np.ndarray
    so_1: np.ndarray
    sp_1: np.ndarray


def _scores(inputs: DiagnosisInputs, pairs: list[_Pair]) -> _Scores:
    tv, sv = inputs.teacher_verdicts or {}, inputs.student_verdicts

    def score(verdicts: dict, ids: list[str]) -> np.ndarray:
        return np.array([verdicts[i].score for i in ids], dtype=float)

    orig, pert = [p.original for p in pairs], [p.perturbed for p in pairs]
    return _Scores(
        groups=np.array([p.group for p in pairs], dtype=object),
        to=score(tv, orig),
        tp=score(tv, pert),
        so=score(sv, orig),
        sp=score(sv, pert),
        so_1=np.array([sv[i].passed for i in orig], dtype=float),
        sp_1=np.array([sv[i].passed for i in pert], dtype=float),
    )


def _drop_difference(sc: _Scores, seed: int) -> dict[str, Any]:
    """Student drop - teacher drop: cluster bootstrap CI by group, and the same comparison on the
    log-odds scale (a student uniformly behind in logits loses more accuracy on harder variants
    without being any less robust)."""
    m_to, m_tp, m_so, m_sp = cluster_bootstrap_means(
        sc.groups, sc.to, sc.tp, sc.so, sc.sp, n_boot=N_BOOT, seed=seed
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        diff_b = (1 - m_sp / m_so) - (1 - m_tp / m_to)  # undefined drops are dropped by percentile_ci
    n_pairs = sc.to.size

    def log_odds_drop(orig: Any, pert: Any) -> np.ndarray:
        return smoothed_log_odds(orig, n_pairs) - smoothed_log_odds(pert, n_pairs)

    log_diff = float(log_odds_drop(sc.so.mean(), sc.sp.mean()) - log_odds_drop(sc.to.mean(), sc.tp.mean()))
    t_drop, s_drop = _drop(sc.to, sc.tp), _drop(sc.so, sc.sp)
    return {
        "teacher_drop": json_float(t_drop),
        "student_drop": json_float(s_drop),
        "diff": json_float(s_drop - t_drop),
        "diff_ci": json_interval(percentile_ci(diff_b)),
        "log_odds_diff": json_float(log_diff),
        "log_odds_diff_ci": json_interval(
            percentile_ci(log_odds_drop(m_so, m_sp) - log_odds_drop(m_to, m_tp))
        ),
    }


def _sign_flip_p(sc: _Scores, seed: int) -> float:
    """One-sided sign-flip test on the per-group sums of D = (So - Sp) - (To - Tp): does the student
    lose more than the teacher on the same pairs? (Pairs of a group share an original.)"""
    d = (sc.so - sc.sp) - (sc.to - sc.tp)
    _, inv = np.unique(sc.groups.astype(str), return_inverse=True)
    sums = np.bincount(inv, weights=d)
    flips = np.random.default_rng(seed).choice(np.array([-1.0, 1.0]), size=(N_FLIPS, sums.size))
    null = (flips * sums).mean(axis=1)
    return float((1 + np.sum(null >= sums.mean() - 1e-12)) / (1 + null.size))


def _by_variant(sc: _Scores, pairs: list[_Pair]) -> list[dict[str, Any]]:
    variants = np.array([p.variant for p in pairs], dtype=object)
    out = []
    for v in sorted(set(variants.tolist())):
        m = variants == v
        out.append(
            {
                "variant": v,
                "n_pairs": int(m.sum()),
                "teacher_drop": json_float(_drop(sc.to[m], sc.tp[m])),
                "student_drop": json_float(_drop(sc.so[m], sc.sp[m])),
            }
        )
    return out


def _perturbation(inputs: DiagnosisInputs, pairs: list[_Pair]) -> Perturbation:
    sc = _scores(inputs, pairs)
    tv = inputs.teacher_verdicts or {}
    breaks = (sc.so_1 == 1) & (sc.sp_1 == 0)
    b, c = int(breaks.sum()), int(((sc.so_1 == 0) & (sc.sp_1 == 1)).sum())
    return Perturbation(
        n_pairs=len(pairs),
        n_groups=int(len(set(sc.groups.tolist()))),
        teacher_original=json_float(sc.to.mean()),
        teacher_perturbed=json_float(sc.tp.mean()),
        student_original=json_float(sc.so.mean()),
        student_perturbed=json_float(sc.sp.mean()),
        **_drop_difference(sc, inputs.seed),
        **_uniform_shift(inputs, pairs),
        student_breaks=b,
        student_repairs=c,
        mcnemar_p=exact_mcnemar(b, c),
        diff_sign_flip_p=_sign_flip_p(sc, inputs.seed + 1),
        by_variant=_by_variant(sc, pairs),
        broken=tuple(p.perturbed for p, k in zip(pairs, breaks) if k),
        teacher_passes=frozenset(p.perturbed for p in pairs if tv[p.perturbed].passed),
    )


def measure(inputs: DiagnosisInputs) -> SuperficialMeasured:
    """Accuracy and style on the items scored for both models, and the perturbation pairs."""
    ids = inputs.scored_ids()
    tv, sv = inputs.teacher_verdicts or {}, inputs.student_verdicts
    n = len(ids)
    s_ok = np.array([sv[i].passed for i in ids], dtype=bool)
    pairs = _pairs(inputs, set(ids))
    return SuperficialMeasured(
        n=n,
        teacher=float(np.mean([tv[i].score for i in ids])) if n else float("nan"),
        student=float(np.mean([sv[i].score for i in ids])) if n else float("nan"),
        style=_style(inputs, ids, s_ok),
        perturbation=_perturbation(inputs, pairs) if pairs else None,
        teacher_only_failures=tuple(i for i, ok in zip(ids, s_ok) if not ok and tv[i].passed),
    )


# --- the decision -----------------------------------------------------------------------------


class Reading(enum.Enum):
    """Which story the verdict tells (it picks the summary)."""

    IMITATES_FORM = "teacher-like style, accuracy collapses under perturbation"
    UNIFORM_SHIFT = "the extra drop is what a student uniformly behind in logits shows"
    DROPS = "the student drops more than the teacher, short of a fail"
    STYLE_ONLY = "no pairs; teacher-like style with half the teacher's accuracy"
    UNCLEAR_DROP = "a larger drop than the teacher's, not significant"
    ROBUST = "the drop is in line with the teacher's"
    NOTHING_TO_TEST = "no perturbation pairs"


@dataclass(frozen=True)
class SuperficialRuling(Ruling):
    """The verdict, the reading that explains it, and the rule as applied."""

    reading: Reading = Reading.NOTHING_TO_TEST
    rule: SuperficialRule = RULE
    alpha: float = ALPHA


def _drops(p: Perturbation, rule: SuperficialRule, alpha: float) -> bool:
    """A practically large, significant extra drop on enough pairs."""
    lo = p.diff_ci[0] if p.diff_ci else None
    return (
        p.n_pairs >= rule.min_pairs
        and p.primary_p < alpha
        and p.student_breaks > p.student_repairs
        and (p.diff or 0) >= rule.margin
        and lo is not None
        and lo > 0
    )


def _style_only_warn(m: SuperficialMeasured, rule: SuperficialRule) -> bool:
    """Without pairs: a student that looks like its teacher, reaches at most half its accuracy and
    fails in the same style as it passes (cannot be told from a capacity gap; at most warn)."""
    st = m.style
    return (
        m.n >= rule.min_pairs
        and st.score is not None
        and st.score >= rule.style_warn
        and m.teacher >= rule.style_only_teacher
        and m.student <= rule.style_only_share * m.teacher
        and (st.of_failing or 0) >= (st.of_passing or 0) - rule.style_only_slack
    )


def _decide_pairs(m: SuperficialMeasured, p: Perturbation, rule: SuperficialRule, alpha: float) -> Reading:
    # Beyond a uniform shift: the guard is a condition at alpha, not part of the Holm family.
    uniform = not (p.excess_shift or 0) >= rule.shift_margin or p.uniform_shift_p >= alpha
    imitates = (
        m.style.score is not None
        and m.style.score >= rule.style_fail
        and (p.student_original or 0)
        >= min(rule.min_original, rule.original_retention * (p.teacher_original or 0))
    )
    drops = _drops(p, rule, alpha)
    if drops and imitates and not uniform:
        return Reading.IMITATES_FORM
    if drops and uniform:
        return Reading.UNIFORM_SHIFT
    if drops or (
        p.primary_p < alpha and (p.diff or 0) > rule.margin and p.student_breaks > p.student_repairs
    ):
        return Reading.DROPS
    return Reading.UNCLEAR_DROP if (p.diff or 0) > rule.margin else Reading.ROBUST


_VERDICT_OF = {
    Reading.IMITATES_FORM: Verdict.FAIL,
    Reading.UNIFORM_SHIFT: Verdict.WARN,
    Reading.DROPS: Verdict.WARN,
    Reading.STYLE_ONLY: Verdict.WARN,
    Reading.UNCLEAR_DROP: Verdict.PASS,
    Reading.ROBUST: Verdict.PASS,
    Reading.NOTHING_TO_TEST: Verdict.SKIPPED,
}


def decide(measured: SuperficialMeasured, rule: SuperficialRule, alpha: float) -> SuperficialRuling:
    """The verdict under ``rule`` (module docstring); the primary p-value is the larger of McNemar's
    and the sign-flip test's."""
    p = measured.perturbation
    if p is not None:
        reading = _decide_pairs(measured, p, rule, alpha)
    elif _style_only_warn(measured, rule):
        reading = Reading.STYLE_ONLY
    else:
        reading = Reading.NOTHING_TO_TEST
    return SuperficialRuling(_VERDICT_OF[reading], p.primary_p if p else None, reading, rule, alpha)


# --- the report -------------------------------------------------------------------------------


def _summary(m: SuperficialMeasured, r: SuperficialRuling) -> str:
    p = m.perturbation
    if p is None:
        if r.reading == Reading.STYLE_ONLY:
            return (
                f"The student looks like the teacher (style {m.style.score:.2f}) but reaches {m.student:.0%} vs "
                f"{m.teacher:.0%}; without perturbation pairs this cannot be told from a capacity gap: add "
                "group/variant items."
            )
        return (
            "Skipped: no perturbation pairs to test (items with group/variant whose original is scored "
            "for both models); the style-only check found nothing to warn about. Add perturbed variants."
        )
    if r.reading == Reading.IMITATES_FORM:
        return (
            f"The student writes like the teacher (style {m.style.score:.2f}) but its accuracy drops "
            f"{p.student_drop:.0%} under perturbation vs the teacher's {p.teacher_drop:.0%}: "
            "it imitates the form, not the reasoning."
        )
    if r.reading == Reading.UNIFORM_SHIFT:
        return (
            f"The student's accuracy drops more than the teacher's under perturbation "
            f"({p.student_drop:.0%} vs {p.teacher_drop:.0%}), but no more than a student a fixed "
            f"number of logits behind the teacher would (excess shift {p.excess_shift:+.2f} logits, "
            f"p = {p.uniform_shift_p:.2g}): such a student loses more accuracy on variants that are "
            "harder for both; a weaker student rather than a superficial one. Check the listed variants."
        )
    if r.reading == Reading.DROPS:
        return (
            f"The student's accuracy drops more than the teacher's under perturbation "
            f"({p.student_drop:.0%} vs {p.teacher_drop:.0%}), short of a fail; check the listed variants."
        )
    change_s, change_t = -(p.student_drop or 0), -(p.teacher_drop or 0)
    if r.reading == Reading.UNCLEAR_DROP:
        return (
            f"No clear superficial imitation: the student's accuracy change under perturbation "
            f"({change_s:+.0%}) is worse than the teacher's ({change_t:+.0%}), but not significantly on "
            f"{p.n_pairs} pairs (p = {p.primary_p:.2g}); add perturbed variants to decide."
        )
    return (
        f"No superficial imitation: the student's accuracy change under perturbation "
        f"({change_s:+.0%}) is in line with the teacher's ({change_t:+.0%})."
    )


def _tests(p: Perturbation) -> list[StatTest]:
    def ci(pair: list[float | None] | None) -> tuple[float, float] | None:
        return (pair[0], pair[1]) if pair and pair[0] is not None and pair[1] is not None else None

    return [
        StatTest(
            name="exact McNemar, student original vs perturbed (two-sided)",
            n=p.n_pairs,
            p_value=p.mcnemar_p,
            effect=p.student_drop,
            effect_name="student drop rate",
            statistic=float(p.student_breaks - p.student_repairs),
        ),
        StatTest(
            name="student drop - teacher drop: cluster bootstrap CI; sign-flip test by group (one-sided)",
            n=p.n_pairs,
            p_value=p.diff_sign_flip_p,
            effect=p.diff,
            effect_name="difference of drop rates",
            ci=ci(p.diff_ci),
        ),
        StatTest(
            name="guard, excess shift beyond a uniform logit shift: discordant split, perturbed vs "
            "original; cluster bootstrap by group (one-sided)",
            n=p.n_pairs,
            p_value=p.uniform_shift_p,
            effect=p.excess_shift,
            effect_name="shift_perturbed - shift_original (logits)",
            ci=ci(p.excess_shift_ci),
        ),
    ]


def _evidence(m: SuperficialMeasured, verdict: Verdict) -> list[dict[str, Any]]:
    """Variants the student breaks on (those the teacher passes first); for a warn without any,
    teacher-like outputs that fail where the teacher passes."""
    p = m.perturbation
    evidence = []
    if p is not None:
        broken = sorted(p.broken, key=lambda i: i not in p.teacher_passes)
        evidence = [
            {
                "id": i,
                "why": "student passes the original but fails this perturbed variant"
                + (" (the teacher passes it)" if i in p.teacher_passes else ""),
            }
            for i in broken[:10]
        ]
    if not evidence and verdict == Verdict.WARN:
        why = "teacher-like output that fails the verifier while the teacher passes"
        evidence = [{"id": i, "why": why} for i in m.teacher_only_failures[:10]]
    return evidence


def summarize(measured: SuperficialMeasured, ruling: SuperficialRuling) -> Finding:
    """The finding: summary, metrics (style, perturbation, the rule), tests, evidence."""
    m, p = measured, measured.perturbation
    summary = _summary(m, ruling)
    metrics = {
        "n": m.n,
        "teacher": json_float(m.teacher),
        "student": json_float(m.student),
        "style": m.style.block,
        "perturbation": p.to_dict() if p else None,
        "fail_rule": ruling.rule.as_metrics(ruling.alpha),
    }
    return Finding(
        mode=MODE,
        verdict=ruling.verdict,
        summary=summary,
        metrics=metrics,
        evidence=_evidence(m, ruling.verdict),
        guardrail=GUARDRAIL if ruling.verdict.flagged else "",
        tests=_tests(p) if p else [],
        p_value=ruling.p_value,
        n=p.n_pairs if p else m.n,
        skipped_reason=summary.removeprefix("Skipped: ") if ruling.verdict == Verdict.SKIPPED else None,
    )


def run(inputs: DiagnosisInputs) -> Finding:
    """The probe: measure, decide under :data:`RULE`, summarize."""
    measured = measure(inputs)
    return summarize(measured, decide(measured, RULE, inputs.alpha))


PROBE = Probe(
    mode=MODE,
    needs=("teacher",),
    run=run,
    describe="Does the student copy the teacher's style while its accuracy collapses under perturbation?",
)
