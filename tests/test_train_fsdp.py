"""Sharded training for every method: FSDP2 and DeepSpeed ZeRO-3 on 2 CPU processes over gloo.

One ``accelerate launch`` per scheme (a config file selecting FSDP2 or ZeRO-3,
``ACCELERATE_USE_CPU=true``) runs all its jobs through ``fsdp_cpu_worker.py``, which also says
why accelerate needs a nudge to shard on CPU; the 1-process references run in this process.
2 processes x grad_accum a see the same micro-batches per step as 1 process x grad_accum 2a, so
losses, loss-token counts and gradient norms agree to float rounding. Sampling is greedy
(``temperature: 0``) in the equivalence jobs: each process draws from its own RNG stream, so
only greedy samples can match across process counts; the resume jobs sample at temperature 1 to
check that the RNG states come back with the sharded checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from train_helpers import read_metrics, toy_setup

from distill_doctor.train import run_training

pytestmark = pytest.mark.slow

COMMON_CONFIG = """\
compute_environment: LOCAL_MACHINE
num_machines: 1
num_processes: 2
machine_rank: 0
mixed_precision: 'no'
use_cpu: true
"""
FSDP2_CONFIG = """\
distributed_type: FSDP
fsdp_config:
  fsdp_version: 2
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_state_dict_type: SHARDED_STATE_DICT
  fsdp_cpu_ram_efficient_loading: true
  fsdp_reshard_after_forward: true
"""
ZERO3_CONFIG = """\
distributed_type: DEEPSPEED
deepspeed_config:
  zero_stage: 3
  gradient_accumulation_steps: 1
  gradient_clipping: 1.0
  offload_optimizer_device: none
  offload_param_device: none
  zero3_init_flag: true
"""


@dataclass(frozen=True)
class Scheme:
    name: str
    config: str
    grad_accum: int  # per process; the 1-process reference uses twice as many
    saved_shards: str  # how the checkpoint's model files start
    refused: tuple[str, ...] = ()  # jobs of METHODS the scheme refuses up front


SCHEMES = {
    "fsdp2": Scheme("fsdp2", FSDP2_CONFIG, 2, "pytorch_model_fsdp"),
    # grad_accum 1: accelerate's DeepSpeed backward also steps the engine (the run refuses more)
    "zero3": Scheme("zero3", ZERO3_CONFIG, 1, "pytorch_model", refused=("logit_kd_chunked",)),
}
GREEDY = {"temperature": 0.0, "max_new_tokens": 6}
METHODS = {  # name: (method, extra config fields)
    "sft": ("sft", {"teacher": None}),
    "logit_kd": ("logit_kd", {}),
    "logit_kd_chunked": ("logit_kd", {"loss": {"chunked": True, "chunk_size": 16}}),
    "gkd": ("gkd", {"gkd": {"lmbda": 1.0, **GREEDY}}),
    "skd": ("skd", {"skd": {"top_k": 2, **GREEDY}}),  # completions of different lengths per process
}
SAMPLED_GKD = {"lmbda": 0.5, "temperature": 1.0, "max_new_tokens": 6}  # coins and samples from the RNGs


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


def launch(root: Path, scheme: Scheme, jobs: list[dict], *, cpu: bool = True) -> None:
    common = COMMON_CONFIG if cpu else COMMON_CONFIG.replace("use_cpu: true", "use_cpu: false")
    (root / "jobs.json").write_text(json.dumps(jobs), encoding="utf-8")
    (root / "accelerate.yaml").write_text(common + scheme.config, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if cpu:
        env["ACCELERATE_USE_CPU"] = "true"
    worker = Path(__file__).with_name("fsdp_cpu_worker.py")
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(root / "accelerate.yaml"),
    ]
    args = [*command, str(worker), str(root / "jobs.json")]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 and _native_abort(proc.stderr):
        # DeepSpeed's CPU collectives now and then abort a rank in native code on a loaded 2-core
        # host ("terminate called without an active exception", SIGABRT): not our code, and not a
        # wrong result. Run the same jobs once more from clean output folders.
        for job in jobs:
            shutil.rmtree(job["output_dir"], ignore_errors=True)
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"accelerate launch failed ({proc.returncode}):\n{proc.stderr[-4000:]}")


def _native_abort(stderr: str) -> bool:
    """A rank killed in native code (abort or a signal), as opposed to a Python error in our worker."""
    return "terminate called" in stderr or "Signal 6 (SIGABRT)" in stderr


@pytest.fixture(scope="module", params=list(SCHEMES))
def runs(request, tmp_path_factory) -> tuple[Scheme, Path]:
    """All jobs of one scheme in one launch, then the 1-process references here."""
    scheme = SCHEMES[request.param]
    if scheme.name == "zero3":
        pytest.importorskip("deepspeed")
    root = tmp_path_factory.mktemp(scheme.name)
    accum = scheme.grad_accum
    jobs = [
        {
            "method": method,
            "fields": fields(root, f"{name}-sharded", grad_accum=accum, **extra),
            "refusal": name in scheme.refused,
        }
        for name, (method, extra) in METHODS.items()
    ]
    resume = fields(root, "gkd-resumed", grad_accum=accum, gkd=SAMPLED_GKD)
    jobs += [
        {"method": "gkd", "fields": fields(root, "gkd-whole", grad_accum=accum, gkd=SAMPLED_GKD)},
        {"method": "gkd", "fields": {**resume, "stop_at_step": 2}},
        {"method": "gkd", "fields": {**resume, "resume": True}},
    ]
    launch(root, scheme, jobs)
    for name, (method, extra) in METHODS.items():
        if name not in scheme.refused:
            run_training(method, fields(root, f"{name}-one", grad_accum=2 * accum, **extra))
    return scheme, root


def test_the_student_is_really_sharded(runs):
    """Not a silent fallback to data parallelism: each process holds half of the student."""
    scheme, root = runs
    for name in set(METHODS) - set(scheme.refused):
        for rank in (0, 1):
            check = json.loads((root / f"{name}-sharded" / f"fsdp_check.rank{rank}.json").read_text())
            assert check["sharding"] == scheme.name
            assert 0.45 < check["local_share"] < 0.55


@pytest.mark.parametrize("name", list(METHODS))
def test_two_sharded_processes_equal_one_process_with_more_accumulation(runs, name):
    scheme, root = runs
    if name in scheme.refused:
        refused = json.loads((root / f"{name}-sharded" / "refused.json").read_text())
        assert refused["field"] == "loss.chunked" and "ZeRO-3" in refused["message"]
        return
    sharded, one = read_metrics(root / f"{name}-sharded"), read_metrics(root / f"{name}-one")
    assert [m["step"] for m in sharded] == [1, 2, 3, 4]
    assert [m["loss_tokens"] for m in sharded] == [m["loss_tokens"] for m in one]
    for a, b in zip(sharded, one):
        assert abs(a["loss"] - b["loss"]) < 1e-5
        assert abs(a["grad_norm"] - b["grad_norm"]) < 1e-5
    assert (root / f"{name}-sharded" / "model.safetensors").is_file()  # the full weights were gathered


def test_sharded_resume_reproduces_the_uninterrupted_run(runs):
    from safetensors.torch import load_file

    scheme, root = runs
    whole, resumed = read_metrics(root / "gkd-whole"), read_metrics(root / "gkd-resumed")
    assert [m["step"] for m in resumed] == [1, 2, 3, 4]
    for a, b in zip(whole, resumed):
        for key in ("loss", "loss_tokens", "grad_norm", "on_policy_fraction", "lr"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), key
    assert 0 < sum(m["on_policy_fraction"] for m in whole) < 4  # both coin sides were drawn
    checkpoint = root / "gkd-resumed" / "checkpoints" / "step-000002"
    assert any(p.name.startswith(scheme.saved_shards) for p in checkpoint.iterdir())
    a = load_file(root / "gkd-whole" / "model.safetensors")
    b = load_file(root / "gkd-resumed" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all((a[k] - b[k]).abs().max() < 1e-6 for k in a)


@pytest.mark.gpu
def test_fsdp2_on_two_gpus_equals_one_gpu(tmp_path):
    """The same equivalence on 2 CUDA devices (the worker's CPU nudge does nothing there)."""
    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA devices")
    scheme = SCHEMES["fsdp2"]
    names = ("sft", "logit_kd_chunked", "gkd", "skd")
    jobs = [
        {"method": METHODS[n][0], "fields": fields(tmp_path, f"{n}-sharded", grad_accum=2, **METHODS[n][1])}
        for n in names
    ]
    launch(tmp_path, scheme, jobs, cpu=False)
    for name in names:
        method, extra = METHODS[name]
        one = read_metrics(run_training(method, fields(tmp_path, f"{name}-one", grad_accum=4, **extra)))
        sharded = read_metrics(tmp_path / f"{name}-sharded")
        assert [m["loss_tokens"] for m in sharded] == [m["loss_tokens"] for m in one]
        for a, b in zip(sharded, one):
            assert abs(a["loss"] - b["loss"]) < 1e-4  # GPU reductions differ with the process count


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_lora_sharded_saves_what_one_process_saves(tmp_path, scheme):
    """LoRA gkd on 2 sharded processes: the gathered adapter and merged weights equal a 1-process run's.

    peft cannot save or merge a sharded student; the main process rebuilds it whole from the
    gathered state dict (also for ``best/``, saved by the evaluation every 2 steps). The sharded
    run stops at step 2 and resumes from its sharded checkpoint.
    """
    from safetensors.torch import load_file

    scheme = SCHEMES[scheme]
    if scheme.name == "zero3":
        pytest.importorskip("deepspeed")
    lora = {"use_peft": True, "lora_r": 2, "eval_steps": 2, "gkd": {"lmbda": 1.0, **GREEDY}}
    lora["eval_data"] = str(toy_setup().data)
    sharded_fields = fields(tmp_path, "sharded", grad_accum=scheme.grad_accum, **lora)
    jobs = [{**sharded_fields, "stop_at_step": 2}, {**sharded_fields, "resume": True}]  # through a checkpoint
    launch(tmp_path, scheme, [{"method": "gkd", "fields": f} for f in jobs])
    run_training("gkd", fields(tmp_path, "one", grad_accum=2 * scheme.grad_accum, **lora))
    sharded, one = tmp_path / "sharded", tmp_path / "one"
    assert json.loads((sharded / "fsdp_check.rank1.json").read_text())["sharding"] == scheme.name
    assert [m["step"] for m in read_metrics(sharded)] == [1, 2, 3, 4]
    assert (sharded / "checkpoints" / "step-000002").is_dir()
    for a, b in zip(read_metrics(sharded), read_metrics(one), strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-5
    for sub in ("", "best/"):
        for name in ("adapter/adapter_model.safetensors", "model.safetensors"):
            a, b = load_file(sharded / f"{sub}{name}"), load_file(one / f"{sub}{name}")
            assert a.keys() == b.keys() and a
            assert all((a[k] - b[k]).abs().max() < 1e-5 for k in a), f"{sub}{name}"
    adapter = load_file(one / "adapter" / "adapter_model.safetensors")
    assert any(k.endswith("lora_B.weight") and v.abs().max() > 0 for k, v in adapter.items())  # it trained
