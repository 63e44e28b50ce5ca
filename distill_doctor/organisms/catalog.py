"""The model organisms on disk: find them under a fixtures folder and name the failure each was
planted with. Used by ``distill-doctor demo`` and its closed loop, from any working directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distill_doctor.errors import InputError


@dataclass(frozen=True)
class Organism:
    """One organism folder with its teacher and student model directories and its items file."""

    name: str
    folder: Path
    teacher_model: Path
    student_model: Path
    items: Path  # the organism's own items.jsonl, else the shared one


def discover(fixtures: Path, names: list[str] | None = None) -> list[Organism]:
    """Organism folders under ``fixtures``, each with its teacher model resolved from its manifest."""
    from distill_doctor.data import load_manifest

    if not (fixtures / "items.jsonl").is_file():
        raise InputError(
            "no model organisms here (expected items.jsonl); run from the repository root or pass --fixtures",
            path=fixtures,
        )
    found = []
    for folder in sorted(p for p in fixtures.iterdir() if p.is_dir()):
        if not (folder / "model" / "config.json").is_file() or not (folder / "provenance.yaml").is_file():
            continue
        teacher_name = str((load_manifest(folder / "provenance.yaml").get("teacher") or {}).get("name", ""))
        teacher_dir = fixtures / "models" / teacher_name.rsplit("/", 1)[-1]
        if not (teacher_dir / "config.json").is_file():
            teacher_dir = fixtures / "models" / "teacher"
        items = folder / "items.jsonl" if (folder / "items.jsonl").is_file() else fixtures / "items.jsonl"
        found.append(Organism(folder.name, folder, teacher_dir, folder / "model", items))
    if names:
        unknown = sorted(set(names) - {o.name for o in found})
        if unknown:
            raise InputError(
                f"unknown organism(s) {', '.join(unknown)}; have {', '.join(o.name for o in found)}"
            )
        found = [o for o in found if o.name in names]
    if not found:
        raise InputError("no organism folders (with model/ and provenance.yaml) found", path=fixtures)
    return found


def planted_mode(name: str) -> str | None:
    """The failure an organism was planted with, read from its folder name: a mode name, or
    ``none`` for the control (``clean``); ``None`` for a folder named otherwise."""
    from distill_doctor.probes.base import MODES

    if name in MODES:
        return name
    return "none" if name == "clean" else None
