"""gkd and skd training with the vLLM engine (colocated and server), against HF generate, and an engine death.

A real engine process in ``.venv-vllm`` per run (about 20-30 s to load on CPU): slow tier.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from vllm_toy import ORGANISMS, build_toy, metrics, spy_on_engine_starts

from distill_doctor.train import vllm_client
from distill_doctor.train.command import run_training
from distill_doctor.train.config import GKDConfig, SKDConfig, TrainConfig

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        vllm_client.unavailable_reason() is not None, reason=str(vllm_client.unavailable_reason())
    ),
]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return build_toy(tmp_path_factory.mktemp("vllm-train"))


def cfg_for(toy, out: Path, method: str, **fields) -> TrainConfig:
    base = TrainConfig(
        method=method,
        student=str(toy / "student"),
        teacher=str(ORGANISMS / "sort_teacher"),
        data=str(toy / "train.jsonl"),
        output_dir=str(out),
        steps=3,
        batch_size=4,
        lr=1e-2,
        max_len=64,
        quiet=True,
        gkd=GKDConfig(lmbda=1.0, temperature=0.0, max_new_tokens=12),
        skd=SKDConfig(top_k=3, temperature=0.0, max_new_tokens=12),
    )
    return dataclasses.replace(base, **fields)


@pytest.mark.parametrize(
    ("method", "mode", "lora"),
    [("gkd", "server", False), ("skd", "colocate", False), ("gkd", "colocate", True)],
)
def test_greedy_training_with_vllm_equals_training_with_hf_generate(
    toy, tmp_path, monkeypatch, method, mode, lora
):
    """At temperature 0 the engine, given the student's weights after every step, samples what HF generate
    samples: the two runs see the same completions, so their losses agree step for step. With LoRA the
    adapters are merged into what is pushed (they start at zero: only pushes after step 1 show them)."""
    opened = spy_on_engine_starts(monkeypatch, "vllm_engine")
    peft = {"use_peft": True, "lora_r": 8, "lr": 5e-2} if lora else {}
    run_training(method, cfg_for(toy, tmp_path / "hf", method, **peft))
    run_training(method, cfg_for(toy, tmp_path / "vllm", method, use_vllm=True, vllm_mode=mode, **peft))
    hf, vl = metrics(tmp_path / "hf"), metrics(tmp_path / "vllm")
    assert [m["step"] for m in vl] == [1, 2, 3]
    assert [m["loss"] for m in vl] == pytest.approx([m["loss"] for m in hf], rel=1e-4)
    assert all(m["engine_weights_lag"] == 0 for m in vl)
    assert (tmp_path / "vllm" / "model.safetensors").exists()
    assert len(opened) == 1 and opened[0].process.poll() is not None  # the trainer stopped its engine
    if mode == "server":
        assert opened[0].base_url.startswith("http://127.0.0.1:")


def test_sync_every_n_steps_is_recorded_as_lag(toy, tmp_path):
    out = tmp_path / "lag"
    run_training("gkd", cfg_for(toy, out, "gkd", steps=4, use_vllm=True, vllm_sync_every=2))
    assert [m["engine_weights_lag"] for m in metrics(out)] == [0, 1, 0, 1]


def test_a_server_that_dies_stops_training_with_one_line_and_keeps_the_checkpoint(
    toy, tmp_path, monkeypatch, capsys
):
    from distill_doctor.cli import main
    from distill_doctor.train.vllm_engine import VLLMSampler

    opened = spy_on_engine_starts(monkeypatch, "vllm_engine")
    real_after_step = VLLMSampler.after_step

    def die_after_step_2(self, model, step):
        real_after_step(self, model, step)
        if step == 2:
            opened[0].process.kill()
            opened[0].process.wait()

    monkeypatch.setattr(VLLMSampler, "after_step", die_after_step_2)
    out = tmp_path / "dies"
    config = tmp_path / "gkd.yaml"
    config.write_text(
        cfg_for(toy, out, "gkd", steps=4, save_every=1, use_vllm=True, vllm_mode="server").to_yaml()
    )
    code = main(["train", "gkd", "--config", str(config), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "generation engine failed" in err[0] and "Traceback" not in err[0]
    assert "not answering" in err[0] and "at step 3" in err[0] and "step-000002" in err[0]
    assert (out / "checkpoints" / "step-000002").is_dir() and not (out / "model.safetensors").exists()
    assert [m["step"] for m in metrics(out)] == [1, 2]


def test_a_server_started_elsewhere_is_filled_with_the_student_and_left_running(toy, tmp_path):
    """``vllm_server_port`` set: the trainer connects, pushes the student's weights first (the server holds
    another model's), trains like HF generate would, and leaves the server running."""
    spec = vllm_client.EngineSpec(model=str(toy / "student"), max_model_len=256)
    server = vllm_client.start_server(spec)
    try:
        # put other weights in it first, so only the trainer's push can make its samples right
        from transformers import AutoModelForCausalLM

        from distill_doctor.train.vllm_engine import VLLMSampler

        other = AutoModelForCausalLM.from_pretrained(str(toy / "student"))
        for p in other.parameters():
            p.data.normal_(0, 0.5)
        VLLMSampler(server, tokenizer_vocab=47, model_vocab=47, sync_every=1).push(other, step=0)
        port = int(server.base_url.rsplit(":", 1)[1])
        run_training("gkd", cfg_for(toy, tmp_path / "hf", "gkd"))
        run_training(
            "gkd",
            cfg_for(toy, tmp_path / "vllm", "gkd", use_vllm=True, vllm_mode="server", vllm_server_port=port),
        )
        assert [m["loss"] for m in metrics(tmp_path / "vllm")] == pytest.approx(
            [m["loss"] for m in metrics(tmp_path / "hf")], rel=1e-4
        )
        assert server.call("/health", {})["status"] == "ok"  # not stopped by the trainer
    finally:
        server.close()
