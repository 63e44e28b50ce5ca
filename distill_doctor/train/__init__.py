"""Distillation training: sequence KD (sft), logit KD, on-policy GKD and speculative KD.

Call ``run_training(method, cfg)`` with a :class:`TrainConfig` (``load_config(path, overrides)``
reads one from YAML), or a method function directly (``train_sft(cfg)`` ...). Heavy imports
(torch, transformers, accelerate) happen only when a run starts.
"""

from __future__ import annotations

from distill_doctor.train.config import GKDConfig, LossConfig, SKDConfig, TrainConfig, load_config


def run_training(method: str, cfg):
    """Train with ``method`` (sft, logit_kd, gkd, skd); return the output directory (a Path).

    ``cfg``: a :class:`TrainConfig`, a mapping of its fields, or a YAML config path.
    """
    from distill_doctor.train.command import run_training as _run

    return _run(method, cfg)


__all__ = ["GKDConfig", "LossConfig", "SKDConfig", "TrainConfig", "load_config", "run_training"]
