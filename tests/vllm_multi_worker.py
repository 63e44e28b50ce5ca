"""Training jobs on 2 CPU processes under FSDP2 with ``use_vllm``, for ``test_vllm_multiprocess.py``.

    ACCELERATE_USE_CPU=true accelerate launch --config_file fsdp.yaml tests/vllm_multi_worker.py jobs.json

The jobs of ``fsdp_cpu_worker.py`` (same nudge that gives CPU processes FSDP2, same
``fsdp_check.rank<N>.json``), plus two job options:

* ``"cli": true`` runs the job through ``distill-doctor train`` (``cli.main``) from a config file and
  records each process's exit code and stderr lines as ``cli.rank<N>.json`` in its output directory;
* ``"kill_pid_after_step": [PID, N]``: the main process kills the engine server PID (SIGKILL) after
  optimizer step N's weight push, as a crash of the engine would.
* ``"kill_teacher_at_step": [PID, N]``: the main process kills a served teacher's server PID (SIGKILL)
  just before it scores step N.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import time
from pathlib import Path

import torch
from fsdp_cpu_worker import exit_without_teardown, record_sharding, select_sharding_on_cpu


def kill_engine_after_step(pid: int, after: int) -> None:
    from distill_doctor.train.vllm_engine import SharedSampler

    real = SharedSampler.after_step

    def after_step(self, model, step):
        real(self, model, step)
        if step == after and self.is_main:
            os.kill(pid, signal.SIGKILL)
            while Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid):
                time.sleep(0.1)

    SharedSampler.after_step = after_step  # type: ignore[method-assign]


def kill_teacher_before_scoring(pid: int, step: int) -> None:
    """The main process kills the teacher's server PID (SIGKILL) just before it scores step ``step``."""
    from accelerate.state import PartialState

    from distill_doctor.train.vllm_teacher import ServedTeacher

    real = ServedTeacher.score
    calls = []

    def score(self, batches):
        calls.append(1)
        if len(calls) == step and PartialState().is_main_process:
            os.kill(pid, signal.SIGKILL)
            while Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid):
                time.sleep(0.1)
        return real(self, batches)

    ServedTeacher.score = score  # type: ignore[method-assign]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


def run_cli(job: dict, rank: int) -> None:
    """The job through the command line: exit code and stderr lines of this process."""
    from distill_doctor.cli import main
    from distill_doctor.train.config import config_from_dict

    out = Path(job["fields"]["output_dir"])
    config = out.parent / f"{out.name}.rank{rank}.yaml"
    config.write_text(config_from_dict({**job["fields"], "method": job["method"]}).to_yaml())
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["train", job["method"], "--config", str(config), "--quiet"])
    out.mkdir(parents=True, exist_ok=True)
    lines = err.getvalue().strip().splitlines()
    (out / f"cli.rank{rank}.json").write_text(json.dumps({"code": code, "stderr": lines}))


def main(jobs_file: str) -> None:
    from accelerate.state import PartialState

    from distill_doctor.train import run_training

    torch.set_num_threads(1)
    select_sharding_on_cpu()
    record_sharding()
    for job in json.loads(Path(jobs_file).read_text(encoding="utf-8")):
        if "kill_pid_after_step" in job:
            kill_engine_after_step(*job["kill_pid_after_step"])
        if "kill_teacher_at_step" in job:
            kill_teacher_before_scoring(*job["kill_teacher_at_step"])
        if job.get("cli"):
            run_cli(job, PartialState().process_index)
        else:
            run_training(job["method"], job["fields"])
    exit_without_teardown()


if __name__ == "__main__":
    main(sys.argv[1])
