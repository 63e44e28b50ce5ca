"""TRL's field names are accepted for the same settings; unknown fields come in file order with a suggestion."""

from __future__ import annotations

import textwrap

import pytest

from distill_doctor.errors import InputError
from distill_doctor.train.config import load_config

TRL_GKD = """\
model_name_or_path: s
teacher_model_name_or_path: t
dataset_name: d.jsonl
dataset_train_split: train
output_dir: out
learning_rate: 2.0e-5
per_device_train_batch_size: 4
gradient_accumulation_steps: 8
max_steps: 1000
lr_scheduler_type: cosine
bf16: true
gradient_checkpointing: true
use_peft: true
lora_r: 64
lora_alpha: 16
lmbda: 0.7
beta: 0.2
temperature: 0.9
max_new_tokens: 128
seq_kd: true
"""

OURS_GKD = """\
student: s
teacher: t
data: d.jsonl
dataset_split: train
output_dir: out
lr: 2.0e-5
batch_size: 4
grad_accum: 8
steps: 1000
schedule: cosine
mixed_precision: bf16
gradient_checkpointing: true
use_peft: true
lora_r: 64
lora_alpha: 16
gkd: {lmbda: 0.7, beta: 0.2, temperature: 0.9, max_new_tokens: 128, seq_kd: true}
"""


def write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_a_trl_gkd_recipe_is_the_same_config_as_ours(tmp_path):
    trl = load_config(write(tmp_path, TRL_GKD, "trl.yaml"), method="gkd")
    ours = load_config(write(tmp_path, OURS_GKD, "ours.yaml"), method="gkd")
    assert trl == ours


def test_method_dependent_names(tmp_path):
    path = write(
        tmp_path,
        "model_name_or_path: s\nteacher_model_name_or_path: t\ndataset_name: d\n"
        "output_dir: o\nbeta: 0.3\ntemperature: 2.0\n",
    )
    kd = load_config(path, method="logit_kd")
    assert (kd.loss.beta, kd.loss.temperature) == (0.3, 2.0)
    skd = load_config(path, ["max_new_tokens=9"], method="skd")
    assert (skd.skd.temperature, skd.skd.max_new_tokens) == (2.0, 9)


def test_one_setting_under_two_names_is_refused_with_its_line(tmp_path):
    path = write(tmp_path, "student: s\ndata: d\noutput_dir: o\nlr: 0.1\nlearning_rate: 0.2\n")
    with pytest.raises(InputError, match="set twice") as info:
        load_config(path, method="sft")
    assert info.value.line == 5 and info.value.field == "learning_rate"


def test_the_command_line_wins_over_the_file_under_either_name(tmp_path):
    path = write(tmp_path, "student: s\ndata: d\noutput_dir: o\nlearning_rate: 0.2\n")
    assert load_config(path, ["lr=0.5"], method="sft").lr == 0.5
    assert load_config(path, ["learning_rate=0.7", "bf16=true"], method="sft").mixed_precision == "bf16"


def test_unknown_fields_in_file_order_with_did_you_mean(tmp_path):
    path = write(
        tmp_path, "student: s\ndata: d\noutput_dir: o\nzeta: 1\nlerning_rate: 0.1\nwarmup_stepz: 3\n"
    )
    with pytest.raises(InputError) as info:
        load_config(path, method="sft")
    err = info.value
    assert err.field == "zeta" and err.line == 4
    assert (
        "also unknown: 'lerning_rate' (did you mean 'learning_rate'?), 'warmup_stepz' (did you mean 'warmup_steps'?)"
        in err.message
    )


def test_unknown_nested_field_suggests_the_close_name(tmp_path):
    path = write(tmp_path, "student: s\ndata: d\noutput_dir: o\ngkd:\n  lambda: 0.5\n")
    with pytest.raises(InputError, match="did you mean 'lmbda'") as info:
        load_config(path, method="gkd")
    assert info.value.field == "gkd.lambda"


def test_shipped_chat_lora_config_is_valid():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "configs" / "sft_chat_lora.yaml"
    cfg = load_config(path, method="sft")
    assert cfg.use_peft and cfg.gradient_checkpointing and cfg.torch_dtype == "bfloat16"
