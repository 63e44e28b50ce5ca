"""Training a draft for acceptance (DistillSpec): ``gkd.divergence = tv`` on student samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from train_helpers import make_cfg, read_metrics, toy_setup
from transformers import AutoModelForCausalLM, AutoTokenizer

from distill_doctor.errors import InputError
from distill_doctor.speculative.acceptance import load_pair, token_acceptance
from distill_doctor.train import run_training
from distill_doctor.train.config import TrainConfig, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_the_distillspec_recipe_loads_as_on_policy_tv():
    cfg = load_config(CONFIGS / "distillspec.yaml")
    assert cfg.method == "gkd" and cfg.gkd.divergence == "tv" and 0 < cfg.gkd.lmbda <= 1
    assert yaml.safe_load((CONFIGS / "distillspec.yaml").read_text())["gkd"]["divergence"] == "tv"


def test_an_unknown_gkd_divergence_is_refused():
    with pytest.raises(InputError) as err:
        TrainConfig(
            method="gkd", student="s", teacher="t", data="d", output_dir="o", gkd={"divergence": "tvd"}
        )
    assert err.value.field == "gkd.divergence"


def _acceptance(setup, student_dir) -> float:
    teacher, student, tok = load_pair(setup.teacher, student_dir)
    rows = [json.loads(x) for x in setup.data.read_text().splitlines()]
    got = token_acceptance(teacher, student, tok, [(r["id"], r["prompt"], r["response"]) for r in rows])
    return float(sum(g.accept.sum() for g in got) / sum(len(g.accept) for g in got))


def test_on_policy_tv_training_raises_acceptance(tmp_path):
    setup = toy_setup()
    gkd = {"lmbda": 1.0, "max_new_tokens": 4, "divergence": "tv", "temperature": 1.0}
    out = run_training("gkd", make_cfg(setup, tmp_path / "spec", "gkd", steps=20, lr=1e-2, gkd=gkd))
    metrics = read_metrics(out)
    assert all(m["on_policy_fraction"] == 1.0 for m in metrics)
    before, after = _acceptance(setup, setup.student), _acceptance(setup, out)
    assert after > before + 0.1, (before, after)
    # the trained model is an ordinary checkpoint
    AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    AutoTokenizer.from_pretrained(out)
