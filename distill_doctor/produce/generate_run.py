"""Generation to files: build the teacher's sampler, run the pipeline, write the data and its manifest.

:func:`generate_files` is what ``distill-doctor generate`` runs, and the Python entry point for
callers that want files (the closed-loop demo: diagnose -> regenerate with rejection sampling ->
retrain). The training file is written atomically first; the manifest is then built from the
pipeline's counts and the written file's sha256, so the two always agree.
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill_doctor.atomic import atomic_write_text
from distill_doctor.data.fingerprint import file_sha256
from distill_doctor.data.records import Item
from distill_doctor.produce.generate import GenerateOptions, GenerationResult, Sampler, generate_dataset
from distill_doctor.produce.manifest_writer import build_manifest, describe_model, write_manifest
from distill_doctor.produce.quiet import quiet_output
from distill_doctor.produce.sampling import HFSampler, SamplingParams, load_model

ENGINES = ("hf", "vllm")
HF_DESCRIPTION = "transformers generate (left padding, tokenizer's own BOS, stop at EOS)"


@dataclass
class GenerationFiles:
    """What :func:`generate_files` wrote."""

    result: GenerationResult
    out: Path
    manifest_path: Path
    manifest: dict[str, Any]

    def __str__(self) -> str:
        r = self.result
        lines = [
            f"{len(r.rows)} training rows from {r.n_prompts} prompts x "
            f"{self.manifest['generation']['samples_per_prompt']} samples ({r.n_candidates} candidates); "
            f"{r.prompts_covered} prompts have a row",
        ]
        for f in r.filters:
            lines.append(f"  {f.name:<16} kept {f.kept:>6}  dropped {f.dropped:>6}")
        dec = r.decontamination
        if dec["benchmarks"]:
            lines.append(f"  decontaminated against {', '.join(dec['benchmarks'])}: removed {dec['removed']}")
        else:
            lines.append("  no decontamination (give --decontaminate EVAL_ITEMS.jsonl ...)")
        lines.append(f"data: {self.out} (sha256 {self.manifest['dataset_sha256'][:12]}...)")
        lines.append(f"provenance: {self.manifest_path}")
        return "\n".join(lines)


def training_jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _versions() -> dict[str, str]:
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "transformers": str(transformers.__version__),
    }


def generate_files(
    prompts: list[Item],
    *,
    prompts_path: str | Path,
    teacher_model: str | Path,
    out: str | Path,
    manifest_out: str | Path,
    options: GenerateOptions | None = None,
    params: SamplingParams | None = None,
    benchmarks: Mapping[str, list[Item]] | None = None,
    device: str = "cpu",
    teacher_license: str | None = None,
    prompts_license: str = "unknown",
    student_base: str | Path | None = None,
    student_license: str | None = None,
    quiet: bool = True,
    sampler: Sampler | None = None,
    engine: str = "hf",
) -> GenerationFiles:
    """Sample the teacher on ``prompts``, filter, write ``out`` (JSONL) and ``manifest_out``.

    ``sampler``: use this callable instead of loading ``teacher_model`` (the model directory is
    still what the manifest describes, so pass the sampler of that same model). Overwrite
    checks are the caller's job (the CLI refuses existing files without ``--overwrite``).
    ``engine``: ``hf`` (transformers generate on ``device``) or ``vllm`` (a vLLM engine process on
    the teacher directory, see :mod:`~distill_doctor.produce.vllm_sampler`; raises
    ``EngineError`` when it cannot start or dies).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    options = options or GenerateOptions()
    params = params or SamplingParams()
    out, manifest_out = Path(out), Path(manifest_out)
    bar = None
    description = HF_DESCRIPTION
    close: Callable[[], None] | None = None
    if sampler is None and engine == "vllm":
        from distill_doctor.produce.vllm_sampler import ENGINE_DESCRIPTION, VLLMTeacherSampler

        engine_sampler = VLLMTeacherSampler.from_dir(
            teacher_model, params, prompts=[it.prompt for it in prompts], log=None if quiet else sys.stderr
        )
        sampler, close, description = engine_sampler, engine_sampler.close, ENGINE_DESCRIPTION
    elif sampler is None:
        with quiet_output(quiet):
            model, tokenizer = load_model(teacher_model, device=device)
        sampler = HFSampler(model, tokenizer, params)
    progress = None
    if not quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(prompts), desc="sampling prompts", unit="prompt")
        progress = bar.update
    try:
        result = generate_dataset(
            prompts, sampler, options=options, decontaminate=benchmarks, progress=progress
        )
    finally:
        if bar is not None:
            bar.close()
        if close is not None:
            close()

    atomic_write_text(out, training_jsonl(result.rows))
    generation = {
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_new_tokens": params.max_new_tokens,
        "samples_per_prompt": options.samples_per_prompt,
        "seed": params.seed,
        "keep": options.keep,
        "reject_with": options.reject_with,
        "batch_size": params.batch_size,
        "device": device,
        "sampler": description,
        "versions": _versions(),
    }
    prompt_source = {
        "source": Path(prompts_path).name,
        "license": prompts_license,
        "count": len(prompts),
        "sha256": file_sha256(prompts_path),
    }
    decon = dict(result.decontamination)
    if not decon["benchmarks"]:
        decon.update(ngram=None, threshold=None)
    manifest = build_manifest(
        teacher=describe_model(teacher_model, license=teacher_license),
        student_base=(
            describe_model(student_base, license=student_license) if student_base is not None else None
        ),
        prompts=[prompt_source],
        generation=generation,
        filters=[f.as_dict() for f in result.filters],
        decontamination=decon,
        dataset_path=out,
        counts={
            "rows": len(result.rows),
            "prompts": result.n_prompts,
            "prompts_with_rows": result.prompts_covered,
            "candidates": result.n_candidates,
        },
    )
    write_manifest(manifest, manifest_out)
    return GenerationFiles(result, out, manifest_out, manifest)
