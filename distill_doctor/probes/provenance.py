"""Provenance: is the run's manifest complete, consistent with the data, and are its licenses usable?

Measures, against the SPEC's manifest (``--manifest``): the fields each block must or should
carry (teacher and student base name, revision, license; prompt sources; generation settings;
filters; the decontamination record), each license's category (:mod:`licenses`), and the
training file's sha256 against ``dataset_sha256``. Every gap is a :class:`Gap` of a kind.

Rule (:data:`RULE`, facts, no p-value): ``fail`` on a checksum mismatch, a missing or invalid
required field (teacher name or license, the decontamination record, its method or benchmarks),
or forbidden license terms (the teacher: non-commercial, outputs restricted, unknown; the student
base: non-commercial; Llama 2/3.0 outputs may train their own derivatives); ``warn`` on softer
gaps and conditional licenses; ``pass`` when every field is present, consistent and permitted.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from distill_doctor.data.fingerprint import file_sha256
from distill_doctor.probes.base import DiagnosisInputs, Finding, Probe, Ruling
from distill_doctor.probes.licenses import LicenseInfo, classify_license
from distill_doctor.vocabulary import Mode, Verdict, worst

MODE = Mode.PROVENANCE
GENERATION_FIELDS = ("temperature", "top_p", "max_new_tokens", "samples_per_prompt", "seed")


class GapKind(enum.StrEnum):
    """What is wrong with one manifest field."""

    REQUIRED = "required"  # a field the SPEC requires is missing
    INVALID = "invalid"  # present but unusable (not a mapping, not a count)
    RECOMMENDED = "recommended"  # a field the SPEC asks for is missing
    LICENSE = "license"  # license terms other than "ok" (the rule says how bad, by role)
    MISMATCH = "mismatch"  # the training file is not the one recorded


class Role(enum.StrEnum):
    """Whose license it is: terms on outputs bind the teacher; a student base is fine-tuned."""

    TEACHER = "teacher"
    STUDENT_BASE = "student_base"
    PROMPTS = "prompts"


@dataclass(frozen=True)
class Gap:
    """One manifest gap: the field, why, its kind (and, for licenses, whose and which)."""

    field: str
    why: str
    kind: GapKind
    role: Role | None = None
    license: LicenseInfo | None = None


@dataclass(frozen=True)
class ProvenanceRule:
    """Which license categories a role may not use (the rest of the non-"ok" ones warn), and the
    licenses whose outputs may train a student under the same license (own derivatives)."""

    forbidden: tuple[tuple[Role, tuple[str, ...]], ...] = (
        (Role.TEACHER, ("noncommercial", "restricted_outputs", "unknown")),
        (Role.STUDENT_BASE, ("noncommercial",)),
    )
    own_derivatives: tuple[str, ...] = ("llama2", "llama3")

    def forbids(self, role: Role | None, category: str) -> bool:
        return any(r == role and category in cats for r, cats in self.forbidden)

    def as_metrics(self, alpha: float) -> dict[str, Any]:
        """The finding records no rule keys (facts, not thresholds): empty."""
        return {}

    def describe(self) -> str:
        return "a checksum mismatch, a missing decontamination record, or forbidden license terms"


RULE = ProvenanceRule()
OWN_DERIVATIVE_NOTE = " (the student base is itself under these terms, which the license permits)"


@dataclass(frozen=True)
class ProvenanceMeasured:
    """The manifest's blocks as recorded (JSON-safe) and its gaps, in check order."""

    gaps: tuple[Gap, ...]
    teacher: dict[str, Any]
    student_base: dict[str, Any]
    prompts: list[dict[str, Any]]
    decontamination: dict[str, Any] | None
    checksum: dict[str, Any]
    counts: dict[str, Any]


@dataclass(frozen=True)
class ProvenanceRuling(Ruling):
    """The verdict, each gap's severity (aligned with ``measured.gaps``) and whether the teacher's
    license is allowed as the student base's own derivative terms."""

    severities: tuple[Verdict, ...] = ()
    own_derivative: bool = False


class _Gaps:
    """Collects gaps in check order."""

    def __init__(self) -> None:
        self.items: list[Gap] = []

    def add(self, kind: GapKind, field: str, why: str) -> None:
        self.items.append(Gap(field, why, kind))


# -- measure ----------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A JSON-safe copy of manifest values (YAML may give dates or other objects)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _model_block(m: dict[str, Any], role: Role, gaps: _Gaps, *, required: bool) -> dict[str, Any]:
    key = role.value
    block = m.get(key)
    missing = GapKind.REQUIRED if required else GapKind.RECOMMENDED
    if not isinstance(block, dict):
        gaps.add(missing, key, f"no {key} block (name, revision, license)")
        return {"license": None}
    for f in ("name", "license"):
        if not _present(block.get(f)):
            gaps.add(missing, f"{key}.{f}", f"{key} {f} missing")
    if not _present(block.get("revision")):
        gaps.add(
            GapKind.RECOMMENDED,
            f"{key}.revision",
            f"{key} revision missing: the exact weights cannot be reproduced",
        )
    info = classify_license(block.get("license"))
    if _present(block.get("license")) and info.verdict != "ok":
        why = f"{key} license {info.given!r} ({info.category}): {info.note}"
        gaps.items.append(Gap(f"{key}.license", why, GapKind.LICENSE, role, info))
    return {
        "name": block.get("name"),
        "revision": block.get("revision"),
        "license": info.given,
        "license_id": info.id,
        "license_category": info.category,
    }


def _prompts(m: dict[str, Any], gaps: _Gaps) -> list[dict[str, Any]]:
    prompts = m.get("prompts")
    if not isinstance(prompts, list) or not prompts:
        gaps.add(GapKind.RECOMMENDED, "prompts", "no prompt sources listed (source, license, count)")
        return []
    out = []
    for k, src in enumerate(prompts):
        if not isinstance(src, dict):
            gaps.add(GapKind.RECOMMENDED, f"prompts[{k}]", "prompt source is not a mapping")
            continue
        for f in ("source", "license", "count"):
            if not _present(src.get(f)):
                gaps.add(GapKind.RECOMMENDED, f"prompts[{k}].{f}", f"prompt source {f} missing")
        info = classify_license(src.get("license"))
        if _present(src.get("license")) and info.verdict != "ok":
            why = f"prompt source {src.get('source')!r} license {info.given!r} ({info.category}): {info.note}"
            gaps.items.append(Gap(f"prompts[{k}].license", why, GapKind.LICENSE, Role.PROMPTS, info))
        out.append(
            {
                "source": src.get("source"),
                "license": info.given,
                "license_category": info.category,
                "count": src.get("count"),
            }
        )
    return out


def _generation(m: dict[str, Any], gaps: _Gaps) -> None:
    gen = m.get("generation")
    if not isinstance(gen, dict):
        gaps.add(GapKind.RECOMMENDED, "generation", "no generation block: decoding settings unknown")
        return
    for f in GENERATION_FIELDS:
        if not _present(gen.get(f)):
            gaps.add(GapKind.RECOMMENDED, f"generation.{f}", f"generation {f} missing")


def _decontamination(m: dict[str, Any], gaps: _Gaps) -> dict[str, Any] | None:
    dec = m.get("decontamination")
    if not isinstance(dec, dict):
        gaps.add(
            GapKind.REQUIRED,
            "decontamination",
            "no decontamination record: nothing shows the eval sets were removed",
        )
        return None
    benchmarks = dec.get("benchmarks")
    if isinstance(benchmarks, str):
        benchmarks = [benchmarks]
    if not isinstance(benchmarks, list) or not [b for b in benchmarks if _present(b)]:
        gaps.add(GapKind.REQUIRED, "decontamination.benchmarks", "decontamination names no benchmark")
    if not _present(dec.get("method")):
        gaps.add(GapKind.REQUIRED, "decontamination.method", "decontamination method not named")
    if dec.get("removed") is None:
        gaps.add(GapKind.RECOMMENDED, "decontamination.removed", "decontamination removed count missing")
    elif _count(dec.get("removed")) is None:
        gaps.add(
            GapKind.INVALID,
            "decontamination.removed",
            f"removed count {dec.get('removed')!r} is not a non-negative integer",
        )
    # ngram and threshold are recorded when given; which of them applies depends on the method.
    return {k: dec.get(k) for k in ("benchmarks", "method", "ngram", "threshold", "removed")}


def _count(value: Any) -> int | None:
    """A non-negative integer count (``12``, ``12.0`` or ``"12"``), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, int | float) and float(value).is_integer() and value >= 0:
        return int(value)
    return None


def _counts(inputs: DiagnosisInputs, m: dict[str, Any], prompts: list[dict[str, Any]]) -> dict[str, Any]:
    """Declared counts beside the training file's row count, for a reader to reconcile (not a verdict:
    samples per prompt, filters and decontamination legitimately change the numbers)."""
    filters = m.get("filters") if isinstance(m.get("filters"), list) else []
    last = filters[-1] if filters and isinstance(filters[-1], dict) else {}
    declared = [_count(p.get("count")) for p in prompts]
    return {
        "declared_prompts": sum(c for c in declared if c is not None) if declared else None,
        "last_filter_kept": _count(last.get("kept")),
        "train_rows": len(inputs.train) if inputs.train is not None else None,
    }


def _checksum(inputs: DiagnosisInputs, m: dict[str, Any], gaps: _Gaps) -> dict[str, Any]:
    recorded = m.get("dataset_sha256")
    out: dict[str, Any] = {"recorded": recorded, "actual": None, "match": None}
    if inputs.train_path is not None:
        out["actual"] = file_sha256(inputs.train_path)
    if not _present(recorded):
        gaps.add(
            GapKind.RECOMMENDED,
            "dataset_sha256",
            "dataset_sha256 missing: the training file cannot be tied to this record",
        )
    elif out["actual"] is not None:
        out["match"] = str(recorded).strip().lower().removeprefix("sha256:") == out["actual"]
        if not out["match"]:
            gaps.add(
                GapKind.MISMATCH,
                "dataset_sha256",
                f"training file sha256 {out['actual'][:12]}... differs from the recorded {str(recorded)[:12]}...",
            )
    return out


def measure(inputs: DiagnosisInputs) -> ProvenanceMeasured:
    """Every manifest check, in order; the gaps carry no verdict."""
    m = inputs.manifest
    gaps = _Gaps()
    if not isinstance(m, dict):
        gaps.add(GapKind.INVALID, "manifest", "the manifest is not a mapping")
        m = {}
    teacher = _model_block(m, Role.TEACHER, gaps, required=True)
    student = _model_block(m, Role.STUDENT_BASE, gaps, required=False)
    prompts = _prompts(m, gaps)
    _generation(m, gaps)
    if not isinstance(m.get("filters"), list):
        gaps.add(GapKind.RECOMMENDED, "filters", "no filters list (write [] when nothing was filtered)")
    decon = _decontamination(m, gaps)
    checksum = _checksum(inputs, m, gaps)
    return ProvenanceMeasured(
        gaps=tuple(gaps.items),
        teacher=teacher,
        student_base=student,
        prompts=prompts,
        decontamination=decon,
        checksum=checksum,
        counts=_counts(inputs, m, prompts),
    )


# -- decide -----------------------------------------------------------------------------------


def _severity(gap: Gap, rule: ProvenanceRule, own_derivative: bool) -> Verdict:
    if gap.kind in (GapKind.REQUIRED, GapKind.INVALID, GapKind.MISMATCH):
        return Verdict.FAIL
    if gap.kind is GapKind.LICENSE and gap.license is not None:
        if gap.role is Role.TEACHER and own_derivative:
            return Verdict.WARN
        return Verdict.FAIL if rule.forbids(gap.role, gap.license.category) else Verdict.WARN
    return Verdict.WARN


def decide(measured: ProvenanceMeasured, rule: ProvenanceRule, alpha: float) -> ProvenanceRuling:
    """Each gap's severity under ``rule``; the worst is the verdict (facts: no p-value)."""
    teacher_id = measured.teacher.get("license_id")
    own = teacher_id in rule.own_derivatives and measured.student_base.get("license_id") == teacher_id
    severities = tuple(_severity(g, rule, own) for g in measured.gaps)
    return ProvenanceRuling(worst(severities), None, severities=severities, own_derivative=own)


# -- summarize --------------------------------------------------------------------------------


def _ranked(measured: ProvenanceMeasured, ruling: ProvenanceRuling) -> list[dict[str, str]]:
    """The gaps as evidence, fails first (in check order within a severity)."""
    rows = []
    for gap, severity in zip(measured.gaps, ruling.severities):
        note = OWN_DERIVATIVE_NOTE if ruling.own_derivative and gap.field == "teacher.license" else ""
        rows.append({"id": gap.field, "why": gap.why + note, "severity": severity.value})
    return sorted(rows, key=lambda d: -Verdict(d["severity"]).rank)


def _summary(ruling: ProvenanceRuling, ranked: list[dict[str, str]]) -> str:
    fails = [d for d in ranked if d["severity"] == Verdict.FAIL]
    warns = [d for d in ranked if d["severity"] == Verdict.WARN]
    if ruling.verdict == Verdict.FAIL:
        return f"Provenance record fails {len(fails)} check(s), first: {fails[0]['why']}."
    if ruling.verdict == Verdict.WARN:
        return f"Provenance record has {len(warns)} gap(s), first: {warns[0]['why']}."
    return (
        "The provenance manifest is complete, matches the training file and its licenses permit distillation."
    )


def summarize(measured: ProvenanceMeasured, ruling: ProvenanceRuling) -> Finding:
    """The finding: summary, the blocks as metrics, the ranked gaps as evidence, a guardrail."""
    ranked = _ranked(measured, ruling)
    metrics = {
        "teacher": measured.teacher,
        "student_base": measured.student_base,
        "prompts": measured.prompts,
        "decontamination": measured.decontamination,
        "dataset_sha256": measured.checksum,
        "counts": measured.counts,
        "n_fail_checks": sum(1 for d in ranked if d["severity"] == Verdict.FAIL),
        "n_warn_checks": sum(1 for d in ranked if d["severity"] == Verdict.WARN),
    }
    return Finding(
        MODE,
        ruling.verdict,
        _summary(ruling, ranked),
        metrics=_plain(metrics),
        evidence=ranked[:10],
        guardrail=_guardrail(ranked),
        p_value=None,
        n=len(measured.gaps),
        measured=measured,
        ruling=ruling,
    )


def run(inputs: DiagnosisInputs) -> Finding:
    measured = measure(inputs)
    return summarize(measured, decide(measured, RULE, inputs.alpha))


def _guardrail(ranked: list[dict[str, str]]) -> str:
    fails = {d["id"] for d in ranked if d["severity"] == Verdict.FAIL}
    if any(f.endswith("license") for f in fails):
        return (
            "distill-doctor generate --prompts PROMPTS.jsonl --teacher-model PERMISSIVE_TEACHER --out train.jsonl "
            "--teacher-license apache-2.0  # regenerate with a teacher whose license permits training other "
            "models; the manifest records teacher {name, revision, license}"
        )
    if "dataset_sha256" in fails:
        return (
            "sha256sum train.jsonl  # the file used differs from the one recorded: re-run filters and "
            "decontamination on it, or record this hash as dataset_sha256"
        )
    if any(f.startswith("decontamination") for f in fails):
        return (
            "distill-doctor generate --prompts PROMPTS.jsonl --teacher-model TEACHER --out train.jsonl "
            "--decontaminate items.jsonl  # writes the decontamination block {benchmarks, method, ngram, "
            "threshold, removed} into the manifest"
        )
    if ranked:
        missing = ", ".join(sorted({d["id"] for d in ranked})[:6])
        return f"Record the missing manifest fields ({missing}) and re-run distill-doctor diagnose with --manifest."
    return ""


PROBE = Probe(
    mode=MODE,
    needs=("manifest",),
    run=run,
    describe="Manifest completeness, training-file sha256, decontamination record and license terms.",
)
