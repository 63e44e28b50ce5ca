"""distill-doctor: train LLM distillation runs and diagnose their failure modes."""

__version__ = "0.1.0"
