"""``distill-doctor train <method> --config cfg.yaml [--set key=value ...]``: run one distillation method.

Multi-GPU: ``accelerate launch --config_file ddp.yaml -m distill_doctor train sft --config cfg.yaml``
(see docs/training.md). Exit 0 when the run finished (or stopped at ``stop_at_step``), 1 when
training diverged (non-finite loss), 2 on bad input.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from distill_doctor.errors import InputError
from distill_doctor.train.config import METHODS, TrainConfig, config_from_dict, describe_fields, load_config


def run_training(method: str, cfg: TrainConfig | dict | str | Path) -> Path:
    """Train with ``method`` (sft, logit_kd, gkd, skd); return the output directory.

    ``cfg`` is a :class:`TrainConfig`, a mapping of its fields, or a YAML config path; for the
    last two, ``method`` fills the config's ``method``.
    """
    import importlib

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if isinstance(cfg, (str, Path)):
        cfg = load_config(cfg, method=method)
    elif isinstance(cfg, dict):
        if cfg.get("method") not in (None, method):
            raise InputError(f"says method {cfg['method']!r} but {method!r} was asked for", field="method")
        cfg = config_from_dict({**cfg, "method": method})
    if cfg.method != method:
        raise ValueError(f"config says method {cfg.method!r} but {method!r} was asked for")
    train = getattr(importlib.import_module(f"distill_doctor.train.{method}"), f"train_{method}")
    return train(cfg)


def register(subparsers) -> None:
    fields = "\n".join(
        f"  {name:<24} {help} ({'required' if default == '' else f'default {default!r}'})"
        for name, help, default in describe_fields()
    )
    p = subparsers.add_parser(
        "train",
        help="train a student by distillation (sft, logit_kd, gkd, skd)",
        description="Train a student with one distillation method. Settings come from a YAML config; "
        "--set overrides any field (dotted for groups).",
        epilog="config fields:\n"
        + fields
        + "\n\nTRL / transformers names are accepted for the same settings (model_name_or_path, "
        "learning_rate, per_device_train_batch_size, bf16, lmbda, ...): see docs/training.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "method",
        type=_method_name,
        choices=METHODS,
        help="sft (sequence KD), logit_kd (also spelled logit-kd), gkd (on-policy), skd (speculative)",
    )
    p.add_argument("--config", type=Path, help="YAML config file (fields listed below)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set loss.beta=0.5 (repeatable; values parse as YAML)",
    )
    p.add_argument("--seed", type=int, help="override the config's seed")
    p.add_argument("--output-dir", type=str, help="override the config's output_dir")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in output_dir")
    p.add_argument("--quiet", action="store_true", help="no progress bar or notes")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="load model, tokenizer and data, print the first training example as one JSON line "
        '{"input_text": ..., "trained_text": ...} and exit 0 without training',
    )
    p.set_defaults(func=run)


def _method_name(text: str) -> str:
    """Accept the dashed spelling too (``logit-kd``), as the command line usually writes it."""
    return text.replace("-", "_")


def run(args: argparse.Namespace) -> int:
    from distill_doctor.train.engine import TrainingError
    from distill_doctor.train.vllm_client import EngineError

    cfg = load_config(
        args.config,
        args.overrides,
        method=args.method,
        seed=args.seed,
        output_dir=args.output_dir,
        resume=True if args.resume else None,
        quiet=True if args.quiet else None,
    )
    if getattr(args, "dry_run", False):
        import json

        from distill_doctor.train.prepare import dry_run

        print(json.dumps(dry_run(cfg), ensure_ascii=False))
        return 0
    try:
        out = run_training(args.method, cfg)
    except TrainingError as err:
        print(f"distill-doctor train: training stopped: {err}", file=sys.stderr)
        return 1
    except EngineError as err:  # the generation (or teacher) engine, vLLM, is an environment: exit 2
        if os.environ.get("RANK", "0") == "0":  # every process raises it together: one line, not one each
            print(f"distill-doctor train: {err.role} failed: {err}", file=sys.stderr)
        return 2
    if not cfg.quiet:
        print(f"output: {out}")
    return 0
