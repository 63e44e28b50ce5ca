"""Each TRL row format reaches the trainer as the right token rows, and methods refuse data they cannot use."""

from __future__ import annotations

import json

import pytest
from train_helpers import ALPHABET

from distill_doctor.errors import InputError
from distill_doctor.testing.tiny_model import build_char_tokenizer
from distill_doctor.train.config import TrainConfig
from distill_doctor.train.data import IGNORE_INDEX, read_examples, tokenize_all
from distill_doctor.train.prepare import check_formats


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer(alphabet=ALPHABET + "abcdefghijklmnopqrstuvwxyz:")


def write(tmp_path, rows):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_language_modelling_text_learns_every_token(tmp_path, tok):
    (row,) = tokenize_all(tok, read_examples(write(tmp_path, [{"text": "12+3=15"}])), 32)
    assert row.labels[0] == IGNORE_INDEX and row.labels[1:] == row.input_ids[1:]
    assert row.input_ids[-1] == tok.eos_token_id


def test_prompt_only_rows_carry_no_labels(tmp_path, tok):
    (row,) = tokenize_all(tok, read_examples(write(tmp_path, [{"prompt": "1+1="}])), 32)
    assert set(row.labels) == {IGNORE_INDEX} and row.prompt_len == len(row.input_ids)


def cfg(method, **fields):
    return TrainConfig(method=method, student="s", teacher="t", data="d", output_dir="o", **fields)


@pytest.mark.parametrize(
    ("rows", "method", "fields", "match"),
    [
        ([{"prompt": "1+1="}], "sft", {}, "prompt-only: method sft needs completions"),
        ([{"prompt": "1+1="}], "gkd", {"gkd": {"lmbda": 0.5}}, "gkd with lmbda < 1"),
        ([{"text": "12"}], "skd", {}, "needs prompts"),
    ],
)
def test_methods_refuse_data_they_cannot_learn_from(tmp_path, rows, method, fields, match):
    examples = read_examples(write(tmp_path, rows))
    with pytest.raises(InputError, match=match):
        check_formats(examples, cfg(method, **fields), "d.jsonl")


def test_prompt_only_data_suits_on_policy_methods(tmp_path):
    examples = read_examples(write(tmp_path, [{"prompt": "1+1="}]))
    check_formats(examples, cfg("gkd", gkd={"lmbda": 1.0}), "d.jsonl")
    check_formats(examples, cfg("gkd", gkd={"seq_kd": True}), "d.jsonl")
    check_formats(examples, cfg("skd"), "d.jsonl")


def test_eval_split_of_a_single_file_is_refused(tmp_path, tok):
    from distill_doctor.train.prepare import prepare_data

    path = write(tmp_path, [{"prompt": "1+1=", "response": "2"}])
    cfg_eval = TrainConfig(
        method="sft", student="s", data=str(path), output_dir="o", eval_split="test", eval_steps=1
    )
    with pytest.raises(InputError, match="single file") as info:
        prepare_data(cfg_eval, tok, split="test")
    assert info.value.field == "eval_split"


def test_disable_dropout_also_silences_attention_dropout():
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from distill_doctor.train.build import disable_dropout

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=1,
        num_key_value_heads=1,
        attention_dropout=0.5,
    )
    model = Qwen2ForCausalLM(config).train()
    ids = torch.arange(12)[None]
    assert not torch.equal(model(ids).logits, model(ids).logits)  # dropout is really on
    disable_dropout(model)
    assert torch.equal(model(ids).logits, model(ids).logits)
