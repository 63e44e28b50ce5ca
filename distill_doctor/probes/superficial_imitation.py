"""Superficial imitation: the student copies the teacher's style but not its competence.

Two kinds of evidence are set against each other.

Style (per item, student output vs teacher output on the same item, averaged): length
similarity min/max of word counts, line-count similarity, Jaccard of style markers
(``Step``, ``####``, ``\\boxed``, "the answer is", ...; see ``text_features``), same
answer format; their mean is the style score in [0, 1]. Word-bigram Jaccard is reported
too (it also reflects shared content). A cross-item baseline (teacher output of another
item) shows how much of the similarity is template rather than item.

Substance under perturbation (items with ``group``/``variant``): every perturbed variant is
paired with its group's original, for items both models were scored on. Drop rate =
1 - acc_perturbed / acc_original (GSM-Plus), for both models on the same pairs. Tests:
exact McNemar on the student's original-vs-perturbed pass/fail pairs (two-sided; the
direction must be a drop); a one-sided sign-flip test (4,000 flips) on the per-group sums of
D = (S_orig - S_pert) - (T_orig - T_pert), which asks whether the student loses more than the
teacher on the same pairs; and a cluster bootstrap (by group, 2,000 replicates) CI for
student_drop - teacher_drop. The primary p-value is the larger of the McNemar and sign-flip
p-values (an intersection-union test: a fail needs both).

Is the extra drop more than a weaker student's? A student a fixed number of logits behind the
teacher on every item (logit S_i = logit T_i - delta) loses more *accuracy* than the teacher on
variants that are harder for both, without being any less robust; the drop difference alone cannot
tell the two apart. The uniform-shift test removes every item's difficulty the way conditional
logistic regression does: on an item where exactly one model is right, the chance that it is the
teacher is p_T (1 - p_S) / (p_T (1 - p_S) + p_S (1 - p_T)) = sigmoid(delta) whatever the item's
difficulty. So under "uniform shift" the teacher-only / student-only split of the discordant items
is the same on originals and on perturbed variants, and its log odds, shift =
log((c + 1/2) / (b + 1/2)) (c = teacher-only, b = student-only), estimates delta on each side. The
excess shift = shift_perturbed - shift_original is the student's extra loss on variants in logits
beyond what a uniformly weaker student would show; it does not depend on where the teacher sits
(near its ceiling, the aggregate log odds of 0.94 vs 0.90 are too noisy to test, which is why a
rule on them lost a real 30-point excess drop). Inference: a cluster bootstrap by group (2,000
replicates; the original and its variants share a story) gives the CI, and the one-sided p-value is
the share of replicates with an excess shift <= 0. Limitation: where the student is right almost
only where the teacher is (student-only counts near 0 on both sides, common after distillation), the
split saturates and the excess shift mostly compares the teacher-only counts; capacity_gap dropped
this test for that reason (its docstring has the case).

Fail needs >= 20 pairs; the McNemar and sign-flip p-values both < alpha with more breaks than
repairs (the primary p-value is the larger of the two, an intersection-union test, and enters the
diagnosis's Holm family); a practically large drop difference (point estimate >= 0.15 with its CI
above 0); the guard against a uniformly weaker student: uniform-shift p < alpha and an excess shift
of at least ``SHIFT_MARGIN`` logits; teacher-like style (style score >= 0.5); and a student that
looks competent on the originals (accuracy >= 50%, or >= 75% of a weaker teacher's). The guard is a
condition at alpha rather than a member of the Holm family: on a uniformly weaker student the
primary hypothesis (the student loses more accuracy) is true, so only the guard protects against
that trap, and folding its p-value into Holm (7 probe tests) downgraded a validation run with a
26-point excess drop (guard p = 0.037) to ``warn``. Its one-sided level alpha bounds the trap's false fails at 5% of the runs
that meet every other condition. The power it leaves is set by the discordant originals: near
the teacher's ceiling few originals split the two models, which widens the excess shift's CI (a
run with 25 discordant originals and a 30-point excess drop gets p = 0.06 and stays ``warn``).
The aggregate log-odds difference (logit S_orig - logit S_pert) - (logit T_orig - logit T_pert)
is still reported. Before/after numbers: bench/results/diagnosis_validation.md and the README.
A large significant drop that a uniform shift explains is ``warn`` (a weaker student, not a
superficial one), as is one from a student that does not imitate or fails the originals too (it
has another problem). Without perturbation pairs the probe has nothing to test and is ``skipped``
(unless the style-only warn below fires: a capacity-limited student also looks like its teacher and
fails): warn when the style score >= 0.6, the teacher is at least 50% accurate, the student reaches
at most half the teacher's accuracy on >= 20 items, and its failing outputs are as teacher-like as
its passing ones.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from distill_doctor.probes.base import DiagnosisInputs, Finding, Probe, StatTest
from distill_doctor.stats import (
    cluster_bootstrap_means,
    exact_mcnemar,
    json_float,
    json_interval,
    percentile_ci,
    smoothed_log_odds,
)
from distill_doctor.text import text_features as tf

MODE = "superficial_imitation"
MIN_PAIRS = 20
MARGIN = 0.15
STYLE_FAIL = 0.5
STYLE_WARN = 0.6
SHIFT_MARGIN = 0.5  # logits: the student loses at least this much more on variants than on originals
N_BOOT = 2000
MIN_ORIGINAL = 0.5  # the student must look competent on the familiar form ...
ORIGINAL_RETENTION = 0.75  # ... or, with a weak teacher, keep 75% of the teacher's accuracy there
GUARDRAIL = (
    "Train on substance, not surface: add verified perturbed variants of the training prompts and "
    "reject targets that fail the verifier (`distill-doctor generate --reject-with verifier ...`), "
    "then distil on-policy (`distill-doctor train gkd --config gkd.yaml`, lambda 0.5) and re-check "
    "the perturbation drop."
)


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


def _style(inputs: DiagnosisInputs, ids: list[str]) -> tuple[dict, np.ndarray]:
    """Mean style similarity over ``ids`` and the per-item style scores, shape (len(ids),)."""
    t_out, s_out = inputs.teacher or {}, inputs.student
    rows = [
        _style_pair(s_out[i].output if i in s_out else "", t_out[i].output if i in t_out else "") for i in ids
    ]
    if not rows:
        return {"n": 0}, np.zeros(0)
    out = {"n": len(rows)}
    for key in rows[0]:
        vals = np.array([r[key] for r in rows], dtype=float)
        vals = vals[np.isfinite(vals)]
        out[key] = (
            json_float(float(np.median(vals) if key == "length_ratio" else vals.mean()))
            if vals.size
            else None
        )
    rng = np.random.default_rng(inputs.seed)
    if len(ids) >= 2:
        sample = rng.permutation(len(ids))[: min(len(ids), 500)]
        cross = [
            _style_pair(
                s_out[ids[j]].output if ids[j] in s_out else "",
                t_out[ids[(j + 1) % len(ids)]].output if ids[(j + 1) % len(ids)] in t_out else "",
            )
            for j in sample
        ]
        out["cross_item_style_score"] = json_float(float(np.mean([c["style_score"] for c in cross])))
        out["cross_item_bigram_jaccard"] = json_float(float(np.mean([c["bigram_jaccard"] for c in cross])))
    return out, np.array([r["style_score"] for r in rows])


def _pairs(inputs: DiagnosisInputs, scored: set[str]) -> list[tuple[str, str, str, str]]:
    """(group, original id, perturbed id, variant) for every perturbed item with a scored original."""
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
                pairs.append((g, originals[0].id, it.id, str(it.variant)))
    return pairs


def _drop(orig: np.ndarray, pert: np.ndarray) -> float:
    o = orig.mean() if orig.size else 0.0
    return float(1 - pert.mean() / o) if o > 0 else float("nan")


def _shift(c: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smoothed log odds that the teacher, not the student, is the one right on a discordant item."""
    return np.log((c + 0.5) / (b + 0.5))


def _uniform_shift(inputs: DiagnosisInputs, pairs: list) -> dict:
    """The uniform-shift test (module docstring): each item once, originals and perturbed variants
    apart; per group the counts of teacher-only (c) and student-only (b) items on each side."""
    tv, sv = inputs.teacher_verdicts or {}, inputs.student_verdicts
    items: dict[str, tuple[str, bool]] = {}
    for g, orig, pert, _ in pairs:
        items[orig] = (g, True)
        items[pert] = (g, False)
    names = sorted({g for g, _ in items.values()})
    index = {g: k for k, g in enumerate(names)}
    counts = np.zeros((len(names), 4))  # per group: c_orig, b_orig, c_pert, b_pert
    for i, (g, is_orig) in items.items():
        t, s = tv[i].passed, sv[i].passed
        if t != s:
            counts[index[g], (0 if is_orig else 2) + (0 if t else 1)] += 1
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


def _perturbation(inputs: DiagnosisInputs, pairs: list) -> dict:
    tv, sv = inputs.teacher_verdicts or {}, inputs.student_verdicts
    groups = np.array([p[0] for p in pairs], dtype=object)
    # Means and the sign-flip test take each item's share of passing samples (0/1 with one
    # sample); the exact McNemar test needs binary outcomes: the first sample's (SPEC).
    to = np.array([tv[p[1]].score for p in pairs], dtype=float)
    tp = np.array([tv[p[2]].score for p in pairs], dtype=float)
    so = np.array([sv[p[1]].score for p in pairs], dtype=float)
    sp = np.array([sv[p[2]].score for p in pairs], dtype=float)
    so_1 = np.array([sv[p[1]].passed for p in pairs], dtype=float)
    sp_1 = np.array([sv[p[2]].passed for p in pairs], dtype=float)
    m_to, m_tp, m_so, m_sp = cluster_bootstrap_means(groups, to, tp, so, sp, n_boot=2000, seed=inputs.seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_drop_b = 1 - m_tp / m_to
        s_drop_b = 1 - m_sp / m_so
        diff_b = s_drop_b - t_drop_b  # resamples with an undefined drop are dropped by percentile_ci
    diff_ci = percentile_ci(diff_b)
    # The same comparison on the log-odds scale: a student uniformly behind the teacher in logits
    # loses more accuracy on harder variants without being any less robust.
    n_pairs = len(pairs)

    def log_odds_drop(orig, pert):
        return smoothed_log_odds(orig, n_pairs) - smoothed_log_odds(pert, n_pairs)

    log_diff = float(log_odds_drop(so.mean(), sp.mean()) - log_odds_drop(to.mean(), tp.mean()))
    log_diff_ci = percentile_ci(log_odds_drop(m_so, m_sp) - log_odds_drop(m_to, m_tp))
    shift = _uniform_shift(inputs, pairs)
    # Differential test: D = (So - Sp) - (To - Tp) per pair, summed per group (pairs of a group
    # share an original); one-sided sign-flip test on the group sums (mean 0 when the two
    # models are equally robust).
    d = (so - sp) - (to - tp)
    _, inv = np.unique(groups.astype(str), return_inverse=True)
    sums = np.bincount(inv, weights=d)
    rng = np.random.default_rng(inputs.seed + 1)
    flips = rng.choice(np.array([-1.0, 1.0]), size=(4000, sums.size))
    null = (flips * sums).mean(axis=1)
    p_diff = float((1 + np.sum(null >= sums.mean() - 1e-12)) / (1 + null.size))
    b = int(((so_1 == 1) & (sp_1 == 0)).sum())  # student breaks under perturbation
    c = int(((so_1 == 0) & (sp_1 == 1)).sum())  # student repaired by perturbation
    by_variant = []
    variants = np.array([p[3] for p in pairs], dtype=object)
    for v in sorted(set(variants.tolist())):
        m = variants == v
        by_variant.append(
            {
                "variant": v,
                "n_pairs": int(m.sum()),
                "teacher_drop": json_float(_drop(to[m], tp[m])),
                "student_drop": json_float(_drop(so[m], sp[m])),
            }
        )
    t_drop, s_drop = _drop(to, tp), _drop(so, sp)
    return {
        "n_pairs": len(pairs),
        "n_groups": int(len(set(groups.tolist()))),
        "teacher_original": json_float(to.mean()),
        "teacher_perturbed": json_float(tp.mean()),
        "student_original": json_float(so.mean()),
        "student_perturbed": json_float(sp.mean()),
        "teacher_drop": json_float(t_drop),
        "student_drop": json_float(s_drop),
        "diff": json_float(s_drop - t_drop),
        "diff_ci": json_interval(diff_ci),
        "log_odds_diff": json_float(log_diff),
        "log_odds_diff_ci": json_interval(log_diff_ci),
        **shift,
        "student_breaks": b,
        "student_repairs": c,
        "mcnemar_p": exact_mcnemar(b, c),
        "diff_sign_flip_p": p_diff,
        "by_variant": by_variant,
        "_broken_ids": [p[2] for p, o_, p_ in zip(pairs, so_1, sp_1) if o_ == 1 and p_ == 0],
        "_teacher_ok": [bool(tv[p[2]].passed) for p in pairs],
    }


def run(inputs: DiagnosisInputs) -> Finding:
    ids = inputs.scored_ids()
    tv, sv = inputs.teacher_verdicts or {}, inputs.student_verdicts
    n = len(ids)
    style, per_item = _style(inputs, ids)
    style_score = style.get("style_score")
    t_acc = float(np.mean([tv[i].score for i in ids])) if n else float("nan")
    s_acc = float(np.mean([sv[i].score for i in ids])) if n else float("nan")
    s_ok = np.array([sv[i].passed for i in ids], dtype=bool)
    style["style_of_failing"] = json_float(per_item[~s_ok].mean()) if (~s_ok).any() else None
    style["style_of_passing"] = json_float(per_item[s_ok].mean()) if s_ok.any() else None

    pairs = _pairs(inputs, set(ids))
    tests: list[StatTest] = []
    evidence: list[dict] = []
    pert = None
    p_value = None
    if pairs:
        pert = _perturbation(inputs, pairs)
        broken = pert.pop("_broken_ids")
        teacher_ok = dict(zip([p[2] for p in pairs], pert.pop("_teacher_ok")))
        # Intersection-union test: a fail needs both tests, so its p-value is the larger one. The
        # uniform-shift test is a guard at alpha (module docstring), not part of the Holm family.
        p_value = max(pert["mcnemar_p"], pert["diff_sign_flip_p"])
        tests.append(
            StatTest(
                name="exact McNemar, student original vs perturbed (two-sided)",
                n=pert["n_pairs"],
                p_value=pert["mcnemar_p"],
                effect=pert["student_drop"],
                effect_name="student drop rate",
                statistic=float(pert["student_breaks"] - pert["student_repairs"]),
            )
        )
        tests.append(
            StatTest(
                name="student drop - teacher drop: cluster bootstrap CI; sign-flip test by group (one-sided)",
                n=pert["n_pairs"],
                p_value=pert["diff_sign_flip_p"],
                effect=pert["diff"],
                effect_name="difference of drop rates",
                ci=tuple(pert["diff_ci"]) if None not in pert["diff_ci"] else None,
            )
        )
        tests.append(
            StatTest(
                name="guard, excess shift beyond a uniform logit shift: discordant split, perturbed vs "
                "original; cluster bootstrap by group (one-sided)",
                n=pert["n_pairs"],
                p_value=pert["uniform_shift_p"],
                effect=pert["excess_shift"],
                effect_name="shift_perturbed - shift_original (logits)",
                ci=tuple(pert["excess_shift_ci"]) if None not in pert["excess_shift_ci"] else None,
            )
        )
        broken.sort(key=lambda i: not teacher_ok.get(i, False))
        evidence = [
            {
                "id": i,
                "why": "student passes the original but fails this perturbed variant"
                + (" (the teacher passes it)" if teacher_ok.get(i) else ""),
            }
            for i in broken[:10]
        ]

    lo = pert["diff_ci"][0] if pert else None
    # beyond a uniform shift: the excess shift is significant (part of p_value) and large enough
    uniform = (
        pert is None
        or not (pert["excess_shift"] or 0) >= SHIFT_MARGIN
        or pert["uniform_shift_p"] >= inputs.alpha
    )
    drops = (
        pert is not None
        and pert["n_pairs"] >= MIN_PAIRS
        and max(pert["mcnemar_p"], pert["diff_sign_flip_p"]) < inputs.alpha
        and pert["student_breaks"] > pert["student_repairs"]
        and (pert["diff"] or 0) >= MARGIN
        and lo is not None
        and lo > 0
    )
    imitates = (
        style_score is not None
        and style_score >= STYLE_FAIL
        and pert is not None
        and (pert["student_original"] or 0)
        >= min(MIN_ORIGINAL, ORIGINAL_RETENTION * (pert["teacher_original"] or 0))
    )
    if drops and imitates and not uniform:
        verdict = "fail"
    elif drops or (
        pert is not None
        and max(pert["mcnemar_p"], pert["diff_sign_flip_p"]) < inputs.alpha
        and (pert["diff"] or 0) > MARGIN
        and pert["student_breaks"] > pert["student_repairs"]
    ):
        verdict = "warn"
    elif (
        pert is None
        and n >= MIN_PAIRS
        and style_score is not None
        and style_score >= STYLE_WARN
        and t_acc >= 0.5
        and s_acc <= 0.5 * t_acc
        and (style["style_of_failing"] or 0) >= (style["style_of_passing"] or 0) - 0.05
    ):
        verdict = "warn"
    else:
        verdict = "pass"

    if not evidence and verdict == "warn":
        evidence = [
            {"id": i, "why": "teacher-like output that fails the verifier while the teacher passes"}
            for i, ok in zip(ids, s_ok)
            if not ok and tv[i].passed
        ][:10]

    if verdict == "fail":
        summary = (
            f"The student writes like the teacher (style {style_score:.2f}) but its accuracy drops "
            f"{pert['student_drop']:.0%} under perturbation vs the teacher's {pert['teacher_drop']:.0%}: "
            "it imitates the form, not the reasoning."
        )
    elif verdict == "warn" and pert is not None and drops and uniform:
        summary = (
            f"The student's accuracy drops more than the teacher's under perturbation "
            f"({pert['student_drop']:.0%} vs {pert['teacher_drop']:.0%}), but no more than a student a fixed "
            f"number of logits behind the teacher would (excess shift {pert['excess_shift']:+.2f} logits, "
            f"p = {pert['uniform_shift_p']:.2g}): such a student loses more accuracy on variants that are "
            "harder for both; a weaker student rather than a superficial one. Check the listed variants."
        )
    elif verdict == "warn" and pert is not None:
        summary = (
            f"The student's accuracy drops more than the teacher's under perturbation "
            f"({pert['student_drop']:.0%} vs {pert['teacher_drop']:.0%}), short of a fail; check the listed variants."
        )
    elif verdict == "warn":
        summary = (
            f"The student looks like the teacher (style {style_score:.2f}) but reaches {s_acc:.0%} vs {t_acc:.0%}; "
            "without perturbation pairs this cannot be told from a capacity gap: add group/variant items."
        )
    elif pert is not None and (pert["diff"] or 0) > MARGIN:
        summary = (
            f"No clear superficial imitation: the student's accuracy change under perturbation "
            f"({-(pert['student_drop'] or 0):+.0%}) is worse than the teacher's "
            f"({-(pert['teacher_drop'] or 0):+.0%}), but not significantly on {pert['n_pairs']} pairs "
            f"(p = {p_value if p_value is not None else float('nan'):.2g}); add perturbed variants to decide."
        )
    elif pert is not None:
        summary = (
            f"No superficial imitation: the student's accuracy change under perturbation "
            f"({-(pert['student_drop'] or 0):+.0%}) is in line with the teacher's ({-(pert['teacher_drop'] or 0):+.0%})."
        )
    else:
        verdict = "skipped"
        summary = (
            "Skipped: no perturbation pairs to test (items with group/variant whose original is scored "
            "for both models); the style-only check found nothing to warn about. Add perturbed variants."
        )

    metrics = {
        "n": n,
        "teacher": json_float(t_acc),
        "student": json_float(s_acc),
        "style": style,
        "perturbation": pert,
        "fail_rule": {
            "min_pairs": MIN_PAIRS,
            "margin": MARGIN,
            "diff_ci_low_above": 0.0,
            "excess_shift_margin": SHIFT_MARGIN,
            "style_fail": STYLE_FAIL,
            "style_warn": STYLE_WARN,
            "min_student_original": MIN_ORIGINAL,
            "or_share_of_teacher_original": ORIGINAL_RETENTION,
            "alpha": inputs.alpha,
        },
    }
    return Finding(
        mode=MODE,
        verdict=verdict,
        summary=summary,
        metrics=metrics,
        evidence=evidence,
        guardrail=GUARDRAIL if verdict in ("warn", "fail") else "",
        tests=tests,
        p_value=p_value,
        n=pert["n_pairs"] if pert else n,
        skipped_reason=summary.removeprefix("Skipped: ") if verdict == "skipped" else None,
    )


PROBE = Probe(
    mode=MODE,
    needs=("teacher",),
    run=run,
    describe="Does the student copy the teacher's style while its accuracy collapses under perturbation?",
)
