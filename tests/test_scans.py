"""Training-set scans in shards: same findings for one worker, several workers and Ray; the
Arrow-file source reads back exactly what load_training wrote; ``diagnose --probes``."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from distill_doctor.cli import main
from distill_doctor.data import load_training
from distill_doctor.probes import contamination, data_quality, shards
from distill_doctor.probes.base import MODES
from distill_doctor.testing.synthetic_runs import make_run, make_train
from distill_doctor.text.overlap import summarize_hits


def _finding_dict(finding) -> dict:
    d = finding.to_dict()
    return json.loads(json.dumps(d, sort_keys=True, default=str))


@pytest.fixture
def small_shards(monkeypatch):
    monkeypatch.setattr(shards, "SHARD_ROWS", 37)


def _planted_train(tmp_path: Path, inputs) -> Path:
    """The synthetic run's corrupted training rows plus a few eval prompts copied in, as JSONL."""
    rows = list(make_train(inputs.items, {}, seed=3, corrupt=True, n_rows=300))
    for k, it in enumerate(inputs.items[:6]):
        rows.insert(40 * k + 5, {"id": f"leak{k}", "prompt": it.prompt, "response": "ok", "reference": None})
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if v is not None}) + "\n" for r in rows))
    return path


def test_arrow_source_reads_back_what_load_training_wrote(tmp_path, small_shards):
    inputs = make_run("clean_high", n=60, seed=1)
    ds = load_training(_planted_train(tmp_path, inputs), cache_dir=tmp_path / "cache", batch_rows=25)
    src = shards.source_of(ds)
    assert isinstance(src, shards.ArrowStreamSource) and src.n_rows == len(ds)
    got: dict[str, list] = {c: [] for c in ("prompt", "id", "reference")}
    parts = src.shards()
    assert len(parts) > 3 and parts[0].start == 0 and parts[-1].stop == len(ds)
    for shard in parts:
        for c, values in src.read(shard, list(got)).items():
            got[c] += values
    assert got == {c: ds[c] for c in got}
    assert src.values_at([0, len(ds) - 1], "id") == {0: ds[0]["id"], len(ds) - 1: ds[-1]["id"]}
    again = shards.ArrowStreamSource(src.path)  # the offsets sidecar is reused
    assert np.array_equal(again.offsets, src.offsets)


@pytest.mark.parametrize("probe", [contamination, data_quality])
def test_one_worker_and_two_workers_give_identical_findings(tmp_path, small_shards, probe):
    inputs = make_run("clean_high", n=60, seed=1)
    inputs.train = load_training(
        _planted_train(tmp_path, inputs), cache_dir=tmp_path / "cache", batch_rows=25
    )
    inputs.workers = 1
    one = probe.run(inputs)
    inputs.workers = 2
    two = probe.run(inputs)
    assert _finding_dict(one) == _finding_dict(two)
    inputs.train = [dict(r) for r in inputs.train]  # the same rows as a plain list, in shards too
    assert _finding_dict(probe.run(inputs)) == _finding_dict(one)
    if probe is contamination:
        assert one.metrics["dirty"] == 6 and {e["id"] for e in one.evidence} >= {
            it.id for it in inputs.items[:6]
        }
    else:
        assert one.metrics["exact_duplicates"] > 0 and one.metrics["verified_errors"] > 0


def test_scan_of_a_list_matches_scanning_row_by_row(small_shards):
    rng = random.Random(0)
    words = "alpha beta gamma delta eps zeta eta theta iota kappa lambda mu nu xi".split()
    evals = {f"e{i}": " ".join(rng.choice(words) for _ in range(20)) for i in range(30)}
    index = contamination.OverlapIndex(evals, punctuation="keep")
    rows = [{"prompt": " ".join(rng.choice(words) for _ in range(25)), "response": ""} for _ in range(200)]
    rows[17]["prompt"] = evals["e3"]
    rows[150]["response"] = "see " + evals["e7"]
    whole = summarize_hits(index, index.scan((r["prompt"], r["response"]) for r in rows))
    sharded = contamination.scan_training(index, rows, workers=2)
    assert {k: {**v, "best": v["best"].row} for k, v in whole.items()} == {
        k: {**v, "best": v["best"].row} for k, v in sharded.items()
    }
    assert sharded["e3"]["dirty"] and sharded["e7"]["dirty"]


def test_diagnose_probes_runs_only_the_selected(tmp_path):
    inputs = make_run("clean_high", n=60, seed=1)
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"id": it.id, "prompt": it.prompt, "reference": it.reference}) + "\n"
                             for it in inputs.items))  # fmt: skip
    student = tmp_path / "student.jsonl"
    student.write_text(
        "".join(json.dumps({"id": k, "output": o.output}) + "\n" for k, o in inputs.student.items())
    )
    train = _planted_train(tmp_path, inputs)
    out = tmp_path / "report"
    code = main(["diagnose", "--items", str(items), "--student", str(student), "--train", str(train),
                 "--out", str(out), "--quiet", "--probes", "contamination,data_quality", "--workers", "2"])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    by_mode = {f["mode"]: f for f in report["findings"]}
    assert by_mode["contamination"]["verdict"] == "fail" and by_mode["data_quality"]["verdict"] != "skipped"
    for mode in set(MODES) - {"contamination", "data_quality"}:
        assert by_mode[mode]["verdict"] == "skipped" and "not selected" in by_mode[mode]["summary"]


def test_unknown_probe_name_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(
            ["diagnose", "--items", "a", "--student", "b", "--out", str(tmp_path), "--probes", "contamnation"]
        )
    assert exc.value.code == 2 and "unknown probe contamnation" in capsys.readouterr().err


def test_shard_helpers():
    assert shards.resolve_workers(None) >= 1 and shards.resolve_workers(3) == 3
    assert [s.rows for s in shards.ListSource([{}] * 5).shards(2)] == [2, 2, 1]
    with pytest.raises(ValueError, match="engine"):
        list(shards.map_shards(lambda shard: shard.rows, [], engine="spark"))


@pytest.mark.slow  # about 50 s on 2 shared cores (Ray start-up)
def test_ray_engine_gives_the_same_findings_as_the_local_engine(tmp_path, small_shards):
    """A local Ray cluster (2 CPUs) runs the shard scans with Ray Data; the findings are the local ones."""
    ray = pytest.importorskip(
        "ray", reason="Ray is the optional [ray] extra: pip install 'distill-doctor[ray]'"
    )
    inputs = make_run("clean_high", n=60, seed=1)
    inputs.train = load_training(
        _planted_train(tmp_path, inputs), cache_dir=tmp_path / "cache", batch_rows=25
    )
    local = [_finding_dict(p.run(inputs)) for p in (contamination, data_quality)]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        inputs.engine = "ray"
        assert [_finding_dict(p.run(inputs)) for p in (contamination, data_quality)] == local
    finally:
        ray.shutdown()


def test_parquet_training_file_loads_like_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": f"r{i}", "prompt": f"What is {i}+1?", "response": f"#### {i + 1}", "reference": str(i + 1)}
            for i in range(50)]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    a = load_training(tmp_path / "train.parquet", cache_dir=tmp_path / "c")
    b = load_training(tmp_path / "train.jsonl", cache_dir=tmp_path / "c")
    assert a.to_list() == b.to_list() and len(a) == 50
    pq.write_table(pa.Table.from_pylist([{"prompt": 3, "response": "x"}]), tmp_path / "bad.parquet")
    from distill_doctor.errors import InputError

    with pytest.raises(InputError, match=r"bad.parquet:1: field 'prompt'"):
        load_training(tmp_path / "bad.parquet", cache_dir=tmp_path / "c")
