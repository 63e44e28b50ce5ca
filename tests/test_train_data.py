"""Training data: response-only labels, packing that keeps examples apart, deterministic order, collation."""

from __future__ import annotations

import gzip
import json

import pytest
import torch
from train_helpers import ALPHABET

from distill_doctor.errors import InputError
from distill_doctor.testing.tiny_model import build_char_tokenizer, build_tiny_llama
from distill_doctor.train.data import (
    IGNORE_INDEX,
    BatchOrder,
    Example,
    collate,
    completion_rows,
    left_pad,
    pack_examples,
    read_examples,
    tokenize_all,
    tokenize_example,
)


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer(alphabet=ALPHABET)


def test_labels_cover_only_the_response_and_eos(tok):
    row = tokenize_example(tok, Example("a", "12+3=", "15"), max_len=64)
    assert row.input_ids[0] == tok.bos_token_id
    assert row.prompt_len == 1 + len("12+3=")
    assert tok.decode(row.input_ids[row.prompt_len : -1]) == "15"
    assert row.input_ids[-1] == tok.eos_token_id
    assert row.labels[: row.prompt_len] == [IGNORE_INDEX] * row.prompt_len
    assert row.labels[row.prompt_len :] == row.input_ids[row.prompt_len :]


def test_truncation_keeps_the_prompt_and_drops_examples_that_do_not_fit(tok):
    row = tokenize_example(tok, Example("a", "1+1=", "123456789"), max_len=8)
    assert len(row.input_ids) == 8 and row.prompt_len == 5
    assert tokenize_example(tok, Example("b", "1234567+1=", "2"), max_len=8) is None
    with pytest.raises(InputError, match="max_len"):
        tokenize_all(tok, [Example("b", "1234567+1=", "2")], max_len=8)


def test_read_examples_plain_gz_and_chat(tmp_path):
    path = tmp_path / "t.jsonl.gz"
    lines = [
        {"id": "x", "prompt": "1+1=", "response": "2"},
        {"messages": [{"role": "user", "content": "2+2="}, {"role": "assistant", "content": "4"}]},
    ]
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(json.dumps(x) for x in lines) + "\n\n")
    examples = read_examples(path)
    assert [e.id for e in examples] == ["x", "line-2"]
    assert examples[1].prompt == "user: 2+2=" and examples[1].response == "4"


@pytest.mark.parametrize(
    ("text", "line", "field"),
    [
        ('{"prompt": "a", "response": "b"}\n{"prompt": "a"}\n', 2, "response"),
        ('{"prompt": "a", "response": "b"}\nnot json\n', 2, None),
        ('{"prompt": 3, "response": "b"}\n', 1, "prompt"),
        ('{"messages": [{"role": "user", "content": "q"}]}\n', 1, "messages[0].role"),
    ],
)
def test_read_errors_name_file_line_and_field(tmp_path, text, line, field):
    path = tmp_path / "bad.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_examples(path)
    assert info.value.path == str(path) and info.value.line == line and info.value.field == field


def test_ids_may_repeat_for_several_samples_per_prompt(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"id": "q", "prompt": "1+1=", "response": "2"}\n' * 2, encoding="utf-8")
    assert [e.id for e in read_examples(path)] == ["q", "q"]


def test_packing_resets_labels_and_keeps_attention_inside_each_example(tok):
    examples = [Example(f"e{i}", f"{i}+{i}=", str(2 * i)) for i in range(7)]
    rows = tokenize_all(tok, examples, max_len=24)
    packed = pack_examples(rows, max_len=24)
    assert len(packed) < len(rows) and all(len(r.input_ids) <= 24 for r in packed)
    assert sorted(i for r in packed for i in r.ids) == sorted(e.id for e in examples)
    for r in packed:  # the first token of every example is never a target
        starts = [t for t in range(len(r.segment_ids)) if t == 0 or r.segment_ids[t] != r.segment_ids[t - 1]]
        assert all(r.labels[t] == IGNORE_INDEX for t in starts)
    batch = collate(packed, tok.pad_token_id, packed=True)
    assert batch["attention_mask"].shape == (
        len(packed),
        1,
        batch["input_ids"].shape[1],
        batch["input_ids"].shape[1],
    )

    # A packed forward pass gives each example the logits it would get alone.
    model = build_tiny_llama(tok, hidden_size=32, num_layers=2, num_heads=2).eval()
    with torch.no_grad():
        logits = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"],
        ).logits
        by_id = {r.id: r for r in rows}
        row0 = packed[0]
        offset = 0
        for ex_id in row0.ids:
            alone = by_id[ex_id]
            n = len(alone.input_ids)
            ref = model(input_ids=torch.tensor([alone.input_ids])).logits[0]
            torch.testing.assert_close(logits[0, offset : offset + n], ref, atol=1e-5, rtol=1e-5)
            offset += n


def test_collate_right_pads_and_left_pad_for_generation(tok):
    rows = tokenize_all(tok, [Example("a", "1+1=", "2"), Example("b", "10+10=", "20")], max_len=32)
    batch = collate(rows, tok.pad_token_id)
    B, T = batch["input_ids"].shape
    assert (B, T) == (2, len(rows[1].input_ids))
    assert batch["attention_mask"][0].tolist() == [1] * len(rows[0].input_ids) + [0] * (
        T - len(rows[0].input_ids)
    )
    assert (batch["labels"][0, len(rows[0].input_ids) :] == IGNORE_INDEX).all()
    assert batch["lengths"].tolist() == [len(r.input_ids) for r in rows]
    ids, mask = left_pad([[5, 6], [7, 8, 9]], pad_id=0)
    assert ids.tolist() == [[0, 5, 6], [7, 8, 9]] and mask.tolist() == [[0, 1, 1], [1, 1, 1]]


def test_completion_rows_label_only_the_completion():
    rows = completion_rows([[1, 5], [1, 6, 7]], [[8, 2], []], ["a", "b"], max_len=4)
    assert rows[0].input_ids == [1, 5, 8, 2] and rows[0].labels == [IGNORE_INDEX, IGNORE_INDEX, 8, 2]
    assert rows[1].labels == [IGNORE_INDEX] * 3


def test_batch_order_is_a_pure_function_of_the_index_and_covers_each_epoch():
    order = BatchOrder(n=10, batch_size=4, seed=3)
    epoch0 = [i for k in range(order.batches_per_epoch) for i in order.indices(k)]
    assert sorted(epoch0) == list(range(10))
    assert order.indices(5) == BatchOrder(n=10, batch_size=4, seed=3).indices(5)
    assert order.indices(0) != BatchOrder(n=10, batch_size=4, seed=4).indices(0)
    ranks = [BatchOrder(n=16, batch_size=4, seed=0, rank=r, world=2) for r in range(2)]
    seen = [i for k in range(2) for o in ranks for i in o.indices(k)]
    assert sorted(seen) == list(range(16))
