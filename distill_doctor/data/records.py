"""The records every part of distill-doctor passes around (see SPEC.md, "Inputs").

These are plain frozen dataclasses: loaders build them, verifiers and probes read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

VERIFIER_KINDS = ("numeric", "exact", "choice", "math", "regex", "code")


@dataclass(frozen=True)
class Item:
    """One evaluation item (a line of ``items.jsonl``)."""

    id: str
    prompt: str
    reference: str | int | float | None
    verifier: str  # resolved: "numeric" | "exact" | "choice" | "math" | "regex:<pattern>" | "code"
    tags: dict[str, str | int | float] = field(default_factory=dict)
    group: str | None = None
    variant: str | None = None
    tests: str | None = None
    entry_point: str | None = None
    line: int = 0  # 1-based line in the items file, for error messages
    n_choices: int | None = None  # multiple choice read from lm-eval samples: how many choices it offered

    @property
    def verifier_kind(self) -> str:
        return self.verifier.split(":", 1)[0]

    @property
    def is_original(self) -> bool:
        return self.variant in (None, "original")


@dataclass(frozen=True)
class ModelOutput:
    """One model's output for one item (``{"id", "output", "samples"?}``)."""

    id: str
    output: str
    samples: tuple[str, ...] = ()
    line: int = 0


@dataclass(frozen=True)
class Judgement:
    """The verifier's judgement of one output (not a probe's verdict: see ``vocabulary.Verdict``).

    ``answer`` is the extracted final answer in canonical form (numbers normalised,
    exact answers case-folded), so two wrong answers can be compared for equality.
    It is ``None`` when no final answer could be extracted (or for code items, where
    it is a short failure signature such as ``"AssertionError"``).
    """

    passed: bool
    answer: str | None
    reason: str = ""
    # Items with several samples (SPEC "Several samples per item"): ``passed``, ``answer`` and
    # ``reason`` are the first sample's (the text the probes read); ``samples`` holds every
    # sample's verdict, in order, and ``score`` the share that passed.
    samples: tuple[Judgement, ...] = ()

    @property
    def n_samples(self) -> int:
        return len(self.samples) or 1

    @property
    def score(self) -> float:
        """The item's correctness: the share of its samples that passed (0.0 or 1.0 with one)."""
        if not self.samples:
            return float(self.passed)
        return sum(v.passed for v in self.samples) / len(self.samples)


@dataclass
class OutputSet:
    """A model's outputs, joined to the items by id."""

    path: str
    outputs: dict[str, ModelOutput]
    missing: list[str] = field(default_factory=list)  # item ids with no output (reported, not fatal)
    lm_eval: Any = None  # lm-eval samples files: their own per-item scores (data.lm_eval_logs.LoggedScores)
    beyond_items: list[int] = field(
        default_factory=list
    )  # lm-eval doc_ids the items' own log lacks (left out)
