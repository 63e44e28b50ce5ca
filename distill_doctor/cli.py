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
import traceback

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
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # that command is not part of this build
                continue
            raise
        module.register(sub)
    for command in sub.choices.values():  # accepted after the command name too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


DEBUG_HELP = "print the full traceback of an internal error (exit 3) or of an input error"
EXIT_OK, EXIT_FAILED_CHECK, EXIT_USER_ERROR, EXIT_INTERNAL_ERROR = 0, 1, 2, 3


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER_ERROR
    debug = bool(getattr(args, "debug", False)) or os.environ.get("DISTILL_DOCTOR_DEBUG") == "1"
    name = f"distill-doctor {args.command}"
    try:
        return int(args.func(args) or 0)
    except InputError as err:
        return _fail(name, f"error: {err}", EXIT_USER_ERROR, debug)
    except KeyboardInterrupt:
        print("distill-doctor: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (`| head`): not an error of ours
        _silence_stdout()
        return EXIT_OK
    except OSError as err:  # the environment: disk full, read-only, permission denied, too many files
        where = f"{err.filename}: " if err.filename else ""
        return _fail(name, f"error: {where}{err.strerror or err}", EXIT_USER_ERROR, debug)
    except MemoryError:
        return _fail(name, "error: out of memory", EXIT_USER_ERROR, debug)
    except Exception as err:  # noqa: BLE001 - the last line of defence: one line, exit 3
        what = " ".join(str(err).split())[:300]
        hint = "" if debug else " (rerun with --debug for the traceback)"
        return _fail(
            name,
            f"internal error: {type(err).__name__}: {what}{hint}; please report it",
            EXIT_INTERNAL_ERROR,
            debug,
        )


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the flush at exit does not raise into a closed pipe
    (the recipe of Python's ``signal`` docs)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout replaced (tests) or already gone
        pass


def _fail(name: str, message: str, code: int, debug: bool) -> int:
    """Print one line (the traceback first under ``--debug``) and return ``code``."""
    if debug:
        traceback.print_exc(file=sys.stderr)
    # One line, and printable whatever the input held (a lone surrogate in a field name, a CR).
    line = " ".join(message.splitlines()).encode("utf-8", "backslashreplace").decode("utf-8")
    print(f"{name}: {line}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
