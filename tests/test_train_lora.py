"""LoRA composes with every training path: on-policy sampling through the peft model, chunked losses."""

from __future__ import annotations

import pytest
from train_helpers import make_cfg, read_metrics, toy_setup

from distill_doctor.train import run_training


@pytest.mark.parametrize(
    ("method", "fields"),
    [
        ("gkd", {"gkd": {"lmbda": 1.0, "max_new_tokens": 4}}),
        ("skd", {"skd": {"max_new_tokens": 3}}),
        ("sft", {"loss": {"chunked": True}}),
        ("logit_kd", {"loss": {"chunked": True}}),
    ],
)
def test_lora_with_every_method_and_path(tmp_path, method, fields):
    out = run_training(
        method, make_cfg(toy_setup(), tmp_path / "run", method, steps=2, use_peft=True, lora_r=2, **fields)
    )
    assert [m["step"] for m in read_metrics(out)] == [1, 2]
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and (out / "model.safetensors").is_file()
