"""The teacher sampled through vLLM: ``generate --engine vllm``, the same sampler interface as HFSampler.

:class:`VLLMTeacherSampler` starts the engine process (``train/vllm_client``, colocated: a child
on a pipe, in ``.venv-vllm``) on the teacher's model directory once; the teacher is fixed, so no
weights are ever pushed. Prompts are tokenised here with the teacher's own tokenizer exactly as
:class:`~distill_doctor.produce.sampling.HFSampler` does (``tokenizer(prompt)``: no chat template,
the tokenizer's special tokens), the engine gets token ids and stops at the tokenizer's EOS, and
each completion is decoded and marked ``truncated``/``n_tokens`` by the same rule. Prompts are
sent in HFSampler's batches (``batch_size // n`` prompts, each repeated ``n`` times) so the
length cap (``max_new_tokens`` shortened to fit the model's positions after the batch's longest
prompt) is the same; greedy decoding then gives the same text as HF generate. Sampled rows get one
seed each, drawn from ``seed + batch index`` (vLLM's RNG is not torch's: sampled text differs from
HF's, but a rerun gives the same text).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distill_doctor.errors import InputError
from distill_doctor.produce.sampling import Completion, SamplingParams, batched_samples
from distill_doctor.train.vllm_client import (
    CompletionRequest,
    EngineError,
    EngineSpec,
    Transport,
    parse_completions,
    start_colocated,
    unavailable_reason,
)

ENGINE_DESCRIPTION = (
    "vLLM (colocated engine process, token ids from the teacher's tokenizer with its own BOS, stop at EOS)"
)
DEFAULT_MAX_MODEL_LEN = 2048  # when the config names no position limit


def engine_dtype(config) -> str:
    """The engine's dtype for a checkpoint: what HF's ``dtype="auto"`` loads (float32 when unnamed)."""
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    name = str(dtype).removeprefix("torch.") if dtype is not None else "float32"
    return name if name in ("float32", "bfloat16", "float16") else "float32"


class VLLMTeacherSampler:
    """``sampler(prompts, n) -> list[list[Completion]]`` answered by a vLLM engine process."""

    def __init__(
        self,
        transport: Transport,
        tokenizer,
        params: SamplingParams,
        *,
        max_positions: int | None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.transport, self.tokenizer, self.params = transport, tokenizer, params
        self.max_positions = max_positions
        self.progress = progress
        self._batch_index = 0

    @classmethod
    def from_dir(
        cls, model_dir: str | Path, params: SamplingParams, *, prompts: list[str] | None = None, log=None
    ) -> VLLMTeacherSampler:
        """Start the engine on ``model_dir``; its context fits the longest of ``prompts`` plus
        ``max_new_tokens`` (capped at the model's positions). Raises EngineError when it cannot start."""
        reason = unavailable_reason()
        if reason:
            raise EngineError(reason)
        from transformers import AutoConfig, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
        limit = getattr(config, "max_position_embeddings", None)
        max_positions = int(limit) if limit else None
        if prompts:
            longest = max(len(tokenizer(p)["input_ids"]) for p in prompts)
            context = min(longest + params.max_new_tokens, max_positions or 10**9)
        else:  # prompts unknown: the model's whole context
            context = max_positions or DEFAULT_MAX_MODEL_LEN
        spec = EngineSpec(
            model=str(model_dir),
            dtype=engine_dtype(config),
            max_model_len=max(context, 16),
            seed=params.seed,
        )
        return cls(start_colocated(spec, log=log), tokenizer, params, max_positions=max_positions)

    def __call__(self, prompts: list[str], n: int) -> list[list[Completion]]:
        return batched_samples(prompts, n, self.params, self._generate, self.progress)

    def _generate(self, prompts: list[str], per_prompt: int) -> list[Completion]:
        p = self.params
        encoded = [list(self.tokenizer(text)["input_ids"]) for text in prompts]
        longest = max(len(ids) for ids in encoded)
        max_new = p.max_new_tokens
        if self.max_positions is not None:
            max_new = min(max_new, self.max_positions - longest)
            if max_new < 1:
                raise InputError(
                    f"a prompt of {longest} tokens leaves no room in the model's "
                    f"{self.max_positions} positions",
                    field="prompt",
                )
        rows = [ids for ids in encoded for _ in range(per_prompt)]
        draw = random.Random(p.seed + self._batch_index)
        self._batch_index += 1
        eos = self.tokenizer.eos_token_id
        request = CompletionRequest(
            prompts=rows,
            max_tokens=max_new,
            temperature=p.temperature,
            stop_token_ids=[] if eos is None else [int(eos)],
            seeds=[draw.randrange(2**31) for _ in rows],
        )
        body: dict[str, Any] = request.to_json()
        if p.temperature > 0:
            body["top_p"] = p.top_p
        reply = self.transport.call("/v1/completions", body)
        return [self._completion(ids) for ids in parse_completions(reply, request)]

    def _completion(self, ids: list[int]) -> Completion:
        """Decode one completion; without the EOS it was cut by ``max_new_tokens`` (HFSampler's rule)."""
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        ended = eos is not None and eos in ids
        if ended:
            ids = ids[: ids.index(eos)]
        elif pad is not None and pad != eos:  # HFSampler cannot tell drawn pads from padding
            while ids and ids[-1] == pad:
                ids.pop()
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Completion(text, truncated=eos is not None and not ended, n_tokens=len(ids))

    def close(self) -> None:
        """Stop the engine process."""
        self.transport.close()
