"""Progress of one diagnosis on stderr: which step runs (verifying each model, each probe).

A 10k-item run spends 30-60 s verifying and probing; without a sign of life a user cannot tell
it from a hang. The bar (tqdm) appears only on a terminal (stderr is a TTY), never under
``--quiet``, and only once the run has taken ``DELAY_S`` seconds, so short runs and CI logs stay
clean.
"""

from __future__ import annotations

import sys
from typing import Any

DELAY_S = 2.0


def wanted(quiet: bool) -> bool:
    """Whether to show progress: not ``--quiet`` and stderr is a terminal."""
    isatty = getattr(sys.stderr, "isatty", None)
    return not quiet and callable(isatty) and bool(isatty())


class Progress:
    """A step counter; ``step(name)`` marks the start of the next step, ``close()`` ends the bar."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self._bar: Any = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total, desc="diagnose", unit="step", file=sys.stderr, delay=DELAY_S, leave=False
            )
        self._started = False

    def step(self, name: str) -> None:
        if self._bar is None:
            return
        if self._started:
            self._bar.update(1)
        self._started = True
        self._bar.set_postfix_str(name, refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.update(self._bar.total - self._bar.n)
            self._bar.close()
