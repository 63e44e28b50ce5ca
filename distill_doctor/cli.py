"""The ``distill-doctor`` command line: one mapping from command names to plain functions.

Each command lives in its own module, which exposes ``register(subparsers)``: it adds its
parser and sets ``func`` to a plain ``run(args) -> int``. User mistakes raise
:class:`~distill_doctor.errors.InputError` and become one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from distill_doctor import __version__
from distill_doctor.errors import InputError

# (module, what it provides), in the order `--help` lists them.
COMMAND_MODULES = (
    "distill_doctor.diagnose.command",  # diagnose
    "distill_doctor.reports.command",  # report, gate
    "distill_doctor.train.command",  # train <method>
    "distill_doctor.produce.eval_command",  # eval
    "distill_doctor.produce.generate_command",  # generate
    "distill_doctor.demo",  # demo (the README's main job)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distill-doctor",
        description="Train LLM distillation runs and diagnose their failure modes "
        "(data quality -> student capacity -> train-test mismatch -> provenance).",
    )
    parser.add_argument("--version", action="version", version=f"distill-doctor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # that command is not part of this build
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except InputError as err:
        print(f"distill-doctor {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("distill-doctor: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
