"""Saving a LoRA-trained student: the adapter (peft format) and the merged model (plain transformers).

``output_dir/adapter/`` loads with ``PeftModel.from_pretrained(base, dir)``; ``output_dir`` itself
holds the base weights with the adapters merged in, so evaluation, ``diagnose`` and any reader of
plain checkpoints need no peft.
"""

from __future__ import annotations

import copy
from pathlib import Path


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
