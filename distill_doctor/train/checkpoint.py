"""Resumable checkpoints: everything needed to continue a run as if it had never stopped.

A checkpoint is ``output_dir/checkpoints/step-000123/`` holding what ``Accelerator.save_state``
writes (model weights, optimizer, the registered learning-rate scheduler, and the python / numpy
/ torch / CUDA RNG states of every process; sharded for FSDP and DeepSpeed) plus
``trainer_state.json`` (step, micro-batch position in the data order, seed, and the size of every
file of the checkpoint). It is written into a hidden temporary folder and renamed when complete,
so a crash mid-save never leaves a half checkpoint that ``latest_checkpoint`` would pick.

A checkpoint damaged afterwards (a file truncated by a full disk or a bad copy, the state file
cut) is found on resume: :func:`load_resumable` checks the recorded sizes, tries to load, and
falls back to the newest intact checkpoint, saying which one it skipped and why.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from distill_doctor.atomic import atomic_write_text
from distill_doctor.errors import InputError

STATE_FILE = "trainer_state.json"
PREFIX = "step-"
_NAME = re.compile(r"^step-(\d+)$")


def checkpoints_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def save_checkpoint(accelerator, output_dir: str | Path, state: dict, *, keep: int) -> Path:
    """Save the accelerator's registered objects + ``state`` (must hold ``step``); prune to ``keep`` newest."""
    root = checkpoints_dir(output_dir)
    final = root / f"{PREFIX}{int(state['step']):06d}"
    tmp = root / f".tmp-{final.name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    _quiet_accelerate()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {**state, "files": _file_sizes(tmp)}
        atomic_write_text(tmp / STATE_FILE, json.dumps(state, indent=2, sort_keys=True) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in list_checkpoints(output_dir)[:-keep]:
            _remove(old)
        for leftover in root.glob(".del-*"):  # from a kill during an earlier prune
            shutil.rmtree(leftover, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _file_sizes(folder: Path) -> dict[str, int]:
    """``{relative path: bytes}`` of every file under ``folder`` except the state file."""
    return {
        str(p.relative_to(folder)): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != STATE_FILE
    }


def _remove(path: Path) -> None:
    """Delete a checkpoint: first renamed out of the ``step-*`` names, so a kill mid-delete never
    leaves a half-deleted folder that looks like a checkpoint."""
    doomed = path.with_name(f".del-{path.name}")
    try:
        path.rename(doomed)
    except OSError:
        doomed = path
    shutil.rmtree(doomed, ignore_errors=True)


def read_state(path: str | Path) -> dict:
    """The checkpoint's trainer state, checked: an ``InputError`` says what is wrong with it."""
    path = Path(path)
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"{STATE_FILE} is unreadable ({err})", path=path) from None
    if not isinstance(state, dict) or not all(isinstance(state.get(k), int) for k in ("step", "micro_index")):
        raise InputError(f"{STATE_FILE} lacks its step or micro_index", path=path)
    if not isinstance(state.get("config", {}), dict) or not isinstance(state.get("files", {}), dict):
        raise InputError(f"{STATE_FILE} is damaged (config or files is not a mapping)", path=path)
    for name, size in (state.get("files") or {}).items():
        file = path / name
        if not file.is_file():
            raise InputError(f"{name} is missing", path=path)
        if file.stat().st_size != size:
            raise InputError(f"{name} has {file.stat().st_size:,} bytes, {size:,} were saved", path=path)
    return state


def load_checkpoint(accelerator, path: str | Path) -> dict:
    """Restore model, optimizer, scheduler and RNG states from ``path``; return its trainer state.

    A checkpoint that fails its size check or does not load is an ``InputError`` naming it.
    """
    from distill_doctor.devices import model_load_errors

    path = Path(path)
    state = read_state(path)
    _quiet_accelerate()
    errors: tuple[type[BaseException], ...] = (*model_load_errors(), KeyError)
    try:
        accelerator.load_state(str(path))
    except errors as err:
        raise InputError(f"does not load: {' '.join(str(err).split())[:200]}", path=path) from None
    return state


def load_resumable(accelerator, output_dir: str | Path, note: Callable[[str], None]) -> tuple[Path, dict]:
    """Load the newest checkpoint that is intact; ``note`` says which newer ones were skipped and why.

    Raises ``InputError`` when there is no checkpoint, or when none of them loads.
    """
    found = list_checkpoints(output_dir)
    if not found:
        raise InputError(
            "resume was asked for, but there is no checkpoint to resume in it (checkpoints/step-*); "
            "drop --resume to start a new run",
            path=output_dir,
            field="output_dir",
        )
    problems = []
    for path in reversed(found):
        try:
            state = load_checkpoint(accelerator, path)
        except InputError as err:
            problems.append(str(err))
            note(f"checkpoint {path.name} is damaged ({err.message}); trying the one before it")
            continue
        if problems:
            note(f"resuming from {path.name}, the newest intact checkpoint")
        return path, state
    raise InputError(
        f"no checkpoint loads ({len(found)} tried); newest: {problems[0]}",
        path=output_dir,
        field="output_dir",
    )


def _quiet_accelerate() -> None:
    # Saving a model with tied embeddings logs "Removed shared tensor ..." at WARNING: expected here.
    logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)
    logging.getLogger("accelerate.checkpointing").setLevel(logging.ERROR)
    logging.getLogger("accelerate.accelerator").setLevel(logging.ERROR)
