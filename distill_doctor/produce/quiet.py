"""``--quiet``: no progress bars, no library INFO logging, no chatter from child processes."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def _silent_fd2() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null: child processes (lm-eval runs ``git describe``, which
    prints "fatal: not a git repository" outside a checkout) write there, not to the user's log."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def quiet_output(enabled: bool) -> Iterator[None]:
    """Silence the harness's progress bars, INFO logging and subprocess chatter (``--quiet``).

    tqdm writes to ``sys.stderr``, so redirecting it silences the bars; errors still raise.
    """
    if not enabled:
        yield
        return
    names = ("lm_eval", "lm-eval", "datasets", "transformers")
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()), _silent_fd2():
            yield
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)
