"""``distill-doctor generate``: sample a teacher on prompts, filter, and write training data + provenance.

Writes the training JSONL (``{"prompt", "response", "id", "source", "reference"}``) and a
provenance manifest (``--manifest-out``, default ``<out stem>.provenance.yaml``) recording the
teacher (name, weights sha256, license), the decoding settings, every filter's kept/dropped
counts, the decontamination record and the sha256 of the file written. The training file is
written first (atomically), then the manifest from its bytes. Existing files are never
overwritten without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from distill_doctor.devices import check_device, finite
from distill_doctor.errors import InputError
from distill_doctor.paths import check_input_dir, check_input_file, check_output_file, nonempty_path, resolve

FORMAT_FILTERS = ("empty", "truncated", "repetition_loop", "no_final_answer")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate distillation data from a teacher, with rejection sampling and provenance",
        description="Sample N responses per prompt from a local teacher model, drop malformed ones "
        "(empty, truncated, looping, no final answer), keep only verified ones (rejection "
        "sampling against the prompts' references), remove exact and near duplicates and anything "
        "matching the evaluation sets given with --decontaminate, and write training JSONL plus a "
        "provenance manifest.",
    )
    p.add_argument(
        "--prompts",
        required=True,
        type=Path,
        help="prompts (JSONL in the items format: id, prompt, reference?, verifier?)",
    )
    p.add_argument("--teacher-model", required=True, type=Path, help="teacher model directory")
    p.add_argument("--out", required=True, type=nonempty_path, help="training data to write (JSONL)")
    p.add_argument(
        "--manifest-out",
        type=nonempty_path,
        default=None,
        help="provenance manifest to write (.yaml or .json; default <out stem>.provenance.yaml)",
    )
    p.add_argument("--samples-per-prompt", type=int, default=4, help="N samples per prompt (default 4)")
    p.add_argument(
        "--keep",
        choices=("first", "all"),
        default="first",
        help="keep the first surviving sample per prompt (best-of-N, default) or all of them",
    )
    p.add_argument(
        "--temperature", type=float, default=0.7, help="sampling temperature; 0 = greedy (default 0.7)"
    )
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold (default 1.0)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="most tokens per response (default 256)")
    p.add_argument(
        "--reject-with",
        choices=("verifier", "none"),
        default="verifier",
        help="verifier: keep only responses the prompt's verifier accepts (default); none: keep unverified",
    )
    p.add_argument(
        "--decontaminate",
        type=Path,
        nargs="+",
        default=[],
        metavar="ITEMS",
        help="evaluation items files whose prompts must not appear in the data",
    )
    p.add_argument(
        "--skip-filter",
        action="append",
        default=[],
        choices=FORMAT_FILTERS,
        help="turn one format filter off (repeatable), e.g. truncated when responses have no EOS",
    )
    p.add_argument(
        "--near-dup-threshold",
        type=float,
        default=0.85,
        help="Jaccard threshold for near-duplicate rows (default 0.85; 1 disables near dedup)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per generation batch (default 16)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (default cpu)")
    p.add_argument(
        "--engine",
        choices=("hf", "vllm"),
        default="hf",
        help="generation engine: hf = transformers generate (default); vllm = a vLLM engine process "
        "on the teacher (needs .venv-vllm from scripts/setup_vllm.sh; --device is then not used)",
    )
    p.add_argument("--workers", type=int, default=None, help="parallel code-verifier processes")
    p.add_argument(
        "--teacher-license",
        default=None,
        help="the teacher's license (default: from its README front matter or LICENSE, else unknown)",
    )
    p.add_argument(
        "--prompts-license", default="unknown", help="license of the prompts (recorded; default unknown)"
    )
    p.add_argument(
        "--student-base",
        type=Path,
        default=None,
        help="the student's base model directory (recorded in the manifest)",
    )
    p.add_argument("--student-license", default=None, help="the student base's license (with --student-base)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--quiet", action="store_true", help="no progress bars and no summary (for CI)")
    p.set_defaults(func=run)


def default_manifest_path(out: Path) -> Path:
    name = out.name
    for suffix in (".gz", ".jsonl", ".json"):
        name = name.removesuffix(suffix)
    return out.with_name(f"{name}.provenance.yaml")


def _check_args(args: argparse.Namespace, manifest_out: Path) -> None:
    for value, flag in ((args.temperature, "--temperature"), (args.top_p, "--top-p")):
        finite(value, flag)
    finite(args.near_dup_threshold, "--near-dup-threshold")
    if args.samples_per_prompt < 1:
        raise InputError(f"--samples-per-prompt must be >= 1, got {args.samples_per_prompt}")
    if args.temperature < 0:
        raise InputError(f"--temperature must be >= 0, got {args.temperature}")
    if not 0 < args.top_p <= 1:
        raise InputError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.max_new_tokens < 1:
        raise InputError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not 0 < args.near_dup_threshold <= 1:
        raise InputError(f"--near-dup-threshold must be in (0, 1], got {args.near_dup_threshold}")
    if args.seed < 0:
        raise InputError(f"--seed must be >= 0, got {args.seed}")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    check_device(args.device)
    check_input_dir(args.teacher_model)
    if args.student_base is not None:
        check_input_dir(args.student_base)
    for path in [args.prompts, *args.decontaminate]:
        check_input_file(path)
    inputs = {resolve(p) for p in [args.prompts, *args.decontaminate]}
    if resolve(args.out) == resolve(manifest_out):
        raise InputError("--out and --manifest-out must differ", path=args.out)
    for target in (args.out, manifest_out):
        if resolve(target) in inputs:
            raise InputError("refusing to write over an input file", path=target)
        check_output_file(target)
        if target.exists() and not args.overwrite:
            raise InputError("output file exists (use --overwrite to replace it)", path=target)


def run(args: argparse.Namespace) -> int:
    from distill_doctor.data import load_items
    from distill_doctor.produce.dedup import NearDedup
    from distill_doctor.produce.filters import default_filters
    from distill_doctor.produce.generate import GenerateOptions
    from distill_doctor.produce.generate_run import generate_files
    from distill_doctor.produce.prompts import load_prompts
    from distill_doctor.produce.sampling import SamplingParams
    from distill_doctor.train.vllm_client import EngineError, unavailable_reason

    manifest_out = args.manifest_out or default_manifest_path(args.out)
    _check_args(args, manifest_out)
    if args.engine == "vllm" and (reason := unavailable_reason()):
        return _engine_failed(reason)
    prompts = load_prompts(args.prompts)
    benchmarks = {path.name: load_items(path) for path in args.decontaminate}
    if len(benchmarks) != len(args.decontaminate):
        raise InputError("two --decontaminate files share a name; rename one", path=args.decontaminate[-1])
    filters = tuple(f for f in default_filters() if f.name not in args.skip_filter)
    options = GenerateOptions(
        filters=filters,
        samples_per_prompt=args.samples_per_prompt,
        keep=args.keep,
        reject_with=args.reject_with,
        near_dedup=None if args.near_dup_threshold >= 1 else NearDedup(threshold=args.near_dup_threshold),
        workers=args.workers,
    )
    params = SamplingParams(
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    try:
        report = generate_files(
            prompts,
            prompts_path=args.prompts,
            teacher_model=args.teacher_model,
            out=args.out,
            manifest_out=manifest_out,
            options=options,
            params=params,
            benchmarks=benchmarks,
            device=args.device,
            teacher_license=args.teacher_license,
            prompts_license=args.prompts_license,
            student_base=args.student_base,
            student_license=args.student_license,
            quiet=args.quiet,
            engine=args.engine,
        )
    except EngineError as err:  # the engine is an environment, like the disk: exit 2, one line
        return _engine_failed(str(err))
    if not args.quiet:
        print(report)
    if not report.result.rows:
        print(
            "distill-doctor generate: warning: no response survived the filters; the training file is empty",
            file=sys.stderr,
        )
    return 0


def _engine_failed(message: str) -> int:
    print(f"distill-doctor generate: generation engine failed: {message}", file=sys.stderr)
    return 2
