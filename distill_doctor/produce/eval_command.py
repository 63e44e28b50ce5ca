"""``distill-doctor eval``: run the items through lm-evaluation-harness and write model outputs.

One model: ``--model DIR --out outputs.jsonl``. Both sides of a distillation run at once:
``--teacher-model DIR --student-model DIR --out-dir DIR`` writes ``DIR/teacher.jsonl`` and
``DIR/student.jsonl``, ready for ``distill-doctor diagnose --teacher ... --student ...``.
Outputs are ``{"id", "output"}`` lines in item order; ``--keep-samples`` also keeps lm-eval's
own ``samples_<task>_<timestamp>.jsonl`` in ``<outputs stem>_lm_eval/`` beside them. Existing
files are never overwritten without ``--overwrite``.

``--engine hf`` (default) runs lm-eval's HFLM in this process; ``--engine vllm`` runs lm-eval's own
vllm backend in ``.venv-vllm`` as a subprocess (:mod:`lm_eval_vllm`), logging to
``<outputs stem>_lm_eval.log``; both write the same outputs format.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from distill_doctor.devices import DTYPES, check_device
from distill_doctor.errors import InputError
from distill_doctor.paths import (
    check_input_dir,
    check_input_file,
    check_output_dir,
    check_output_file,
    nonempty_path,
    resolve,
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="generate model outputs for the items with lm-evaluation-harness (offline)",
        description="Run a local model (or a teacher and a student) over the items with "
        "lm-evaluation-harness, greedy, stopping at EOS, and write outputs.jsonl ({id, output}) "
        "for `distill-doctor diagnose`. The prompt is used exactly as written, with the tokenizer's "
        "own BOS, as in training.",
    )
    p.add_argument("--items", required=True, type=Path, help="evaluation items (JSONL, SPEC 'Items')")
    p.add_argument("--model", type=Path, help="model directory (config.json, weights, tokenizer)")
    p.add_argument("--out", type=nonempty_path, help="outputs file to write for --model (JSONL)")
    p.add_argument(
        "--teacher-model", type=Path, help="teacher model directory (with --student-model, --out-dir)"
    )
    p.add_argument(
        "--student-model", type=Path, help="student model directory (with --teacher-model, --out-dir)"
    )
    p.add_argument("--out-dir", type=nonempty_path, help="folder for teacher.jsonl and student.jsonl")
    p.add_argument("--batch-size", type=int, default=8, help="generation batch size (default 8)")
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=256,
        help="most tokens generated per item (default 256; lowered to fit the model's maximum length)",
    )
    p.add_argument(
        "--until",
        action="append",
        default=None,
        metavar="TEXT",
        help="extra stop string (repeatable); the model's EOS always stops generation",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="torch device, e.g. cpu or cuda:0 (default cpu); with --engine vllm the engine picks its "
        "own device, and cpu means no graph capture (enforce_eager)",
    )
    p.add_argument("--dtype", default="auto", choices=DTYPES, help="model dtype (default auto)")
    p.add_argument(
        "--engine",
        choices=("hf", "vllm"),
        default="hf",
        help="hf = lm-eval's HF backend in this process (default); vllm = lm-eval's vllm backend run in "
        ".venv-vllm (scripts/setup_vllm.sh), its output in <outputs stem>_lm_eval.log",
    )
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N items (smoke tests)")
    p.add_argument("--seed", type=int, default=0, help="seed passed to lm-eval (default 0)")
    p.add_argument(
        "--keep-samples",
        action="store_true",
        help="also write lm-eval's samples_<task>_<timestamp>.jsonl into <outputs stem>_lm_eval/",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--quiet", action="store_true", help="no progress bars and no summary (for CI)")
    p.set_defaults(func=run)


def _jobs(args: argparse.Namespace) -> list[tuple[str, Path, Path]]:
    """``(label, model_dir, out_path)`` for each model to run, after checking the flag combination."""
    single = args.model is not None or args.out is not None
    pair = any(x is not None for x in (args.teacher_model, args.student_model, args.out_dir))
    if single and pair:
        raise InputError("use either --model/--out or --teacher-model/--student-model/--out-dir, not both")
    if single:
        if args.model is None or args.out is None:
            raise InputError("--model and --out go together")
        return [("model", args.model, args.out)]
    if pair:
        if args.out_dir is None or (args.teacher_model is None and args.student_model is None):
            raise InputError("--out-dir needs --teacher-model and/or --student-model")
        check_output_dir(args.out_dir)
        jobs = []
        if args.teacher_model is not None:
            jobs.append(("teacher", args.teacher_model, args.out_dir / "teacher.jsonl"))
        if args.student_model is not None:
            jobs.append(("student", args.student_model, args.out_dir / "student.jsonl"))
        return jobs
    raise InputError(
        "nothing to evaluate: give --model and --out, or --teacher-model/--student-model and --out-dir"
    )


def _check_targets(jobs: list[tuple[str, Path, Path]], items_path: Path, overwrite: bool) -> None:
    check_input_file(items_path)
    for _, model_dir, out in jobs:
        check_input_dir(model_dir)
        if resolve(out) == resolve(items_path):
            raise InputError("refusing to write outputs over the items file", path=out)
        check_output_file(out)
        if out.exists() and not overwrite:
            raise InputError("output file exists (use --overwrite to replace it)", path=out)


def run(args: argparse.Namespace) -> int:
    from distill_doctor.data import load_items
    from distill_doctor.produce.lm_eval_runner import samples_filename, write_outputs, write_samples
    from distill_doctor.train.vllm_client import EngineError

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be >= 1, got {args.limit}")
    check_device(args.device)
    jobs = _jobs(args)
    _check_targets(jobs, args.items, args.overwrite)
    items = load_items(args.items)
    for label, model_dir, out in jobs:
        # lm-eval's own naming, in a folder per outputs file (teacher and student stay apart).
        folder = out.parent / f"{out.stem}_lm_eval"
        kept = log = None
        if args.engine == "vllm":
            from distill_doctor.produce.lm_eval_vllm import log_path_for

            log = log_path_for(out)
            try:
                result = _run_vllm(args, model_dir, items, log, folder if args.keep_samples else None)
            except EngineError as err:  # the engine is an environment, like the disk: exit 2, one line
                print(f"distill-doctor eval: vLLM engine failed ({label}): {err}", file=sys.stderr)
                return 2
            if args.keep_samples:
                # lm-eval's own file, copied under its own name (timestamped: the newest is this run's)
                kept = max(folder.glob(f"samples_{result.task}_*.jsonl"), default=None)
        else:
            result = _run_hf(args, model_dir, items)
            if args.keep_samples:
                kept = write_samples(folder / samples_filename(result.task), result.samples)
        write_outputs(out, result.outputs)
        if not args.quiet:
            _summary(label, model_dir, out, kept, result, items, args.max_new_tokens)
            if log is not None:
                print(f"  lm-eval (vllm backend) log: {log}")
    return 0


def _run_hf(args: argparse.Namespace, model_dir: Path, items):
    """lm-eval's HFLM in this process; the model is freed when this returns."""
    from distill_doctor.produce.lm_eval_runner import load_hflm, run_items

    lm = load_hflm(
        model_dir, device=args.device, batch_size=args.batch_size, dtype=args.dtype, quiet=args.quiet
    )
    return run_items(
        lm,
        items,
        items_path=args.items,
        max_gen_toks=args.max_new_tokens,
        until=args.until,
        limit=args.limit,
        seed=args.seed,
        quiet=args.quiet,
    )


def _run_vllm(args: argparse.Namespace, model_dir: Path, items, log: Path, keep: Path | None):
    """lm-eval's vllm backend in .venv-vllm (a subprocess logging to ``log``)."""
    from distill_doctor.produce.lm_eval_vllm import run_items_vllm

    return run_items_vllm(
        model_dir,
        items[: args.limit] if args.limit is not None else items,
        items_path=args.items,
        log_path=log,
        max_gen_toks=args.max_new_tokens,
        until=args.until,
        dtype=args.dtype,
        seed=args.seed,
        batch_size=args.batch_size,
        enforce_eager=args.device == "cpu",
        keep_samples_in=keep,
        quiet=args.quiet,
    )


def _summary(label, model_dir, out, kept, result, items, requested: int) -> None:
    """One accuracy story: the verifier's accuracy is the accuracy; lm-eval's own metric is shown
    labelled as lm-eval's, with its filter and how often it agrees with the verifier per item."""
    from distill_doctor.produce.lm_eval_runner import logged_scores
    from distill_doctor.verify import verify_outputs
    from distill_doctor.verify.agreement import best_pair

    scored = items[: len(result.outputs)]
    verdicts = verify_outputs(scored, {o.id: o for o in result.outputs})
    passed = sum(v.passed for v in verdicts.values())
    n = len(verdicts)
    budget = f"max_gen_toks {result.max_gen_toks}"
    if result.max_gen_toks < requested:
        budget += f" (lowered from {requested} to fit the model's maximum length)"
    print(
        f"{label}: {model_dir} -> {out}: accuracy {passed / max(n, 1):.3f} ({passed}/{n} items pass the verifier), "
        f"{budget}, {result.seconds:.1f} s",
        file=sys.stdout,
    )
    scores = logged_scores(result, scored)
    if scores.values:
        best, _ = best_pair(scores, verdicts, [it.id for it in scored])
        logged = scores.values[(best.metric, best.filter)]
        mean = sum(logged.values()) / len(logged) if logged else float("nan")
        print(
            f"  lm-eval's own {best.metric} (filter {best.filter}): {mean:.3f}; "
            f"it agrees with the verifier on {best.agree}/{best.n} items"
            + (
                " (lm-eval compares the whole generated text with the reference)"
                if best.filter == "none"
                else ""
            )
        )
    if kept is not None:
        print(f"  lm-eval samples: {kept}")
