"""The closed loop on one model organism: diagnose, apply the guardrail, re-diagnose.

``distill-doctor demo --closed-loop teacher_error_transfer`` shows the whole cycle a user goes
through when the diagnosis blames the training data (``teacher_error_transfer`` or
``data_quality``): the report's guardrail says to regenerate the teacher data with verifier-based
rejection; we do exactly that with ``generate`` (same teacher, same prompts, same decoding as the
organism's manifest records), retrain the student with the organism's own recipe on the filtered
data, evaluate it with lm-evaluation-harness, diagnose again, and print the verdicts side by side.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from distill_doctor.atomic import atomic_write_text
from distill_doctor.errors import InputError
from distill_doctor.organisms import discover

DATA_MODES = ("teacher_error_transfer", "data_quality")


def _diagnose(items: Path, folder: Path, train: Path, manifest: Path, seed: int) -> dict[str, Any]:
    from distill_doctor.diagnose.run import DiagnosisRequest, diagnose

    return diagnose(
        DiagnosisRequest(
            items=items,
            teacher=folder / "teacher.jsonl",
            student=folder / "student.jsonl",
            train=train,
            manifest=manifest,
            seed=seed,
        )
    )


def _prompts_from_training(train_path: Path, out: Path) -> Path:
    """The training prompts with their known answers, as a prompts file for ``generate``."""
    from distill_doctor.data import load_training

    rows = load_training(train_path)
    lines = []
    for row in rows:
        if row["reference"] is None:
            continue
        lines.append(json.dumps({"id": row["id"], "prompt": row["prompt"], "reference": row["reference"]}))
    if not lines:
        raise InputError("no training row carries a reference: nothing to verify against", path=train_path)
    return atomic_write_text(out, "\n".join(lines) + "\n")


def _student_init(fixtures: Path, folder: Path, out_dir: Path) -> Path:
    """Recreate the organism's starting model from its ``student_init.json`` record."""
    from distill_doctor.testing.layer_init import init_from_teacher_layers

    record_path = folder / "student_init.json"
    if not record_path.is_file():
        raise InputError("the organism does not record its starting model (student_init.json)", path=folder)
    record = json.loads(record_path.read_text(encoding="utf-8"))
    if record.get("kind") != "teacher_layers" or "then" in record:
        raise InputError(
            f"the closed loop recreates layer-dropped students only; this one starts as {record}",
            path=record_path,
        )
    return init_from_teacher_layers(fixtures / record["teacher"], tuple(record["keep_layers"]), out_dir)


def run_closed_loop(fixtures: Path, organism: str, out: Path, *, seed: int = 0, quiet: bool = False) -> int:
    from transformers.utils import logging as hf_logging

    from distill_doctor.data import load_items, load_manifest
    from distill_doctor.produce.generate import GenerateOptions
    from distill_doctor.produce.generate_run import generate_files
    from distill_doctor.produce.lm_eval_runner import load_hflm, run_items, write_outputs
    from distill_doctor.produce.prompts import load_prompts
    from distill_doctor.produce.sampling import SamplingParams
    from distill_doctor.reports.save import save_report
    from distill_doctor.train import load_config, run_training

    hf_logging.disable_progress_bar()  # our five steps are the progress report
    start = time.perf_counter()
    org = discover(fixtures, [organism])[0]
    items_path = org.items

    def say(text: str) -> None:
        if not quiet:
            print(text, flush=True)

    say(f"1/5 diagnose {organism} as built")
    before = _diagnose(
        items_path, org.folder, org.folder / "train.jsonl", org.folder / "provenance.yaml", seed
    )
    save_report(before, out / "before")
    suspect = before["primary_suspect"]
    if suspect not in DATA_MODES:
        raise InputError(
            f"the closed loop applies the data guardrail (regenerate with rejection), but the primary "
            f"suspect of {organism} is {suspect!r}; choose an organism whose data is to blame"
        )
    finding = next(f for f in before["findings"] if f["mode"] == suspect)
    say(f"   primary suspect: {suspect}\n   guardrail: {finding['guardrail']}")

    say("2/5 regenerate the training data with verifier-based rejection (same teacher, prompts, decoding)")
    recorded = load_manifest(org.folder / "provenance.yaml").get("generation") or {}
    prompts_path = _prompts_from_training(org.folder / "train.jsonl", out / "prompts.jsonl")
    init = _student_init(fixtures, org.folder, out / "init_student")
    gen = generate_files(
        load_prompts(prompts_path),
        prompts_path=prompts_path,
        teacher_model=org.teacher_model,
        out=out / "train.jsonl",
        manifest_out=out / "provenance.yaml",
        options=GenerateOptions(
            samples_per_prompt=int(recorded.get("samples_per_prompt", 1)), reject_with="verifier"
        ),
        params=SamplingParams(
            temperature=float(recorded.get("temperature", 0.0)),
            top_p=float(recorded.get("top_p", 1.0)),
            max_new_tokens=int(recorded.get("max_new_tokens", 96)),
            seed=seed,
            batch_size=64,
        ),
        benchmarks={str(items_path): load_items(items_path)},
        teacher_license="Apache-2.0",
        prompts_license="Apache-2.0",
        student_base=init,
        student_license="Apache-2.0",
        quiet=True,
    )
    kept = sum(1 for _ in open(out / "train.jsonl", encoding="utf-8"))
    say(f"   kept {kept} verified rows of {len(load_prompts(prompts_path))} prompts -> {out / 'train.jsonl'}")
    del gen

    say("3/5 retrain the student with the organism's own recipe on the filtered data")
    cfg = load_config(
        org.folder / "model_config.yaml",
        [f"data={(out / 'train.jsonl').resolve()}", f"student={init.resolve()}"],
        output_dir=str(out / "model"),
        seed=seed,
        quiet=True,
    )
    model_dir = run_training("sft", cfg)

    say("4/5 evaluate the new student with lm-evaluation-harness")
    lm = load_hflm(model_dir, batch_size=64, quiet=True)
    result = run_items(lm, load_items(items_path), items_path=items_path, seed=seed, quiet=True)
    write_outputs(out / "student.jsonl", result.outputs)
    atomic_write_text(out / "teacher.jsonl", (org.folder / "teacher.jsonl").read_text(encoding="utf-8"))

    say("5/5 diagnose again")
    after = _diagnose(items_path, out, out / "train.jsonl", out / "provenance.yaml", seed)
    save_report(after, out / "after")
    print(_compare(before, after))
    print(
        f"\nreports: {out}/before/report.html and {out}/after/report.html; "
        f"{time.perf_counter() - start:.0f} s in all"
    )
    return 0


def _compare(before: dict[str, Any], after: dict[str, Any]) -> str:
    def acc(r: dict[str, Any]) -> str:
        s = r["accuracy"].get("student")
        return "n/a" if s is None else f"{100 * s:.1f}%"

    lines = [f"{'mode':<24} {'before':<8} {'after':<8}", "-" * 40]
    after_by_mode = {f["mode"]: f for f in after["findings"]}
    for f in before["findings"]:
        lines.append(f"{f['mode']:<24} {f['verdict']:<8} {after_by_mode[f['mode']]['verdict']:<8}")
    lines.append(f"{'student accuracy':<24} {acc(before):<8} {acc(after):<8}")
    lines.append(
        f"{'primary suspect':<24} {before['primary_suspect'] or 'none'} -> {after['primary_suspect'] or 'none'}"
    )
    return "\n".join(lines)
