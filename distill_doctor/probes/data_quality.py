"""Data quality: are the training targets right, well-formed and not redundant?

Checks on the training set (columns prompt, response, id, source, reference):

1. Verified errors: rows with a ``reference`` are verified like eval items
   (``distill_doctor.verify.verify`` on a pseudo-item; numeric when the reference parses as
   a number, ``choice`` for a single letter A-J, else ``exact``). ``exact`` rows are only
   verified when the response states an explicit answer (``\\boxed``, ``####``, "answer is")
   or is at most 10 words: the last line of a long free-text answer is not an answer.
   Fail: >= 30 verified rows, error rate >= 10% and an exact binomial test against a 5%
   tolerance with p < alpha. Warn: rate > 5% with at least 2 errors. (A few percent of
   wrong targets is common in distillation sets; it is worth a look, not a verdict.)
2. Format violations: empty response, truncation, repetition loop, a script in the
   response that is neither in the prompt nor the response's main script (language
   mixing), and, on verified rows, no extractable final answer. Fail: >= 50 rows, rate
   >= 15% and binomial test against 5%; warn: rate > 5% with at least 3 rows.
3. Duplicates: exact duplicates of the normalised prompt+response (all rows), and near
   duplicates (MinHash LSH, see ``near_duplicates``; on a sample of 50k distinct rows beyond
   that size, where a row's partner is sampled with probability f = sample share, so the
   in-sample share of rows with a partner is divided by f to estimate the full-set share).
   Fail: >= 100 rows, redundant share >= 30% and binomial test against 10%; warn: > 10%.
4. Length outliers: robust z of log(1 + words) beyond 4 (scale floored at 0.25, about a
   28% length change, so near-constant lengths do not explode); reported, warn above 10%.

Teacher attribution (when teacher outputs are given): wrong or malformed targets that
occur at about the teacher's own rate on the evaluation items are the teacher's errors, and
whether the student learned them is ``teacher_error_transfer``'s question (it comes right
after this probe in the debug order). A failing verified-error or format check whose training
rate does not exceed the teacher's evaluation rate (Newcombe 95% CI of the difference above
0.05) is listed in ``metrics["teacher_explained_checks"]``; when ``teacher_error_transfer``
fails too, the diagnosis reports such a fail as ``warn`` (the errors are the teacher's, and the
student demonstrably learned them). Otherwise wrong targets fail here whatever their source.

Text checks and verification run on a random sample of at most 100,000 rows beyond that
size (the sample size is in the metrics); exact duplicates always use every row.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from distill_doctor.data.records import Item
from distill_doctor.probes import text_features as tf
from distill_doctor.probes.base import DiagnosisInputs, Finding, Probe, StatTest
from distill_doctor.probes.near_duplicates import NearDupConfig, near_duplicate_pairs
from distill_doctor.stats import (
    binom_test_greater,
    clopper_pearson,
    json_float,
    json_interval,
    robust_z,
    two_proportion_diff_ci,
)

MODE = "data_quality"
TEXT_SAMPLE = 100_000
NEAR_DUP_SAMPLE = 50_000
RULES = {
    # check: (min rows, tolerance tested against, practical fail rate, warn rate, min count for warn)
    "verified_error": (30, 0.05, 0.10, 0.05, 2),
    "format_violation": (50, 0.05, 0.15, 0.05, 3),
    "duplicate": (100, 0.10, 0.30, 0.10, 3),
}
LENGTH_Z = 4.0
TEACHER_MARGIN = 0.05
LENGTH_WARN = 0.10
LENGTH_MIN_SCALE = 0.25  # log-length scale floor: templated data has a MAD near 0
_NUMBER = re.compile(r"^\s*[-+]?\$?\d[\d,]*(\.\d+)?\s*%?\s*$")
_CHOICE = re.compile(r"^\s*\(?([A-Ja-j])\)?\s*$")
# LaTeX mathematics in a reference (a fraction, root, power, constant, set braces, relation ...)
_LATEX_MATH = re.compile(r"\\(?:[dt]?frac|sqrt|pi|infty|pm|cup|cap|cdot|times|le|ge|neq|\{|left|right)|\^")
MATH_ROWS = 1_000  # math-verify parses take ~3 ms each: verify at most this many math rows (a random subset)
GUARDRAIL = (
    "Regenerate or filter the training targets with the verifier and drop broken or duplicated rows: "
    "`distill-doctor generate --reject-with verifier ...` (keeps only targets whose final answer "
    "matches the reference), then retrain on the filtered file."
)


def default_verifier(reference: object) -> str:
    """The verifier kind for a training reference: numeric, choice (one letter), math (LaTeX that
    math-verify reads: ``\\frac{1}{2}`` must not be compared with ``0.5`` as text) or exact."""
    s = str(reference)
    if _NUMBER.match(s):
        return "numeric"
    if _CHOICE.match(s):
        return "choice"
    if _LATEX_MATH.search(s):
        return "math"
    return "exact"


def _frame(train: Any):
    import pandas as pd

    df = train.to_pandas() if hasattr(train, "to_pandas") else pd.DataFrame(train)
    for col in ("prompt", "response"):
        if col not in df:
            df[col] = ""
    df["prompt"] = df["prompt"].fillna("").astype(str)
    df["response"] = df["response"].fillna("").astype(str)
    if "id" not in df:
        df["id"] = [f"row{i + 1}" for i in range(len(df))]
    df["id"] = [str(x) if x is not None and x == x else f"row{i + 1}" for i, x in enumerate(df["id"])]
    if "reference" not in df:
        df["reference"] = None
    return df


def _ref_ok(ref: object) -> bool:
    if ref is None:
        return False
    if isinstance(ref, float) and ref != ref:
        return False
    return str(ref).strip() != ""


def _verify_rows(
    prompts, responses, refs, ids, seed: int = 0
) -> tuple[list[tuple[str, str]], int, int, list[str]]:
    """(errors [(id, why)], n verified, n skipped as unverifiable, ids without an answer).

    Rows with a LaTeX reference go to the ``math`` verifier, at most ``MATH_ROWS`` of them (a
    random subset; the rest count as unverifiable); a reference math-verify cannot read is skipped.
    """
    from distill_doctor.verify import verify
    from distill_doctor.verify.math_answers import readable_reference

    kinds = [default_verifier(ref) if _ref_ok(ref) else None for ref in refs]
    math_rows = [i for i, k in enumerate(kinds) if k == "math"]
    if len(math_rows) > MATH_ROWS:
        keep = set(np.random.default_rng(seed).choice(math_rows, MATH_ROWS, replace=False).tolist())
        kinds = [None if k == "math" and i not in keep else k for i, k in enumerate(kinds)]
    n_skip = len(math_rows) - min(len(math_rows), MATH_ROWS)
    errors, no_answer = [], []
    n_ver = 0
    for prompt, response, ref, rid, kind in zip(prompts, responses, refs, ids, kinds):
        if kind is None:
            continue
        if kind == "math" and not readable_reference(str(ref).strip()):
            n_skip += 1
            continue
        if kind == "exact" and tf.explicit_answer_format(response) is None and tf.word_count(response) > 10:
            n_skip += 1
            continue
        item = Item(id=rid, prompt=prompt, reference=str(ref).strip(), verifier=kind)
        try:
            v = verify(item, response)
        except Exception:
            n_skip += 1
            continue
        n_ver += 1
        if not v.passed:
            got = "no final answer" if v.answer is None else f"answer {v.answer!s:.40}"
            errors.append((rid, f"target gives {got}, reference {str(ref).strip()[:40]}"))
            if v.answer is None:
                no_answer.append(rid)
    return errors, n_ver, n_skip, no_answer


def _format_flags(prompt: str, response: str) -> list[str]:
    flags = []
    if not response.strip():
        return ["empty"]
    if tf.truncated(response):
        flags.append("truncated")
    if tf.repetition_loop(response):
        flags.append("repetition_loop")
    r_scripts = tf.scripts(response)
    if len(r_scripts) >= 2:
        total = sum(r_scripts.values())
        main = max(r_scripts, key=r_scripts.__getitem__)
        p_scripts = tf.scripts(prompt)
        if any(
            k != main and k not in p_scripts and c >= 5 and c / total >= 0.05 for k, c in r_scripts.items()
        ):
            flags.append("mixed_script")
    return flags


def _teacher_rates(inputs: DiagnosisInputs) -> dict[str, tuple[int, int]] | None:
    """(count, n) of the teacher's wrong and malformed evaluation outputs, or None without a teacher."""
    tv, t_out = inputs.teacher_verdicts, inputs.teacher
    if not tv or not t_out:
        return None
    items = [it for it in inputs.items if it.id in tv and it.verifier_kind != "code"]
    if not items:
        return None
    wrong = sum(not tv[it.id].passed for it in items)
    malformed = sum(
        bool(_format_flags(it.prompt, t_out[it.id].output if it.id in t_out else ""))
        or tv[it.id].answer is None
        for it in items
    )
    return {"verified_error": (wrong, len(items)), "format_violation": (malformed, len(items))}


def _beyond_teacher(
    k: int, n: int, teacher: tuple[int, int] | None
) -> tuple[bool, tuple[float, float] | None]:
    """Is the training rate k/n above the teacher's own rate by more than the margin?"""
    if teacher is None or n == 0:
        return True, None
    ci = two_proportion_diff_ci(k, n, teacher[0], teacher[1])
    return ci[0] > TEACHER_MARGIN, ci


def _rule(name: str, k: int, n: int, alpha: float) -> tuple[str, StatTest]:
    min_n, tol, fail_rate, warn_rate, warn_k = RULES[name]
    p = binom_test_greater(k, n, tol) if n else None
    rate = k / n if n else 0.0
    test = StatTest(
        name=f"exact binomial, {name.replace('_', ' ')} rate > {tol:.0%} (one-sided)",
        n=n,
        p_value=p,
        effect=json_float(rate),
        effect_name=f"{name.replace('_', ' ')} rate",
        ci=clopper_pearson(k, n),
    )
    if n >= min_n and p is not None and p < alpha and rate >= fail_rate:
        return "fail", test
    if (rate > warn_rate and k >= warn_k) or (n < min_n and rate >= fail_rate and k >= warn_k):
        return "warn", test
    return "pass", test


def run(inputs: DiagnosisInputs) -> Finding:
    df = _frame(inputs.train)
    n = len(df)
    if n == 0:
        return Finding(mode=MODE, verdict="pass", summary="The training set is empty: nothing to check.", n=0)
    rng = np.random.default_rng(inputs.seed)
    sample = np.sort(rng.choice(n, TEXT_SAMPLE, replace=False)) if n > TEXT_SAMPLE else np.arange(n)
    prompts = df["prompt"].to_numpy()[sample].tolist()
    responses = df["response"].to_numpy()[sample].tolist()
    refs = df["reference"].to_numpy()[sample].tolist()
    ids = df["id"].to_numpy()[sample].tolist()

    # 1. verified errors
    errors, n_ver, n_skip, no_answer = _verify_rows(prompts, responses, refs, ids, seed=inputs.seed)
    v_err, t_err = _rule("verified_error", len(errors), n_ver, inputs.alpha)

    # 2. format violations
    counts: dict[str, int] = {"empty": 0, "truncated": 0, "repetition_loop": 0, "mixed_script": 0}
    bad_ids: list[tuple[str, str]] = []
    no_answer_set = set(no_answer)
    for p, r, rid in zip(prompts, responses, ids):
        flags = _format_flags(p, r)
        if rid in no_answer_set:
            flags.append("no_final_answer")
        for f in flags:
            counts[f] = counts.get(f, 0) + 1
        if flags:
            bad_ids.append((rid, ", ".join(flags)))
    counts.setdefault("no_final_answer", 0)
    v_fmt, t_fmt = _rule("format_violation", len(bad_ids), len(sample), inputs.alpha)

    # Wrong or malformed targets at the teacher's own rate are teacher errors (see docstring).
    teacher_rates = _teacher_rates(inputs)
    attribution: dict[str, Any] = {}
    for name, k_, n_ in (
        ("verified_error", len(errors), n_ver),
        ("format_violation", len(bad_ids), len(sample)),
    ):
        rate_t = teacher_rates.get(name) if teacher_rates else None
        beyond, diff_ci = _beyond_teacher(k_, n_, rate_t)
        attribution[name] = {
            "teacher_rate": json_float(rate_t[0] / rate_t[1]) if rate_t and rate_t[1] else None,
            "teacher_n": rate_t[1] if rate_t else None,
            "diff_ci": json_interval(diff_ci),
            "beyond_teacher": beyond,
        }
    # Which failing checks the teacher's own error rate explains; the diagnosis lowers such a
    # fail to warn only when teacher_error_transfer confirms the student learned teacher errors.
    teacher_explained = [
        name
        for name, v in (("verified_error", v_err), ("format_violation", v_fmt))
        if v == "fail"
        and attribution[name]["teacher_rate"] is not None
        and not attribution[name]["beyond_teacher"]
    ]

    # 3. duplicates
    norm = (
        (df["prompt"] + "\x00" + df["response"]).str.lower().str.replace(r"\s+", " ", regex=True).str.strip()
    )
    exact = norm.duplicated(keep="first").to_numpy()
    prompt_norm = df["prompt"].str.lower().str.replace(r"\s+", " ", regex=True).str.strip()
    conflicting = int((prompt_norm.duplicated(keep=False) & ~norm.duplicated(keep=False)).sum())
    unique_pos = np.flatnonzero(~exact)
    nd_pos = (
        np.sort(rng.choice(unique_pos, NEAR_DUP_SAMPLE, replace=False))
        if unique_pos.size > NEAR_DUP_SAMPLE
        else unique_pos
    )
    cfg = NearDupConfig()
    texts = (df["prompt"].to_numpy()[nd_pos] + "\n" + df["response"].to_numpy()[nd_pos]).tolist()
    pairs = near_duplicate_pairs(texts, cfg)
    near_rows = {int(nd_pos[j]) for _, j, _ in pairs}  # the later row of each pair is redundant
    in_sample = len(near_rows) / len(nd_pos) if len(nd_pos) else 0.0
    share = len(nd_pos) / unique_pos.size if unique_pos.size else 1.0
    near_rate = min(1.0, in_sample / share) if share > 0 else 0.0  # partner-inclusion correction
    redundant = int(exact.sum()) + int(round(near_rate * unique_pos.size))
    v_dup, t_dup = _rule("duplicate", redundant, n, inputs.alpha)

    # 4. length outliers
    lengths = df["response"].str.count(r"\S+").to_numpy(dtype=float)
    z = robust_z(np.log1p(lengths), min_scale=LENGTH_MIN_SCALE)
    outliers = np.flatnonzero(np.abs(z) > LENGTH_Z)
    out_rate = outliers.size / n
    v_len = "warn" if n >= 100 and out_rate > LENGTH_WARN else "pass"

    parts = {"verified_error": v_err, "format_violation": v_fmt, "duplicate": v_dup, "length_outlier": v_len}
    tests = {"verified_error": t_err, "format_violation": t_fmt, "duplicate": t_dup}
    verdict = "fail" if "fail" in parts.values() else "warn" if "warn" in parts.values() else "pass"
    failing = [k for k, v in parts.items() if v == verdict and k in tests]
    primary = min(failing, key=lambda k: tests[k].p_value or 1.0) if failing else "verified_error"
    p_value = tests[primary].p_value

    evidence = [{"id": i, "why": w} for i, w in errors[:4]]
    evidence += [{"id": i, "why": f"format: {w}"} for i, w in bad_ids[:3]]
    ids_all = df["id"].to_numpy()
    evidence += [
        {"id": str(ids_all[i]), "why": "exact duplicate of an earlier row"} for i in np.flatnonzero(exact)[:2]
    ]
    evidence += [
        {
            "id": str(ids_all[int(nd_pos[j])]),
            "why": f"near duplicate (Jaccard {jac:.2f}) of {ids_all[int(nd_pos[i])]}",
        }
        for i, j, jac in pairs[:1]
    ]
    evidence = evidence[:10]

    issues = []

    def _teacher_note(name: str) -> str:
        a = attribution[name]
        if a["beyond_teacher"] or a["teacher_rate"] is None:
            return ""
        return f" (about the teacher's own rate, {a['teacher_rate']:.0%}: see teacher_error_transfer)"

    if parts["verified_error"] != "pass":
        issues.append(
            f"{len(errors)}/{n_ver} targets contradict their reference" + _teacher_note("verified_error")
        )
    if parts["format_violation"] != "pass":
        issues.append(
            f"{len(bad_ids)}/{len(sample)} targets are malformed" + _teacher_note("format_violation")
        )
    if parts["duplicate"] != "pass":
        issues.append(f"{redundant}/{n} rows are duplicates")
    if parts["length_outlier"] != "pass":
        issues.append(f"{outliers.size}/{n} responses have outlying length")
    if verdict == "pass":
        summary = (
            f"The training targets look sound: {len(errors)}/{n_ver} verified wrong, "
            f"{len(bad_ids)}/{len(sample)} malformed, {redundant}/{n} duplicates."
        )
    else:
        summary = (
            "Training data problems: "
            + "; ".join(issues)
            + ("; fix the data before anything else." if verdict == "fail" else ".")
        )

    metrics = {
        "n_rows": n,
        "sampled_rows": int(len(sample)),
        "sample_seed": inputs.seed,
        "with_reference": int(sum(_ref_ok(r) for r in refs)),
        "verified": n_ver,
        "unverifiable": n_skip,
        "verified_errors": len(errors),
        "verified_error_rate": json_float(len(errors) / n_ver) if n_ver else None,
        "verified_error_ci": list(clopper_pearson(len(errors), n_ver)),
        "format": {**counts, "any": len(bad_ids), "rate": json_float(len(bad_ids) / len(sample))},
        "format_ci": list(clopper_pearson(len(bad_ids), len(sample))),
        "exact_duplicates": int(exact.sum()),
        "exact_duplicate_rate": json_float(float(exact.mean())),
        "same_prompt_different_response": conflicting,
        "near_duplicates": {
            "rows": len(near_rows),
            "rate": json_float(near_rate),
            "rate_in_sample": json_float(in_sample),
            "sample_share": json_float(share),
            "rows_checked": int(len(nd_pos)),
            "pairs": len(pairs),
            **cfg.record(),
        },
        "redundant_rows": redundant,
        "length": {
            "median_words": json_float(float(np.median(lengths))),
            "p95_words": json_float(float(np.quantile(lengths, 0.95))),
            "outliers": int(outliers.size),
            "outlier_rate": json_float(out_rate),
            "rule": f"|robust z of log(1+words)| > {LENGTH_Z}, scale >= {LENGTH_MIN_SCALE}",
        },
        "checks": parts,
        "teacher_attribution": attribution,
        "teacher_explained_checks": teacher_explained,
        "rules": {
            k: dict(zip(("min_n", "tolerance", "fail_rate", "warn_rate", "warn_count"), v))
            for k, v in RULES.items()
        },
    }
    return Finding(
        mode=MODE,
        verdict=verdict,
        summary=summary,
        metrics=metrics,
        evidence=evidence,
        guardrail=GUARDRAIL if verdict != "pass" else "",
        tests=list(tests.values()),
        p_value=p_value,
        n=n,
    )


PROBE = Probe(
    mode=MODE,
    needs=("train",),
    run=run,
    describe="Are the training targets verified-correct, well-formed and free of duplicates?",
)
