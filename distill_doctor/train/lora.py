"""Saving a LoRA-trained student: the adapter (peft format) and the merged model (plain transformers).

``output_dir/adapter/`` loads with ``PeftModel.from_pretrained(base, dir)``; ``output_dir`` itself
holds the base weights with the adapters merged in, so evaluation, ``diagnose`` and any reader of
plain checkpoints need no peft.

Under FSDP2 or ZeRO-3 the training model holds only shards, which peft can neither save nor merge:
the main process rebuilds the same peft model whole (the student loaded again, adapters added as
in training) and loads the gathered full state dict into it, base weights included, then saves
that exactly as a single process would.
"""

from __future__ import annotations

import copy
from pathlib import Path

from distill_doctor.train.config import TrainConfig


def save_merged(peft_model, directory: str | Path, *, in_place: bool = False) -> None:
    """Write ``adapter/`` and the merged weights under ``directory``.

    ``in_place`` merges into the training model itself (at the end of a run); otherwise a copy is
    merged (a best checkpoint mid-run), which costs one more copy of the weights in memory.
    """
    directory = Path(directory)
    peft_model.save_pretrained(str(directory / "adapter"))
    model = peft_model if in_place else copy.deepcopy(peft_model)
    merged = model.merge_and_unload()
    merged.save_pretrained(str(directory))


def whole_peft_model(cfg: TrainConfig, accelerator, state_dict: dict):
    """The student's peft model, unsharded, holding ``state_dict`` (the gathered full state dict).

    Loaded strictly: every key of the trained model must be there and nothing else, so a
    gather that lost or renamed a tensor fails here instead of saving a half-trained model.
    """
    from distill_doctor.train.build import load_model, model_options, prepare_student, student_dtype
    from distill_doctor.train.distributed import replicated_loading

    with replicated_loading(accelerator):  # a plain model on this process alone, never partitioned
        base = load_model(cfg.student, field_name="student", dtype=student_dtype(cfg), **model_options(cfg))
    model = prepare_student(base, cfg)
    model.load_state_dict(state_dict, strict=True)
    return model
