"""Provenance: is the run's manifest complete, consistent with the data, and are its licenses usable?

Checks against the SPEC's manifest (``--manifest``):

- ``fail`` (facts, no p-value): a training file whose sha256 differs from ``dataset_sha256``; no
  ``decontamination`` record, or one without a method or benchmarks; a teacher without a name or a
  license; a teacher or student base whose license forbids this use (non-commercial, research
  only, terms forbidding outputs to train other models; see :mod:`licenses`).
- ``warn``: softer gaps: missing revisions, generation settings (seed, top_p, ...), prompt sources
  or their licenses, filters, the removed count, ``dataset_sha256``; conditional licenses
  (Llama 3.1+ naming, Gemma derivative terms); a non-commercial prompt source.
- ``pass``: every field present, consistent and permitted.
"""

from __future__ import annotations

from typing import Any

from distill_doctor.data.fingerprint import file_sha256
from distill_doctor.probes.base import DiagnosisInputs, Finding, Probe
from distill_doctor.probes.licenses import classify_license

MODE = "provenance"
GENERATION_FIELDS = ("temperature", "top_p", "max_new_tokens", "samples_per_prompt", "seed")
_SEVERITY = {"fail": 2, "warn": 1}


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


class _Issues:
    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, level: str, field: str, why: str) -> None:
        self.items.append({"id": field, "why": why, "severity": level})

    def ranked(self) -> list[dict[str, str]]:
        return sorted(self.items, key=lambda d: -_SEVERITY[d["severity"]])

    def worst(self) -> str:
        levels = {d["severity"] for d in self.items}
        return "fail" if "fail" in levels else "warn" if levels else "pass"


def _model_block(m: dict[str, Any], key: str, issues: _Issues, *, required: bool) -> dict[str, Any]:
    block = m.get(key)
    hard = "fail" if required else "warn"
    if not isinstance(block, dict):
        issues.add(hard, key, f"no {key} block (name, revision, license)")
        return {"license": None}
    for f in ("name", "license"):
        if not _present(block.get(f)):
            issues.add(hard, f"{key}.{f}", f"{key} {f} missing")
    if not _present(block.get("revision")):
        issues.add(
            "warn", f"{key}.revision", f"{key} revision missing: the exact weights cannot be reproduced"
        )
    info = classify_license(block.get("license"))
    # Terms on *outputs* bind the teacher; a student base is fine-tuned, not queried for training data,
    # so only non-commercial terms make it unusable (the rest is a condition to note).
    forbidden = ("noncommercial", "restricted_outputs", "unknown") if required else ("noncommercial",)
    if _present(block.get("license")):
        if info.category in forbidden:
            issues.add(
                "fail", f"{key}.license", f"{key} license {info.given!r} ({info.category}): {info.note}"
            )
        elif info.verdict != "ok":
            issues.add(
                "warn", f"{key}.license", f"{key} license {info.given!r} ({info.category}): {info.note}"
            )
    return {
        "name": block.get("name"),
        "revision": block.get("revision"),
        "license": info.given,
        "license_id": info.id,
        "license_category": info.category,
    }


def _prompts(m: dict[str, Any], issues: _Issues) -> list[dict[str, Any]]:
    prompts = m.get("prompts")
    if not isinstance(prompts, list) or not prompts:
        issues.add("warn", "prompts", "no prompt sources listed (source, license, count)")
        return []
    out = []
    for k, src in enumerate(prompts):
        if not isinstance(src, dict):
            issues.add("warn", f"prompts[{k}]", "prompt source is not a mapping")
            continue
        for f in ("source", "license", "count"):
            if not _present(src.get(f)):
                issues.add("warn", f"prompts[{k}].{f}", f"prompt source {f} missing")
        info = classify_license(src.get("license"))
        if _present(src.get("license")) and info.verdict != "ok":
            issues.add(
                "warn",
                f"prompts[{k}].license",
                f"prompt source {src.get('source')!r} license {info.given!r} ({info.category}): {info.note}",
            )
        out.append(
            {
                "source": src.get("source"),
                "license": info.given,
                "license_category": info.category,
                "count": src.get("count"),
            }
        )
    return out


def _generation(m: dict[str, Any], issues: _Issues) -> None:
    gen = m.get("generation")
    if not isinstance(gen, dict):
        issues.add("warn", "generation", "no generation block: decoding settings unknown")
        return
    for f in GENERATION_FIELDS:
        if not _present(gen.get(f)):
            issues.add("warn", f"generation.{f}", f"generation {f} missing")


def _decontamination(m: dict[str, Any], issues: _Issues) -> dict[str, Any] | None:
    dec = m.get("decontamination")
    if not isinstance(dec, dict):
        issues.add(
            "fail", "decontamination", "no decontamination record: nothing shows the eval sets were removed"
        )
        return None
    benchmarks = dec.get("benchmarks")
    if isinstance(benchmarks, str):
        benchmarks = [benchmarks]
    if not isinstance(benchmarks, list) or not [b for b in benchmarks if _present(b)]:
        issues.add("fail", "decontamination.benchmarks", "decontamination names no benchmark")
    if not _present(dec.get("method")):
        issues.add("fail", "decontamination.method", "decontamination method not named")
    removed = _count(dec.get("removed"))
    if dec.get("removed") is None:
        issues.add("warn", "decontamination.removed", "decontamination removed count missing")
    elif removed is None:
        issues.add(
            "fail",
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


def _checksum(inputs: DiagnosisInputs, m: dict[str, Any], issues: _Issues) -> dict[str, Any]:
    recorded = m.get("dataset_sha256")
    out: dict[str, Any] = {"recorded": recorded, "actual": None, "match": None}
    if inputs.train_path is not None:
        out["actual"] = file_sha256(inputs.train_path)
    if not _present(recorded):
        issues.add(
            "warn",
            "dataset_sha256",
            "dataset_sha256 missing: the training file cannot be tied to this record",
        )
    elif out["actual"] is not None:
        out["match"] = str(recorded).strip().lower().removeprefix("sha256:") == out["actual"]
        if not out["match"]:
            issues.add(
                "fail",
                "dataset_sha256",
                f"training file sha256 {out['actual'][:12]}... differs from the recorded {str(recorded)[:12]}...",
            )
    return out


def run(inputs: DiagnosisInputs) -> Finding:
    m = inputs.manifest
    issues = _Issues()
    if not isinstance(m, dict):
        issues.add("fail", "manifest", "the manifest is not a mapping")
        m = {}
    teacher = _model_block(m, "teacher", issues, required=True)
    student = _model_block(m, "student_base", issues, required=False)
    if (
        teacher.get("license_id") in ("llama2", "llama3")
        and student.get("license_id") == teacher["license_id"]
    ):
        # Llama 2/3.0 allow outputs to improve their own derivatives: downgrade to a warning.
        for d in issues.items:
            if d["id"] == "teacher.license":
                d["severity"] = "warn"
                d["why"] += " (the student base is itself under these terms, which the license permits)"
    prompts = _prompts(m, issues)
    _generation(m, issues)
    if not isinstance(m.get("filters"), list):
        issues.add("warn", "filters", "no filters list (write [] when nothing was filtered)")
    decon = _decontamination(m, issues)
    checksum = _checksum(inputs, m, issues)

    verdict = issues.worst()
    ranked = issues.ranked()
    fails = [d for d in ranked if d["severity"] == "fail"]
    warns = [d for d in ranked if d["severity"] == "warn"]
    metrics = {
        "teacher": teacher,
        "student_base": student,
        "prompts": prompts,
        "decontamination": decon,
        "dataset_sha256": checksum,
        "counts": _counts(inputs, m, prompts),
        "n_fail_checks": len(fails),
        "n_warn_checks": len(warns),
    }
    if verdict == "fail":
        summary = f"Provenance record fails {len(fails)} check(s), first: {fails[0]['why']}."
    elif verdict == "warn":
        summary = f"Provenance record has {len(warns)} gap(s), first: {warns[0]['why']}."
    else:
        summary = "The provenance manifest is complete, matches the training file and its licenses permit distillation."
    guardrail = _guardrail(ranked)
    return Finding(
        MODE,
        verdict,
        summary,
        metrics=_plain(metrics),
        evidence=ranked[:10],
        guardrail=guardrail,
        p_value=None,
        n=len(issues.items),
    )


def _guardrail(ranked: list[dict[str, str]]) -> str:
    fails = {d["id"] for d in ranked if d["severity"] == "fail"}
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
