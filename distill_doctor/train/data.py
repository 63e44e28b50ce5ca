"""Training data: read rows (``sources.py``), tokenise with labels on what is learned, order, pack, collate.

Labels are aligned with ``input_ids`` (``labels[t]`` is the token at ``t`` or ``-100``); the loss
shifts them (position ``t`` predicts ``labels[t + 1]``). Prompt tokens are ``-100``: only the
response (and its closing EOS) is learned; conversations are rendered with the chat template and
only the assistant turns are learned (``chat.py``); language-modelling text is learned whole.

Packing (``packing: true``, sft only) concatenates examples into rows of ``max_len`` tokens. So
that neither attention nor loss crosses examples, each packed row carries segment ids: the
attention mask becomes block-diagonal causal ``(B, 1, T, T)``, position ids restart at 0 in every
example, and the first token of every example (its BOS, a prompt token) is never a target, so no
example is trained to predict the start of the next one. Models whose attention accepts a 4-D
boolean mask (Llama, Qwen, Mistral, GPT-2 in transformers 5) honour this exactly.

Data order is a pure function of ``(seed, micro-batch index)``: epoch ``e`` uses the permutation
``torch.randperm(n, generator=seed + e)``. Resuming at micro-batch ``k`` needs nothing but ``k``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from distill_doctor.errors import InputError
from distill_doctor.losses.batch import IGNORE_INDEX
from distill_doctor.train.sources import Example, RowFormat, iter_examples


@dataclass
class TokenizedExample:
    id: str
    input_ids: list[int]  # prompt (with BOS) + response + EOS, at most max_len
    labels: list[int]  # -100 on the prompt
    prompt_len: int  # number of prompt tokens at the start of input_ids
    segment_ids: list[int] = field(default_factory=list)  # packed rows: which example each token is from
    ids: list[str] = field(default_factory=list)  # packed rows: the example ids in the row
    sample_prompt: list[int] | None = None  # chat rows: the templated prompt on-policy methods sample from


def read_examples(path: str | Path, *, split: str = "train", config_name: str | None = None) -> list[Example]:
    """Read the training data (any source and TRL row format of ``sources.py``) as examples.

    Errors name the file, the line (JSONL) or row, and the field. Ids need not be unique
    (several samples per prompt are common).
    """
    return list(iter_examples(path, split=split, config_name=config_name))


def tokenize_example(
    tokenizer, example: Example, max_len: int, *, plain_chat: bool = False, turns: str = "all"
) -> TokenizedExample | None:
    """One example as token ids with labels on what is learned; None when the prompt leaves no room.

    Plain text: the prompt (with the tokenizer's special tokens, e.g. BOS) + response + EOS,
    labels only on the response; prompt and response are tokenised separately, so the boundary
    is exact for any tokenizer. Responses are truncated to fit ``max_len``. Language-modelling
    text is all response. Conversations go through the chat template (``chat.tokenize_chat``)
    unless ``plain_chat``, where their flattened ``role: content`` text is used.
    """
    if example.messages is not None and not plain_chat:
        return _tokenize_chat_example(tokenizer, example, max_len, turns)
    if example.format is RowFormat.TEXT:
        return _tokenize_text(tokenizer, example, max_len)
    prompt_ids = list(tokenizer(example.prompt)["input_ids"])
    room = max_len - len(prompt_ids)
    if room < 1:
        return None
    response_ids: list[int] = []
    if example.format.has_completions:
        response_ids = list(tokenizer(example.response, add_special_tokens=False)["input_ids"])
        if tokenizer.eos_token_id is not None:
            response_ids.append(tokenizer.eos_token_id)
    response_ids = response_ids[:room]
    return TokenizedExample(
        id=example.id,
        input_ids=prompt_ids + response_ids,
        labels=[IGNORE_INDEX] * len(prompt_ids) + response_ids,
        prompt_len=len(prompt_ids),
        segment_ids=[0] * (len(prompt_ids) + len(response_ids)),
        ids=[example.id],
    )


def _tokenize_text(tokenizer, example: Example, max_len: int) -> TokenizedExample | None:
    """Language modelling: every token is learned (the first has no context and is never a target)."""
    ids = list(tokenizer(example.response)["input_ids"])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    ids = ids[:max_len]
    if len(ids) < 2:
        return None
    return TokenizedExample(
        id=example.id,
        input_ids=ids,
        labels=[IGNORE_INDEX] + ids[1:],
        prompt_len=1,
        segment_ids=[0] * len(ids),
        ids=[example.id],
    )


def _tokenize_chat_example(tokenizer, example: Example, max_len: int, turns: str) -> TokenizedExample | None:
    from distill_doctor.train.chat import tokenize_chat

    chat = tokenize_chat(
        tokenizer, example.messages, train_from=example.train_from, turns=turns, example_id=example.id
    )
    if len(chat.sample_prompt) >= max_len:
        return None
    ids, labels = chat.input_ids[:max_len], chat.labels[:max_len]
    trained = [k for k, t in enumerate(labels) if t != IGNORE_INDEX]
    if example.format.has_completions and not trained:
        return None
    # prompt_len: the first trained token (where a top-k cache starts); sample_prompt is what is sampled from
    prompt_len = trained[0] if trained else len(chat.sample_prompt)
    return TokenizedExample(
        id=example.id,
        input_ids=ids,
        labels=labels,
        prompt_len=prompt_len,
        segment_ids=[0] * len(ids),
        ids=[example.id],
        sample_prompt=chat.sample_prompt,
    )


def tokenize_all(
    tokenizer,
    examples: list[Example],
    max_len: int,
    *,
    source: str | Path = "",
    plain_chat: bool = False,
    turns: str = "all",
) -> list[TokenizedExample]:
    out = [
        t
        for t in (
            tokenize_example(tokenizer, ex, max_len, plain_chat=plain_chat, turns=turns) for ex in examples
        )
        if t is not None
    ]
    if not out:
        raise InputError(
            f"every prompt is longer than max_len={max_len} tokens", path=source or None, field="max_len"
        )
    return out


def pack_examples(examples: list[TokenizedExample], max_len: int) -> list[TokenizedExample]:
    """Greedy first-fit packing in the given order; each row's segment ids number its examples 0, 1, ..."""
    rows: list[TokenizedExample] = []
    current: TokenizedExample | None = None
    for ex in examples:
        if current is not None and len(current.input_ids) + len(ex.input_ids) <= max_len:
            seg = current.segment_ids[-1] + 1
            current.input_ids += ex.input_ids
            # The first token of a packed example is a prompt token (label -100) already; reset it
            # explicitly anyway so no tokenizer without BOS ever predicts across a boundary.
            current.labels += [IGNORE_INDEX] + ex.labels[1:]
            current.segment_ids += [seg] * len(ex.input_ids)
            current.ids.append(ex.id)
        else:
            current = TokenizedExample(
                id=ex.id,
                input_ids=list(ex.input_ids),
                labels=[IGNORE_INDEX] + ex.labels[1:],
                prompt_len=ex.prompt_len,
                segment_ids=[0] * len(ex.input_ids),
                ids=[ex.id],
            )
            rows.append(current)
    return rows


def collate(rows: list[TokenizedExample], pad_id: int, *, packed: bool = False) -> dict:
    """Right-pad a micro-batch.

    Returns ``input_ids`` (B, T), ``labels`` (B, T) with -100 on prompt and padding,
    ``attention_mask`` (B, T) — or (B, 1, T, T) block-diagonal causal bool when ``packed`` —,
    ``position_ids`` (B, T) restarting per packed example, ``prompt_lens`` (B,), ``lengths`` (B,) and ``ids``
    (list of example ids per row).
    """
    B, T = len(rows), max(len(r.input_ids) for r in rows)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    mask2d = torch.zeros((B, T), dtype=torch.long)
    segments = torch.full((B, T), -1, dtype=torch.long)
    position_ids = torch.zeros((B, T), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r.input_ids)
        input_ids[i, :n] = torch.tensor(r.input_ids)
        labels[i, :n] = torch.tensor(r.labels)
        mask2d[i, :n] = 1
        seg = torch.tensor(r.segment_ids or [0] * n)
        segments[i, :n] = seg
        starts = torch.cat([torch.ones(1, dtype=torch.bool), seg[1:] != seg[:-1]])
        first = torch.cummax(torch.where(starts, torch.arange(n), torch.zeros(n, dtype=torch.long)), 0).values
        position_ids[i, :n] = torch.arange(n) - first
    batch = {
        "input_ids": input_ids,
        "labels": labels,
        "position_ids": position_ids,
        "prompt_lens": torch.tensor([r.prompt_len for r in rows]),
        "lengths": torch.tensor([len(r.input_ids) for r in rows]),
        "ids": [i for r in rows for i in (r.ids or [r.id])],
    }
    if packed:
        causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
        same = segments[:, :, None] == segments[:, None, :]  # (B, T, T)
        mask4d = causal[None] & same & (segments[:, :, None] >= 0)
        mask4d |= torch.eye(T, dtype=torch.bool)[None]  # padding rows attend to themselves (no NaN)
        batch["attention_mask"] = mask4d[:, None]  # (B, 1, T, T)
    else:
        batch["attention_mask"] = mask2d
    return batch


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists for batched generation: ``(input_ids (B, T), attention_mask (B, T))``."""
    B, T = len(sequences), max(len(s) for s in sequences)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, T - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[i, T - len(s) :] = 1
    return ids, mask


@dataclass
class BatchOrder:
    """Deterministic shuffled micro-batches over ``n`` rows: micro-batch ``k`` is a pure function of ``k``.

    With several processes, process ``rank`` takes global micro-batches ``k * world + rank``.
    """

    n: int
    batch_size: int
    seed: int
    rank: int = 0
    world: int = 1

    @property
    def batches_per_epoch(self) -> int:
        return max(1, -(-self.n // self.batch_size))

    def indices(self, micro_index: int) -> list[int]:
        k = micro_index * self.world + self.rank
        epoch, j = divmod(k, self.batches_per_epoch)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.n, generator=gen)
        return perm[j * self.batch_size : (j + 1) * self.batch_size].tolist()


def prompt_ids(row: TokenizedExample) -> list[int]:
    """What on-policy methods sample a completion from: the templated prompt for chats, else the prompt."""
    return list(row.sample_prompt) if row.sample_prompt is not None else row.input_ids[: row.prompt_len]


def completion_rows(
    prompts: list[list[int]], completions: list[list[int]], ids: list[str], max_len: int
) -> list[TokenizedExample]:
    """Rows of prompt + completion with labels on the completion only (for sampled completions).

    Completions are cut so the row fits ``max_len``; an empty completion leaves a row with no loss tokens.
    """
    rows = []
    for prompt, completion, ex_id in zip(prompts, completions, ids):
        completion = completion[: max(max_len - len(prompt), 0)]
        rows.append(
            TokenizedExample(
                id=ex_id,
                input_ids=prompt + completion,
                labels=[IGNORE_INDEX] * len(prompt) + completion,
                prompt_len=len(prompt),
                segment_ids=[0] * (len(prompt) + len(completion)),
                ids=[ex_id],
            )
        )
    return rows
