"""Exact resume: a run stopped (or killed) at step k and resumed reproduces the uninterrupted run."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import make_cfg, read_metrics, toy_setup

from distill_doctor.train import run_training
from distill_doctor.train.checkpoint import list_checkpoints

TRACKED = (
    "loss",
    "soft_loss",
    "hard_loss",
    "kl",
    "lr",
    "grad_norm",
    "loss_tokens",
    "on_policy_fraction",
    "replaced_fraction",
)


@pytest.fixture(scope="module")
def setup():
    return toy_setup()


def assert_same_trajectory(a: list[dict], b: list[dict]) -> None:
    assert [m["step"] for m in a] == [m["step"] for m in b]
    for x, y in zip(a, b):
        for key in TRACKED:
            if x.get(key) is None:
                assert y.get(key) is None
            else:
                assert abs(x[key] - y[key]) < 1e-6, (x["step"], key, x[key], y[key])


def assert_same_weights(dir_a, dir_b) -> None:
    wa, wb = load_file(str(dir_a / "model.safetensors")), load_file(str(dir_b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


CASES = {
    "sft": {"grad_accum": 2, "batch_size": 4},
    "gkd": {"gkd": {"lmbda": 0.5, "temperature": 1.0, "max_new_tokens": 4}},
    "skd": {"skd": {"top_k": 3, "temperature": 1.0, "max_new_tokens": 3}, "steps": 6},
}


@pytest.mark.parametrize("method", sorted(CASES))
def test_stop_and_resume_reproduces_the_uninterrupted_run(setup, tmp_path, method):
    fields = {"steps": 8, **CASES[method]}
    full = run_training(method, make_cfg(setup, tmp_path / "full", method, **fields))

    part = tmp_path / "part"
    stop = fields["steps"] // 2 - 1
    run_training(method, make_cfg(setup, part, method, stop_at_step=stop, **fields))
    assert [m["step"] for m in read_metrics(part)] == list(range(1, stop + 1))
    assert not (part / "model.safetensors").exists()
    run_training(method, make_cfg(setup, part, method, resume=True, **fields))

    full_metrics = read_metrics(full)
    if method == "gkd":  # the coin flips really varied, so the RNG state mattered
        assert {m["on_policy_fraction"] for m in full_metrics} == {0.0, 1.0}
    assert_same_trajectory(full_metrics, read_metrics(part))
    assert_same_weights(full, part)


def test_kill_after_an_unsaved_step_resumes_from_the_last_checkpoint(setup, tmp_path):
    fields = {"steps": 7, "save_every": 2, "gkd": {"lmbda": 0.5, "temperature": 1.0, "max_new_tokens": 4}}
    full = run_training("gkd", make_cfg(setup, tmp_path / "full", "gkd", **fields))

    part = tmp_path / "part"
    run_training("gkd", make_cfg(setup, part, "gkd", stop_at_step=5, **fields))
    # Simulate a kill after step 5 was logged but before it was saved: only step-4 survives.
    for ckpt in list_checkpoints(part):
        if ckpt.name != "step-000004":
            shutil.rmtree(ckpt)
    assert [m["step"] for m in read_metrics(part)] == [1, 2, 3, 4, 5]
    run_training("gkd", make_cfg(setup, part, "gkd", resume=True, **fields))
    assert_same_trajectory(read_metrics(full), read_metrics(part))
    assert_same_weights(full, part)
    assert [c.name for c in list_checkpoints(part)] == ["step-000004", "step-000006"]


def test_resume_without_a_checkpoint_is_an_error(setup, tmp_path):
    from distill_doctor.errors import InputError

    # Starting fresh would silently throw away what the user meant to continue (issue 18).
    with pytest.raises(InputError, match="no checkpoint to resume") as info:
        run_training("sft", make_cfg(setup, tmp_path / "r", "sft", steps=3, resume=True))
    assert info.value.field == "output_dir"
    assert not (tmp_path / "r" / "metrics.jsonl").exists()


def test_overwrite_starts_over_in_a_used_directory(setup, tmp_path):
    out = tmp_path / "o"
    run_training("sft", make_cfg(setup, out, "sft", steps=4, stop_at_step=2))
    run_training("sft", make_cfg(setup, out, "sft", steps=3, overwrite=True))
    assert [m["step"] for m in read_metrics(out)] == [1, 2, 3]
    assert list_checkpoints(out) == []


def test_resume_refuses_a_changed_data_order(setup, tmp_path):
    from distill_doctor.errors import InputError

    out = tmp_path / "c"
    run_training("sft", make_cfg(setup, out, "sft", steps=4, stop_at_step=2))
    with pytest.raises(InputError) as info:
        run_training("sft", make_cfg(setup, out, "sft", steps=4, resume=True, batch_size=4))
    assert info.value.field == "batch_size" and "step-000002" in str(info.value)
