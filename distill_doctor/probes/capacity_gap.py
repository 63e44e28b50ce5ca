"""Capacity gap: the student keeps up on easy items and collapses on hard ones.

A student that is a bit worse everywhere is not this failure; the signature is a gap to
the teacher that *grows* from easy to hard. Per item, d = teacher_ok - student_ok (paired
on the same item). For a split into easy and hard items the effect is the
difference-in-differences DiD = mean(d | hard) - mean(d | easy) =
(T_hard - S_hard) - (T_easy - S_easy).

Candidate splits (each one test; Holm across all of them, so picking the most extreme
split is not fishing):
- every numeric tag (SPEC: higher = harder, e.g. ``difficulty``): each cut point "value > c"
  over its distinct values (quartiles when it has more than 10), so a collapse confined to
  the top level is not diluted by a median split;
- every categorical tag value v (2-20 values): v against the rest;
- prompt length in words, above the median is hard. Output length is not a split: a failed
  output's own length is an effect of the failure, and errors that grow with the length of
  the generated text are exposure bias's signature (the next stage of the debug order).

Test per split: one-sided permutation test of the hard/easy labels on d (1,000
permutations; Welch's t-test above 5,000 items). DiD CI: bootstrap resampling items
within the easy and the hard side separately (2,000 replicates), at the simultaneous
(Bonferroni) level 1 - alpha / (number of splits), so the CI that clears the margin was
not picked as the luckiest of many.

Fail needs, for one split: Holm-adjusted p < alpha; a large DiD: its CI lower bound > 0.15, or
a point estimate >= 0.15 with the CI above 0 where the student collapses (its hard-side share
of the teacher's accuracy, S_hard / T_hard, is at most 0.6 of its easy-side share); at least 20
items on each side; and the student keeping up on the easy side (S_easy >= 0.6 T_easy).
A fail also needs the gap to grow on the log-odds scale: the same DiD computed on smoothed log
odds, (logit T_hard - logit S_hard) - (logit T_easy - logit S_easy), must be at least 0.5 (its
simultaneous bootstrap CI is reported; near the ceiling it is too wide to require it above 0).
A student a fixed number of logits behind the teacher everywhere shows a large DiD in accuracy
where the teacher is near its ceiling on the easy side and little on the log-odds scale; such a
split gives ``warn``. (superficial_imitation's uniform-shift test on discordant items was tried
here and dropped: a distilled student is right mostly where its teacher is, so on both sides
nearly every discordant item is teacher-only and the split saturates; on the capacity_gap organism,
17% vs 100% on the hard side and 56% vs 85% on the easy side, it read -0.18 logits and missed the
planted collapse, while the aggregate log-odds DiD reads +3.98.)
A DiD point estimate above 0.15 with Holm-adjusted p < alpha and a simultaneous CI lower
bound above 0.05 that misses one of these gives ``warn``. (A uniformly weaker student, one
logit behind everywhere, still shows a small positive DiD on the probability scale where the
teacher nears its ceiling; these bounds keep that from reading as a collapse.)
With no split to test (no tag or prompt length that divides the items into two sides) the probe
tested nothing and is ``skipped`` with that reason, never ``pass`` (a gate's ``required = true``
then fails on it).
Gap closure per slice is reported as S / T (no base-model accuracy is known).
Only unperturbed items count (``variant`` absent or ``original``): perturbed variants measure
robustness, which is superficial_imitation's question.

Capacity, not derailment: when most of the student's extra failures on the hard side
(teacher right, student wrong) are degenerate outputs (a repetition loop, no final answer,
a truncated or script-switching ending; :func:`exposure_bias.degeneration`), the student is
not missing the skill so much as losing the thread of its own long generations: that is
exposure bias's signature, so a ``fail`` here is lowered to ``warn`` (a ``warn`` stays one) and
the summary points there (``hard_failures_degenerate.deferred_to = "exposure_bias"``). Needs at least
``MIN_DEGENERATE_BASE`` such items and a degenerate share of at least ``DEGENERATE_SHARE``.
Degenerate means what exposure_bias counts (:func:`exposure_bias.student_degeneration`): a
derivation cut off before its answer counts even when a last-number fallback extracted a number
(before, only outputs with no extracted answer counted, and such a slice failed here and became the
primary suspect ahead of exposure bias).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats as st

from distill_doctor.probes.base import DiagnosisInputs, Finding, Probe, StatTest
from distill_doctor.stats import (
    bootstrap_distribution,
    clopper_pearson,
    holm,
    json_float,
    json_interval,
    log_odds_gap,
    percentile_ci,
)

MODE = "capacity_gap"
MARGIN = 0.15
WARN_BOUND = 0.05
MIN_SIDE = 20
EASY_RETENTION = 0.6
MAX_CATEGORIES = 20
COLLAPSE_RATIO = 0.6
LOG_ODDS_MARGIN = 0.5  # logits: a collapse widens the log-odds gap by at least this much
DEGENERATE_SHARE = 0.5
MIN_DEGENERATE_BASE = 10
PERMUTATION_MAX_N = 5000
GUARDRAIL = (
    "Close the gap before distilling harder material: use a larger student or distil through a "
    "mid-size teacher assistant, and train on-policy on the hard slice "
    "(`distill-doctor train gkd --config gkd.yaml` with lambda 0.5 and the hard items oversampled)."
)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _acc_block(key: str, value: str, t: np.ndarray, s: np.ndarray) -> dict:
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
        "gap_closure": json_float(sa / ta) if n and ta else None,
    }


def _splits(inputs: DiagnosisInputs, ids: list[str]) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(key, description, mask of items having the key, hard mask) for every candidate split."""
    items = {it.id: it for it in inputs.items}
    out = []
    keys = sorted({k for i in ids for k in items[i].tags})
    for key in keys:
        vals = [items[i].tags.get(key) for i in ids]
        has = np.array([v is not None for v in vals])
        present = [v for v in vals if v is not None]
        if len(set(map(str, present))) < 2:
            continue
        if all(_is_number(v) for v in present):
            x = np.array([float(v) if v is not None else np.nan for v in vals])
            levels = np.unique(x[has])
            cuts = levels[:-1] if levels.size <= 10 else np.unique(np.quantile(x[has], [0.25, 0.5, 0.75]))
            for c in cuts:
                with np.errstate(invalid="ignore"):
                    hard = has & (x > c)
                if hard.any() and (has & ~hard).any():
                    out.append((key, f"{key} > {c:g}", has, hard))
        else:
            distinct = sorted(set(map(str, present)))
            if len(distinct) > MAX_CATEGORIES:
                continue
            for v in distinct:
                hard = np.array([str(x) == v if x is not None else False for x in vals])
                out.append((key, f"{key} = {v}", has, hard))
    # Output length is left out on purpose: errors that grow with the length of what the model
    # writes are exposure bias's signature (the next stage), not a capacity verdict.
    lengths = {
        "prompt_length": (np.array([len(items[i].prompt.split()) for i in ids], dtype=float), "prompt words"),
    }
    for key, (x, label) in lengths.items():
        if len(ids) and len(set(x.tolist())) >= 2:
            med = float(np.median(x))
            hard = x > med
            if not hard.any():
                hard = x >= med
            out.append(
                (
                    key,
                    f"{label} > {med:g}" if (x > med).any() else f"{label} >= {med:g}",
                    np.ones(len(ids), bool),
                    hard,
                )
            )
    return out


def _values(items: dict, key: str, ids: np.ndarray) -> list[str]:
    """Distinct tag values of ``key`` on ``ids`` (empty for the prompt-length split)."""
    if key == "prompt_length":
        return []
    return sorted({str(items[i].tags.get(key, "")) for i in ids})


def _did_test(d: np.ndarray, hard: np.ndarray, seed: int) -> float:
    """One-sided p-value for mean(d | hard) > mean(d | easy)."""
    dh, de = d[hard], d[~hard]
    if dh.size == 0 or de.size == 0:
        return 1.0
    if d.size > PERMUTATION_MAX_N:
        if dh.var() == 0 and de.var() == 0:
            return 0.0 if dh.mean() > de.mean() else 1.0
        return float(st.ttest_ind(dh, de, equal_var=False, alternative="greater").pvalue)
    rng = np.random.default_rng(seed)
    n_perm = 1000
    observed = dh.mean() - de.mean()
    perm = rng.permuted(np.tile(hard, (n_perm, 1)), axis=1)
    nh = hard.sum()
    sum_h = (perm * d).sum(axis=1)
    null = sum_h / nh - (d.sum() - sum_h) / (d.size - nh)
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + n_perm))


def _length_buckets(inputs: DiagnosisInputs, ids: list[str], t: np.ndarray, s: np.ndarray) -> list[dict]:
    items = {it.id: it for it in inputs.items}
    lengths = np.array([len(items[i].prompt.split()) for i in ids])
    if lengths.size == 0:
        return []
    edges = np.unique(np.quantile(lengths, [0, 0.25, 0.5, 0.75, 1.0]).round())
    out = []
    lo = -1
    for hi in edges if edges.size > 1 else [lengths.max()]:
        mask = (lengths > lo) & (lengths <= hi)
        if mask.any():
            out.append(
                {
                    "bucket": f"{int(max(lo + 1, lengths[mask].min()))}-{int(hi)}",
                    "by": "prompt_words",
                    "n": int(mask.sum()),
                    "teacher": json_float(t[mask].mean()),
                    "student": json_float(s[mask].mean()),
                    "teacher_ci": list(clopper_pearson(round(t[mask].sum()), int(mask.sum()))),
                    "student_ci": list(clopper_pearson(round(s[mask].sum()), int(mask.sum()))),
                }
            )
        lo = hi
    return out


def run(inputs: DiagnosisInputs) -> Finding:
    items = {it.id: it for it in inputs.items}
    # Perturbed variants measure robustness (superficial_imitation's question), not capacity:
    # a slice made mostly of perturbed items would show a robustness drop as a "collapse".
    ids = [i for i in inputs.scored_ids() if items[i].is_original]
    tv, sv = inputs.teacher_verdicts or {}, inputs.student_verdicts
    # Per-item correctness: the share of an item's samples that passed (0/1 with one sample); the
    # DiD permutation test and bootstraps resample items, so fractions are valid in them.
    t = np.array([tv[i].score for i in ids], dtype=float)
    s = np.array([sv[i].score for i in ids], dtype=float)
    n = len(ids)
    d = t - s

    slices = [_acc_block("all", "all", t, s)] if n else []
    for key in sorted({k for i in ids for k in items[i].tags}):
        vals = [items[i].tags.get(key) for i in ids]
        distinct = sorted(
            {v for v in vals if v is not None},
            key=lambda v: (not _is_number(v), v if _is_number(v) else str(v)),
        )
        if len(distinct) > MAX_CATEGORIES:
            if not all(_is_number(v) for v in distinct):
                continue
            x = np.array([float(v) if v is not None else np.nan for v in vals])
            edges = np.unique(np.nanquantile(x, [0, 0.25, 0.5, 0.75, 1.0]))
            lo = -np.inf
            for hi in edges[1:]:
                mask = (x > lo) & (x <= hi) if np.isfinite(lo) else (x <= hi)
                slices.append(_acc_block(key, f"{np.nanmin(x[mask]):g}-{hi:g}", t[mask], s[mask]))
                lo = hi
            continue
        for v in distinct:
            mask = np.array([x == v for x in vals])
            slices.append(_acc_block(key, str(v), t[mask], s[mask]))

    candidates = []
    id_arr = np.array(ids, dtype=object)
    for idx, (key, desc, has, hard) in enumerate(_splits(inputs, ids)):
        dd, hh = d[has], hard[has]
        if hh.all() or not hh.any():
            continue
        p = _did_test(dd, hh, inputs.seed + idx)
        reps = bootstrap_distribution(
            lambda x: x.mean(-1), dd[hh], n_boot=2000, seed=inputs.seed + 2 * idx + 1
        )
        reps -= bootstrap_distribution(
            lambda x: x.mean(-1), dd[~hh], n_boot=2000, seed=inputs.seed + 2 * idx + 2
        )
        tt, ss = t[has], s[has]
        # the same DiD on the log-odds scale: near zero for a student uniformly behind in logits
        log_reps = bootstrap_distribution(
            log_odds_gap, tt[hh], ss[hh], n_boot=2000, seed=inputs.seed + 7919 + 2 * idx
        ) - bootstrap_distribution(
            log_odds_gap, tt[~hh], ss[~hh], n_boot=2000, seed=inputs.seed + 7920 + 2 * idx
        )
        log_did = float(
            log_odds_gap(tt[hh][None], ss[hh][None])[0] - log_odds_gap(tt[~hh][None], ss[~hh][None])[0]
        )
        candidates.append(
            {
                "slice_key": key,
                "split": desc,
                "estimate": float(dd[hh].mean() - dd[~hh].mean()),
                "_reps": reps,
                "log_odds_did": log_did,
                "_log_reps": log_reps,
                "p_value": p,
                "n_easy": int((~hh).sum()),
                "n_hard": int(hh.sum()),
                "teacher_easy": float(tt[~hh].mean()),
                "student_easy": float(ss[~hh].mean()),
                "teacher_hard": float(tt[hh].mean()),
                "student_hard": float(ss[hh].mean()),
                "easy_values": _values(items, key, id_arr[has][~hh]),
                "hard_values": _values(items, key, id_arr[has][hh]),
            }
        )
    adjusted = holm([c["p_value"] for c in candidates])
    level = 1 - inputs.alpha / max(1, len(candidates))  # simultaneous (Bonferroni) intervals
    for c, a in zip(candidates, adjusted):
        c["p_adjusted"] = a
        c["ci"] = percentile_ci(c.pop("_reps"), level)
        c["log_odds_ci"] = percentile_ci(c.pop("_log_reps"), level)
        keeps_up = c["teacher_easy"] > 0 and c["student_easy"] >= EASY_RETENTION * c["teacher_easy"]
        # Clearly large (the CI clears the margin), or large and a real collapse: the student keeps
        # less than COLLAPSE_RATIO of its easy-side retention of the teacher on the hard side.
        retention_easy = c["student_easy"] / c["teacher_easy"] if c["teacher_easy"] > 0 else 0.0
        retention_hard = c["student_hard"] / c["teacher_hard"] if c["teacher_hard"] > 0 else 1.0
        c["retention"] = {"easy": json_float(retention_easy), "hard": json_float(retention_hard)}
        collapse = retention_hard <= COLLAPSE_RATIO * retention_easy
        big = c["ci"][0] > MARGIN or (c["estimate"] >= MARGIN and c["ci"][0] > 0 and collapse)
        enough = min(c["n_easy"], c["n_hard"]) >= MIN_SIDE
        # A collapse grows on the log-odds scale too; a student uniformly behind in logits shows a
        # growing gap in accuracy only because the easy side sits near the teacher's ceiling.
        c["uniform_on_log_odds"] = not c["log_odds_did"] >= LOG_ODDS_MARGIN
        if a < inputs.alpha and big and enough and keeps_up and not c["uniform_on_log_odds"]:
            c["verdict"] = "fail"
        elif a < inputs.alpha and (
            big and enough and keeps_up or c["estimate"] > MARGIN and c["ci"][0] > WARN_BOUND
        ):
            c["verdict"] = "warn"
        else:
            c["verdict"] = "pass"

    rank = {"fail": 0, "warn": 1, "pass": 2}
    chosen = (
        min(candidates, key=lambda c: (rank[c["verdict"]], c["p_adjusted"], -c["estimate"]))
        if candidates
        else None
    )
    verdict = chosen["verdict"] if chosen else "pass"

    tests = [
        StatTest(
            name=f"DiD {c['split']}: permutation test (one-sided), Holm over {len(candidates)} splits",
            n=c["n_easy"] + c["n_hard"],
            p_value=c["p_adjusted"],
            effect=json_float(c["estimate"]),
            effect_name="(T_hard - S_hard) - (T_easy - S_easy)",
            ci=tuple(json_float(x) for x in c["ci"]),
            ci_level=level,
        )
        for c in sorted(candidates, key=lambda c: c["p_adjusted"])[:8]
    ]
    did = None
    evidence = []
    hard_ids: list[str] = []
    if chosen:
        did = {
            "estimate": json_float(chosen["estimate"]),
            "ci": json_interval(chosen["ci"]),
            "ci_level": json_float(level),
            "slice_key": chosen["slice_key"],
            "split": chosen["split"],
            "easy": chosen["easy_values"],
            "hard": chosen["hard_values"],
            "n_easy": chosen["n_easy"],
            "n_hard": chosen["n_hard"],
            "p_value": json_float(chosen["p_value"], 8),
            "p_adjusted": json_float(chosen["p_adjusted"], 8),
            "retention": chosen["retention"],
            "log_odds_did": json_float(chosen["log_odds_did"]),
            "log_odds_ci": json_interval(chosen["log_odds_ci"]),
            **{
                k: json_float(chosen[k])
                for k in ("teacher_easy", "student_easy", "teacher_hard", "student_hard")
            },
        }
        _, desc, has, hard = next(x for x in _splits(inputs, ids) if x[1] == chosen["split"])
        hard_ids = [i for i, h in zip(ids, hard & has) if h]
        evidence = [
            {"id": i, "why": f"hard item ({chosen['split']}): teacher right, student wrong"}
            for i in hard_ids
            if tv[i].passed and not sv[i].passed
        ][:10]

    derail = None
    if chosen:
        derail = _degenerate_share(inputs, [i for i in hard_ids if tv[i].passed and not sv[i].passed])
    degenerate_collapse = (
        derail is not None and derail["n"] >= MIN_DEGENERATE_BASE and derail["share"] >= DEGENERATE_SHARE
    )
    if verdict in ("fail", "warn") and degenerate_collapse:
        verdict = "warn"
        derail["deferred_to"] = "exposure_bias"
        summary = (
            f"The student's gap to the teacher grows where {chosen['split']} "
            f"(DiD {chosen['estimate']:+.2f}), but {derail['k']} of its {derail['n']} extra failures there "
            "are degenerate outputs (loops, no final answer, cut-off endings): the student derails on "
            "long generations rather than lacking the skill; see exposure_bias first."
        )
    elif verdict == "fail":
        c = chosen
        summary = (
            f"The student keeps up on easy items ({c['student_easy']:.0%} vs teacher {c['teacher_easy']:.0%}) "
            f"but collapses where {c['split']} ({c['student_hard']:.0%} vs {c['teacher_hard']:.0%}): "
            "it lacks the capacity for the hard slice."
        )
    elif verdict == "warn" and chosen["uniform_on_log_odds"] and chosen["estimate"] >= MARGIN:
        lo, hi = chosen["log_odds_ci"]
        summary = (
            f"The student's accuracy gap to the teacher grows where {chosen['split']} "
            f"({chosen['student_hard']:.0%} vs {chosen['teacher_hard']:.0%}, easy side "
            f"{chosen['student_easy']:.0%} vs {chosen['teacher_easy']:.0%}), but not on the log-odds scale "
            f"(log-odds DiD {chosen['log_odds_did']:+.2f}, CI [{lo:+.2f}, {hi:+.2f}]): a student uniformly "
            "behind the teacher looks like this where the easy side is near the ceiling. A weaker student "
            "overall rather than a collapse on the hard slice; watch it."
        )
    elif verdict == "warn":
        summary = (
            f"The student's gap to the teacher grows where {chosen['split']} "
            f"(DiD {chosen['estimate']:+.2f}), but not clearly enough for a fail; watch the hard slice."
        )
    elif not candidates:
        verdict = "skipped"
        summary = (
            "Skipped: no easy/hard split to test (no items scored for both models)."
            if n == 0
            else f"Skipped: no easy/hard split to test on {n} items (no tag or prompt length with two "
            "values on both sides): add a numeric difficulty tag to the items."
        )
    else:
        gap = float(d.mean())
        summary = (
            f"No capacity collapse: the student's gap to the teacher ({gap:+.0%} overall) "
            "does not grow significantly from easy to hard items."
        )

    metrics = {
        "n": n,
        "teacher": json_float(t.mean()) if n else None,
        "student": json_float(s.mean()) if n else None,
        "slices": slices,
        "length_buckets": _length_buckets(inputs, ids, t, s),
        "did": did,
        "splits_tested": len(candidates),
        "hard_failures_degenerate": derail,
        "fail_rule": {
            "margin": MARGIN,
            "warn_bound": WARN_BOUND,
            "min_side": MIN_SIDE,
            "easy_retention": EASY_RETENTION,
            "collapse_ratio": COLLAPSE_RATIO,
            "log_odds_did_margin": LOG_ODDS_MARGIN,
            "degenerate_share_to_downgrade": DEGENERATE_SHARE,
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
        p_value=chosen["p_adjusted"] if chosen else None,
        n=n,
        skipped_reason=summary.removeprefix("Skipped: ") if verdict == "skipped" else None,
    )


def _degenerate_share(inputs: DiagnosisInputs, failed_ids: list[str]) -> dict[str, Any]:
    """How many of the student's hard-side failures (teacher right) are degenerate outputs, by
    exposure_bias's own definition (a cut-off derivation counts even when a number was extracted)."""
    from distill_doctor.probes.exposure_bias import student_degeneration

    signs = student_degeneration(inputs, failed_ids)
    k = sum(bool(signs[i]) for i in failed_ids)
    n = len(failed_ids)
    return {"k": k, "n": n, "share": json_float(k / n) if n else None, "deferred_to": None}


PROBE = Probe(
    mode=MODE,
    needs=("teacher",),
    run=run,
    describe="Does the student's gap to the teacher grow from easy to hard items (difference-in-differences)?",
)
