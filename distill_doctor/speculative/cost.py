"""The draft/teacher cost ratio c, measured on this machine.

Decoding one token costs one incremental forward pass (batch 1, a KV cache holding the prefix),
so c is measured as the median time of exactly that step for the student over the teacher's.
On tiny models fixed per-call overhead dominates and c sits far above the parameter ratio;
pass ``--draft-cost`` to use the ratio of your serving stack instead.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass

import torch

from distill_doctor.train.generation import _cache_argument, _cache_of

PREFIX = 32
REPEATS = 30


@dataclass(frozen=True)
class DraftCost:
    """Median per-token decode time of each model (milliseconds) and their ratio c."""

    teacher_ms: float
    student_ms: float

    @property
    def ratio(self) -> float:
        return self.student_ms / self.teacher_ms if self.teacher_ms > 0 else float("nan")


@torch.no_grad()
def _decode_ms(model, prefix: torch.Tensor, repeats: int) -> float:
    out = model(input_ids=prefix, use_cache=True)
    cache, nxt, arg = _cache_of(out), out.logits[:, -1:].argmax(-1), _cache_argument(model)
    times = []
    for _ in range(repeats + 3):  # the first calls warm up
        fresh = copy.deepcopy(cache)  # the same prefix every time (a step appends to its cache)
        _sync(prefix.device)
        t0 = time.perf_counter()
        model(input_ids=nxt, use_cache=True, **{arg: fresh})
        _sync(prefix.device)  # GPU kernels run asynchronously: wait for them before reading the clock
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times[3:])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_draft_cost(teacher, student, tok, *, repeats: int = REPEATS) -> DraftCost:
    """Time one cached decode step of each model on the same ``PREFIX``-token prefix."""
    device = next(teacher.parameters()).device
    ids = (torch.arange(PREFIX) % len(tok))[None, :].to(device)  # any ids: only the time matters
    return DraftCost(_decode_ms(teacher, ids, repeats), _decode_ms(student, ids, repeats))
