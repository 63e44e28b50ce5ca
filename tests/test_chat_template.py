"""Chat templates on the real Qwen2.5 vocabulary: the loss covers exactly the assistant tokens."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from distill_doctor.errors import InputError
from distill_doctor.train.chat import end_of_turn_ids, has_generation_marks, tokenize_chat
from distill_doctor.train.data import IGNORE_INDEX, prompt_ids, tokenize_example
from distill_doctor.train.sources import Example, RowFormat

SINGLE = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "It is 4."}]
MULTI = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
]


@pytest.fixture(scope="module")
def toks(qwen152k):
    return (
        AutoTokenizer.from_pretrained(str(qwen152k.tokenizer)),
        AutoTokenizer.from_pretrained(str(qwen152k.tokenizer_generation)),
    )


def trained_text(tok, labels) -> str:
    return tok.decode([t for t in labels if t != IGNORE_INDEX])


def trained_spans(tok, labels) -> list[str]:
    spans, current = [], []
    for t in [*labels, IGNORE_INDEX]:
        if t != IGNORE_INDEX:
            current.append(t)
        elif current:
            spans.append(tok.decode(current))
            current = []
    return spans


def test_real_ids_of_the_qwen_vocabulary(toks):
    tok, _ = toks
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [
        151643,
        151644,
        151645,
    ]
    assert tok("user")["input_ids"] == [872] and tok("assistant")["input_ids"] == [77091]
    assert end_of_turn_ids(tok) == [151645]


@pytest.mark.parametrize("messages", [SINGLE, MULTI], ids=["single", "multi"])
def test_generation_mask_and_prefix_fallback_agree(toks, messages):
    plain, marked = toks
    assert not has_generation_marks(plain) and has_generation_marks(marked)
    a, b = tokenize_chat(plain, messages), tokenize_chat(marked, messages)
    assert (
        a.input_ids
        == b.input_ids
        == plain.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    )
    assert a.labels == b.labels
    expected = [m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant"]
    assert trained_spans(plain, a.labels) == expected


def test_last_turn_only_and_prompt_for_sampling(toks):
    tok, _ = toks
    chat = tokenize_chat(tok, MULTI, turns="last")
    assert trained_spans(tok, chat.labels) == ["4<|im_end|>"]
    assert tok.decode(chat.sample_prompt).endswith(
        "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert chat.input_ids[: len(chat.sample_prompt)] == chat.sample_prompt


def test_conversational_prompt_completion_trains_the_completion_only(toks):
    tok, _ = toks
    example = Example("c", "", "", tuple(MULTI), train_from=3, format=RowFormat.CHAT_PROMPT_COMPLETION)
    row = tokenize_example(tok, example, max_len=256)
    assert trained_spans(tok, row.labels) == ["4<|im_end|>"]
    assert row.prompt_len == row.labels.index(next(t for t in row.labels if t != IGNORE_INDEX))
    assert prompt_ids(row) == row.sample_prompt


def test_template_that_rerenders_earlier_turns_is_refused_for_all_turns(toks):
    tok, _ = toks
    tok = AutoTokenizer.from_pretrained(tok.name_or_path)
    # Like Qwen3's template: earlier assistant turns lose part of their text in later renders.
    tok.chat_template = (
        "{%- for m in messages %}{%- if m['role'] == 'assistant' and not loop.last %}"
        "{{- '<|im_start|>assistant\\n' + m['content'][:1] + '<|im_end|>\\n' }}"
        "{%- else %}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endif %}"
        "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    )
    with pytest.raises(InputError, match="train_turns: last"):
        tokenize_chat(tok, MULTI)
    assert trained_spans(tok, tokenize_chat(tok, MULTI, turns="last").labels) == ["4<|im_end|>"]


def test_messages_without_a_template_are_refused_unless_plain(toks):
    tok, _ = toks
    tok = AutoTokenizer.from_pretrained(tok.name_or_path)
    tok.chat_template = None
    example = Example("m", "user: What is 2+2?", "It is 4.", tuple(SINGLE), format=RowFormat.MESSAGES)
    with pytest.raises(InputError, match="no chat template"):
        tokenize_example(tok, example, max_len=64)
    row = tokenize_example(tok, example, max_len=64, plain_chat=True)
    assert trained_text(tok, row.labels) == "It is 4.<|im_end|>"


def test_truncation_keeps_the_trained_prefix_and_drops_rows_without_room(toks):
    tok, _ = toks
    example = Example("t", "", "", tuple(SINGLE), format=RowFormat.MESSAGES)
    full = tokenize_example(tok, example, max_len=256)
    cut = tokenize_example(tok, example, max_len=len(full.sample_prompt) + 2)
    assert len(cut.input_ids) == len(full.sample_prompt) + 2 and trained_text(tok, cut.labels) == "It is"
    assert tokenize_example(tok, example, max_len=len(full.sample_prompt)) is None
