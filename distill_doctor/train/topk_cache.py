"""A top-k teacher cache: run the teacher once over the training set, train many students from disk.

For every response token (the positions whose labels are not -100 after the shift, i.e. the
response and its closing EOS) the cache stores the teacher's k most likely ids, their
log-probabilities and the log of the remaining tail mass, ``log(1 - sum of the top-k probs)``,
computed as ``logsumexp(non-top-k logits) - logsumexp(all logits)`` so it is exact even when the
top-k hold almost all the mass.

On disk (one directory)::

    index.json     format, version, k, vocab_size, teacher, tokenizer, max_len, temperature,
                   dtypes, num_rows, num_tokens, example_ids   (written last: its presence = complete)
    offsets.npy    int64 (num_rows + 1,): row r owns tokens offsets[r]:offsets[r + 1]
    ids.bin        (num_tokens, k) uint16 when vocab_size <= 65,536, else int32
    logprobs.bin   (num_tokens, k) float16 (or float32 with dtype="float32")
    tail.bin       (num_tokens,)   same dtype as logprobs

read back as numpy memmaps. With k = 32 and float16 that is 32 * (2 + 2) + 2 = 130 bytes/token.

Rows are the examples that ``data.tokenize_all`` keeps for the same tokenizer and ``max_len``
(examples whose prompt alone is too long are skipped there and here), in the same order, so the
cache's row i is the trainer's row i; ``example_ids`` lets a reader check that.

Temperature: the cached log-probs are the teacher's at the temperature the cache was built with
(``build_topk_cache(..., temperature=tau)``, recorded in index.json, default 1). Re-tempering
top-k log-probs afterwards is ill-defined for the tail (its mass at another temperature depends on
logits that were not kept), so ``losses.topk.sparse_kd_loss(temperature=...)`` applies the
temperature to the student only: build the cache at the temperature you train with.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from distill_doctor.atomic import atomic_write_text
from distill_doctor.errors import InputError
from distill_doctor.losses.topk import topk_targets
from distill_doctor.train.data import Example, collate, tokenize_example

FORMAT = "distill-doctor-topk-cache"
VERSION = 1
FLOAT16_MIN = -65504.0


@dataclass(frozen=True)
class TopKTargets:
    """The cached teacher targets of one row's response tokens (T_r of them)."""

    ids: torch.Tensor  # (T_r, k) long
    logprobs: torch.Tensor  # (T_r, k) float32
    tail_logprob: torch.Tensor  # (T_r,) float32, log of the probability outside the top-k


def _example(row, i: int) -> Example:
    if isinstance(row, Example):
        return row
    try:
        return Example(id=str(row.get("id", f"row-{i}")), prompt=row["prompt"], response=row["response"])
    except (KeyError, AttributeError):
        raise InputError("needs 'prompt' and 'response'", line=i + 1, field="prompt/response") from None


@torch.no_grad()
def build_topk_cache(
    teacher_model,
    tokenizer,
    dataset_rows: Iterable[dict],
    out_dir: str | Path,
    *,
    k: int = 32,
    max_len: int = 512,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    progress: bool = True,
    temperature: float = 1.0,
    dtype: str = "float16",
    vocab_size: int | None = None,
) -> Path:
    """Run ``teacher_model`` over ``dataset_rows`` ({prompt, response[, id]}) and write the cache to ``out_dir``.

    Tokenisation is the trainer's (``data.tokenize_example``: prompt with special tokens, response,
    EOS; truncated to ``max_len``). ``vocab_size``: keep only the first ``vocab_size`` output slots
    (pass the student's when the teacher's head is padded larger, as ``align_vocab`` does).
    Returns ``out_dir``.
    """
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be float16 or float32, got {dtype!r}")
    if k < 1 or temperature <= 0:
        raise ValueError(f"need k >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    teacher_model.eval().to(device)
    v = vocab_size or teacher_model.get_output_embeddings().weight.shape[0]
    layout = _Layout(
        k=min(k, v),
        vocab=v,
        temperature=temperature,
        id_dtype=np.uint16 if v <= 2**16 else np.int32,
        lp_dtype=np.float16 if dtype == "float16" else np.float32,
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = _tokenized(tokenizer, dataset_rows, max_len)
    offsets = _write_targets(
        teacher_model,
        rows,
        out_dir,
        layout,
        pad_id=pad_id,
        batch_size=batch_size,
        device=device,
        progress=progress,
    )
    _write_index(out_dir, teacher_model, tokenizer, layout, max_len, rows, offsets)
    return out_dir


@dataclass(frozen=True)
class _Layout:
    """What the cache keeps per response token: the top ``k`` of ``vocab`` slots at ``temperature``,
    ids stored as ``id_dtype`` and log-probs / tail as ``lp_dtype``."""

    k: int
    vocab: int
    temperature: float
    id_dtype: type
    lp_dtype: type


def _tokenized(tokenizer, dataset_rows: Iterable[dict], max_len: int) -> list:
    """The rows ``data.tokenize_all`` keeps, in order; refuses a set where none is left."""
    tokenized = (tokenize_example(tokenizer, _example(r, i), max_len) for i, r in enumerate(dataset_rows))
    rows = [t for t in tokenized if t is not None]
    if not rows:
        raise InputError(f"no rows to cache (every prompt is longer than max_len={max_len})", field="max_len")
    return rows


def _write_targets(
    teacher_model,
    rows: list,
    out_dir: Path,
    layout: _Layout,
    *,
    pad_id: int,
    batch_size: int,
    device: str | torch.device,
    progress: bool,
) -> list[int]:
    """Run the teacher over ``rows`` and write ids.bin, logprobs.bin and tail.bin (through ``.partial``
    files renamed at the end); returns the token offsets (num_rows + 1,)."""
    from tqdm.auto import tqdm

    files = {name: out_dir / f".{name}.bin.partial" for name in ("ids", "logprobs", "tail")}
    handles = {name: open(path, "wb") for name, path in files.items()}  # noqa: SIM115 (closed below)
    offsets = [0]
    try:
        for start in tqdm(range(0, len(rows), batch_size), disable=not progress, desc="top-k cache"):
            chunk = rows[start : start + batch_size]
            batch = collate(chunk, pad_id)
            inputs = {key: batch[key].to(device) for key in ("input_ids", "attention_mask", "position_ids")}
            logits = teacher_model(**inputs).logits[..., : layout.vocab]  # (B, T, V)
            for row, tok in enumerate(chunk):
                # position t predicts token t + 1: the response tokens are predicted by prompt_len-1 .. len-2
                positions = logits[row, tok.prompt_len - 1 : len(tok.input_ids) - 1]  # (T_r, V)
                ids, logprobs, tail = topk_targets(positions, layout.k, layout.temperature)
                handles["ids"].write(ids.cpu().numpy().astype(layout.id_dtype).tobytes())
                handles["logprobs"].write(_store(logprobs, layout.lp_dtype).tobytes())
                handles["tail"].write(_store(tail, layout.lp_dtype).tobytes())
                offsets.append(offsets[-1] + positions.shape[0])
    finally:
        for handle in handles.values():
            handle.close()
    for name, path in files.items():
        os.replace(path, out_dir / f"{name}.bin")
    return offsets


def _write_index(
    out_dir: Path, teacher_model, tokenizer, layout: _Layout, max_len: int, rows: list, offsets: list[int]
) -> None:
    """offsets.npy, then index.json last (its presence marks the cache complete)."""
    np.save(out_dir / "offsets.npy", np.asarray(offsets, dtype=np.int64))
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "k": layout.k,
        "vocab_size": layout.vocab,
        "teacher": str(getattr(teacher_model.config, "name_or_path", "") or type(teacher_model).__name__),
        "tokenizer": str(getattr(tokenizer, "name_or_path", "")),
        "max_len": max_len,
        "temperature": layout.temperature,
        "ids_dtype": np.dtype(layout.id_dtype).name,
        "logprob_dtype": np.dtype(layout.lp_dtype).name,
        "num_rows": len(rows),
        "num_tokens": offsets[-1],
        "example_ids": [r.id for r in rows],
    }
    atomic_write_text(out_dir / "index.json", json.dumps(meta, indent=1))


def _store(x: torch.Tensor, dtype) -> np.ndarray:
    """Finite values clamped into float16's range (-inf, i.e. probability 0, stays -inf)."""
    x = x.float().cpu()
    if dtype == np.float16:
        x = torch.where(torch.isfinite(x), x.clamp_min(FLOAT16_MIN), x)
    return x.numpy().astype(dtype)


class TopKCache:
    """Read a cache written by :func:`build_topk_cache` (memory-mapped; rows load on demand)."""

    def __init__(self, out_dir: str | Path) -> None:
        self.path = Path(out_dir)
        index = self.path / "index.json"
        if not index.exists():
            raise InputError("not a top-k cache (no index.json; was the build interrupted?)", path=self.path)
        try:
            meta = json.loads(index.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise InputError(f"index.json is not valid JSON: {err.msg}", path=index) from None
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise InputError(f"expected {FORMAT} version {VERSION}", path=index, field="format")
        self.meta = meta
        self.k, self.vocab_size = int(meta["k"]), int(meta["vocab_size"])
        self.temperature = float(meta["temperature"])
        self.example_ids: list[str] = list(meta["example_ids"])
        n = int(meta["num_tokens"])
        self._offsets = np.load(self.path / "offsets.npy")
        self._ids = self._map("ids", meta["ids_dtype"], (n, self.k))
        self._logprobs = self._map("logprobs", meta["logprob_dtype"], (n, self.k))
        self._tail = self._map("tail", meta["logprob_dtype"], (n,))

    def _map(self, name: str, dtype: str, shape: tuple) -> np.ndarray:
        path = self.path / f"{name}.bin"
        expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if not path.exists() or path.stat().st_size != expected:
            raise InputError(f"missing or truncated (expected {expected} bytes)", path=path)
        if expected == 0:
            return np.zeros(shape, dtype=dtype)
        return np.memmap(path, dtype=dtype, mode="r", shape=shape)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    @property
    def bytes_per_token(self) -> int:
        """Stored bytes per response token (ids, log-probs and tail)."""
        return self._ids.dtype.itemsize * self.k + self._logprobs.dtype.itemsize * (self.k + 1)

    def get(self, row_index) -> TopKTargets:
        i = int(row_index)
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} out of range for a cache of {len(self)} rows")
        a, b = int(self._offsets[i]), int(self._offsets[i + 1])
        return TopKTargets(
            ids=torch.from_numpy(self._ids[a:b].astype(np.int64)),
            logprobs=torch.from_numpy(self._logprobs[a:b].astype(np.float32)),
            tail_logprob=torch.from_numpy(self._tail[a:b].astype(np.float32)),
        )
