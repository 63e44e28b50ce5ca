"""The diagnosis's words, in one place: verdicts, failure modes, debug stages and their order.

Everything that reports, gates or ranks findings imports these instead of writing the strings:
the probes, the diagnosis, the reports and the CI gate. It imports nothing from the package, so
the reports can use it without importing a probe. The members are ``StrEnum`` values, so they
compare equal to, format as and serialise to the plain strings of report.json (SPEC.md).
"""

from __future__ import annotations

import enum


class Verdict(enum.StrEnum):
    """A probe's conclusion about one failure mode."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIPPED = "skipped"

    @property
    def rank(self) -> int:
        """Severity: skipped and pass 0, warn 1, fail 2 (for "the worst of several checks")."""
        return _VERDICT_RANK[self]

    @property
    def flagged(self) -> bool:
        """True for the verdicts a reader must act on (warn, fail)."""
        return self in (Verdict.WARN, Verdict.FAIL)


_VERDICT_RANK = {Verdict.SKIPPED: 0, Verdict.PASS: 0, Verdict.WARN: 1, Verdict.FAIL: 2}


def worst(verdicts) -> Verdict:
    """The most severe of ``verdicts`` (pass when there are none)."""
    return max((Verdict(v) for v in verdicts), key=lambda v: v.rank, default=Verdict.PASS)


class Stage(enum.StrEnum):
    """The debug order (SPEC.md): fix the data before blaming capacity, capacity before the
    train-test mismatch, and read provenance last. Members are declared in that order."""

    DATA = "data"
    CAPACITY = "capacity"
    MISMATCH = "mismatch"
    PROVENANCE = "provenance"

    @property
    def rank(self) -> int:
        return STAGE_ORDER.index(self)


class Mode(enum.StrEnum):
    """The failure modes, declared in report order (debug order, then within a stage)."""

    DATA_QUALITY = "data_quality"
    TEACHER_ERROR_TRANSFER = "teacher_error_transfer"
    CAPACITY_GAP = "capacity_gap"
    SUPERFICIAL_IMITATION = "superficial_imitation"
    EXPOSURE_BIAS = "exposure_bias"
    CONTAMINATION = "contamination"
    PROVENANCE = "provenance"

    @property
    def stage(self) -> Stage:
        return STAGE_OF_MODE[self]

    @property
    def rank(self) -> int:
        return MODE_ORDER.index(self)


STAGE_ORDER: tuple[Stage, ...] = tuple(Stage)
MODE_ORDER: tuple[Mode, ...] = tuple(Mode)
STAGE_OF_MODE: dict[Mode, Stage] = {
    Mode.DATA_QUALITY: Stage.DATA,
    Mode.TEACHER_ERROR_TRANSFER: Stage.DATA,
    Mode.CAPACITY_GAP: Stage.CAPACITY,
    Mode.SUPERFICIAL_IMITATION: Stage.CAPACITY,
    Mode.EXPOSURE_BIAS: Stage.MISMATCH,
    Mode.CONTAMINATION: Stage.PROVENANCE,
    Mode.PROVENANCE: Stage.PROVENANCE,
}

ALPHA = 0.05  # the family-wise error rate the diagnosis controls by default
