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
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any

import numpy as np

from distill_doctor.data.records import Item
from distill_doctor.probes.base import DiagnosisInputs, Finding, Probe, StatTest
from distill_doctor.probes.shards import Shard, TrainingSource, map_shards, source_of
from distill_doctor.stats import (
    binom_test_greater,
    clopper_pearson,
    json_float,
    json_interval,
    robust_z,
    two_proportion_diff_ci,
)
from distill_doctor.text import text_features as tf
from distill_doctor.text.near_duplicates import NearDupConfig, near_duplicate_pairs

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


def _text_hashes(texts: list[str]) -> np.ndarray:
    """64-bit blake2b of each text, lower-cased with whitespace runs collapsed (exact-duplicate keys:
    a false match needs about 2**32 rows)."""
    digests = b"".join(
        blake2b(" ".join(t.lower().split()).encode("utf-8", "surrogatepass"), digest_size=8).digest()
        for t in texts
    )
    return np.frombuffer(digests, dtype="<u8").copy()


@dataclass
class ShardQuality:
    """What one shard contributes: duplicate keys and lengths of every row, checks of its sampled rows."""

    pair_hash: np.ndarray
    prompt_hash: np.ndarray
    lengths: np.ndarray
    errors: list[tuple[str, str]] = field(default_factory=list)
    n_verified: int = 0
    n_skipped: int = 0
    bad_ids: list[tuple[str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    with_reference: int = 0
    near_texts: list[tuple[int, str]] = field(default_factory=list)  # (row, prompt + response)


@dataclass(frozen=True)
class QualityShard:
    """The data-quality scan of one shard; ``text_sample``/``near_sample``: sorted global rows."""

    source: TrainingSource
    text_sample: np.ndarray
    near_sample: np.ndarray
    seed: int = 0

    def __call__(self, shard: Shard) -> ShardQuality:
        cols = self.source.read(shard, ("prompt", "response", "id", "reference"))
        prompts = ["" if x is None else str(x) for x in cols["prompt"]]
        responses = ["" if x is None else str(x) for x in cols["response"]]
        out = ShardQuality(
            pair_hash=_text_hashes([p + "\x00" + r for p, r in zip(prompts, responses)]),
            prompt_hash=_text_hashes(prompts),
            lengths=np.fromiter((len(r.split()) for r in responses), dtype=np.int32, count=len(responses)),
        )
        local = _inside(self.text_sample, shard)
        ids = [_row_id(cols["id"][k], shard.start + k) for k in local]
        sp, sr = [prompts[k] for k in local], [responses[k] for k in local]
        refs = [cols["reference"][k] for k in local]
        out.with_reference = sum(_ref_ok(r) for r in refs)
        # The math cap is shared out by each shard's share of the sample, with a seed of its own,
        # so the rows checked do not depend on the number of workers.
        cap = -(-MATH_ROWS * len(local) // max(len(self.text_sample), 1))
        out.errors, out.n_verified, out.n_skipped, no_answer = _verify_rows(
            sp, sr, refs, ids, seed=self.seed + shard.start, math_cap=cap
        )
        out.counts, out.bad_ids = _format_checks(sp, sr, ids, set(no_answer))
        out.near_texts = [
            (shard.start + k, prompts[k] + "\n" + responses[k]) for k in _inside(self.near_sample, shard)
        ]
        return out


def _inside(rows: np.ndarray, shard: Shard) -> list[int]:
    """Positions inside the shard (0-based) of the sorted global ``rows`` that fall in it."""
    lo, hi = np.searchsorted(rows, [shard.start, shard.stop])
    return (rows[lo:hi] - shard.start).tolist()


def _row_id(value: object, row: int) -> str:
    return str(value) if value is not None and value == value else f"row{row + 1}"


def _format_checks(
    prompts: list[str], responses: list[str], ids: list[str], no_answer: set[int]
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Format flags per row (``no_answer``: positions whose verified target had no final answer)."""
    counts: dict[str, int] = {"empty": 0, "truncated": 0, "repetition_loop": 0, "mixed_script": 0}
    bad_ids: list[tuple[str, str]] = []
    for pos, (p, r, rid) in enumerate(zip(prompts, responses, ids)):
        flags = _format_flags(p, r)
        if pos in no_answer:
            flags.append("no_final_answer")
        for f in flags:
            counts[f] = counts.get(f, 0) + 1
        if flags:
            bad_ids.append((rid, ", ".join(flags)))
    return counts, bad_ids


def scan_quality(
    train: Any, seed: int, *, workers: int | None = 1, engine: str = "local", progress: bool = False
) -> tuple[ShardQuality, TrainingSource, np.ndarray]:
    """Every training row, in shards: duplicate keys and lengths of all rows, text checks on a seeded
    sample of ``TEXT_SAMPLE`` rows and near-duplicate texts of ``NEAR_DUP_SAMPLE`` rows, merged
    in shard order (identical for any number of workers). Returns (merged, source, text sample)."""
    src = source_of(train)
    n = src.n_rows
    rng = np.random.default_rng(seed)
    text_sample = np.sort(rng.choice(n, TEXT_SAMPLE, replace=False)) if n > TEXT_SAMPLE else np.arange(n)
    near_sample = np.sort(rng.choice(n, NEAR_DUP_SAMPLE, replace=False)) if n > NEAR_DUP_SAMPLE else np.arange(n)
    job = QualityShard(src, text_sample, near_sample, seed)
    parts = list(
        map_shards(job, src.shards(), workers=workers, engine=engine, desc="data-quality scan", progress=progress)
    )
    merged = ShardQuality(
        pair_hash=np.concatenate([p.pair_hash for p in parts]) if parts else np.zeros(0, np.uint64),
        prompt_hash=np.concatenate([p.prompt_hash for p in parts]) if parts else np.zeros(0, np.uint64),
        lengths=np.concatenate([p.lengths for p in parts]) if parts else np.zeros(0, np.int32),
    )
    merged.counts = {"empty": 0, "truncated": 0, "repetition_loop": 0, "mixed_script": 0}
    for p in parts:
        merged.errors += p.errors
        merged.n_verified += p.n_verified
        merged.n_skipped += p.n_skipped
        merged.bad_ids += p.bad_ids
        merged.with_reference += p.with_reference
        merged.near_texts += p.near_texts
        for k, v in p.counts.items():
            merged.counts[k] = merged.counts.get(k, 0) + v
    return merged, src, text_sample


def _duplicated(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(later copies: True for every row equal to an earlier one, any copy: True for rows with an equal row)."""
    _, first, inverse, counts = np.unique(h, return_index=True, return_inverse=True, return_counts=True)
    later = np.ones(len(h), dtype=bool)
    later[first] = False
    return later, counts[inverse] > 1


def _ref_ok(ref: object) -> bool:
    if ref is None:
        return False
    if isinstance(ref, float) and ref != ref:
        return False
    return str(ref).strip() != ""


def _verify_rows(
    prompts, responses, refs, ids, seed: int = 0, math_cap: int | None = None
) -> tuple[list[tuple[str, str]], int, int, list[int]]:
    """(errors [(id, why)], n verified, n skipped as unverifiable, positions without an answer).

    Rows with a LaTeX reference go to the ``math`` verifier, at most ``math_cap`` (default ``MATH_ROWS``) of them (a
    random subset; the rest count as unverifiable); a reference math-verify cannot read is skipped.
    """
    from distill_doctor.verify import verify
    from distill_doctor.verify.math_answers import readable_reference

    math_cap = MATH_ROWS if math_cap is None else math_cap
    kinds = [default_verifier(ref) if _ref_ok(ref) else None for ref in refs]
    math_rows = [i for i, k in enumerate(kinds) if k == "math"]
    if len(math_rows) > math_cap:
        keep = set(np.random.default_rng(seed).choice(math_rows, math_cap, replace=False).tolist())
        kinds = [None if k == "math" and i not in keep else k for i, k in enumerate(kinds)]
    n_skip = len(math_rows) - min(len(math_rows), math_cap)
    errors, no_answer = [], []
    n_ver = 0
    for pos, (prompt, response, ref, rid, kind) in enumerate(zip(prompts, responses, refs, ids, kinds)):
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
                no_answer.append(pos)
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
    scan, src, sample = scan_quality(
        inputs.train, inputs.seed, workers=inputs.workers, engine=inputs.engine, progress=not inputs.quiet
    )
    n = src.n_rows
    if n == 0:
        return Finding(mode=MODE, verdict="pass", summary="The training set is empty: nothing to check.", n=0)

    # 1. verified errors
    errors, n_ver, n_skip = scan.errors, scan.n_verified, scan.n_skipped
    v_err, t_err = _rule("verified_error", len(errors), n_ver, inputs.alpha)

    # 2. format violations
    counts, bad_ids = scan.counts, scan.bad_ids
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

    # 3. duplicates (near duplicates on the sampled rows that are not exact duplicates)
    exact, pair_any = _duplicated(scan.pair_hash)
    conflicting = int((_duplicated(scan.prompt_hash)[1] & ~pair_any).sum())
    n_unique = int(n - exact.sum())
    near = [(row, text) for row, text in scan.near_texts if not exact[row]]
    nd_pos = np.asarray([row for row, _ in near], dtype=np.int64)
    cfg = NearDupConfig()
    pairs = near_duplicate_pairs([text for _, text in near], cfg)
    near_rows = {int(nd_pos[j]) for _, j, _ in pairs}  # the later row of each pair is redundant
    in_sample = len(near_rows) / len(nd_pos) if len(nd_pos) else 0.0
    share = len(nd_pos) / n_unique if n_unique else 1.0
    near_rate = min(1.0, in_sample / share) if share > 0 else 0.0  # partner-inclusion correction
    redundant = int(exact.sum()) + int(round(near_rate * n_unique))
    v_dup, t_dup = _rule("duplicate", redundant, n, inputs.alpha)

    # 4. length outliers
    lengths = scan.lengths.astype(float)
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
    dup_rows = np.flatnonzero(exact)[:2].tolist()
    pair_rows = [(int(nd_pos[i]), int(nd_pos[j]), jac) for i, j, jac in pairs[:1]]
    wanted = dup_rows + [r for a, b, _ in pair_rows for r in (a, b)]
    has_ids = "id" in src.column_names()
    got = src.values_at(wanted, "id") if wanted and has_ids else {}
    ids_all = {r: _row_id(got.get(r), r) for r in wanted}
    evidence += [{"id": ids_all[i], "why": "exact duplicate of an earlier row"} for i in dup_rows]
    evidence += [
        {"id": ids_all[b], "why": f"near duplicate (Jaccard {jac:.2f}) of {ids_all[a]}"}
        for a, b, jac in pair_rows
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
        "with_reference": scan.with_reference,
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
