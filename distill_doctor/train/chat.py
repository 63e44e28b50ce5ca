"""Conversations through the tokenizer's chat template, with the loss on exactly the assistant tokens.

The student must learn the format it will see at inference, so a conversation is rendered by
``tokenizer.apply_chat_template`` and the trained tokens are the ones the template writes for
each assistant turn: its content and its end-of-turn token (``<|im_end|>`` in ChatML), not the
newline some templates put between turns, nor the ``<|im_start|>assistant`` header.

Two ways to find them, giving the same labels where both apply (tested on the Qwen vocabulary):

- the template marks the assistant part with ``{% generation %} ... {% endgeneration %}``:
  ``return_assistant_tokens_mask`` gives the mask directly;
- otherwise (most released templates) render prefixes and diff: the tokens of assistant turn i
  are what ``messages[:i + 1]`` adds to ``messages[:i]`` rendered with the generation prompt,
  cut after the last special token of that difference (the end of turn). Every prefix must render
  as a prefix of the whole conversation; templates that re-render earlier turns (e.g. drop
  earlier reasoning) are refused unless only the last turn is trained (``train_turns: last``).

On-policy methods sample from ``sample_prompt`` (the conversation before its last assistant
turn, with the generation prompt) and stop at :func:`end_of_turn_ids`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from distill_doctor.errors import InputError
from distill_doctor.losses.batch import IGNORE_INDEX

GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
TURNS = ("all", "last")


@dataclass(frozen=True)
class ChatTokens:
    input_ids: list[int]
    labels: list[int]  # the token where trained, IGNORE_INDEX elsewhere
    sample_prompt: list[int]  # for sampling: everything before the last assistant turn + generation prompt


def has_generation_marks(tokenizer) -> bool:
    template = tokenizer.chat_template
    return isinstance(template, str) and bool(GENERATION_TAG.search(template))


def apply_template_choice(tokenizer, choice: str | None) -> bool:
    """Set up ``tokenizer`` for the config's ``chat_template``; return True when chats render as plain text.

    ``None``: the tokenizer's own template (none: conversations are refused at tokenisation);
    ``"plain"``: ``role: content`` lines, no template (an explicit opt-in); otherwise a path to a
    Jinja template file, which replaces the tokenizer's.
    """
    if choice is None:
        return False
    if choice == "plain":
        return True
    path = Path(choice).expanduser()
    try:
        tokenizer.chat_template = path.read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(
            f"cannot read the template: {err.strerror or err}", path=path, field="chat_template"
        ) from None
    return False


def _render(tokenizer, messages, *, generation_prompt: bool = False) -> list[int]:
    out = tokenizer.apply_chat_template(
        list(messages), tokenize=True, add_generation_prompt=generation_prompt, return_dict=True
    )
    return list(out["input_ids"])


def special_ids(tokenizer) -> set[int]:
    ids = set(tokenizer.all_special_ids)
    ids.update(i for i, tok in tokenizer.added_tokens_decoder.items() if tok.special)
    return ids


def _assistant_indices(messages, train_from: int, turns: str) -> list[int]:
    found = [i for i, m in enumerate(messages) if m["role"] == "assistant" and i >= train_from]
    return found[-1:] if turns == "last" else found


def _mask_by_prefixes(tokenizer, messages, trained: list[int], ids: list[int], example_id: str) -> list[bool]:
    specials = special_ids(tokenizer)
    mask = [False] * len(ids)
    for i in trained:
        before = _render(tokenizer, messages[:i], generation_prompt=True) if i else _render_start(tokenizer)
        through = _render(tokenizer, messages[: i + 1])
        if ids[: len(before)] != before or ids[: len(through)] != through:
            raise InputError(
                f"example {example_id!r}: the chat template renders turn {i} differently inside the whole "
                "conversation than on its own (it re-renders earlier turns), so the assistant tokens cannot "
                "be found by prefixes; set train_turns: last, or use a template with {% generation %} marks",
                field="chat_template",
            )
        span = through[len(before) :]
        cut = max((k + 1 for k, t in enumerate(span) if t in specials), default=len(span))
        for k in range(len(before), len(before) + cut):
            mask[k] = True
    return mask


def _render_start(tokenizer) -> list[int]:
    """What a template writes before the first message with no messages at all (usually nothing)."""
    try:
        return _render(tokenizer, [], generation_prompt=True)
    except Exception:  # templates may index messages[0]: then assume nothing precedes it
        return []


def _mask_by_generation(
    tokenizer, messages, trained: list[int], example_id: str
) -> tuple[list[int], list[bool]]:
    out = tokenizer.apply_chat_template(
        list(messages), tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, flags = list(out["input_ids"]), [bool(x) for x in out["assistant_masks"]]
    runs = _runs(flags)
    assistants = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if len(runs) != len(assistants):
        raise InputError(
            f"example {example_id!r}: the template's generation marks cover {len(runs)} spans for "
            f"{len(assistants)} assistant messages",
            field="chat_template",
        )
    mask = [False] * len(ids)
    for (start, end), index in zip(runs, assistants):
        if index in trained:
            mask[start:end] = [True] * (end - start)
    return ids, mask


def _runs(flags: list[bool]) -> list[tuple[int, int]]:
    runs, start = [], None
    for k, flag in enumerate([*flags, False]):
        if flag and start is None:
            start = k
        elif not flag and start is not None:
            runs.append((start, k))
            start = None
    return runs


def tokenize_chat(
    tokenizer, messages, *, train_from: int = 0, turns: str = "all", example_id: str = ""
) -> ChatTokens:
    """Render ``messages`` with the chat template; labels on the assistant turns from ``train_from`` on.

    A conversation without assistant turns (prompt-only) has no labels; its ``sample_prompt`` is the
    whole conversation with the generation prompt.
    """
    if not tokenizer.chat_template:
        raise InputError(
            "the data is conversational but the tokenizer has no chat template; set chat_template to a "
            "Jinja file, or chat_template: plain to train on 'role: content' text",
            field="chat_template",
        )
    messages = list(messages)
    assistants = [i for i, m in enumerate(messages) if m["role"] == "assistant" and i >= train_from]
    last = assistants[-1] if assistants else len(messages)
    sample_prompt = _render(tokenizer, messages[:last], generation_prompt=True)
    if not assistants:
        return ChatTokens(sample_prompt, [IGNORE_INDEX] * len(sample_prompt), sample_prompt)
    trained = _assistant_indices(messages, train_from, turns)
    if has_generation_marks(tokenizer):
        ids, mask = _mask_by_generation(tokenizer, messages, trained, example_id)
    else:
        ids = _render(tokenizer, messages)
        mask = _mask_by_prefixes(tokenizer, messages, trained, ids, example_id)
    labels = [t if m else IGNORE_INDEX for t, m in zip(ids, mask)]
    return ChatTokens(ids, labels, sample_prompt)


def end_of_turn_ids(tokenizer) -> list[int]:
    """The token(s) that end an assistant turn in the template (``<|im_end|>`` for ChatML), plus EOS.

    Found by rendering a one-turn conversation: the last special token of the trained span.
    """
    stops = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    if not tokenizer.chat_template:
        return stops
    probe = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    try:
        chat = tokenize_chat(tokenizer, probe)
    except Exception:  # a template that refuses the probe: fall back to EOS alone
        return stops
    specials = special_ids(tokenizer)
    trained = [t for t in chat.labels if t != IGNORE_INDEX]
    if trained and trained[-1] in specials and trained[-1] not in stops:
        stops.append(trained[-1])
    return stops
