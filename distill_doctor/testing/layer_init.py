"""Student initialisation from a subset of the teacher's layers (the DistilBERT recipe)."""

from __future__ import annotations

from pathlib import Path


def init_from_teacher_layers(teacher_dir: str | Path, keep: tuple[int, ...], out_dir: str | Path) -> Path:
    """A shallower student: the teacher's embeddings, norms and head, and its layers ``keep`` copied whole.

    Works for decoder models whose layers live under ``model.layers.<i>`` (Llama, Qwen, Mistral).
    Saved with the teacher's tokenizer, loadable with ``from_pretrained``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    teacher = AutoModelForCausalLM.from_pretrained(str(teacher_dir), dtype=torch.float32)
    n_layers = teacher.config.num_hidden_layers
    if not keep or any(not 0 <= k < n_layers for k in keep):
        raise ValueError(f"keep must name layers in 0..{n_layers - 1}, got {list(keep)}")
    tokenizer = AutoTokenizer.from_pretrained(str(teacher_dir))
    config = teacher.config.__class__.from_dict({**teacher.config.to_dict(), "num_hidden_layers": len(keep)})
    student = type(teacher)(config)
    source = teacher.state_dict()
    state = {}
    for key in student.state_dict():
        if key.startswith("model.layers."):
            _, _, index, rest = key.split(".", 3)
            state[key] = source[f"model.layers.{keep[int(index)]}.{rest}"]
        else:
            state[key] = source[key]
    student.load_state_dict(state)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    student.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return out_dir
