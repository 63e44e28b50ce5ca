"""FSDP2 for every method: 2 CPU processes over gloo equal 1 process; resume under FSDP is exact.

One ``accelerate launch`` (config file selecting FSDP2, ``ACCELERATE_USE_CPU=true``) runs all
jobs through ``fsdp_cpu_worker.py`` (which also says why accelerate needs a nudge to shard on
CPU); the 1-process references run in this process. 2 processes x grad_accum 2 see the same
micro-batches per step as 1 process x grad_accum 4, so losses, loss-token counts and gradient
norms agree to float rounding. Sampling is greedy (``temperature: 0``) in the equivalence jobs:
each process draws from its own RNG stream, so only greedy samples can match across process
counts; the resume job samples at temperature 1 to check that the RNG states come back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import read_metrics, toy_setup

from distill_doctor.train import run_training

pytestmark = pytest.mark.slow

FSDP_CPU_CONFIG = """\
compute_environment: LOCAL_MACHINE
distributed_type: FSDP
num_machines: 1
num_processes: 2
machine_rank: 0
mixed_precision: 'no'
use_cpu: true
fsdp_config:
  fsdp_version: 2
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_state_dict_type: SHARDED_STATE_DICT
  fsdp_cpu_ram_efficient_loading: true
  fsdp_reshard_after_forward: true
"""

GREEDY = {"temperature": 0.0, "max_new_tokens": 6}
METHODS = {  # name: (method, extra config fields)
    "sft": ("sft", {"teacher": None}),
    "logit_kd": ("logit_kd", {}),
    "logit_kd_chunked": ("logit_kd", {"loss": {"chunked": True, "chunk_size": 16}}),
    "gkd": ("gkd", {"gkd": {"lmbda": 1.0, **GREEDY}}),
    "skd": ("skd", {"skd": {"top_k": 2, **GREEDY}}),  # completions of different lengths per process
}
RESUMED = {"gkd": {"lmbda": 0.5, "temperature": 1.0, "max_new_tokens": 6}}  # coins and samples from the RNGs


def fields(root: Path, name: str, **extra) -> dict:
    setup = toy_setup()
    base = {
        "student": str(setup.student),
        "teacher": str(setup.teacher),
        "data": str(setup.data),
        "output_dir": str(root / name),
        "steps": 4,
        "batch_size": 4,
        "lr": 5e-3,
        "quiet": True,
    }
    return {**base, **extra}


def launch_fsdp(root: Path, jobs: list[dict]) -> None:
    (root / "jobs.json").write_text(json.dumps(jobs), encoding="utf-8")
    (root / "fsdp_cpu.yaml").write_text(FSDP_CPU_CONFIG, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    worker = Path(__file__).with_name("fsdp_cpu_worker.py")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(root / "fsdp_cpu.yaml")]
    subprocess.run([*command, str(worker), str(root / "jobs.json")], env=env, check=True, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """All FSDP jobs in one launch, then the 1-process references here."""
    root = tmp_path_factory.mktemp("fsdp")
    jobs = [
        {"method": method, "fields": fields(root, f"{name}-fsdp", grad_accum=2, **extra)}
        for name, (method, extra) in METHODS.items()
    ]
    resume = fields(root, "gkd-resumed", grad_accum=2, gkd=RESUMED["gkd"])
    jobs += [
        {"method": "gkd", "fields": fields(root, "gkd-whole", grad_accum=2, gkd=RESUMED["gkd"])},
        {"method": "gkd", "fields": {**resume, "stop_at_step": 2}},
        {"method": "gkd", "fields": {**resume, "resume": True}},
    ]
    launch_fsdp(root, jobs)
    for name, (method, extra) in METHODS.items():
        run_training(method, fields(root, f"{name}-one", grad_accum=4, **extra))
    return root


def test_the_student_is_really_sharded(runs):
    """Not a silent fallback to data parallelism: each process holds half of the student."""
    for name in METHODS:
        for rank in (0, 1):
            check = json.loads((runs / f"{name}-fsdp" / f"fsdp_check.rank{rank}.json").read_text())
            assert check["sharding"] == "fsdp2"
            assert 0.45 < check["local_share"] < 0.55


@pytest.mark.parametrize("name", list(METHODS))
def test_two_fsdp_processes_equal_one_process_with_more_accumulation(runs, name):
    fsdp, one = read_metrics(runs / f"{name}-fsdp"), read_metrics(runs / f"{name}-one")
    assert [m["step"] for m in fsdp] == [1, 2, 3, 4]
    assert [m["loss_tokens"] for m in fsdp] == [m["loss_tokens"] for m in one]
    for a, b in zip(fsdp, one):
        assert abs(a["loss"] - b["loss"]) < 1e-5
        assert abs(a["grad_norm"] - b["grad_norm"]) < 1e-5
    assert (runs / f"{name}-fsdp" / "model.safetensors").is_file()  # the full state dict was gathered


def test_fsdp_resume_reproduces_the_uninterrupted_run(runs):
    from safetensors.torch import load_file

    whole, resumed = read_metrics(runs / "gkd-whole"), read_metrics(runs / "gkd-resumed")
    assert [m["step"] for m in resumed] == [1, 2, 3, 4]
    for a, b in zip(whole, resumed):
        for key in ("loss", "loss_tokens", "grad_norm", "on_policy_fraction", "lr"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), key
    assert 0 < sum(m["on_policy_fraction"] for m in whole) < 4  # both coin sides were drawn
    checkpoint = runs / "gkd-resumed" / "checkpoints" / "step-000002"
    assert any(p.name.startswith("pytorch_model_fsdp") for p in checkpoint.iterdir())  # sharded save
    a = load_file(runs / "gkd-whole" / "model.safetensors")
    b = load_file(runs / "gkd-resumed" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all((a[k] - b[k]).abs().max() < 1e-6 for k in a)
