"""The small contract every probe shares.

A probe is a :class:`Probe`: its failure ``mode``, the ``stage`` of the debug order it
belongs to, the inputs it ``needs``, and a pure ``run(inputs) -> Finding``. The diagnosis
imports the probes explicitly, in debug order (``distill_doctor/diagnose``), runs those
whose inputs are present and reports the others as ``skipped`` with the reason. Inside a probe
module ``run`` is ``summarize(measure(inputs), decide(measured, RULE, alpha))`` (see
``distill_doctor/probes/__init__.py``); a verdict changed after its probe decided it (Holm across
probes, an attribution to another probe) is a new finding from :meth:`Finding.downgraded`.

Verdict rules every probe follows (SPEC.md):
- ``fail`` only on statistically supported evidence: a primary test with p < alpha
  *and* an effect size above the probe's practical threshold, on at least the probe's
  minimum sample. The probe reports that primary p-value in ``Finding.p_value``; the
  diagnosis then controls the family-wise error across probes (Holm) and downgrades a
  ``fail`` whose adjusted p-value is no longer significant to ``warn``.
- a small sample gives at most ``warn``.
- ``pass`` when the evidence does not show the failure (not "proves its absence").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from distill_doctor.data.records import Item, Judgement, ModelOutput
from distill_doctor.vocabulary import ALPHA, MODE_ORDER, STAGE_OF_MODE, Mode, Stage, Verdict

# The plain-string views of the vocabulary (distill_doctor/vocabulary.py), for callers that
# compare with report.json's strings.
MODES: tuple[str, ...] = tuple(m.value for m in MODE_ORDER)  # also the order findings are reported in
VERDICTS: tuple[str, ...] = tuple(v.value for v in Verdict)


@dataclass
class DiagnosisInputs:
    """Everything a probe may look at. Fields a run did not provide are ``None``."""

    items: list[Item]
    student: dict[str, ModelOutput]
    student_verdicts: dict[str, Judgement]
    teacher: dict[str, ModelOutput] | None = None
    teacher_verdicts: dict[str, Judgement] | None = None
    train: Any | None = None  # datasets.Dataset with columns prompt, response, id, source, reference
    train_path: Path | None = None
    manifest: dict[str, Any] | None = None
    manifest_path: Path | None = None
    teacher_model: Path | None = None
    student_model: Path | None = None
    seed: int = 0
    alpha: float = ALPHA
    quiet: bool = True
    workers: int | None = None  # training-set scans: processes (None: every core)
    engine: str = "local"  # training-set scans: "local" or "ray" (see probes/shards.py)

    def scored_ids(self) -> list[str]:
        """Ids of items with a verdict for the student (and the teacher, when given), in item order."""
        ids = [it.id for it in self.items if it.id in self.student_verdicts]
        if self.teacher_verdicts is not None:
            ids = [i for i in ids if i in self.teacher_verdicts]
        return ids


@dataclass
class StatTest:
    """One statistical test as a reader needs it: what, on how many, effect, interval, p."""

    name: str  # e.g. "exact McNemar (two-sided)"
    n: int
    p_value: float | None
    effect: float | None = None
    effect_name: str = ""
    ci: tuple[float, float] | None = None  # 95% unless ``ci_level`` says otherwise
    ci_level: float = 0.95
    statistic: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci"] = list(self.ci) if self.ci is not None else None
        return d


class Rule(Protocol):
    """A probe's verdict rule: its thresholds as a frozen dataclass that ``decide`` applies.

    ``as_metrics`` is what the finding records under ``metrics["fail_rule"]`` (the thresholds as
    applied); ``describe`` is the rule in words, the README's "fails when" column (a test keeps
    the two equal)."""

    def as_metrics(self, alpha: float) -> dict[str, Any]: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class Ruling:
    """What a probe's ``decide`` concluded: the verdict and the primary p-value it rests on (the
    one the diagnosis adjusts for multiplicity, Holm)."""

    verdict: Verdict
    p_value: float | None = None


@dataclass
class Finding:
    """A probe's result; ``to_dict`` is the ``findings[]`` entry of report.json."""

    mode: Mode
    verdict: Verdict
    summary: str
    metrics: dict[str, Any] = field(default_factory=dict)
    evidence: list[dict[str, Any]] = field(default_factory=list)  # [{"id": ..., "why": ...}, ...]
    guardrail: str = ""
    tests: list[StatTest] = field(default_factory=list)
    p_value: float | None = None  # the primary test's p-value, used for multiplicity control
    n: int = 0
    skipped_reason: str | None = None
    # What the probe measured and decided (its ``<Probe>Measured`` and ``Ruling``), kept beside the
    # report entry so that a cross-probe adjustment can re-summarize instead of editing text; never
    # written to report.json and not part of equality.
    measured: Any = field(default=None, repr=False, compare=False)
    ruling: Ruling | None = field(default=None, repr=False, compare=False)

    @property
    def stage(self) -> Stage:
        return STAGE_OF_MODE[Mode(self.mode)]

    def __post_init__(self) -> None:
        try:
            self.mode = Mode(self.mode)
        except ValueError:
            raise ValueError(f"unknown mode {self.mode!r}") from None
        try:
            self.verdict = Verdict(self.verdict)
        except ValueError:
            raise ValueError(f"unknown verdict {self.verdict!r}") from None

    def downgraded(self, to: Verdict, because: str, *, summary: str | None = None) -> Finding:
        """A copy with verdict ``to`` and ``because`` appended to the summary (to ``summary`` when
        given: the probe's own text for the new verdict). The one way a verdict is changed after its
        probe decided it (Holm across probes, an attribution to another probe)."""
        if Verdict(to).rank > Verdict(self.verdict).rank:
            raise ValueError(f"{self.mode}: {self.verdict} cannot be downgraded to {to}")
        text = self.summary if summary is None else summary
        ruling = replace(self.ruling, verdict=Verdict(to)) if self.ruling is not None else None
        return replace(self, verdict=Verdict(to), summary=f"{text} {because}", ruling=ruling)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "mode": Mode(self.mode).value,
            "stage": self.stage.value,
            "verdict": Verdict(self.verdict).value,
            "summary": self.summary,
            "metrics": self.metrics,
            "evidence": self.evidence,
            "guardrail": self.guardrail,
            "tests": [t.to_dict() for t in self.tests],
            "p_value": self.p_value,
            "n": self.n,
        }
        if self.skipped_reason is not None:
            d["skipped_reason"] = self.skipped_reason
        return d


def skipped(mode: Mode | str, reason: str) -> Finding:
    return Finding(
        mode=Mode(mode), verdict=Verdict.SKIPPED, summary=f"Skipped: {reason}", skipped_reason=reason
    )


@dataclass(frozen=True)
class Probe:
    mode: Mode
    needs: tuple[str, ...]  # DiagnosisInputs fields that must not be None
    run: Callable[[DiagnosisInputs], Finding]
    describe: str = ""

    @property
    def stage(self) -> Stage:
        return STAGE_OF_MODE[Mode(self.mode)]

    def missing(self, inputs: DiagnosisInputs) -> list[str]:
        return [name for name in self.needs if getattr(inputs, name) is None]
