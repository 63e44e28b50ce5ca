"""Training-set scans in shards: bounded memory, every core, or a Ray cluster.

The data-side probes (``data_quality``, ``contamination``, the training-prompt overlap of
``teacher_error_transfer``) never hold the training rows: a :class:`TrainingSource` cuts them
into shards of about ``SHARD_ROWS`` rows, a scan function turns one shard into a small partial
result, and the caller merges the partial results **in shard order**. Memory therefore grows
with the evaluation side (indexes, the duplicate hashes: 16 bytes a row) and not with the text.

Shards are fixed by the data (record batches of the validated Arrow file), never by the number
of workers, and merging happens in shard order, so one worker, all cores and Ray give the same
result.

Engines (:func:`map_shards`):

- ``local``: ``workers`` processes (default: every core) forked from the driver, which has
  built the scan function (the contamination index, the sample positions) once; the children
  inherit it. Where ``fork`` is not available the scan runs in the driver.
- ``ray``: Ray Data runs the same scan function over the shards (``ray.data.from_items`` of the
  shard list, one block per shard, ``map``), each task reading its own shard from the Arrow file
  in parallel; the driver reduces the partial results in shard order. The cluster is
  ``RAY_ADDRESS`` when set, else a local one. The Arrow file must be readable by the workers
  (a shared ``$DISTILL_DOCTOR_CACHE`` on a multi-node cluster).

Sources: the memory-mapped ``datasets.Dataset`` that :func:`distill_doctor.data.load_training`
returns is read record batch by record batch from its Arrow stream file with plain reads (no
memory map: mapped pages would count as resident memory); an in-memory ``Dataset`` (tests) is
sliced; a list of row dicts works too.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SHARD_ROWS = 20_000
ENGINES = ("local", "ray")
_JOB: Callable[[Any], Any] | None = None  # the scan function, inherited by forked workers


@dataclass(frozen=True)
class Shard:
    """Rows ``[start, stop)`` of the training set; ``batches``: its record batches in the file."""

    index: int
    start: int
    stop: int
    batches: tuple[int, ...] = ()

    @property
    def rows(self) -> int:
        return self.stop - self.start


class TrainingSource:
    """The training rows as shards; :meth:`read` gives one shard's columns as Python lists."""

    n_rows: int

    def shards(self, rows_per_shard: int | None = None) -> list[Shard]:
        """Consecutive shards of ``rows_per_shard`` (default ``SHARD_ROWS``) rows (the last one shorter)."""
        rows_per_shard = rows_per_shard or SHARD_ROWS
        return [
            Shard(i, start, min(start + rows_per_shard, self.n_rows))
            for i, start in enumerate(range(0, self.n_rows, rows_per_shard))
        ]

    def read(self, shard: Shard, columns: Sequence[str]) -> dict[str, list]:
        raise NotImplementedError

    def column_names(self) -> list[str]:
        raise NotImplementedError

    def values_at(self, rows: Sequence[int], column: str) -> dict[int, Any]:
        """``{row: value of column}`` for a few rows (evidence), reading only their shards."""
        wanted = sorted(set(int(r) for r in rows))
        out: dict[int, Any] = {}
        for shard in self.shards():
            inside = [r for r in wanted if shard.start <= r < shard.stop]
            if inside:
                values = self.read(shard, [column])[column]
                out.update({r: values[r - shard.start] for r in inside})
        return out


class ListSource(TrainingSource):
    """A list of row dicts (missing columns read as None)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.n_rows = len(rows)

    def column_names(self) -> list[str]:
        return sorted({k for r in self.rows[:1000] for k in r})

    def read(self, shard: Shard, columns: Sequence[str]) -> dict[str, list]:
        part = self.rows[shard.start : shard.stop]
        return {c: [r.get(c) for r in part] for c in columns}


class TableSource(TrainingSource):
    """A ``pyarrow.Table`` (an in-memory ``datasets.Dataset``); slices are zero-copy."""

    def __init__(self, table) -> None:
        self.table = table
        self.n_rows = table.num_rows

    def column_names(self) -> list[str]:
        return list(self.table.column_names)

    def read(self, shard: Shard, columns: Sequence[str]) -> dict[str, list]:
        part = self.table.slice(shard.start, shard.rows)
        return {
            c: part.column(c).to_pylist() if c in part.column_names else [None] * shard.rows for c in columns
        }


class ArrowStreamSource(TrainingSource):
    """An Arrow IPC stream file (the ``load_training`` cache), read by record batch with plain
    file reads. Batch offsets come from one pass over the file, kept next to it as ``.offsets.npy``."""

    def __init__(self, path: str | Path) -> None:
        import pyarrow as pa

        self.path = str(path)
        with pa.OSFile(self.path, "rb") as f:
            self._columns = list(pa.ipc.open_stream(f).schema.names)
        self.offsets, self.batch_rows = _batch_offsets(self.path)
        self.n_rows = int(self.batch_rows.sum())

    def column_names(self) -> list[str]:
        return list(self._columns)

    def shards(self, rows_per_shard: int | None = None) -> list[Shard]:
        """Whole record batches, grouped until a shard holds at least ``rows_per_shard`` rows."""
        rows_per_shard = rows_per_shard or SHARD_ROWS
        out: list[Shard] = []
        start, rows, batches = 0, 0, []
        for b, k in enumerate(self.batch_rows.tolist()):
            batches.append(b)
            rows += k
            if rows >= rows_per_shard or b == len(self.batch_rows) - 1:
                out.append(Shard(len(out), start, start + rows, tuple(batches)))
                start, rows, batches = start + rows, 0, []
        return out

    def read(self, shard: Shard, columns: Sequence[str]) -> dict[str, list]:
        import pyarrow as pa

        out: dict[str, list] = {c: [] for c in columns}
        with pa.OSFile(self.path, "rb") as f:
            schema = pa.ipc.open_stream(f).schema
            for b in shard.batches:
                f.seek(int(self.offsets[b]))
                batch = pa.ipc.read_record_batch(pa.ipc.read_message(f), schema)
                for c in columns:
                    out[c].extend(
                        batch.column(c).to_pylist() if c in schema.names else [None] * batch.num_rows
                    )
        return out


def _batch_offsets(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Byte offset and row count of every record batch of an Arrow stream file (cached beside it)."""
    import pyarrow as pa

    side = Path(path + ".offsets.npy")
    st = os.stat(path)
    if side.exists():
        saved = np.load(side)
        if len(saved) and int(saved[0, 0]) == st.st_size and int(saved[0, 1]) == st.st_mtime_ns:
            return saved[1:, 0].copy(), saved[1:, 1].copy()
    offsets, rows = [], []
    with pa.OSFile(path, "rb") as f:
        schema = pa.ipc.open_stream(f).schema
        f.seek(0)
        reader = pa.ipc.MessageReader.open_stream(f)
        while True:
            pos = f.tell()
            try:
                msg = reader.read_next_message()
            except StopIteration:
                break
            if msg is None:
                break
            if msg.type == "record batch":
                offsets.append(pos)
                rows.append(pa.ipc.read_record_batch(msg, schema).num_rows)
    offs = np.asarray(offsets, dtype=np.int64)
    nrows = np.asarray(rows, dtype=np.int64)
    try:
        table = np.concatenate(([[st.st_size, st.st_mtime_ns]], np.stack([offs, nrows], axis=1)))
        tmp = side.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, table)
        os.replace(tmp, side)
    except OSError:
        pass  # a read-only cache folder: recompute next time
    return offs, nrows


def source_of(train: Any) -> TrainingSource:
    """The shard source for what ``DiagnosisInputs.train`` holds (Dataset, pyarrow Table, list)."""
    if isinstance(train, TrainingSource):
        return train
    if isinstance(train, list):
        return ListSource(train)
    if hasattr(train, "cache_files") and hasattr(train, "data"):
        files = train.cache_files
        if len(files) == 1 and getattr(train, "_indices", None) is None:
            try:
                src = ArrowStreamSource(files[0]["filename"])
            except Exception:  # not a stream file we can read batch by batch: slice the table
                src = None
            if src is not None and src.n_rows == len(train):
                return src
        table = train.data.table if hasattr(train.data, "table") else train.data
        if getattr(train, "_indices", None) is not None:
            table = train.with_format("arrow")[:]
        return TableSource(table)
    if hasattr(train, "num_rows") and hasattr(train, "slice"):
        return TableSource(train)
    return ListSource(list(train))


def resolve_workers(workers: int | None) -> int:
    """``None`` or 0: every core this process may use; else at least 1."""
    if workers:
        return max(1, int(workers))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _run_job(shard: Shard) -> bytes:
    assert _JOB is not None
    return pickle.dumps(_JOB(shard), protocol=pickle.HIGHEST_PROTOCOL)


def map_shards(
    job: Callable[[Shard], Any],
    shards: list[Shard],
    *,
    workers: int | None = None,
    engine: str = "local",
    desc: str = "scan",
    progress: bool = False,
) -> Iterator[Any]:
    """``job(shard)`` for every shard, yielded in shard order (whatever ran where).

    ``job`` must be a picklable callable for the Ray engine; the local engine forks after it
    exists, so workers share it without copying. ``progress`` shows a tqdm bar on stderr
    (rows and rows/s) when stderr is a terminal."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    bar = _bar(sum(s.rows for s in shards), desc, progress)
    try:
        results: Iterable[Any]
        if engine == "ray":
            results = _ray_map(job, shards)
        else:
            results = _local_map(job, shards, resolve_workers(workers))
        for shard, result in zip(shards, results):
            if bar is not None:
                bar.update(shard.rows)
            yield result
    finally:
        if bar is not None:
            bar.close()


def _local_map(job: Callable[[Shard], Any], shards: list[Shard], workers: int) -> Iterator[Any]:
    global _JOB
    workers = min(workers, len(shards))
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        for shard in shards:
            yield job(shard)
        return
    _JOB = job
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for blob in pool.imap(_run_job, shards):
                yield pickle.loads(blob)
    finally:
        _JOB = None


def _ray_map(job: Callable[[Shard], Any], shards: list[Shard]) -> list[Any]:
    """Run ``job`` over the shards with Ray Data; results come back in shard order."""
    try:
        import ray
    except ImportError:
        from distill_doctor.errors import InputError

        raise InputError(
            "--engine ray needs Ray: pip install 'distill-doctor[ray]' (or pip install 'ray[data]')"
        ) from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, log_to_driver=False, include_dashboard=False)
    try:
        job_ref = ray.put(job)
        by_index = {s.index: s for s in shards}

        def run_one(row: dict[str, Any]) -> dict[str, Any]:
            fn = ray.get(job_ref)
            return {"index": row["index"], "result": pickle.dumps(fn(by_index[row["index"]]))}

        ray.data.DataContext.get_current().enable_progress_bars = False  # ours is the driver's bar
        ds = ray.data.from_items(
            [{"index": s.index} for s in shards], override_num_blocks=max(1, len(shards))
        )
        rows = ds.map(run_one).take_all()
        rows.sort(key=lambda r: r["index"])
        return [pickle.loads(r["result"]) for r in rows]
    finally:
        if started and not os.environ.get("RAY_ADDRESS"):
            ray.shutdown()


def _bar(total: int, desc: str, progress: bool):
    if not progress or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="row", unit_scale=True, leave=False, file=sys.stderr)
