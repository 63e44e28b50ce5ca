"""The small contract every probe shares.

A probe is a :class:`Probe`: its failure ``mode``, the ``stage`` of the debug order it
belongs to, the inputs it ``needs``, and a pure ``run(inputs) -> Finding``. The diagnosis
imports the probes explicitly, in debug order (``distill_doctor/diagnose``), runs those
whose inputs are present and reports the others as ``skipped`` with the reason.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distill_doctor.data.records import Item, ModelOutput, Verdict

DEBUG_ORDER = ("data", "capacity", "mismatch", "provenance")

STAGE_OF_MODE = {
    "data_quality": "data",
    "teacher_error_transfer": "data",
    "capacity_gap": "capacity",
    "superficial_imitation": "capacity",
    "exposure_bias": "mismatch",
    "contamination": "provenance",
    "provenance": "provenance",
}
MODES = tuple(STAGE_OF_MODE)  # also the order findings are reported in

VERDICTS = ("pass", "warn", "fail", "skipped")
ALPHA = 0.05


@dataclass
class DiagnosisInputs:
    """Everything a probe may look at. Fields a run did not provide are ``None``."""

    items: list[Item]
    student: dict[str, ModelOutput]
    student_verdicts: dict[str, Verdict]
    teacher: dict[str, ModelOutput] | None = None
    teacher_verdicts: dict[str, Verdict] | None = None
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


@dataclass
class Finding:
    """A probe's result; ``to_dict`` is the ``findings[]`` entry of report.json."""

    mode: str
    verdict: str
    summary: str
    metrics: dict[str, Any] = field(default_factory=dict)
    evidence: list[dict[str, Any]] = field(default_factory=list)  # [{"id": ..., "why": ...}, ...]
    guardrail: str = ""
    tests: list[StatTest] = field(default_factory=list)
    p_value: float | None = None  # the primary test's p-value, used for multiplicity control
    n: int = 0
    skipped_reason: str | None = None

    @property
    def stage(self) -> str:
        return STAGE_OF_MODE[self.mode]

    def __post_init__(self) -> None:
        if self.mode not in STAGE_OF_MODE:
            raise ValueError(f"unknown mode {self.mode!r}")
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r}")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "mode": self.mode,
            "stage": self.stage,
            "verdict": self.verdict,
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


def skipped(mode: str, reason: str) -> Finding:
    return Finding(mode=mode, verdict="skipped", summary=f"Skipped: {reason}", skipped_reason=reason)


@dataclass(frozen=True)
class Probe:
    mode: str
    needs: tuple[str, ...]  # DiagnosisInputs fields that must not be None
    run: Callable[[DiagnosisInputs], Finding]
    describe: str = ""

    @property
    def stage(self) -> str:
        return STAGE_OF_MODE[self.mode]

    def missing(self, inputs: DiagnosisInputs) -> list[str]:
        return [name for name in self.needs if getattr(inputs, name) is None]
