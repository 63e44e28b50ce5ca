"""The probes' rules as data: each ``decide`` on hand-built measured records at its rule's edges,
each ``RULE.describe()`` against the README table, and the explicit cross-probe adjustments."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from distill_doctor.diagnose.run import attribute_teacher_errors, control_false_alarms
from distill_doctor.probes import contamination, data_quality, provenance
from distill_doctor.probes.base import Finding, Ruling
from distill_doctor.probes.contamination import ContaminationMeasured, ItemOverlap
from distill_doctor.probes.data_quality import (
    Check,
    Count,
    Duplicates,
    Lengths,
    QualityMeasured,
    TeacherAttribution,
)
from distill_doctor.probes.licenses import classify_license
from distill_doctor.probes.provenance import Gap, GapKind, ProvenanceMeasured, Role
from distill_doctor.stats import binom_test_greater
from distill_doctor.text.overlap import Hit
from distill_doctor.vocabulary import ALPHA, Mode, Verdict

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_fails_when() -> dict[str, str]:
    """mode -> the "fails when" cell of README.md's probe table."""
    cells = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\| \w+ \| `(\w+)` \|.*\| ([^|]+) \|$", line)
        if m:
            cells[m.group(1)] = m.group(2).strip()
    return cells


@pytest.mark.parametrize("module", [data_quality, contamination, provenance])
def test_rule_describe_is_the_readme_cell(module):
    assert module.RULE.describe() == readme_fails_when()[module.MODE.value]


def test_rule_metrics_are_what_the_findings_recorded():
    assert data_quality.RULE.as_metrics(ALPHA) == {
        "verified_error": {
            "min_n": 30,
            "tolerance": 0.05,
            "fail_rate": 0.10,
            "warn_rate": 0.05,
            "warn_count": 2,
        },
        "format_violation": {
            "min_n": 50,
            "tolerance": 0.05,
            "fail_rate": 0.15,
            "warn_rate": 0.05,
            "warn_count": 3,
        },
        "duplicate": {"min_n": 100, "tolerance": 0.10, "fail_rate": 0.30, "warn_rate": 0.10, "warn_count": 3},
    }
    assert contamination.RULE.as_metrics(ALPHA) == {
        "min_dirty": 3,
        "min_share": 0.01,
        "min_items": 30,
        "partial_coverage": 0.2,
    }
    assert provenance.RULE.as_metrics(ALPHA) == {}  # facts: the finding records no thresholds


# -- data_quality ------------------------------------------------------------------------------

VERIFIED = data_quality.RULE.verified_error  # 30 rows, tolerance 5%, fail at 10%, warn above 5% with 2


@pytest.mark.parametrize(
    ("k", "n", "expected"),
    [
        (10, 100, Verdict.FAIL),  # rate exactly the fail rate, binomial p ~ 0.03
        (9, 100, Verdict.WARN),  # significant-ish but below the practical fail rate
        (3, 30, Verdict.WARN),  # at the fail rate on min_n rows, but p ~ 0.19
        (3, 29, Verdict.WARN),  # a small sample at the fail rate: at most warn
        (1, 10, Verdict.PASS),  # small sample at the fail rate, fewer than warn_count rows
        (2, 40, Verdict.PASS),  # exactly the warn rate is not above it
        (3, 40, Verdict.WARN),
        (0, 0, Verdict.PASS),
    ],
)
def test_rate_rule_edges(k, n, expected):
    got = data_quality.decide_rate(Count(k, n), VERIFIED, ALPHA)
    assert got.verdict == expected
    assert got.p_value == (binom_test_greater(k, n, VERIFIED.tolerance) if n else None)


def quality(
    *,
    errors: int = 0,
    verified: int = 200,
    malformed: int = 0,
    redundant: int = 0,
    outliers: int = 0,
    n: int = 200,
    teacher_rate: float | None = None,
) -> QualityMeasured:
    """A hand-built measurement of ``n`` rows (every row sampled)."""
    attribution = TeacherAttribution(
        teacher_rate, 100 if teacher_rate is not None else None, None, teacher_rate is None
    )
    return QualityMeasured(
        n_rows=n,
        sampled_rows=n,
        seed=0,
        with_reference=verified,
        unverifiable=0,
        errors=tuple((f"r{i}", "target gives answer 1, reference 2") for i in range(errors)),
        verified=Count(errors, verified),
        malformed=Count(malformed, n),
        format_counts={
            "empty": 0,
            "truncated": malformed,
            "repetition_loop": 0,
            "mixed_script": 0,
            "no_final_answer": 0,
        },
        bad_rows=tuple((f"b{i}", "truncated") for i in range(malformed)),
        attribution={Check.VERIFIED_ERROR: attribution, Check.FORMAT_VIOLATION: attribution},
        duplicates=Duplicates(
            exact=redundant,
            exact_rate=redundant / n,
            conflicting=0,
            near_rows=0,
            near_rate=0.0,
            rate_in_sample=0.0,
            sample_share=1.0,
            rows_checked=n,
            pairs=0,
            config={},
            redundant=redundant,
            exact_examples=(),
            near_examples=(),
        ),
        lengths=Lengths(median_words=20.0, p95_words=30.0, outliers=outliers, outlier_rate=outliers / n),
    )


def test_quality_clean_passes_and_primary_is_the_smallest_p():
    ruling = data_quality.decide(quality(), data_quality.RULE, ALPHA)
    assert ruling.verdict == Verdict.PASS
    assert set(ruling.checks) == set(Check)
    assert ruling.p_value == min(r.p_value or 1.0 for r in ruling.checks.values() if r.p_value is not None)


def test_quality_worst_check_decides_with_its_p_value():
    ruling = data_quality.decide(quality(errors=40, redundant=30), data_quality.RULE, ALPHA)
    assert ruling.checks[Check.VERIFIED_ERROR].verdict == Verdict.FAIL
    assert ruling.checks[Check.DUPLICATE].verdict == Verdict.WARN  # 15%: above 10%, below 30%
    assert ruling.verdict == Verdict.FAIL
    assert ruling.p_value == ruling.checks[Check.VERIFIED_ERROR].p_value
    assert ruling.teacher_explained == ()  # no teacher to compare with


@pytest.mark.parametrize(
    ("outliers", "n", "expected"), [(21, 200, Verdict.WARN), (20, 200, Verdict.PASS), (11, 99, Verdict.PASS)]
)
def test_length_outliers_warn_above_ten_percent_on_100_rows(outliers, n, expected):
    ruling = data_quality.decide(quality(outliers=outliers, n=n, verified=n), data_quality.RULE, ALPHA)
    assert ruling.checks[Check.LENGTH_OUTLIER].verdict == expected == ruling.verdict
    if expected == Verdict.WARN:
        assert ruling.p_value == ruling.checks[Check.VERIFIED_ERROR].p_value  # no tested check at warn


def test_empty_training_set_passes():
    empty = replace(quality(), n_rows=0, duplicates=None, lengths=None)
    assert data_quality.decide(empty, data_quality.RULE, ALPHA).verdict == Verdict.PASS
    assert data_quality.summarize(empty, data_quality.decide(empty, data_quality.RULE, ALPHA)).n == 0


def _transfer(verdict: Verdict) -> Finding:
    return Finding(Mode.TEACHER_ERROR_TRANSFER, verdict, "transfer", p_value=0.001)


def test_teacher_explained_fail_is_lowered_only_with_a_failing_transfer():
    measured = quality(errors=40, teacher_rate=0.2)  # 20% wrong targets, the teacher's own rate
    ruling = data_quality.decide(measured, data_quality.RULE, ALPHA)
    assert ruling.verdict == Verdict.FAIL and ruling.teacher_explained == (Check.VERIFIED_ERROR,)
    data = data_quality.summarize(measured, ruling)
    assert data.summary.endswith("; fix the data before anything else.")

    lowered = data_quality.attributed_to_teacher(data, _transfer(Verdict.FAIL))
    assert lowered is not data and data.verdict == Verdict.FAIL  # a new finding; the probe's is kept
    assert lowered.verdict == Verdict.WARN and lowered.ruling is not None
    assert lowered.ruling.verdict == Verdict.WARN
    assert lowered.summary == (
        "Training data problems: 40/200 targets contradict their reference (about the teacher's own "
        "rate, 20%: see teacher_error_transfer). These wrong targets occur at about the teacher's own "
        "error rate and the student repeats the teacher's errors: fix them as teacher_error_transfer "
        "(lowered from fail)."
    )
    assert lowered.metrics == data.metrics and lowered.p_value == data.p_value
    assert data_quality.attributed_to_teacher(data, _transfer(Verdict.WARN)) is data

    findings = [data, _transfer(Verdict.FAIL)]
    out = attribute_teacher_errors(findings)
    assert [f.verdict for f in out] == [Verdict.WARN, Verdict.FAIL] and findings[0] is data


def test_a_fail_beyond_the_teacher_is_not_lowered():
    measured = quality(errors=40, teacher_rate=0.2, malformed=60)  # malformed: not explained
    measured = replace(
        measured,
        attribution={
            **measured.attribution,
            Check.FORMAT_VIOLATION: TeacherAttribution(0.01, 100, (0.2, 0.3), True),
        },
    )
    ruling = data_quality.decide(measured, data_quality.RULE, ALPHA)
    assert ruling.checks[Check.FORMAT_VIOLATION].verdict == Verdict.FAIL
    assert ruling.teacher_explained == (Check.VERIFIED_ERROR,)
    data = data_quality.summarize(measured, ruling)
    assert data_quality.attributed_to_teacher(data, _transfer(Verdict.FAIL)) is data


# -- contamination -----------------------------------------------------------------------------


def contaminated(n_items: int, n_dirty: int, n_partial: int = 0) -> ContaminationMeasured:
    overlaps = {}
    for k in range(n_dirty):
        hit = Hit(f"e{k}", "exact", 1.0, row=k, dirty=True)
        overlaps[f"e{k}"] = ItemOverlap(f"e{k}", "prompt", True, 1.0, 1.0, {"exact": 1.0}, hit, [k])
    for k in range(n_partial):
        hit = Hit(f"p{k}", "ngram", 0.3, row=100 + k, dirty=False)
        overlaps[f"p{k}"] = ItemOverlap(f"p{k}", "prompt", False, 0.3, 0.3, {"ngram": 0.3}, hit, [100 + k])
    return ContaminationMeasured(n_items=n_items, n_train_rows=1000, index={}, overlaps=overlaps)


@pytest.mark.parametrize(
    ("n_items", "n_dirty", "expected"),
    [
        (300, 3, Verdict.FAIL),  # 3 items, exactly 1%
        (301, 3, Verdict.WARN),  # 3 items, under 1%
        (100, 2, Verdict.WARN),  # 2% but only 2 items
        (30, 3, Verdict.FAIL),  # the smallest eval set the rule trusts
        (29, 3, Verdict.WARN),  # a small eval set: at most warn
        (300, 0, Verdict.PASS),
    ],
)
def test_contamination_rule_edges(n_items, n_dirty, expected):
    measured = contaminated(n_items, n_dirty, n_partial=2)
    ruling = contamination.decide(measured, contamination.RULE, ALPHA)
    assert ruling == Ruling(expected, None)  # a count, not a test: no p-value
    finding = contamination.summarize(measured, ruling)
    assert finding.metrics["dirty"] == n_dirty and finding.metrics["partial"] == 2
    assert [e["kind"] for e in finding.evidence] == ["exact"] * n_dirty + ["partial"] * 2


def test_contamination_nothing_to_compare():
    empty = ContaminationMeasured(n_items=0, n_train_rows=0, index=None)
    assert contamination.decide(empty, contamination.RULE, ALPHA).verdict == Verdict.PASS
    assert contamination.summarize(empty, Ruling(Verdict.PASS)).metrics == {}


# -- provenance --------------------------------------------------------------------------------


def manifest_gaps(*gaps: Gap, teacher: str = "apache-2.0", student: str = "mit") -> ProvenanceMeasured:
    def block(name: str) -> dict:
        info = classify_license(name)
        return {
            "name": "m",
            "revision": "r",
            "license": name,
            "license_id": info.id,
            "license_category": info.category,
        }

    return ProvenanceMeasured(
        gaps=gaps,
        teacher=block(teacher),
        student_base=block(student),
        prompts=[],
        decontamination=None,
        checksum={"recorded": None, "actual": None, "match": None},
        counts={},
    )


def license_gap(role: Role, name: str) -> Gap:
    return Gap(
        f"{role.value}.license",
        f"{role.value} license {name!r}",
        GapKind.LICENSE,
        role,
        classify_license(name),
    )


@pytest.mark.parametrize(
    ("gap", "expected"),
    [
        (license_gap(Role.TEACHER, "cc-by-nc-4.0"), Verdict.FAIL),
        (license_gap(Role.TEACHER, "openai-terms"), Verdict.FAIL),
        (license_gap(Role.TEACHER, "unknown-ish thing"), Verdict.WARN),  # unlisted, not unknown
        (license_gap(Role.TEACHER, "gemma"), Verdict.WARN),
        (license_gap(Role.STUDENT_BASE, "cc-by-nc-4.0"), Verdict.FAIL),
        (license_gap(Role.STUDENT_BASE, "openai-terms"), Verdict.WARN),  # terms on outputs bind the teacher
        (license_gap(Role.PROMPTS, "cc-by-nc-4.0"), Verdict.WARN),
        (Gap("dataset_sha256", "differs", GapKind.MISMATCH), Verdict.FAIL),
        (Gap("decontamination", "none", GapKind.REQUIRED), Verdict.FAIL),
        (Gap("decontamination.removed", "-1", GapKind.INVALID), Verdict.FAIL),
        (Gap("generation.seed", "missing", GapKind.RECOMMENDED), Verdict.WARN),
    ],
)
def test_provenance_gap_severity(gap, expected):
    ruling = provenance.decide(manifest_gaps(gap), provenance.RULE, ALPHA)
    assert ruling.severities == (expected,) and ruling.verdict == expected and ruling.p_value is None


def test_provenance_llama_outputs_may_train_their_own_derivatives():
    gap = license_gap(Role.TEACHER, "llama2")
    alone = provenance.decide(manifest_gaps(gap, teacher="llama2"), provenance.RULE, ALPHA)
    assert alone.verdict == Verdict.FAIL and not alone.own_derivative
    measured = manifest_gaps(gap, teacher="llama2", student="llama2")
    own = provenance.decide(measured, provenance.RULE, ALPHA)
    assert own.verdict == Verdict.WARN and own.own_derivative
    finding = provenance.summarize(measured, own)
    assert finding.evidence[0]["why"].endswith(provenance.OWN_DERIVATIVE_NOTE)


def test_provenance_complete_passes_and_fails_rank_first():
    assert provenance.decide(manifest_gaps(), provenance.RULE, ALPHA).verdict == Verdict.PASS
    measured = manifest_gaps(
        Gap("generation.seed", "seed missing", GapKind.RECOMMENDED),
        Gap("dataset_sha256", "sha differs", GapKind.MISMATCH),
    )
    finding = provenance.summarize(measured, provenance.decide(measured, provenance.RULE, ALPHA))
    assert [e["severity"] for e in finding.evidence] == ["fail", "warn"]
    assert finding.summary == "Provenance record fails 1 check(s), first: sha differs."


# -- diagnosis: Holm and downgrades ------------------------------------------------------------


def test_holm_downgrades_return_new_findings():
    a = Finding(Mode.CAPACITY_GAP, Verdict.FAIL, "gap.", p_value=0.03)
    b = Finding(Mode.EXPOSURE_BIAS, Verdict.FAIL, "bias.", p_value=0.04)
    c = Finding(Mode.CONTAMINATION, Verdict.FAIL, "dirty.", p_value=None)  # a fact: left alone
    out, adjusted = control_false_alarms([a, b, c], ALPHA)
    assert adjusted == [pytest.approx(0.06), pytest.approx(0.06), None]
    assert [f.verdict for f in out] == [Verdict.WARN, Verdict.WARN, Verdict.FAIL]
    assert (
        out[0].summary
        == "gap. (Downgraded from fail: Holm-adjusted p = 0.06 across 2 probe tests is not below alpha = 0.05.)"
    )
    assert a.verdict == Verdict.FAIL and out[2] is c


def test_a_downgrade_never_raises_a_verdict():
    with pytest.raises(ValueError):
        Finding(Mode.CAPACITY_GAP, Verdict.WARN, "x").downgraded(Verdict.FAIL, "no")


def test_the_diagnosis_runs_the_probes_in_report_order():
    from distill_doctor.diagnose.run import PROBES
    from distill_doctor.vocabulary import MODE_ORDER

    assert tuple(p.mode for p in PROBES) == MODE_ORDER
