"""Synthetic output-level runs for the exposure-bias probe: items needing 1..12 steps, the student's
degeneration planted (rising with the step count, uniform, cut off) or not (clean)."""

from __future__ import annotations

import numpy as np

from distill_doctor.data.records import Item, Judgement, ModelOutput
from distill_doctor.probes.base import DiagnosisInputs


def _steps(rng, k: int, wrong_at: int | None = None) -> tuple[list[str], int]:
    total, lines = int(rng.integers(1, 20)), []
    for j in range(k):
        x = int(rng.integers(1, 20))
        new = total + x
        if wrong_at == j:
            new += int(rng.integers(1, 5))
        lines.append(f"Step {j + 1}: {total} + {x} = {new}")
        total = new
    return lines, total


def _output(rng, k: int, ok: bool, degenerate: str | None) -> tuple[str, Judgement]:
    lines, total = _steps(rng, k, wrong_at=None if ok else int(rng.integers(0, k)))
    if degenerate == "loop":
        text = "\n".join(lines[: max(1, k // 2)] + [lines[max(0, k // 2 - 1)]] * 8)
        return text, Judgement(False, None, "no answer")
    if degenerate == "cutoff":  # cut off mid-derivation: the numeric fallback still finds a number
        text = "\n".join(lines[: max(1, k // 2)])
        return text, Judgement(False, text.rsplit(" ", 1)[-1], "wrong answer")
    if degenerate == "truncated":
        text = "\n".join(lines[: max(1, k // 2)]) + f"\nStep {k // 2 + 2}: {total} + 3 ="
        return text, Judgement(False, None, "no answer")
    text = "\n".join(lines) + f"\nThe answer is {total}."
    return text, Judgement(ok, str(total))


def exposure_run(kind: str, n: int = 300, seed: int = 0) -> DiagnosisInputs:
    """Items needing 1..12 steps. ``planted``: student degeneration rises with the step count;
    ``uniform``: the student loops 25% of the time at any length; ``clean_high``/``clean_low``:
    accuracy falls with length for both models alike, rare degeneration for both."""
    rng = np.random.default_rng(seed)
    t_acc, s_acc = {"clean_low": (0.45, 0.3)}.get(kind, (0.92, 0.8))
    items, teacher, student, tv, sv = [], {}, {}, {}, {}
    for i in range(n):
        k = int(rng.integers(1, 13))
        iid = f"e{i:04d}"
        items.append(
            Item(
                id=iid,
                prompt=f"Add the {k} numbers step by step (item {i}).",
                reference=0,
                verifier="numeric",
                tags={"difficulty": k},
            )
        )
        shrink = 0.02 * (k - 6)  # both models lose a little accuracy on longer items
        t_deg = "loop" if rng.random() < 0.02 else None
        if kind == "cutoff":
            s_deg = "cutoff" if rng.random() < 0.02 + 0.06 * (k - 1) else None
        elif kind == "planted":
            s_deg = (
                ("loop" if rng.random() < 0.5 else "truncated")
                if rng.random() < 0.02 + 0.06 * (k - 1)
                else None
            )
        elif kind == "uniform":
            s_deg = "loop" if rng.random() < 0.25 else None
        else:
            s_deg = "loop" if rng.random() < 0.02 else None
        t_text, t_v = _output(rng, k, rng.random() < t_acc - shrink, t_deg)
        s_text, s_v = _output(rng, k, rng.random() < s_acc - shrink, s_deg)
        teacher[iid], student[iid] = ModelOutput(iid, t_text), ModelOutput(iid, s_text)
        tv[iid], sv[iid] = t_v, s_v
    return DiagnosisInputs(
        items=items, student=student, student_verdicts=sv, teacher=teacher, teacher_verdicts=tv, seed=seed
    )
