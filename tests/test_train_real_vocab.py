"""Training on the real Qwen2.5 vocabulary (151,936 embedding rows): every method, chunked and cached
paths, --dry-run, LoRA, gradient checkpointing, evaluation, trackers and diagnose on the result."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import read_metrics

from distill_doctor.errors import InputError
from distill_doctor.train import TrainConfig, run_training

QUESTIONS = [("What is 2+3?", "5"), ("Name a colour.", "Blue."), ("Say hi.", "Hi!"), ("3*3?", "9")]


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("chat") / "train.jsonl"
    rows = [
        {"id": f"c{i}", "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for i, (q, a) in enumerate(QUESTIONS)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def cfg(qwen, data, out, method, **fields) -> TrainConfig:
    base = dict(
        method=method,
        student=str(qwen.student),
        teacher=str(qwen.teacher),
        data=str(data),
        output_dir=str(out),
        steps=2,
        batch_size=2,
        lr=1e-3,
        max_len=48,
        quiet=True,
    )
    return TrainConfig(**{**base, **fields})


@pytest.mark.parametrize(
    ("method", "fields"),
    [
        ("sft", {}),
        pytest.param("sft", {"loss": {"chunked": True, "chunk_size": 16}}, marks=pytest.mark.slow),
        pytest.param("logit_kd", {}, marks=pytest.mark.slow),
        pytest.param("logit_kd", {"loss": {"chunked": True, "chunk_size": 16}}, marks=pytest.mark.slow),
        ("gkd", {"gkd": {"lmbda": 1.0, "max_new_tokens": 4}}),
        pytest.param("skd", {"skd": {"top_k": 5, "max_new_tokens": 4}}, marks=pytest.mark.slow),
    ],
    ids=["sft", "sft-chunked", "logit_kd", "logit_kd-chunked", "gkd", "skd"],
)
def test_every_method_trains_at_152k(qwen152k, chat_data, tmp_path, method, fields):
    out = run_training(method, cfg(qwen152k, chat_data, tmp_path / "run", method, **fields))
    metrics = read_metrics(out)
    assert [m["step"] for m in metrics] == [1, 2] and all(m["loss_tokens"] > 0 for m in metrics)
    assert load_file(str(out / "model.safetensors"))["model.embed_tokens.weight"].shape == (151_936, 64)


def test_on_policy_samples_stop_at_the_end_of_turn(qwen152k, chat_data, tmp_path):
    from distill_doctor.train.engine import Run
    from distill_doctor.train.gkd import with_completions

    run = Run.start(cfg(qwen152k, chat_data, tmp_path / "run", "gkd", gkd={"lmbda": 1.0}), needs_teacher=True)
    assert run.stop_ids == [151645]
    batch = with_completions(run, run.next_micro_batches()[0], run.student)
    for row, start in zip(
        batch["input_ids"].tolist(), [len(run.rows[i].sample_prompt) for i in batch["index"]]
    ):
        assert run.tokenizer.decode(row[:start]).endswith("<|im_start|>assistant\n")


@pytest.mark.slow
def test_topk_cache_at_152k(qwen152k, chat_data, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill_doctor.train.data import read_examples
    from distill_doctor.train.topk_cache import build_topk_cache

    cache = build_topk_cache(
        AutoModelForCausalLM.from_pretrained(str(qwen152k.teacher)),
        AutoTokenizer.from_pretrained(str(qwen152k.teacher)),
        read_examples(chat_data),
        tmp_path / "cache",
        k=8,
        max_len=48,
        progress=False,
    )
    run = cfg(qwen152k, chat_data, tmp_path / "run", "logit_kd", teacher=None, topk_cache=str(cache))
    assert [m["step"] for m in read_metrics(run_training("logit_kd", run))] == [1, 2]
    plain = dataclasses.replace(run, output_dir=str(tmp_path / "plain"), chat_template="plain")
    with pytest.raises(InputError, match="tokenised differently"):
        run_training("logit_kd", plain)


def test_dry_run_prints_the_templated_example_and_its_trained_tokens(qwen152k, chat_data, tmp_path):
    out = tmp_path / "never_written"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "distill_doctor",
            "train",
            "sft",
            "--dry-run",
            "--set",
            f"model_name_or_path={qwen152k.student}",
            "--set",
            f"dataset_name={chat_data}",
            "--output-dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert record == {
        "input_text": "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n5<|im_end|>\n",
        "trained_text": "5<|im_end|>",
    }
    assert not out.exists()


def test_lora_trains_only_adapters_and_merges_back(qwen152k, chat_data, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = run_training(
        "sft",
        cfg(
            qwen152k,
            chat_data,
            tmp_path / "run",
            "sft",
            use_peft=True,
            lora_r=4,
            lora_target_modules="q_proj,v_proj",
            lr=1e-2,
        ),
    )
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)
    base = load_file(str(qwen152k.student / "model.safetensors"))
    merged = load_file(str(out / "model.safetensors"))
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)
    reference = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(qwen152k.student)), str(out / "adapter")
    )
    expected = reference.merge_and_unload().state_dict()
    for k in changed:
        torch.testing.assert_close(merged[k], expected[k])


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(qwen152k, chat_data):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill_doctor.train.build import enable_checkpointing
    from distill_doctor.train.data import collate, read_examples, tokenize_all
    from distill_doctor.train.sft import sft_loss

    tok = AutoTokenizer.from_pretrained(str(qwen152k.student))
    batch = collate(tokenize_all(tok, read_examples(chat_data), 48), tok.pad_token_id)
    results = []
    for checkpointing in (False, True):
        model = AutoModelForCausalLM.from_pretrained(str(qwen152k.teacher)).train()
        if checkpointing:
            enable_checkpointing(model)
        loss = sft_loss(model, batch, num_tokens=int((batch["labels"][:, 1:] != -100).sum())).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert torch.equal(loss_a, loss_b)
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_lora_resume_is_exact(qwen152k, chat_data, tmp_path):
    fields = dict(steps=4, use_peft=True, lora_r=4, lr=1e-2, batch_size=1)
    full = run_training("sft", cfg(qwen152k, chat_data, tmp_path / "full", "sft", **fields))
    part = tmp_path / "part"
    run_training("sft", cfg(qwen152k, chat_data, part, "sft", stop_at_step=2, **fields))
    run_training("sft", cfg(qwen152k, chat_data, part, "sft", resume=True, **fields))
    assert [m["loss"] for m in read_metrics(full)] == [m["loss"] for m in read_metrics(part)]
    a, b = load_file(str(full / "model.safetensors")), load_file(str(part / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_eval_split_best_checkpoint_and_tensorboard(qwen152k, chat_data, tmp_path):
    out = run_training(
        "logit_kd",
        cfg(
            qwen152k,
            chat_data,
            tmp_path / "run",
            "logit_kd",
            steps=3,
            eval_data=str(chat_data),
            eval_steps=1,
            report_to="tensorboard",
        ),
    )
    evals = [json.loads(ln) for ln in (out / "eval_metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [1, 2, 3] and all(e["eval_kl"] >= 0 for e in evals)
    best = json.loads((out / "best" / "best.json").read_text())
    assert best["eval_loss"] == min(e["eval_loss"] for e in evals)
    assert (out / "best" / "model.safetensors").is_file()
    assert list(Path(out).rglob("events.out.tfevents.*"))


@pytest.mark.slow  # about 220 s on a loaded 2-core machine: the exposure probe scores 152k-wide logits
def test_diagnose_runs_its_model_probes_on_the_152k_models(qwen152k, tmp_path):
    from test_diagnose_cli import arithmetic_run

    from distill_doctor.cli import main

    run = arithmetic_run(tmp_path, n=40)
    out = tmp_path / "report"
    code = main(
        [
            "diagnose",
            "--items",
            str(run["items"]),
            "--teacher",
            str(run["teacher"]),
            "--student",
            str(run["student"]),
            "--teacher-model",
            str(qwen152k.teacher),
            "--student-model",
            str(qwen152k.student),
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code in (0, 1)
    verdicts = {f["mode"]: f["verdict"] for f in json.loads((out / "report.json").read_text())["findings"]}
    assert verdicts["exposure_bias"] != "skipped"  # the probe that needs both models ran on them
