"""Resumable checkpoints: everything needed to continue a run as if it had never stopped.

A checkpoint is ``output_dir/checkpoints/step-000123/`` holding what ``Accelerator.save_state``
writes (model weights, optimizer, the registered learning-rate scheduler, and the python / numpy
/ torch / CUDA RNG states of every process; sharded for FSDP and DeepSpeed) plus
``trainer_state.json`` (step, micro-batch position in the data order, seed). It is written
into a hidden temporary folder and renamed when complete, so a crash mid-save never leaves a
half checkpoint that ``latest_checkpoint`` would pick.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from distill_doctor.atomic import atomic_write_text

STATE_FILE = "trainer_state.json"
PREFIX = "step-"


def checkpoints_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(PREFIX) and (p / STATE_FILE).is_file()]
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
        atomic_write_text(tmp / STATE_FILE, json.dumps(state, indent=2, sort_keys=True) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: str | Path) -> dict:
    """Restore model, optimizer, scheduler and RNG states from ``path``; return its trainer state."""
    path = Path(path)
    _quiet_accelerate()
    accelerator.load_state(str(path))
    return json.loads((path / STATE_FILE).read_text(encoding="utf-8"))


def _quiet_accelerate() -> None:
    # Saving a model with tied embeddings logs "Removed shared tensor ..." at WARNING: expected here.
    logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)
    logging.getLogger("accelerate.checkpointing").setLevel(logging.ERROR)
    logging.getLogger("accelerate.accelerator").setLevel(logging.ERROR)
