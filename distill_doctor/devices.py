"""Checks of ``--device`` and ``--dtype`` before a model is loaded.

Why: lm-eval falls back to the CPU when the CUDA device it was given does not exist, so
``eval --device cuda:7`` on a machine without that GPU used to exit 0 after running on the
wrong device; and an unknown dtype crashed deep inside transformers. Both are now one line and
exit 2 before any work.
"""

from __future__ import annotations

import math

from distill_doctor.errors import InputError

DTYPES = ("auto", "float32", "bfloat16", "float16", "float64")


def check_device(text: str, *, flag: str = "--device") -> str:
    """``text`` names a torch device that exists here (``cpu``, ``cuda``, ``cuda:0``, ``mps``, ...)."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise InputError(f"{flag}: not a torch device: {text!r} (e.g. cpu, cuda, cuda:0)") from None
    if device.type == "cpu":
        return text
    backend = getattr(torch, device.type, None)
    available = getattr(backend, "is_available", None)
    if device.type == "mps":
        available = torch.backends.mps.is_available
    if available is None or not available():
        raise InputError(f"{flag} {text}: no {device.type} device is available on this machine")
    count = getattr(backend, "device_count", None)
    if device.index is not None and count is not None and device.index >= count():
        raise InputError(
            f"{flag} {text}: this machine has {count()} {device.type} device(s), numbered from 0"
        )
    return text


def model_load_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "this model folder cannot be loaded" (bad or truncated files, a config that
    does not match the weights), as opposed to a bug of ours."""
    import pickle

    errors: list[type[BaseException]] = [OSError, ValueError, RuntimeError, pickle.UnpicklingError, EOFError]
    try:
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    except ImportError:  # pragma: no cover - safetensors ships with transformers
        pass
    return tuple(errors)


def finite(value: float, flag: str) -> float:
    """Refuse NaN and infinities (every range check ``x < 0`` lets NaN through)."""
    if not math.isfinite(value):
        raise InputError(f"{flag} must be a finite number, got {value}")
    return value
