"""Fault injection (issue 18): a full disk while reports are written, kill -9 and damage during
checkpoint writes. Nothing is lost: the old report set stays whole, resume falls back to the
newest intact checkpoint and says so, and the resumed run matches the uninterrupted one."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_hostile_inputs import cli, diagnose_args, run_files, write_jsonl  # noqa: F401 - fixture
from train_helpers import read_metrics, tiny_student, write_addition_data

import distill_doctor.atomic as atomic
from distill_doctor.atomic import atomic_write_set
from distill_doctor.errors import InputError
from distill_doctor.train import run_training
from distill_doctor.train.checkpoint import list_checkpoints
from distill_doctor.train.config import TrainConfig

REPORTS = ("report.json", "report.md", "report.html")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ---------------------------------------------------------------- the report set


def test_a_failed_rename_restores_the_old_set(tmp_path, monkeypatch):
    atomic_write_set(tmp_path, {name: b"old " + name.encode() for name in REPORTS})
    before = snapshot(tmp_path)
    real, calls = os.replace, []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the second new file cannot be renamed into place
            raise OSError(errno.EIO, "Input/output error", str(dst))
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", flaky)
    with pytest.raises(OSError, match="Input/output"):
        atomic_write_set(tmp_path, {name: b"new " + name.encode() for name in REPORTS})
    assert snapshot(tmp_path) == before  # report.json restored from its backup, no temporaries left


def test_a_full_disk_while_staging_leaves_the_old_set(tmp_path, monkeypatch):
    atomic_write_set(tmp_path, {name: b"old" for name in REPORTS})
    before = snapshot(tmp_path)
    real, staged = atomic._stage, []

    def third_fails(path, data):
        if len(staged) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        staged.append(path)
        return real(path, data)

    monkeypatch.setattr(atomic, "_stage", third_fails)
    with pytest.raises(OSError, match="No space"):
        atomic_write_set(tmp_path, {name: b"new" for name in REPORTS})
    assert snapshot(tmp_path) == before


def test_first_write_of_a_set_creates_all_files(tmp_path):
    written = atomic_write_set(tmp_path / "new" / "dir", {name: name.encode() for name in REPORTS})
    assert [p.name for p in written] == list(REPORTS)
    assert all(p.read_bytes() == p.name.encode() for p in written)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 320 KiB tmpfs (root only): real ENOSPC, not a monkeypatched one."""
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=320k", "tmpfs", str(disk)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill the file system up to the last byte, then free ``leave`` bytes."""
    spare = disk / "spare"
    spare.write_bytes(b"\0" * leave)
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as fh:  # unbuffered: nothing left to flush at close
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC
    spare.unlink()
    return filler


def test_rerun_on_a_full_disk_keeps_the_old_report_set(capsys, run_files, tmp_path, tiny_disk):  # noqa: F811
    out = tiny_disk / "run"
    code, err = cli(capsys, *diagnose_args(run_files, out))
    assert code == 0, err
    before = snapshot(out)
    assert set(before) == set(REPORTS)

    worse = [json.loads(ln) for ln in run_files["student"].read_text().splitlines()]
    for row in worse[::2]:
        row["output"] = "#### 0"  # a different accuracy: every file of the new set would differ
    student = write_jsonl(tmp_path / "student.jsonl", worse)
    # Room for the new report.json and report.md but not report.html: writing the files one by
    # one (each freeing its old copy) used to leave new .json/.md beside the old .html.
    page = 4096
    pages = {name: -(-len(data) // page) * page for name, data in before.items()}
    leave = pages["report.json"] + pages["report.md"] + page
    assert pages["report.html"] > leave
    filler = fill(tiny_disk, leave)
    code, err = cli(capsys, *diagnose_args(run_files, out, student=student))
    assert code == 2 and "No space left on device" in err
    assert snapshot(out) == before  # the old, complete set; no temporaries

    filler.unlink()
    code, err = cli(capsys, *diagnose_args(run_files, out, student=student))
    after = snapshot(out)
    assert code == 0 and set(after) == set(REPORTS)
    assert all(after[name] != before[name] for name in REPORTS)


# ---------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    return tiny_student(root / "student"), write_addition_data(root / "train.jsonl", n=32)


def config(toy, out: Path, **fields) -> TrainConfig:
    student, data = toy
    base = dict(method="sft", student=str(student), data=str(data), output_dir=str(out), steps=6,
                batch_size=8, lr=5e-3, save_every=2, keep_checkpoints=3, quiet=True)  # fmt: skip
    return TrainConfig(**{**base, **fields})


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def full_run(toy, tmp_path_factory):
    """The uninterrupted run every interrupted one must reproduce."""
    return run_training("sft", config(toy, tmp_path_factory.mktemp("full") / "out"))


KILL_MID_SAVE = textwrap.dedent(
    """
    import os, signal, sys
    from accelerate import Accelerator
    from distill_doctor.train import run_training
    from distill_doctor.train.config import TrainConfig

    real = Accelerator.save_state

    def save_state(self, output_dir=None, **kw):
        out = real(self, output_dir, **kw)
        if str(output_dir).endswith("step-000004"):  # weights written, state file and rename not yet
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    Accelerator.save_state = save_state
    run_training("sft", TrainConfig(**eval(sys.argv[1])))
    """
)


@pytest.mark.slow  # ~20 s: a fresh interpreter imports torch, transformers and accelerate
def test_kill_9_mid_checkpoint_then_resume_reproduces_the_run(toy, tmp_path, full_run, capsys):
    out = tmp_path / "out"
    cfg = config(toy, out)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", KILL_MID_SAVE, repr(cfg.to_dict())], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == -9, done.stderr[-2000:]
    assert [p.name for p in list_checkpoints(out)] == ["step-000002"]  # the half save is not a checkpoint
    assert (out / "checkpoints" / ".tmp-step-000004").is_dir()

    run_training("sft", config(toy, out, resume=True))
    assert [m["step"] for m in read_metrics(out)] == [1, 2, 3, 4, 5, 6]
    assert same_weights(out, full_run)


def stopped_run(toy, out: Path) -> Path:
    run_training("sft", config(toy, out, stop_at_step=4))
    assert [p.name for p in list_checkpoints(out)] == ["step-000002", "step-000004"]
    return out


def test_resume_falls_back_from_a_truncated_checkpoint_and_says_so(toy, tmp_path, full_run, capsys):
    out = stopped_run(toy, tmp_path / "out")
    weights = out / "checkpoints" / "step-000004" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"step": 5, "loss": 0.1')  # a line cut by the same crash

    run_training("sft", config(toy, out, resume=True))
    err = capsys.readouterr().err
    assert "checkpoint step-000004 is damaged (model.safetensors has 100 bytes" in err
    assert "resuming from step-000002, the newest intact checkpoint" in err
    assert [m["step"] for m in read_metrics(out)] == [1, 2, 3, 4, 5, 6]
    assert same_weights(out, full_run)


def test_resume_falls_back_from_a_cut_state_file(toy, tmp_path, capsys):
    out = stopped_run(toy, tmp_path / "out")
    state = out / "checkpoints" / "step-000004" / "trainer_state.json"
    state.write_text(state.read_text()[:20])
    run_training("sft", config(toy, out, resume=True))
    assert "step-000004 is damaged (trainer_state.json is unreadable" in capsys.readouterr().err
    assert [m["step"] for m in read_metrics(out)] == [1, 2, 3, 4, 5, 6]


def test_resume_with_every_checkpoint_damaged_is_exit_2(toy, tmp_path, capsys):
    out = stopped_run(toy, tmp_path / "out")
    for ckpt in list_checkpoints(out):
        (ckpt / "model.safetensors").write_bytes(b"")
    with pytest.raises(InputError, match="no checkpoint loads"):
        run_training("sft", config(toy, out, resume=True))


def test_a_checkpoint_that_fails_to_load_is_skipped(toy, tmp_path, full_run, capsys):
    out = stopped_run(toy, tmp_path / "out")
    # Same size, garbage content: the size check passes, the load itself fails.
    weights = out / "checkpoints" / "step-000004" / "model.safetensors"
    weights.write_bytes(b"\xff" * weights.stat().st_size)
    run_training("sft", config(toy, out, resume=True))
    assert "step-000004 is damaged (does not load" in capsys.readouterr().err
    assert same_weights(out, full_run)
