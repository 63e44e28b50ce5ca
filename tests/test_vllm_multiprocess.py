"""``use_vllm`` with 2 processes under FSDP2 and ZeRO-3 (CPU, gloo): one engine serves both, against HF generate.

One ``accelerate launch`` runs every job (``vllm_multi_worker.py``): greedy gkd with the engine the
main process starts, greedy skd and LoRA gkd with a server this test started
(``vllm_server_port``), each next to the same job sampled with HF generate (the gather-once path),
and a run whose engine is killed after step 2. Two engine starts in all (about 30-60 s each here).
A second launch runs greedy gkd under ZeRO-3 with ``vllm_mode: colocate`` (one more engine start).

Why the losses must agree: at temperature 0 both paths sample the argmax of the same weights (the
engine gets the gathered student after every step), so the two runs train on the same token ids and
compute their losses with the same code on the same batches; the only room left is a near-tie
between two logits that the engine's CPU kernels and torch's order differently, which would change
a token and move the loss far more than the 1e-5 allowed (the 1-process test allows 1e-4).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_train_fsdp import COMMON_CONFIG, FSDP2_CONFIG, ZERO3_CONFIG
from vllm_toy import ORGANISMS, build_toy, metrics

from distill_doctor.train import vllm_client
from distill_doctor.train.config import GKDConfig, SKDConfig, TrainConfig

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        vllm_client.unavailable_reason() is not None, reason=str(vllm_client.unavailable_reason())
    ),
]

STEPS = 3
MAX_LEN, MAX_NEW = 64, 12


def toy(root: Path) -> None:
    build_toy(root)


def fields(root: Path, name: str, method: str, **extra) -> dict:
    cfg = TrainConfig(
        method=method,
        student=str(root / "student"),
        teacher=str(ORGANISMS / "sort_teacher"),
        data=str(root / "train.jsonl"),
        output_dir=str(root / name),
        steps=STEPS,
        batch_size=4,
        grad_accum=1,
        lr=1e-2,
        max_len=MAX_LEN,
        quiet=True,
        gkd=GKDConfig(lmbda=1.0, temperature=0.0, max_new_tokens=MAX_NEW),
        skd=SKDConfig(top_k=3, temperature=0.0, max_new_tokens=MAX_NEW),
    )
    return {**cfg.to_dict(), **extra}


def launch(root: Path, scheme: str, jobs: list[dict]) -> None:
    """All jobs in one ``accelerate launch`` of 2 CPU processes under ``scheme`` (an accelerate config part)."""
    (root / "jobs.json").write_text(json.dumps(jobs))
    (root / "accelerate.yaml").write_text(COMMON_CONFIG + scheme)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    worker = Path(__file__).with_name("vllm_multi_worker.py")
    config = ["--config_file", str(root / "accelerate.yaml")]
    args = [sys.executable, "-m", "accelerate.commands.launch", *config, str(worker), str(root / "jobs.json")]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(f"accelerate launch failed ({proc.returncode}):\n{proc.stderr[-4000:]}")


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm-multi")
    toy(root)
    spec = vllm_client.EngineSpec(model=str(root / "student"), max_model_len=MAX_LEN + MAX_NEW)
    log = open(root / "external_server.log", "w")  # noqa: SIM115 (closed below)
    server = vllm_client.start_server(spec, log=log)  # someone else's server: the trainer only fills it
    assert server.process is not None
    port = int(server.base_url.rsplit(":", 1)[1])
    external = {"use_vllm": True, "vllm_mode": "server", "vllm_server_port": port}
    lora = {"use_peft": True, "lora_r": 8, "lr": 5e-2}
    sampled = {"steps": 4, "gkd": {"lmbda": 0.5, "temperature": 1.0, "max_new_tokens": MAX_NEW}}
    jobs: list[dict] = [
        {"method": "gkd", "fields": fields(root, "gkd-hf", "gkd")},
        {"method": "gkd", "fields": fields(root, "gkd-vllm", "gkd", use_vllm=True, vllm_mode="server")},
        {"method": "skd", "fields": fields(root, "skd-hf", "skd")},
        {"method": "skd", "fields": fields(root, "skd-vllm", "skd", **external)},
        {"method": "gkd", "fields": fields(root, "lora-hf", "gkd", **lora)},
        {"method": "gkd", "fields": fields(root, "lora-vllm", "gkd", **lora, **external)},
        {"method": "gkd", "fields": fields(root, "sampled-whole", "gkd", **sampled, **external)},
        {
            "method": "gkd",
            "fields": {**fields(root, "sampled-resumed", "gkd", **sampled, **external), "stop_at_step": 2},
        },
        {
            "method": "gkd",
            "fields": {**fields(root, "sampled-resumed", "gkd", **sampled, **external), "resume": True},
        },
        {  # last: the engine dies after step 2 and stays dead
            "method": "gkd",
            "fields": fields(root, "dies", "gkd", steps=4, save_every=1, **external),
            "cli": True,
            "kill_pid_after_step": [server.process.pid, 2],
        },
    ]
    try:
        launch(root, FSDP2_CONFIG, jobs)
    finally:
        server.close()
        log.close()
    return root


@pytest.mark.parametrize("name", ["gkd", "skd", "lora"])
def test_two_processes_sampling_from_one_engine_equal_hf_generate(launched, name):
    hf, vl = metrics(launched / f"{name}-hf"), metrics(launched / f"{name}-vllm")
    assert [m["step"] for m in vl] == list(range(1, STEPS + 1))
    assert [m["loss_tokens"] for m in vl] == [m["loss_tokens"] for m in hf]
    assert [m["loss"] for m in vl] == pytest.approx([m["loss"] for m in hf], rel=1e-5)
    assert [m["engine_weights_lag"] for m in vl] == [0] * STEPS
    assert all(m["engine_sync_s"] > 0 for m in vl[1:])  # the push after step 1 is logged with step 2
    for rank in (0, 1):
        check = json.loads((launched / f"{name}-vllm" / f"fsdp_check.rank{rank}.json").read_text())
        assert check["sharding"] == "fsdp2" and 0.45 < check["local_share"] < 0.55
    assert (launched / f"{name}-vllm" / "model.safetensors").is_file()


def test_the_main_process_started_the_engine_of_the_first_run(launched):
    log = (launched / "gkd-vllm" / "vllm_engine.log").read_text()
    assert "vllm_server: listening on http://127.0.0.1:" in log


def test_a_sampled_run_stopped_and_resumed_asks_the_engine_for_the_same_samples(launched):
    """Coins from python's RNG, seeds from torch's, both per process in the sharded checkpoint: the
    resumed run (a fresh connection, the student pushed again) reproduces the uninterrupted one."""
    whole, resumed = metrics(launched / "sampled-whole"), metrics(launched / "sampled-resumed")
    assert [m["step"] for m in resumed] == [1, 2, 3, 4]
    for a, b in zip(whole, resumed, strict=True):
        for key in ("loss", "loss_tokens", "on_policy_fraction"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), key
    assert 0 < sum(m["on_policy_fraction"] for m in whole) < 4  # both coin sides were drawn


def test_an_engine_that_dies_stops_every_process_with_exit_2_and_one_line(launched):
    out = launched / "dies"
    main, other = (json.loads((out / f"cli.rank{r}.json").read_text()) for r in (0, 1))
    assert main["code"] == other["code"] == 2
    assert len(main["stderr"]) == 1 and other["stderr"] == []
    line = main["stderr"][0]
    assert line.startswith("distill-doctor train: generation engine failed: ")
    assert "not answering" in line and "at step 3" in line and "step-000002" in line
    assert (out / "checkpoints" / "step-000002").is_dir() and not (out / "model.safetensors").exists()
    assert [m["step"] for m in metrics(out)] == [1, 2]


def test_zero3_processes_sampling_from_one_colocated_engine_equal_hf_generate(tmp_path):
    """ZeRO-3 (the 16-bit consolidation gathers the pushed weights) with ``vllm_mode: colocate``, which
    under several processes is an HTTP engine that rank 0 starts on 127.0.0.1."""
    pytest.importorskip("deepspeed")
    toy(tmp_path)
    colocate = {"use_vllm": True, "vllm_mode": "colocate"}
    jobs: list[dict] = [
        {"method": "gkd", "fields": fields(tmp_path, "hf", "gkd")},
        {"method": "gkd", "fields": fields(tmp_path, "vllm", "gkd", **colocate)},
    ]
    launch(tmp_path, ZERO3_CONFIG, jobs)
    hf, vl = metrics(tmp_path / "hf"), metrics(tmp_path / "vllm")
    assert [m["loss_tokens"] for m in vl] == [m["loss_tokens"] for m in hf]
    assert [m["loss"] for m in vl] == pytest.approx([m["loss"] for m in hf], rel=1e-5)
    assert [m["engine_weights_lag"] for m in vl] == [0] * STEPS
    check = json.loads((tmp_path / "vllm" / "fsdp_check.rank1.json").read_text())
    assert check["sharding"] == "zero3" and 0.45 < check["local_share"] < 0.55
