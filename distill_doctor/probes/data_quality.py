"""Data quality: are the training targets right, well-formed and not redundant?

Measures, on the training set (columns prompt, response, id, source, reference):

1. verified errors: rows with a ``reference`` verified like eval items (numeric, ``choice`` for
   one letter A-J, ``math`` for LaTeX, else ``exact``, only when the response states an explicit
   answer or is at most 10 words);
2. format violations: empty, truncated, repetition loop, a script neither in the prompt nor the
   response's main one, and (verified rows) no extractable final answer;
3. duplicates: exact (normalised prompt + response, every row) and MinHash near duplicates (on
   a sample of ``NEAR_DUP_SAMPLE`` distinct rows, the in-sample share divided by the sample share);
4. length outliers: robust z of log(1 + words) beyond 4 (scale floored at 0.25).

Rule (:data:`RULE`): each rate check fails on enough rows when the rate reaches its practical
threshold and an exact binomial test against its tolerance is significant; warns above the
tolerance (verified 30 rows, 10% vs 5%; format 50, 15% vs 5%; duplicates 100, 30% vs 10%);
length outliers above 10% warn. A failing verified-error or format check whose rate does not
exceed the teacher's own rate on the eval items (Newcombe CI of the difference above 0.05) is
``teacher_explained``: with a failing ``teacher_error_transfer`` the diagnosis lowers it to warn
(:func:`attributed_to_teacher`). Text checks run on a seeded sample of ``TEXT_SAMPLE`` rows.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field, replace
from hashlib import blake2b
from typing import Any

import numpy as np

from distill_doctor.data.records import Item
from distill_doctor.probes.base import DiagnosisInputs, Finding, Probe, Ruling, StatTest
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
from distill_doctor.vocabulary import ALPHA, Mode, Verdict, worst

MODE = Mode.DATA_QUALITY
TEXT_SAMPLE = 100_000
NEAR_DUP_SAMPLE = 50_000
LENGTH_Z = 4.0
TEACHER_MARGIN = 0.05
LENGTH_MIN_SCALE = 0.25  # log-length scale floor: templated data has a MAD near 0
_NUMBER = re.compile(r"^\s*[-+]?\$?\d[\d,]*(\.\d+)?\s*%?\s*$")
_CHOICE = re.compile(r"^\s*\(?([A-Ja-j])\)?\s*$")
# LaTeX mathematics in a reference (a fraction, root, power, constant, set braces, relation ...)
_LATEX_MATH = re.compile(r"\\(?:[dt]?frac|sqrt|pi|infty|pm|cup|cap|cdot|times|le|ge|neq|\{|left|right)|\^")
# the verifier kind of a reference: the first pattern found names it (numeric and choice are anchored)
_VERIFIER_KINDS = ((_NUMBER, "numeric"), (_CHOICE, "choice"), (_LATEX_MATH, "math"))
MATH_ROWS = 1_000  # math-verify parses take ~3 ms each: verify at most this many math rows (a random subset)
GUARDRAIL = (
    "Regenerate or filter the training targets with the verifier and drop broken or duplicated rows: "
    "`distill-doctor generate --reject-with verifier ...` (keeps only targets whose final answer "
    "matches the reference), then retrain on the filtered file."
)


def default_verifier(reference: object) -> str:
    """The verifier kind for a training reference: numeric, choice (one letter), math (LaTeX that
    math-verify reads: ``\\frac{1}{2}`` must not be compared with ``0.5`` as text) or exact."""
    return tf.first_label(str(reference), _VERIFIER_KINDS) or "exact"


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
    near_sample = (
        np.sort(rng.choice(n, NEAR_DUP_SAMPLE, replace=False)) if n > NEAR_DUP_SAMPLE else np.arange(n)
    )
    job = QualityShard(src, text_sample, near_sample, seed)
    parts = list(
        map_shards(
            job, src.shards(), workers=workers, engine=engine, desc="data-quality scan", progress=progress
        )
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


class Check(enum.StrEnum):
    """The four data-quality checks, in report order (``metrics["checks"]`` keys)."""

    VERIFIED_ERROR = "verified_error"
    FORMAT_VIOLATION = "format_violation"
    DUPLICATE = "duplicate"
    LENGTH_OUTLIER = "length_outlier"


TESTED_CHECKS = (Check.VERIFIED_ERROR, Check.FORMAT_VIOLATION, Check.DUPLICATE)
TEACHER_CHECKS = (Check.VERIFIED_ERROR, Check.FORMAT_VIOLATION)


@dataclass(frozen=True)
class RateRule:
    """One rate check: fail on >= ``min_n`` rows when the rate is >= ``fail_rate`` and an exact
    binomial test against ``tolerance`` has p < alpha; warn above ``warn_rate`` with at least
    ``warn_count`` rows (or a small sample at the fail rate)."""

    min_n: int
    tolerance: float
    fail_rate: float
    warn_rate: float
    warn_count: int

    def as_metrics(self) -> dict[str, Any]:
        return {
            "min_n": self.min_n,
            "tolerance": self.tolerance,
            "fail_rate": self.fail_rate,
            "warn_rate": self.warn_rate,
            "warn_count": self.warn_count,
        }


@dataclass(frozen=True)
class QualityRule:
    """The data-quality rule: a :class:`RateRule` per tested check, the length-outlier warning."""

    verified_error: RateRule = RateRule(30, 0.05, 0.10, 0.05, 2)
    format_violation: RateRule = RateRule(50, 0.05, 0.15, 0.05, 3)
    duplicate: RateRule = RateRule(100, 0.10, 0.30, 0.10, 3)
    length_warn: float = 0.10  # outlier share that warns, on at least length_min_n rows
    length_min_n: int = 100

    def rate_rule(self, check: Check) -> RateRule:
        return {
            Check.VERIFIED_ERROR: self.verified_error,
            Check.FORMAT_VIOLATION: self.format_violation,
            Check.DUPLICATE: self.duplicate,
        }[check]

    def as_metrics(self, alpha: float) -> dict[str, Any]:
        """``metrics["rules"]``: the three rate rules as applied (alpha is the diagnosis's)."""
        return {c.value: self.rate_rule(c).as_metrics() for c in TESTED_CHECKS}

    def describe(self) -> str:
        return "the verified error rate or fault rate is significantly above tolerance"


RULE = QualityRule()


@dataclass(frozen=True)
class Count:
    """``k`` of ``n`` rows flagged by one check."""

    k: int
    n: int

    @property
    def rate(self) -> float:
        return self.k / self.n if self.n else 0.0


@dataclass(frozen=True)
class TeacherAttribution:
    """A check's training rate against the teacher's own rate on the evaluation items."""

    teacher_rate: float | None
    teacher_n: int | None
    diff_ci: tuple[float, float] | None  # Newcombe 95% CI of training rate - teacher rate
    beyond_teacher: bool

    def as_metrics(self) -> dict[str, Any]:
        return {
            "teacher_rate": self.teacher_rate,
            "teacher_n": self.teacher_n,
            "diff_ci": json_interval(self.diff_ci),
            "beyond_teacher": self.beyond_teacher,
        }


@dataclass(frozen=True)
class Duplicates:
    """Exact duplicates over every row, near duplicates on the sampled distinct rows."""

    exact: int
    exact_rate: float
    conflicting: int  # same prompt, different response
    near_rows: int
    near_rate: float  # corrected for the sample: in-sample share / sample share
    rate_in_sample: float
    sample_share: float
    rows_checked: int
    pairs: int
    config: dict[str, Any]  # NearDupConfig.record()
    redundant: int  # exact + estimated near-duplicate rows
    exact_examples: tuple[str, ...]  # ids of the first exact copies
    near_examples: tuple[tuple[str, str, float], ...]  # (earlier id, later id, Jaccard)


@dataclass(frozen=True)
class Lengths:
    """Response lengths in words and their robust-z outliers."""

    median_words: float
    p95_words: float
    outliers: int
    outlier_rate: float


@dataclass(frozen=True)
class QualityMeasured:
    """What the data-quality scan found; ``duplicates`` and ``lengths`` are None on an empty set."""

    n_rows: int
    sampled_rows: int
    seed: int
    with_reference: int
    unverifiable: int
    errors: tuple[tuple[str, str], ...]  # (id, why) of verified rows that contradict their reference
    verified: Count
    malformed: Count  # rows of the text sample with a format flag
    format_counts: dict[str, int]
    bad_rows: tuple[tuple[str, str], ...]  # (id, flags)
    attribution: dict[Check, TeacherAttribution]
    duplicates: Duplicates | None
    lengths: Lengths | None

    def count(self, check: Check) -> Count:
        if check is Check.VERIFIED_ERROR:
            return self.verified
        if check is Check.FORMAT_VIOLATION:
            return self.malformed
        assert self.duplicates is not None
        return Count(self.duplicates.redundant, self.n_rows)


@dataclass(frozen=True)
class CheckRuling:
    verdict: Verdict
    p_value: float | None


@dataclass(frozen=True)
class QualityRuling(Ruling):
    """The overall ruling plus each check's verdict and the failing checks the teacher explains."""

    checks: dict[Check, CheckRuling] = field(default_factory=dict)
    teacher_explained: tuple[Check, ...] = ()


# -- measure ----------------------------------------------------------------------------------


def _teacher_rates(inputs: DiagnosisInputs) -> dict[Check, tuple[int, int]] | None:
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
    return {Check.VERIFIED_ERROR: (wrong, len(items)), Check.FORMAT_VIOLATION: (malformed, len(items))}


def _attribution(count: Count, teacher: tuple[int, int] | None) -> TeacherAttribution:
    """Is the training rate k/n above the teacher's own rate by more than the margin?"""
    if teacher is None or count.n == 0:
        beyond, ci = True, None
    else:
        ci = two_proportion_diff_ci(count.k, count.n, teacher[0], teacher[1])
        beyond = ci[0] > TEACHER_MARGIN
    return TeacherAttribution(
        teacher_rate=json_float(teacher[0] / teacher[1]) if teacher and teacher[1] else None,
        teacher_n=teacher[1] if teacher else None,
        diff_ci=ci,
        beyond_teacher=beyond,
    )


def _measure_duplicates(scan: ShardQuality, src: TrainingSource, n: int) -> Duplicates:
    """Exact duplicates of every row; near duplicates among the sampled rows that are not exact ones."""
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
    dup_rows = np.flatnonzero(exact)[:2].tolist()
    pair_rows = [(int(nd_pos[i]), int(nd_pos[j]), jac) for i, j, jac in pairs[:1]]
    ids = _ids_of(src, dup_rows + [r for a, b, _ in pair_rows for r in (a, b)])
    return Duplicates(
        exact=int(exact.sum()),
        exact_rate=float(exact.mean()),
        conflicting=conflicting,
        near_rows=len(near_rows),
        near_rate=near_rate,
        rate_in_sample=in_sample,
        sample_share=share,
        rows_checked=int(len(nd_pos)),
        pairs=len(pairs),
        config=cfg.record(),
        redundant=int(exact.sum()) + int(round(near_rate * n_unique)),
        exact_examples=tuple(ids[r] for r in dup_rows),
        near_examples=tuple((ids[a], ids[b], jac) for a, b, jac in pair_rows),
    )


def _ids_of(src: TrainingSource, rows: list[int]) -> dict[int, str]:
    """The training ids of ``rows`` (``row<k>`` where the file has none)."""
    got = src.values_at(rows, "id") if rows and "id" in src.column_names() else {}
    return {r: _row_id(got.get(r), r) for r in rows}


def _measure_lengths(lengths: np.ndarray) -> Lengths:
    words = lengths.astype(float)
    z = robust_z(np.log1p(words), min_scale=LENGTH_MIN_SCALE)
    outliers = np.flatnonzero(np.abs(z) > LENGTH_Z)
    return Lengths(
        median_words=float(np.median(words)),
        p95_words=float(np.quantile(words, 0.95)),
        outliers=int(outliers.size),
        outlier_rate=outliers.size / len(words),
    )


def measure(inputs: DiagnosisInputs) -> QualityMeasured:
    """Scan every training row (in shards) and measure each check; no verdict."""
    scan, src, sample = scan_quality(
        inputs.train, inputs.seed, workers=inputs.workers, engine=inputs.engine, progress=not inputs.quiet
    )
    n = src.n_rows
    verified = Count(len(scan.errors), scan.n_verified)
    malformed = Count(len(scan.bad_ids), len(sample))
    teacher = _teacher_rates(inputs) if n else None
    return QualityMeasured(
        n_rows=n,
        sampled_rows=int(len(sample)),
        seed=inputs.seed,
        with_reference=scan.with_reference,
        unverifiable=scan.n_skipped,
        errors=tuple(scan.errors),
        verified=verified,
        malformed=malformed,
        format_counts={**scan.counts, "no_final_answer": scan.counts.get("no_final_answer", 0)},
        bad_rows=tuple(scan.bad_ids),
        attribution={
            check: _attribution(count, teacher.get(check) if teacher else None)
            for check, count in ((Check.VERIFIED_ERROR, verified), (Check.FORMAT_VIOLATION, malformed))
        },
        duplicates=_measure_duplicates(scan, src, n) if n else None,
        lengths=_measure_lengths(scan.lengths) if n else None,
    )


# -- decide -----------------------------------------------------------------------------------


def decide_rate(count: Count, rule: RateRule, alpha: float) -> CheckRuling:
    """One rate check under its rule (see :class:`RateRule`)."""
    k, n = count.k, count.n
    p = binom_test_greater(k, n, rule.tolerance) if n else None
    rate = count.rate
    if n >= rule.min_n and p is not None and p < alpha and rate >= rule.fail_rate:
        return CheckRuling(Verdict.FAIL, p)
    small = n < rule.min_n and rate >= rule.fail_rate
    if k >= rule.warn_count and (rate > rule.warn_rate or small):
        return CheckRuling(Verdict.WARN, p)
    return CheckRuling(Verdict.PASS, p)


def decide(measured: QualityMeasured, rule: QualityRule, alpha: float) -> QualityRuling:
    """The worst check decides; its smallest p-value (of the checks at that verdict) is primary."""
    if measured.n_rows == 0 or measured.lengths is None:
        return QualityRuling(Verdict.PASS, None)
    checks = {c: decide_rate(measured.count(c), rule.rate_rule(c), alpha) for c in TESTED_CHECKS}
    long_share = measured.n_rows >= rule.length_min_n and measured.lengths.outlier_rate > rule.length_warn
    checks[Check.LENGTH_OUTLIER] = CheckRuling(Verdict.WARN if long_share else Verdict.PASS, None)
    verdict = worst(c.verdict for c in checks.values())
    at_verdict = [c for c in TESTED_CHECKS if checks[c].verdict == verdict]
    # (a p-value of exactly 0 ranks as 1: kept as the probe always ranked them)
    primary = min(at_verdict, key=lambda c: checks[c].p_value or 1.0) if at_verdict else Check.VERIFIED_ERROR
    explained = tuple(
        c
        for c in TEACHER_CHECKS
        if checks[c].verdict == Verdict.FAIL
        and measured.attribution[c].teacher_rate is not None
        and not measured.attribution[c].beyond_teacher
    )
    return QualityRuling(verdict, checks[primary].p_value, checks=checks, teacher_explained=explained)


# -- summarize --------------------------------------------------------------------------------


def _tests(measured: QualityMeasured, ruling: QualityRuling, rule: QualityRule) -> list[StatTest]:
    tests = []
    for check in TESTED_CHECKS:
        count, words = measured.count(check), check.value.replace("_", " ")
        tests.append(
            StatTest(
                name=f"exact binomial, {words} rate > {rule.rate_rule(check).tolerance:.0%} (one-sided)",
                n=count.n,
                p_value=ruling.checks[check].p_value,
                effect=json_float(count.rate),
                effect_name=f"{words} rate",
                ci=clopper_pearson(count.k, count.n),
            )
        )
    return tests


def _evidence(measured: QualityMeasured) -> list[dict[str, Any]]:
    dups = measured.duplicates
    assert dups is not None
    evidence = [{"id": i, "why": w} for i, w in measured.errors[:4]]
    evidence += [{"id": i, "why": f"format: {w}"} for i, w in measured.bad_rows[:3]]
    evidence += [{"id": i, "why": "exact duplicate of an earlier row"} for i in dups.exact_examples]
    evidence += [
        {"id": b, "why": f"near duplicate (Jaccard {jac:.2f}) of {a}"} for a, b, jac in dups.near_examples
    ]
    return evidence[:10]


def _teacher_note(attribution: TeacherAttribution) -> str:
    if attribution.beyond_teacher or attribution.teacher_rate is None:
        return ""
    return f" (about the teacher's own rate, {attribution.teacher_rate:.0%}: see teacher_error_transfer)"


def _summary(measured: QualityMeasured, ruling: QualityRuling) -> str:
    dups, lengths = measured.duplicates, measured.lengths
    assert dups is not None and lengths is not None
    v, m, n = measured.verified, measured.malformed, measured.n_rows
    if ruling.verdict == Verdict.PASS:
        return (
            f"The training targets look sound: {v.k}/{v.n} verified wrong, "
            f"{m.k}/{m.n} malformed, {dups.redundant}/{n} duplicates."
        )
    issues = {
        Check.VERIFIED_ERROR: f"{v.k}/{v.n} targets contradict their reference"
        + _teacher_note(measured.attribution[Check.VERIFIED_ERROR]),
        Check.FORMAT_VIOLATION: f"{m.k}/{m.n} targets are malformed"
        + _teacher_note(measured.attribution[Check.FORMAT_VIOLATION]),
        Check.DUPLICATE: f"{dups.redundant}/{n} rows are duplicates",
        Check.LENGTH_OUTLIER: f"{lengths.outliers}/{n} responses have outlying length",
    }
    found = [text for check, text in issues.items() if ruling.checks[check].verdict != Verdict.PASS]
    end = "; fix the data before anything else." if ruling.verdict == Verdict.FAIL else "."
    return "Training data problems: " + "; ".join(found) + end


def _metrics(
    measured: QualityMeasured, ruling: QualityRuling, rule: QualityRule, alpha: float
) -> dict[str, Any]:
    dups, lengths = measured.duplicates, measured.lengths
    assert dups is not None and lengths is not None
    v, m = measured.verified, measured.malformed
    return {
        "n_rows": measured.n_rows,
        "sampled_rows": measured.sampled_rows,
        "sample_seed": measured.seed,
        "with_reference": measured.with_reference,
        "verified": v.n,
        "unverifiable": measured.unverifiable,
        "verified_errors": v.k,
        "verified_error_rate": json_float(v.rate) if v.n else None,
        "verified_error_ci": list(clopper_pearson(v.k, v.n)),
        "format": {**measured.format_counts, "any": m.k, "rate": json_float(m.rate)},
        "format_ci": list(clopper_pearson(m.k, m.n)),
        "exact_duplicates": dups.exact,
        "exact_duplicate_rate": json_float(dups.exact_rate),
        "same_prompt_different_response": dups.conflicting,
        "near_duplicates": {
            "rows": dups.near_rows,
            "rate": json_float(dups.near_rate),
            "rate_in_sample": json_float(dups.rate_in_sample),
            "sample_share": json_float(dups.sample_share),
            "rows_checked": dups.rows_checked,
            "pairs": dups.pairs,
            **dups.config,
        },
        "redundant_rows": dups.redundant,
        "length": {
            "median_words": json_float(lengths.median_words),
            "p95_words": json_float(lengths.p95_words),
            "outliers": lengths.outliers,
            "outlier_rate": json_float(lengths.outlier_rate),
            "rule": f"|robust z of log(1+words)| > {LENGTH_Z}, scale >= {LENGTH_MIN_SCALE}",
        },
        "checks": {c.value: r.verdict.value for c, r in ruling.checks.items()},
        "teacher_attribution": {c.value: a.as_metrics() for c, a in measured.attribution.items()},
        "teacher_explained_checks": [c.value for c in ruling.teacher_explained],
        "rules": rule.as_metrics(alpha),
    }


def summarize(
    measured: QualityMeasured, ruling: QualityRuling, rule: QualityRule = RULE, alpha: float = ALPHA
) -> Finding:
    """The finding: summary, metrics (with ``rule``'s thresholds), tests and evidence."""
    if measured.n_rows == 0:
        return Finding(
            mode=MODE, verdict=Verdict.PASS, summary="The training set is empty: nothing to check.", n=0
        )
    return Finding(
        mode=MODE,
        verdict=ruling.verdict,
        summary=_summary(measured, ruling),
        metrics=_metrics(measured, ruling, rule, alpha),
        evidence=_evidence(measured),
        guardrail=GUARDRAIL if ruling.verdict != Verdict.PASS else "",
        tests=_tests(measured, ruling, rule),
        p_value=ruling.p_value,
        n=measured.n_rows,
        measured=measured,
        ruling=ruling,
    )


def run(inputs: DiagnosisInputs) -> Finding:
    measured = measure(inputs)
    return summarize(measured, decide(measured, RULE, inputs.alpha), RULE, inputs.alpha)


# -- cross-probe adjustment -------------------------------------------------------------------


def attributed_to_teacher(data: Finding, transfer: Finding) -> Finding:
    """``data`` lowered from fail to warn when every failing check is one the teacher's own error
    rate explains (``teacher_explained_checks``) and ``transfer`` (teacher_error_transfer) fails:
    the wrong targets are the teacher's errors and the student demonstrably learned them, which is
    teacher_error_transfer's finding. Otherwise ``data`` unchanged."""
    ruling, measured = data.ruling, data.measured
    if data.verdict != Verdict.FAIL or transfer.verdict != Verdict.FAIL:
        return data
    if not isinstance(ruling, QualityRuling) or not isinstance(measured, QualityMeasured):
        return data
    failing = {c for c, r in ruling.checks.items() if r.verdict == Verdict.FAIL}
    if not failing or not failing <= set(ruling.teacher_explained):
        return data
    return data.downgraded(
        Verdict.WARN,
        "These wrong targets occur at about the teacher's own error rate and the student repeats "
        "the teacher's errors: fix them as teacher_error_transfer (lowered from fail).",
        summary=_summary(measured, replace(ruling, verdict=Verdict.WARN)),
    )


PROBE = Probe(
    mode=MODE,
    needs=("train",),
    run=run,
    describe="Are the training targets verified-correct, well-formed and free of duplicates?",
)
