"""Capacity gap: the student keeps up on easy items and collapses on hard ones.

Measures, on the unperturbed items scored for both models, the per-item gap d = teacher_ok -
student_ok and, for every candidate easy/hard split (each cut point of a numeric tag, each value
of a categorical tag, prompt length above the median), the difference-in-differences DiD =
mean(d | hard) - mean(d | easy): a one-sided permutation test (Welch's t-test above 5,000 items)
with Holm across the splits, simultaneous bootstrap CIs, and the same DiD on the log-odds scale;
also per-slice accuracy with gap closure S / T.

Rule (:class:`CapacityRule`): ``fail`` on a split with Holm p < alpha, a large DiD (CI lower bound
> 0.15, or >= 0.15 with the CI above 0 where the student's hard-side share of the teacher is <=
0.6 of its easy-side share), >= 20 items per side, the student keeping >= 60% of the teacher on the
easy side, and a log-odds DiD >= 0.5 (a student uniformly behind in logits is no collapse). A
significant split that misses one of these but has DiD > 0.15 and a CI lower bound > 0.05 is
``warn``. A fail or warn whose hard-side failures are mostly degenerate outputs (exposure_bias's
definition) is ``warn``, handed to exposure bias. No split to test: ``skipped``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as st

from distill_doctor.data.records import Item
from distill_doctor.probes.base import DiagnosisInputs, Finding, Probe, Ruling, StatTest
from distill_doctor.probes.exposure_bias import student_degeneration
from distill_doctor.stats import (
    bootstrap_distribution,
    clopper_pearson,
    holm,
    json_float,
    json_interval,
    log_odds_gap,
    percentile_ci,
    permutation_test,
)
from distill_doctor.vocabulary import ALPHA, Mode, Verdict

MODE = Mode.CAPACITY_GAP
MAX_CATEGORIES = 20  # a categorical tag with more values is not a split
PERMUTATION_MAX_N = 5000  # above this many items the DiD test is Welch's t-test
N_PERM = 1000
N_BOOT = 2000
GUARDRAIL = (
    "Close the gap before distilling harder material: use a larger student or distil through a "
    "mid-size teacher assistant, and train on-policy on the hard slice "
    "(`distill-doctor train gkd --config gkd.yaml` with lambda 0.5 and the hard items oversampled)."
)


# --- the rule ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CapacityRule:
    """The thresholds :func:`decide` applies (module docstring)."""

    margin: float = 0.15  # DiD that counts as a collapse
    warn_bound: float = 0.05  # CI lower bound a significant DiD > margin needs for a warn
    min_side: int = 20  # items on each side of the split for a fail
    easy_retention: float = 0.6  # the student keeps up on the easy side: S_easy >= 0.6 T_easy
    collapse_ratio: float = 0.6  # hard-side share of the teacher <= 0.6 of the easy-side share
    log_odds_did_margin: float = 0.5  # logits: a collapse widens the log-odds gap at least this much
    degenerate_share: float = 0.5  # share of degenerate hard-side failures that hands over ...
    min_degenerate_base: int = 10  # ... on at least this many such failures

    def as_metrics(self, alpha: float) -> dict[str, Any]:
        return {
            "margin": self.margin,
            "warn_bound": self.warn_bound,
            "min_side": self.min_side,
            "easy_retention": self.easy_retention,
            "collapse_ratio": self.collapse_ratio,
            "log_odds_did_margin": self.log_odds_did_margin,
            "degenerate_share_to_downgrade": self.degenerate_share,
            "alpha": alpha,
        }

    def describe(self) -> str:
        return (
            f"the gap grows by >= {self.margin:g} (CI lower bound > {self.margin:g}, or > 0 when the student "
            f"keeps <= {self.collapse_ratio:g} of its easy-side share of the teacher's accuracy on the hard "
            f"side) while it keeps >= {self.easy_retention:.0%} of the teacher's accuracy on the easy side, "
            f"and the same DiD on the log-odds scale is >= {self.log_odds_did_margin:g} (a student uniformly "
            "behind in logits is not a collapse); a collapse made of degenerate outputs (as exposure_bias "
            "counts them, cut-off derivations included) is at most `warn` and handed to exposure bias"
        )


RULE = CapacityRule()


# --- what is measured -------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Split:
    """A candidate easy/hard split over the scored items: those that have the key, the hard ones."""

    key: str
    description: str
    has: np.ndarray  # bool, one per item
    hard: np.ndarray  # bool, one per item (a subset of ``has``)


@dataclass(frozen=True)
class SplitTest:
    """One split's difference-in-differences, its test and intervals, and the accuracies per side."""

    slice_key: str
    split: str
    estimate: float  # (T_hard - S_hard) - (T_easy - S_easy)
    ci: tuple[float, float]  # simultaneous bootstrap interval of ``estimate``
    log_odds_did: float
    log_odds_ci: tuple[float, float]
    p_value: float  # one-sided DiD test
    p_adjusted: float  # Holm over the splits
    n_easy: int
    n_hard: int
    teacher_easy: float
    student_easy: float
    teacher_hard: float
    student_hard: float
    easy_values: tuple[str, ...]  # tag values on each side (none for the prompt-length split)
    hard_values: tuple[str, ...]
    hard_failures: tuple[str, ...]  # hard items the teacher passes and the student fails, in item order

    @property
    def retention_easy(self) -> float:
        """The student's share of the teacher's accuracy on the easy side."""
        return self.student_easy / self.teacher_easy if self.teacher_easy > 0 else 0.0

    @property
    def retention_hard(self) -> float:
        return self.student_hard / self.teacher_hard if self.teacher_hard > 0 else 1.0


@dataclass(frozen=True)
class Derailment:
    """How many of a split's hard-side failures are degenerate outputs (exposure_bias's definition)."""

    k: int
    n: int

    @property
    def share(self) -> float | None:
        return json_float(self.k / self.n) if self.n else None


@dataclass(frozen=True)
class CapacityMeasured:
    """What :func:`measure` found: accuracies, slices, and every tested split (no verdict)."""

    n: int
    teacher: float | None
    student: float | None
    mean_gap: float  # mean teacher - student correctness over the items (nan with none)
    slices: tuple[dict[str, Any], ...]  # report blocks: per-tag-value accuracy
    length_buckets: tuple[dict[str, Any], ...]  # report blocks: accuracy by prompt length
    splits: tuple[SplitTest, ...]
    ci_level: float  # the simultaneous (Bonferroni) level of the split intervals
    degenerate: frozenset[str]  # hard-side failures (of any split) with degenerate outputs

    def derailment(self, split: SplitTest) -> Derailment:
        return Derailment(
            k=sum(i in self.degenerate for i in split.hard_failures), n=len(split.hard_failures)
        )


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _acc_block(key: str, value: str, t: np.ndarray, s: np.ndarray) -> dict[str, Any]:
    n = int(t.size)
    kt, ks = round(t.sum()), round(s.sum())  # shares of samples sum to fractions (SPEC: several samples)
    ta, sa = (float(t.mean()), float(s.mean())) if n else (None, None)
    return {
        "key": key,
        "value": value,
        "n": n,
        "teacher": json_float(ta),
        "student": json_float(sa),
        "teacher_ci": list(clopper_pearson(kt, n)),
        "student_ci": list(clopper_pearson(ks, n)),
        "gap_closure": json_float(sa / ta) if sa is not None and ta else None,
    }


def _slices(items: dict[str, Item], ids: list[str], t: np.ndarray, s: np.ndarray) -> list[dict[str, Any]]:
    """Accuracy blocks: all items, each tag value (quartile ranges for a numeric tag with many)."""
    slices = [_acc_block("all", "all", t, s)] if ids else []
    for key in sorted({k for i in ids for k in items[i].tags}):
        vals = [items[i].tags.get(key) for i in ids]
        distinct = sorted(
            {v for v in vals if v is not None},
            key=lambda v: (not _is_number(v), v if _is_number(v) else str(v)),
        )
        if len(distinct) <= MAX_CATEGORIES:
            for v in distinct:
                mask = np.array([x == v for x in vals])
                slices.append(_acc_block(key, str(v), t[mask], s[mask]))
        elif all(_is_number(v) for v in distinct):
            x = np.array([float(v) if v is not None else np.nan for v in vals])
            edges = np.unique(np.nanquantile(x, [0, 0.25, 0.5, 0.75, 1.0]))
            lo = -np.inf
            for hi in edges[1:]:
                mask = (x > lo) & (x <= hi) if np.isfinite(lo) else (x <= hi)
                slices.append(_acc_block(key, f"{np.nanmin(x[mask]):g}-{hi:g}", t[mask], s[mask]))
                lo = hi
    return slices


def _tag_splits(key: str, vals: list[Any]) -> list[Split]:
    """Splits on one tag: every cut point of a numeric tag, every value of a categorical one."""
    has = np.array([v is not None for v in vals])
    present = [v for v in vals if v is not None]
    if len(set(map(str, present))) < 2:
        return []
    out = []
    if all(_is_number(v) for v in present):
        x = np.array([float(v) if v is not None else np.nan for v in vals])
        levels = np.unique(x[has])
        cuts = levels[:-1] if levels.size <= 10 else np.unique(np.quantile(x[has], [0.25, 0.5, 0.75]))
        for c in cuts:
            with np.errstate(invalid="ignore"):
                hard = has & (x > c)
            if hard.any() and (has & ~hard).any():
                out.append(Split(key, f"{key} > {c:g}", has, hard))
        return out
    distinct = sorted(set(map(str, present)))
    if len(distinct) > MAX_CATEGORIES:
        return []
    for v in distinct:
        hard = np.array([str(x) == v if x is not None else False for x in vals])
        out.append(Split(key, f"{key} = {v}", has, hard))
    return out


def _splits(items: dict[str, Item], ids: list[str]) -> list[Split]:
    """Every candidate split: the tags', then prompt length above the median. Output length is
    left out on purpose: errors that grow with the length of what the model writes are exposure
    bias's signature (the next stage), not a capacity verdict."""
    out = []
    for key in sorted({k for i in ids for k in items[i].tags}):
        out.extend(_tag_splits(key, [items[i].tags.get(key) for i in ids]))
    x = np.array([len(items[i].prompt.split()) for i in ids], dtype=float)
    if len(ids) and len(set(x.tolist())) >= 2:
        med = float(np.median(x))
        hard = x > med
        if not hard.any():
            hard = x >= med
        label = f"prompt words > {med:g}" if (x > med).any() else f"prompt words >= {med:g}"
        out.append(Split("prompt_length", label, np.ones(len(ids), bool), hard))
    return out


def _values(items: dict[str, Item], key: str, ids: np.ndarray) -> tuple[str, ...]:
    """Distinct tag values of ``key`` on ``ids`` (empty for the prompt-length split)."""
    if key == "prompt_length":
        return ()
    return tuple(sorted({str(items[i].tags.get(key, "")) for i in ids}))


def _did_test(d: np.ndarray, hard: np.ndarray, seed: int) -> float:
    """One-sided p-value for mean(d | hard) > mean(d | easy): a permutation test of the hard/easy
    labels (Welch's t-test above ``PERMUTATION_MAX_N`` items)."""
    dh, de = d[hard], d[~hard]
    if dh.size == 0 or de.size == 0:
        return 1.0
    if d.size > PERMUTATION_MAX_N:
        if dh.var() == 0 and de.var() == 0:
            return 0.0 if dh.mean() > de.mean() else 1.0
        return float(st.ttest_ind(dh, de, equal_var=False, alternative="greater").pvalue)
    nh, total = int(hard.sum()), d.sum()

    def did(labels: np.ndarray) -> np.ndarray:
        sum_h = (labels * d).sum(axis=1)
        return sum_h / nh - (total - sum_h) / (d.size - nh)

    _, p, _ = permutation_test(did, hard, n_perm=N_PERM, seed=seed)
    return p


def _bootstrap_did(
    t: np.ndarray, s: np.ndarray, hard: np.ndarray, seed: int, idx: int
) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap replicates of the DiD and of the log-odds DiD, items resampled within each side."""

    def mean(x: np.ndarray) -> np.ndarray:
        return x.mean(-1)

    d = t - s
    reps = bootstrap_distribution(mean, d[hard], n_boot=N_BOOT, seed=seed + 2 * idx + 1)
    reps -= bootstrap_distribution(mean, d[~hard], n_boot=N_BOOT, seed=seed + 2 * idx + 2)
    log_reps = bootstrap_distribution(
        log_odds_gap, t[hard], s[hard], n_boot=N_BOOT, seed=seed + 7919 + 2 * idx
    ) - bootstrap_distribution(log_odds_gap, t[~hard], s[~hard], n_boot=N_BOOT, seed=seed + 7920 + 2 * idx)
    return reps, log_reps


@dataclass(frozen=True)
class _Scores:
    """The scored unperturbed items and both models' per-item correctness (share of passing samples)."""

    items: dict[str, Item]
    ids: list[str]
    t: np.ndarray
    s: np.ndarray
    failed: frozenset[str]  # the teacher passes (first sample), the student does not


def _test_split(
    sc: _Scores, split: Split, idx: int, p: float, p_adj: float, level: float, seed: int
) -> SplitTest:
    has, hh = split.has, split.hard[split.has]
    t, s = sc.t[has], sc.s[has]
    d = t - s
    reps, log_reps = _bootstrap_did(t, s, hh, seed, idx)
    log_did = float(log_odds_gap(t[hh][None], s[hh][None])[0] - log_odds_gap(t[~hh][None], s[~hh][None])[0])
    id_arr = np.array(sc.ids, dtype=object)[has]
    return SplitTest(
        slice_key=split.key,
        split=split.description,
        estimate=float(d[hh].mean() - d[~hh].mean()),
        ci=percentile_ci(reps, level),
        log_odds_did=log_did,
        log_odds_ci=percentile_ci(log_reps, level),
        p_value=p,
        p_adjusted=p_adj,
        n_easy=int((~hh).sum()),
        n_hard=int(hh.sum()),
        teacher_easy=float(t[~hh].mean()),
        student_easy=float(s[~hh].mean()),
        teacher_hard=float(t[hh].mean()),
        student_hard=float(s[hh].mean()),
        easy_values=_values(sc.items, split.key, id_arr[~hh]),
        hard_values=_values(sc.items, split.key, id_arr[hh]),
        hard_failures=tuple(i for i, h in zip(sc.ids, split.hard & has) if h and i in sc.failed),
    )


def _tested_splits(sc: _Scores, alpha: float, seed: int) -> tuple[tuple[SplitTest, ...], float]:
    """Every split with items on both sides, tested; Holm across them, simultaneous CIs at the
    returned (Bonferroni) level 1 - alpha / (number of splits)."""
    usable = [
        (idx, sp)
        for idx, sp in enumerate(_splits(sc.items, sc.ids))
        if sp.hard[sp.has].any() and not sp.hard[sp.has].all()
    ]
    d = sc.t - sc.s
    p = [_did_test(d[sp.has], sp.hard[sp.has], seed + idx) for idx, sp in usable]
    adjusted = holm(p)
    level = 1 - alpha / max(1, len(usable))
    tests = tuple(
        _test_split(sc, sp, idx, pi, ai, level, seed) for (idx, sp), pi, ai in zip(usable, p, adjusted)
    )
    return tests, level


def _length_buckets(sc: _Scores) -> list[dict[str, Any]]:
    lengths = np.array([len(sc.items[i].prompt.split()) for i in sc.ids])
    if lengths.size == 0:
        return []
    edges = np.unique(np.quantile(lengths, [0, 0.25, 0.5, 0.75, 1.0]).round())
    out = []
    lo = -1
    for hi in edges if edges.size > 1 else [lengths.max()]:
        mask = (lengths > lo) & (lengths <= hi)
        if mask.any():
            t, s, n = sc.t[mask], sc.s[mask], int(mask.sum())
            out.append(
                {
                    "bucket": f"{int(max(lo + 1, lengths[mask].min()))}-{int(hi)}",
                    "by": "prompt_words",
                    "n": n,
                    "teacher": json_float(t.mean()),
                    "student": json_float(s.mean()),
                    "teacher_ci": list(clopper_pearson(round(t.sum()), n)),
                    "student_ci": list(clopper_pearson(round(s.sum()), n)),
                }
            )
        lo = hi
    return out


def measure(inputs: DiagnosisInputs) -> CapacityMeasured:
    """Accuracies, slices and every easy/hard split's DiD test on the scored unperturbed items.

    Perturbed variants measure robustness (superficial_imitation's question), not capacity: a slice
    made mostly of perturbed items would show a robustness drop as a "collapse". Per-item
    correctness is the share of an item's samples that passed (0/1 with one sample); the tests
    resample items, so fractions are valid in them."""
    items = {it.id: it for it in inputs.items}
    ids = [i for i in inputs.scored_ids() if items[i].is_original]
    tv, sv = inputs.teacher_verdicts or {}, inputs.student_verdicts
    sc = _Scores(
        items=items,
        ids=ids,
        t=np.array([tv[i].score for i in ids], dtype=float),
        s=np.array([sv[i].score for i in ids], dtype=float),
        failed=frozenset(i for i in ids if tv[i].passed and not sv[i].passed),
    )
    splits, level = _tested_splits(sc, inputs.alpha, inputs.seed)
    hard_failures = sorted({i for sp in splits for i in sp.hard_failures})
    signs = student_degeneration(inputs, hard_failures)
    n = len(ids)
    return CapacityMeasured(
        n=n,
        teacher=json_float(sc.t.mean()) if n else None,
        student=json_float(sc.s.mean()) if n else None,
        mean_gap=float((sc.t - sc.s).mean()) if n else float("nan"),
        slices=tuple(_slices(items, ids, sc.t, sc.s)),
        length_buckets=tuple(_length_buckets(sc)),
        splits=splits,
        ci_level=level,
        degenerate=frozenset(i for i in hard_failures if signs.get(i)),
    )


# --- the decision -----------------------------------------------------------------------------


class Reading(enum.Enum):
    """Which story the verdict tells (it picks the summary)."""

    COLLAPSE = "the student collapses on the hard side"
    DERAILS = "the hard-side failures are degenerate outputs: exposure bias's signature"
    UNIFORM_SHIFT = "the accuracy gap grows, the log-odds gap does not: a uniformly weaker student"
    GROWS = "the gap grows, not clearly enough for a fail"
    NO_COLLAPSE = "the gap does not grow significantly"
    NOTHING_TO_TEST = "no easy/hard split"


@dataclass(frozen=True)
class CapacityRuling(Ruling):
    """The verdict, the split it rests on (the most severe, then most significant) and its reading."""

    reading: Reading = Reading.NOTHING_TO_TEST
    chosen: SplitTest | None = None
    rule: CapacityRule = RULE
    alpha: float = ALPHA


def split_verdict(c: SplitTest, rule: CapacityRule, alpha: float) -> Verdict:
    """One split under the rule (module docstring)."""
    significant = c.p_adjusted < alpha
    # Clearly large (the CI clears the margin), or large and a real collapse: the student keeps less
    # than collapse_ratio of its easy-side retention of the teacher on the hard side.
    collapse = c.retention_hard <= rule.collapse_ratio * c.retention_easy
    big = c.ci[0] > rule.margin or (c.estimate >= rule.margin and c.ci[0] > 0 and collapse)
    enough = min(c.n_easy, c.n_hard) >= rule.min_side
    keeps_up = c.teacher_easy > 0 and c.student_easy >= rule.easy_retention * c.teacher_easy
    # A collapse grows on the log-odds scale too; a student uniformly behind in logits shows a
    # growing gap in accuracy only because the easy side sits near the teacher's ceiling.
    grows_on_log_odds = c.log_odds_did >= rule.log_odds_did_margin
    if significant and big and enough and keeps_up and grows_on_log_odds:
        return Verdict.FAIL
    if significant and (
        big and enough and keeps_up or c.estimate > rule.margin and c.ci[0] > rule.warn_bound
    ):
        return Verdict.WARN
    return Verdict.PASS


def decide(measured: CapacityMeasured, rule: CapacityRule, alpha: float) -> CapacityRuling:
    """The most severe split's verdict (ties: smallest adjusted p, then largest DiD), lowered to
    ``warn`` when its hard-side failures are mostly degenerate outputs."""
    if not measured.splits:
        return CapacityRuling(Verdict.SKIPPED, None, Reading.NOTHING_TO_TEST, None, rule, alpha)
    verdicts = [split_verdict(c, rule, alpha) for c in measured.splits]
    verdict, chosen = min(
        zip(verdicts, measured.splits), key=lambda vc: (-vc[0].rank, vc[1].p_adjusted, -vc[1].estimate)
    )
    derail = measured.derailment(chosen)
    if (
        verdict.flagged
        and derail.n >= rule.min_degenerate_base
        and (derail.share or 0) >= rule.degenerate_share
    ):
        reading = Reading.DERAILS
        verdict = Verdict.WARN
    elif verdict == Verdict.FAIL:
        reading = Reading.COLLAPSE
    elif (
        verdict == Verdict.WARN
        and not chosen.log_odds_did >= rule.log_odds_did_margin
        and chosen.estimate >= rule.margin
    ):
        reading = Reading.UNIFORM_SHIFT
    elif verdict == Verdict.WARN:
        reading = Reading.GROWS
    else:
        reading = Reading.NO_COLLAPSE
    return CapacityRuling(verdict, chosen.p_adjusted, reading, chosen, rule, alpha)


# --- the report -------------------------------------------------------------------------------


def _summary(m: CapacityMeasured, r: CapacityRuling) -> str:
    c = r.chosen
    if c is None:
        if m.n == 0:
            return "Skipped: no easy/hard split to test (no items scored for both models)."
        return (
            f"Skipped: no easy/hard split to test on {m.n} items (no tag or prompt length with two "
            "values on both sides): add a numeric difficulty tag to the items."
        )
    if r.reading == Reading.DERAILS:
        d = m.derailment(c)
        return (
            f"The student's gap to the teacher grows where {c.split} (DiD {c.estimate:+.2f}), but {d.k} of its "
            f"{d.n} extra failures there are degenerate outputs (loops, no final answer, cut-off endings): the "
            "student derails on long generations rather than lacking the skill; see exposure_bias first."
        )
    if r.reading == Reading.COLLAPSE:
        return (
            f"The student keeps up on easy items ({c.student_easy:.0%} vs teacher {c.teacher_easy:.0%}) "
            f"but collapses where {c.split} ({c.student_hard:.0%} vs {c.teacher_hard:.0%}): "
            "it lacks the capacity for the hard slice."
        )
    if r.reading == Reading.UNIFORM_SHIFT:
        lo, hi = c.log_odds_ci
        return (
            f"The student's accuracy gap to the teacher grows where {c.split} ({c.student_hard:.0%} vs "
            f"{c.teacher_hard:.0%}, easy side {c.student_easy:.0%} vs {c.teacher_easy:.0%}), but not on the "
            f"log-odds scale (log-odds DiD {c.log_odds_did:+.2f}, CI [{lo:+.2f}, {hi:+.2f}]): a student uniformly "
            "behind the teacher looks like this where the easy side is near the ceiling. A weaker student "
            "overall rather than a collapse on the hard slice; watch it."
        )
    if r.reading == Reading.GROWS:
        return (
            f"The student's gap to the teacher grows where {c.split} "
            f"(DiD {c.estimate:+.2f}), but not clearly enough for a fail; watch the hard slice."
        )
    return (
        f"No capacity collapse: the student's gap to the teacher ({m.mean_gap:+.0%} overall) "
        "does not grow significantly from easy to hard items."
    )


def _report_ci(ci: tuple[float, float]) -> tuple[float, float] | None:
    """A split's interval rounded for the report (always finite: both sides have items)."""
    lo, hi = json_float(ci[0]), json_float(ci[1])
    return (lo, hi) if lo is not None and hi is not None else None


def _tests(m: CapacityMeasured) -> list[StatTest]:
    """The eight most significant splits' DiD tests."""
    return [
        StatTest(
            name=f"DiD {c.split}: permutation test (one-sided), Holm over {len(m.splits)} splits",
            n=c.n_easy + c.n_hard,
            p_value=c.p_adjusted,
            effect=json_float(c.estimate),
            effect_name="(T_hard - S_hard) - (T_easy - S_easy)",
            ci=_report_ci(c.ci),
            ci_level=m.ci_level,
        )
        for c in sorted(m.splits, key=lambda c: c.p_adjusted)[:8]
    ]


def _did_metrics(m: CapacityMeasured, c: SplitTest) -> dict[str, Any]:
    return {
        "estimate": json_float(c.estimate),
        "ci": json_interval(c.ci),
        "ci_level": json_float(m.ci_level),
        "slice_key": c.slice_key,
        "split": c.split,
        "easy": list(c.easy_values),
        "hard": list(c.hard_values),
        "n_easy": c.n_easy,
        "n_hard": c.n_hard,
        "p_value": json_float(c.p_value, 8),
        "p_adjusted": json_float(c.p_adjusted, 8),
        "retention": {"easy": json_float(c.retention_easy), "hard": json_float(c.retention_hard)},
        "log_odds_did": json_float(c.log_odds_did),
        "log_odds_ci": json_interval(c.log_odds_ci),
        "teacher_easy": json_float(c.teacher_easy),
        "student_easy": json_float(c.student_easy),
        "teacher_hard": json_float(c.teacher_hard),
        "student_hard": json_float(c.student_hard),
    }


def _derail_metrics(m: CapacityMeasured, r: CapacityRuling) -> dict[str, Any] | None:
    if r.chosen is None:
        return None
    d = m.derailment(r.chosen)
    deferred = Mode.EXPOSURE_BIAS.value if r.reading == Reading.DERAILS else None
    return {"k": d.k, "n": d.n, "share": d.share, "deferred_to": deferred}


def summarize(measured: CapacityMeasured, ruling: CapacityRuling) -> Finding:
    """The finding: summary, metrics (slices, the chosen split's DiD, the rule), tests, evidence."""
    m, c = measured, ruling.chosen
    summary = _summary(m, ruling)
    evidence = (
        [
            {"id": i, "why": f"hard item ({c.split}): teacher right, student wrong"}
            for i in c.hard_failures[:10]
        ]
        if c is not None
        else []
    )
    metrics = {
        "n": m.n,
        "teacher": m.teacher,
        "student": m.student,
        "slices": list(m.slices),
        "length_buckets": list(m.length_buckets),
        "did": _did_metrics(m, c) if c is not None else None,
        "splits_tested": len(m.splits),
        "hard_failures_degenerate": _derail_metrics(m, ruling),
        "fail_rule": ruling.rule.as_metrics(ruling.alpha),
    }
    skipped = ruling.verdict == Verdict.SKIPPED
    return Finding(
        mode=MODE,
        verdict=ruling.verdict,
        summary=summary,
        metrics=metrics,
        evidence=evidence,
        guardrail=GUARDRAIL if ruling.verdict.flagged else "",
        tests=_tests(m),
        p_value=ruling.p_value,
        n=m.n,
        skipped_reason=summary.removeprefix("Skipped: ") if skipped else None,
    )


def run(inputs: DiagnosisInputs) -> Finding:
    """The probe: measure, decide under :data:`RULE`, summarize."""
    measured = measure(inputs)
    return summarize(measured, decide(measured, RULE, inputs.alpha))


PROBE = Probe(
    mode=MODE,
    needs=("teacher",),
    run=run,
    describe="Does the student's gap to the teacher grow from easy to hard items (difference-in-differences)?",
)
