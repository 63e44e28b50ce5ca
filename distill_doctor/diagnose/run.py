"""The diagnosis: load the inputs, verify every output, run the probes in debug order, build the report.

Debug order (SPEC.md): data -> capacity -> mismatch -> provenance. Each probe runs when its
inputs are present and is reported as ``skipped`` (with the reason) otherwise. False alarms
are controlled across the probes' primary tests with Holm's step-down procedure: a ``fail``
whose Holm-adjusted p-value is not below alpha is reported as ``warn``.
"""

from __future__ import annotations

import datetime as _dt
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill_doctor import __version__
from distill_doctor.data import load_items, load_manifest, load_outputs, load_training
from distill_doctor.data.fingerprint import ITEMS_FINGERPRINT, file_sha256, items_sha256
from distill_doctor.data.outputs import default_mc_rule, items_from_samples
from distill_doctor.diagnose.agreement import agreement_block
from distill_doctor.diagnose.failure_table import failure_table
from distill_doctor.diagnose.progress import Progress, wanted
from distill_doctor.errors import InputError
from distill_doctor.probes import (
    capacity_gap,
    contamination,
    data_quality,
    exposure_bias,
    provenance,
    superficial_imitation,
    teacher_error_transfer,
)
from distill_doctor.probes.base import DiagnosisInputs, Finding, Probe, skipped
from distill_doctor.stats import bootstrap_ci, clopper_pearson, holm
from distill_doctor.verify import containment, scoring, verify_outputs
from distill_doctor.vocabulary import ALPHA, STAGE_ORDER, Mode, Verdict

# Explicit, in debug order (data -> capacity -> mismatch -> provenance; vocabulary.MODE_ORDER).
PROBES: tuple[Probe, ...] = (
    data_quality.PROBE,
    teacher_error_transfer.PROBE,
    capacity_gap.PROBE,
    superficial_imitation.PROBE,
    exposure_bias.PROBE,
    contamination.PROBE,
    provenance.PROBE,
)

NEED_FLAGS = {
    "teacher": "--teacher",
    "train": "--train",
    "manifest": "--manifest",
    "teacher_model": "--teacher-model",
    "student_model": "--student-model",
}
SAMPLE_TEXT_LIMIT = 4000


@dataclass
class DiagnosisRequest:
    """What the user asked to diagnose (the ``diagnose`` command's arguments)."""

    items: Path | None  # None: the items come from the lm-eval samples files themselves
    student: Path
    teacher: Path | None = None
    train: Path | None = None
    manifest: Path | None = None
    teacher_model: Path | None = None
    student_model: Path | None = None
    seed: int = 0
    alpha: float = ALPHA
    workers: int | None = None
    quiet: bool = True
    mc_rule: str | None = None  # multiple-choice lm-eval samples: "acc" / "acc_norm"; None: the task's own
    spec_temperature: float = 1.0  # speculative block: decoding temperature (0 = greedy)
    draft_cost: float | None = None  # speculative block: draft/teacher cost ratio; None = measured
    timings: dict[str, float] = field(default_factory=dict)
    probes: tuple[str, ...] | None = None  # run only these modes (None: all); the rest are "not selected"
    engine: str = "local"  # training-set scans: "local" processes or "ray"


def load_inputs(
    req: DiagnosisRequest, progress: Progress | None = None
) -> tuple[DiagnosisInputs, dict[str, Any]]:
    """Load and verify everything the request names. Raises InputError on bad input."""
    progress = progress or Progress(0, enabled=False)
    loaded = _load_files(req)
    t0 = time.perf_counter()
    student_verdicts, teacher_verdicts = _verify(req, loaded, progress)
    req.timings["verify_s"] = time.perf_counter() - t0
    student, teacher, train = loaded.student, loaded.teacher, loaded.train
    inputs = DiagnosisInputs(
        items=loaded.items,
        student=student.outputs,
        student_verdicts=student_verdicts,
        teacher=teacher.outputs if teacher is not None else None,
        teacher_verdicts=teacher_verdicts,
        train=train,
        train_path=Path(req.train) if req.train is not None else None,
        manifest=loaded.manifest,
        manifest_path=Path(req.manifest) if req.manifest is not None else None,
        teacher_model=Path(req.teacher_model) if req.teacher_model is not None else None,
        student_model=Path(req.student_model) if req.student_model is not None else None,
        seed=req.seed,
        alpha=req.alpha,
        quiet=req.quiet,
        workers=req.workers,
        engine=req.engine,
    )
    return inputs, _inputs_meta(req, loaded, student_verdicts, teacher_verdicts)


@dataclass(frozen=True)
class _Loaded:
    """The request's files, read and joined (before verification)."""

    items: Any  # data.ItemList
    student: Any  # data.outputs.Outputs
    teacher: Any | None
    train: Any | None
    manifest: dict[str, Any] | None


def _load_files(req: DiagnosisRequest) -> _Loaded:
    for flag, path in (("--teacher-model", req.teacher_model), ("--student-model", req.student_model)):
        if path is not None and not Path(path).is_dir():
            raise InputError(f"{flag} must be a model directory (from_pretrained); not found", path=path)
    t0 = time.perf_counter()
    if req.mc_rule is None:
        req.mc_rule = default_mc_rule(req.teacher or req.student)
    if req.items is not None:
        items = load_items(req.items)
    else:  # lm-eval logs carry their own items: the teacher's (else the student's) documents
        items = items_from_samples(req.teacher or req.student, mc_rule=req.mc_rule)
    loaded = _Loaded(
        items=items,
        student=load_outputs(req.student, items, mc_rule=req.mc_rule),
        teacher=load_outputs(req.teacher, items, mc_rule=req.mc_rule) if req.teacher is not None else None,
        train=load_training(req.train) if req.train is not None else None,
        manifest=load_manifest(req.manifest) if req.manifest is not None else None,
    )
    req.timings["load_s"] = time.perf_counter() - t0
    return loaded


def _verify(
    req: DiagnosisRequest, loaded: _Loaded, progress: Progress
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Each model's outputs verified against the items: (student, teacher or None)."""
    bars = wanted(req.quiet)
    progress.step("verifying the student")
    student = verify_outputs(
        loaded.items, loaded.student.outputs, workers=req.workers, progress=bars, announce=not req.quiet
    )
    teacher = None
    if loaded.teacher is not None:
        progress.step("verifying the teacher")
        teacher = verify_outputs(
            loaded.items, loaded.teacher.outputs, workers=req.workers, progress=bars, announce=not req.quiet
        )
    return student, teacher


def _inputs_meta(
    req: DiagnosisRequest,
    loaded: _Loaded,
    student_verdicts: dict[str, Any],
    teacher_verdicts: dict[str, Any] | None,
) -> dict[str, Any]:
    """The report's ``inputs`` block (files, hashes, counts), lm-eval agreement included."""
    items, student, teacher, train = loaded.items, loaded.student, loaded.teacher, loaded.train
    agreement = {
        role: agreement_block(outs.lm_eval, verdicts, [it.id for it in items])
        for role, outs, verdicts in (
            ("teacher", teacher, teacher_verdicts),
            ("student", student, student_verdicts),
        )
        if outs is not None and verdicts is not None and outs.lm_eval is not None
    }
    items_meta = (
        _file_meta(req.items, n=len(items))
        if req.items is not None
        else _file_meta(items.path, n=len(items), derived_from="lm-eval samples")
    )
    return {
        "lm_eval_agreement": agreement or None,
        "items": items_meta,
        "student": _file_meta(
            req.student, n=len(student.outputs), missing=len(student.missing), **_beyond(student)
        ),
        "teacher": (
            _file_meta(req.teacher, n=len(teacher.outputs), missing=len(teacher.missing))
            if teacher is not None and req.teacher is not None
            else None
        ),
        "train": _file_meta(req.train, n=len(train)) if train is not None and req.train is not None else None,
        "manifest": _file_meta(req.manifest) if req.manifest is not None else None,
        "teacher_model": str(req.teacher_model) if req.teacher_model is not None else None,
        "student_model": str(req.student_model) if req.student_model is not None else None,
    }


def run_probes(
    inputs: DiagnosisInputs,
    probes: tuple[Probe, ...] = PROBES,
    *,
    progress: Progress | None = None,
    selected: tuple[str, ...] | None = None,
) -> list[Finding]:
    """Run each probe whose inputs are present; the rest are ``skipped`` with the missing flags named.
    With ``selected`` (``--probes``), the probes not named are ``skipped`` as "not selected".

    A probe that crashes on unexpected input is reported as ``skipped`` with the error (and a
    warning on stderr) instead of losing every other probe's result.
    """
    findings = []
    for probe in probes:
        if selected is not None and probe.mode not in selected:
            findings.append(skipped(probe.mode, "not selected (--probes)"))
            continue
        if progress is not None:
            progress.step(probe.mode)
        missing = probe.missing(inputs)
        if missing:
            flags = ", ".join(NEED_FLAGS.get(name, name) for name in missing)
            findings.append(skipped(probe.mode, f"needs {flags}"))
            continue
        try:
            findings.append(probe.run(inputs))
        except InputError:
            raise
        except Exception as err:  # one probe's bug must not cost the user the whole report
            reason = f"probe error ({type(err).__name__}: {err}); please report it with this report.json"
            print(f"distill-doctor: warning: {probe.mode} {reason}", file=sys.stderr)
            findings.append(skipped(probe.mode, reason))
    return findings


def attribute_teacher_errors(findings: list[Finding]) -> list[Finding]:
    """The findings, with ``data_quality`` lowered from fail to warn when its failing checks are
    teacher errors that ``teacher_error_transfer`` shows the student repeats
    (:func:`distill_doctor.probes.data_quality.attributed_to_teacher` decides and words it)."""
    by_mode = {f.mode: f for f in findings}
    data, transfer = by_mode.get(Mode.DATA_QUALITY), by_mode.get(Mode.TEACHER_ERROR_TRANSFER)
    if data is None or transfer is None:
        return list(findings)
    adjusted = data_quality.attributed_to_teacher(data, transfer)
    return [adjusted if f is data else f for f in findings]


def control_false_alarms(findings: list[Finding], alpha: float) -> tuple[list[Finding], list[float | None]]:
    """Holm-adjust the probes' primary p-values; a ``fail`` that loses significance becomes ``warn``.

    Returns the findings (downgraded where Holm says so) and the adjusted p-values aligned with
    them (None where a probe reported none). Verdicts decided without a p-value (e.g. a checksum
    mismatch) are facts and are left alone.
    """
    tested = [i for i, f in enumerate(findings) if f.verdict != Verdict.SKIPPED and f.p_value is not None]
    adjusted_list = holm([float(findings[i].p_value or 0.0) for i in tested]) if tested else []
    adjusted: list[float | None] = [None] * len(findings)
    out = list(findings)
    for i, p_adj in zip(tested, adjusted_list):
        adjusted[i] = float(p_adj)
        if out[i].verdict == Verdict.FAIL and p_adj >= alpha:
            out[i] = out[i].downgraded(
                Verdict.WARN,
                f"(Downgraded from fail: Holm-adjusted p = {p_adj:.3g} across "
                f"{len(tested)} probe tests is not below alpha = {alpha}.)",
            )
    return out, adjusted


def accuracy_block(inputs: DiagnosisInputs) -> dict[str, Any]:
    """SPEC ``accuracy``: items scored (both models, when a teacher is given) and each model's pass share.

    With several samples per item the share is pass@1 (the mean over items of each item's share
    of passing samples), its interval an item bootstrap, and ``multi_sample`` adds maj@k and
    pass@k per model (``verify/scoring.py``).
    """
    ids = inputs.scored_ids()
    n = len(ids)
    block: dict[str, Any] = {"n": n, "teacher": None, "student": None}
    multi: dict[str, Any] = {}
    for role, verdicts in (("student", inputs.student_verdicts), ("teacher", inputs.teacher_verdicts)):
        if verdicts is None or n == 0:
            continue
        if scoring.is_multi_sample(verdicts, ids):
            scores = np.array([verdicts[i].score for i in ids])
            block[role] = float(scores.mean())
            block[f"{role}_ci"] = list(bootstrap_ci(lambda x: x.mean(-1), scores, seed=inputs.seed))
            multi[role] = scoring.summarize(verdicts, ids)
            continue
        k = sum(verdicts[i].passed for i in ids)
        block[role] = k / n
        block[f"{role}_ci"] = list(clopper_pearson(k, n))
    if multi:
        multi["tie_break"] = scoring.TIE_BREAK
        multi["tests_use"] = "first sample (binary tests), share of passing samples (tests on means)"
        block["multi_sample"] = multi
    block["missing"] = {
        "student": sum(1 for it in inputs.items if it.id not in inputs.student),
        "teacher": (
            sum(1 for it in inputs.items if it.id not in inputs.teacher)
            if inputs.teacher is not None
            else None
        ),
    }
    return block


def build_report(
    inputs: DiagnosisInputs,
    findings: list[Finding],
    adjusted: list[float | None],
    meta: dict[str, Any],
    *,
    timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The report.json dict (schema_version 1, SPEC.md), from the findings and the inputs."""
    failing = [f for f in findings if f.verdict == Verdict.FAIL]
    meta = dict(meta)
    agreement = meta.pop("lm_eval_agreement", None)
    entries = []
    for finding, p_adj in zip(findings, adjusted):
        entry = finding.to_dict()
        entry["p_adjusted"] = p_adj
        entries.append(entry)
    table = (
        failure_table(inputs.scored_ids(), inputs.teacher_verdicts, inputs.student_verdicts)
        if inputs.teacher_verdicts is not None
        else None
    )
    example_ids = [i for ids in table["examples"].values() for i in ids] if table else []
    report: dict[str, Any] = {
        "schema_version": 1,
        "tool": {"name": "distill-doctor", "version": __version__},
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "debug_order": [stage.value for stage in STAGE_ORDER],
        "primary_suspect": failing[0].mode if failing else None,
        "accuracy": accuracy_block(inputs),
        "inputs": meta,
        "items_fingerprint": {
            "sha256": items_sha256(inputs.items),
            "n": len(inputs.items),
            "method": ITEMS_FINGERPRINT,
        },
        "settings": {"seed": inputs.seed, "alpha": inputs.alpha, "multiplicity": "holm"},
        "findings": entries,
        "lm_eval_agreement": agreement,
        "failure_table": table,
        "samples": _samples(inputs, entries, example_ids),
    }
    if any(it.verifier_kind == "code" for it in inputs.items):
        info = containment()
        report["code_sandbox"] = {"isolation": info["isolation"], "detail": info["isolation_detail"]}
    if timings:
        report["timings"] = {k: round(v, 3) for k, v in timings.items()}
    return report


def diagnose(req: DiagnosisRequest) -> dict[str, Any]:
    """Load, verify, probe, control false alarms, and return the report dict."""
    progress = Progress(2 + len(PROBES), enabled=wanted(req.quiet))
    try:
        inputs, meta = load_inputs(req, progress)
        t0 = time.perf_counter()
        findings = run_probes(inputs, progress=progress, selected=req.probes)
        req.timings["probes_s"] = time.perf_counter() - t0
    finally:
        progress.close()
    findings, adjusted = control_false_alarms(findings, req.alpha)
    findings = attribute_teacher_errors(findings)
    speculative = speculative_readiness(inputs, req)
    report = build_report(inputs, findings, adjusted, meta, timings=req.timings)
    if speculative is not None:
        report["speculative"] = speculative
    return report


def speculative_readiness(inputs: DiagnosisInputs, req: DiagnosisRequest) -> dict[str, Any] | None:
    """The ``speculative`` block (how good a draft the student is) when both models are given."""
    if inputs.teacher_model is None or inputs.student_model is None:
        return None
    from distill_doctor.speculative.report import speculative_block

    t0 = time.perf_counter()
    try:
        block = speculative_block(
            inputs.teacher_model,
            inputs.student_model,
            inputs.items,
            inputs.student,
            inputs.teacher,
            temperature=req.spec_temperature,
            draft_cost=req.draft_cost,
            seed=inputs.seed,
            quiet=inputs.quiet,
        )
    except InputError:
        raise
    except Exception as err:  # as with a probe: a bug here must not cost the user the report
        print(
            f"distill-doctor: warning: speculative block not written ({type(err).__name__}: {err})",
            file=sys.stderr,
        )
        return None
    req.timings["speculative_s"] = time.perf_counter() - t0
    return block


def _file_meta(path: Path | str, **extra: Any) -> dict[str, Any]:
    return {"path": str(path), "sha256": file_sha256(path), **extra}


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= SAMPLE_TEXT_LIMIT:
        return text
    return text[:SAMPLE_TEXT_LIMIT] + f"\n[... {len(text) - SAMPLE_TEXT_LIMIT} more characters]"


def _samples(
    inputs: DiagnosisInputs, entries: list[dict[str, Any]], example_ids: list[str]
) -> dict[str, Any]:
    """Side-by-side teacher/student texts for every evidence item and failure-table example."""
    by_id = {it.id: it for it in inputs.items}
    wanted: list[str] = []
    for entry in entries:
        wanted.extend(str(ev.get("id")) for ev in entry.get("evidence", []) if ev.get("id") in by_id)
    wanted.extend(example_ids)
    samples: dict[str, Any] = {}
    for item_id in dict.fromkeys(wanted):
        item = by_id[item_id]
        row: dict[str, Any] = {
            "prompt": _clip(item.prompt),
            "reference": item.reference,
            "student": _clip(inputs.student[item_id].output) if item_id in inputs.student else None,
        }
        sv = inputs.student_verdicts.get(item_id)
        row["student_answer"] = sv.answer if sv else None
        row["student_passed"] = sv.passed if sv else None
        _sample_share(row, "student", sv)
        if inputs.teacher is not None and inputs.teacher_verdicts is not None:
            tv = inputs.teacher_verdicts.get(item_id)
            row["teacher"] = _clip(inputs.teacher[item_id].output) if item_id in inputs.teacher else None
            row["teacher_answer"] = tv.answer if tv else None
            row["teacher_passed"] = tv.passed if tv else None
            _sample_share(row, "teacher", tv)
        samples[item_id] = row
    return samples


def _sample_share(row: dict[str, Any], role: str, verdict: Any) -> None:
    """With several samples the row's text, answer and passed are the first sample's; add how many
    samples there were and the share that passed."""
    if verdict is not None and verdict.n_samples > 1:
        row[f"{role}_samples"] = verdict.n_samples
        row[f"{role}_pass_share"] = verdict.score


def _beyond(outputs: Any) -> dict[str, Any]:
    """``beyond_items``: lm-eval documents of this file that the items' own log lacks (another
    ``--limit``), left out of the comparison; absent when there are none."""
    beyond = getattr(outputs, "beyond_items", None) or []
    return {"beyond_items": len(beyond), "beyond_doc_ids": beyond[:10]} if beyond else {}
