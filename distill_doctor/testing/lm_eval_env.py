"""Offline settings for lm-evaluation-harness runs in tests and benchmarks (no hub, no network)."""

from __future__ import annotations

import os

OFFLINE_ENV = {
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_EVALUATE_OFFLINE": "1",
    "HF_ALLOW_CODE_EVAL": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def offline_lm_eval() -> None:
    """Set the offline variables for lm-eval runs in this process (values already set are kept).

    The replay model (:mod:`distill_doctor.testing.lm_eval_replay`) is registered when it is
    imported, as an ordinary package module: no search path to extend.
    """
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
