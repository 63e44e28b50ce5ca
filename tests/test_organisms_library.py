"""The organism library is part of the package: the demo finds the organisms from any working
directory, and the layers it sits on stay below it (data below verify, produce below diagnose,
``testing`` imported only by the organisms layer)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from distill_doctor.errors import InputError
from distill_doctor.organisms import discover, planted_mode

REPO = Path(__file__).resolve().parents[1]
ORG = REPO / "fixtures" / "organisms"
PACKAGE = REPO / "distill_doctor"


@pytest.mark.skipif(not (ORG / "items.jsonl").exists(), reason="organisms not built")
def test_discover_resolves_every_organism_from_another_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    found = {o.name: o for o in discover(ORG)}
    assert set(found) == {
        "capacity_gap",
        "clean",
        "contamination",
        "exposure_bias",
        "superficial_imitation",
        "teacher_error_transfer",
    }
    assert found["teacher_error_transfer"].teacher_model == ORG / "models" / "teacher_buggy"
    assert found["exposure_bias"].items == ORG / "exposure_bias" / "items.jsonl"
    assert found["clean"].items == ORG / "items.jsonl"
    assert [planted_mode(n) for n in ("clean", "capacity_gap", "other")] == ["none", "capacity_gap", None]


def test_discover_refuses_a_folder_without_organisms(tmp_path):
    with pytest.raises(InputError, match="no model organisms here"):
        discover(tmp_path)


@pytest.mark.skipif(not (ORG / "items.jsonl").exists(), reason="organisms not built")
def test_demo_runs_outside_the_checkout(tmp_path):
    """``python -m distill_doctor demo --fixtures <checkout>/fixtures/organisms`` from a temporary
    working directory, the package imported from the checkout: one organism, committed outputs."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "distill_doctor",
            "demo",
            "--no-eval",
            "--organisms",
            "clean",
            "--fixtures",
            str(ORG),
            "--out",
            str(out),
            "--quiet",
        ],  # fmt: skip
        cwd=tmp_path,
        env={**_env(), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "clean" / "report.json").is_file()
    assert "clean" in proc.stdout


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
