"""A replay model for lm-evaluation-harness: answers real task YAMLs from a recorded answer table.

Registered with lm-eval as ``distill-doctor-replay`` (``--model distill-doctor-replay
--model_args answers=/abs/answers.json``), so that lm-eval itself writes genuine
``samples_<task>_<timestamp>.jsonl`` and ``results_<timestamp>.json`` files for the tests:
the harness renders the prompts, applies its filters and computes its own metrics; only the
model's answers are recorded.

The answer table is a JSON list of entries ``{"match": text, ...}``. A request is answered by the
entry whose ``match`` occurs *last* in the request's context (few-shot contexts hold other
problems first; the problem asked comes at the end). An entry holds

- ``"outputs": [str, ...]``: generations; the i-th identical request for a context (lm-eval's
  ``repeats``) gets the i-th output (cycling). Each generation is cut at the first of the
  request's ``until`` strings, as a real model's would be.
- ``"logliks": {choice_text: float}``: loglikelihoods of continuations (the continuation's
  leading target delimiter is ignored); ``is_greedy`` is true for the largest one of the entry.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

MODEL_NAME = "distill-doctor-replay"


def cut_at_stops(text: str, until: list[str]) -> str:
    """``text`` up to the earliest stop string (a real model stops generating there)."""
    end = len(text)
    for stop in until:
        at = text.find(stop) if stop else -1
        if at != -1:
            end = min(end, at)
    return text[:end]


@register_model(MODEL_NAME)
class ReplayLM(LM):
    """Answers ``generate_until`` and ``loglikelihood`` requests from a recorded answer table."""

    def __init__(self, answers: str, **kwargs: Any) -> None:
        super().__init__()
        self.entries: list[dict[str, Any]] = json.loads(Path(answers).read_text(encoding="utf-8"))
        self._asked: dict[str, int] = defaultdict(int)

    max_length = 4096  # what ``distill-doctor eval`` reads to fit the generation budget

    def tok_encode(self, text: str) -> list[int]:
        """A stand-in tokenizer (one token per word), for the generation budget only."""
        return list(range(len(text.split())))

    def _entry(self, context: str) -> dict[str, Any]:
        best, best_at = None, -1
        for entry in self.entries:
            at = context.rfind(entry["match"])
            if at > best_at:
                best, best_at = entry, at
        if best is None:
            raise KeyError(f"no recorded answer for the context ending {context[-120:]!r}")
        return best

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        for req in requests:
            context, gen_kwargs = req.args
            entry = self._entry(context)
            outputs = entry["outputs"]
            k = self._asked[context]
            self._asked[context] += 1
            until = gen_kwargs.get("until") or []
            out.append(cut_at_stops(outputs[k % len(outputs)], [until] if isinstance(until, str) else until))
        return out

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        out = []
        for req in requests:
            context, continuation = req.args
            logliks = self._entry(context)["logliks"]
            ll = float(logliks[continuation.strip()])
            out.append((ll, ll == max(logliks.values())))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError("the replay model answers generate_until and loglikelihood requests only")
