"""The lm-eval task built from an items file, and a real offline ``simple_evaluate`` on a tiny model."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from produce_helpers import read_jsonl, tiny_models, write_items

from distill_doctor.data import load_items, load_outputs
from distill_doctor.errors import InputError
from distill_doctor.produce.lm_eval_runner import (
    fit_max_gen_toks,
    load_hflm,
    run_items,
    samples_filename,
    to_jsonable,
    write_outputs,
    write_samples,
)
from distill_doctor.produce.lm_eval_task import (
    build_task_config,
    export_task,
    generation_kwargs,
    load_docs_like_lm_eval,
    set_offline_env,
    task_name_for,
    write_docs,
)


def test_task_config_uses_an_absolute_test_split_and_registered_metrics(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = build_task_config("docs.jsonl", task_name="distill_doctor_x", max_gen_toks=32)
    data_files = cfg["dataset_kwargs"]["data_files"]
    assert cfg["dataset_path"] == "json" and cfg["test_split"] == "test"
    assert list(data_files) == ["test"] and Path(data_files["test"]).is_absolute()
    assert data_files["test"] == str(tmp_path / "docs.jsonl")
    assert cfg["output_type"] == "generate_until" and cfg["num_fewshot"] == 0
    assert cfg["doc_to_text"] == "prompt"  # the column itself: the prompt verbatim
    assert [m["metric"] for m in cfg["metric_list"]] == ["exact_match"]
    assert cfg["generation_kwargs"] == {
        "until": [],
        "do_sample": False,
        "temperature": 0.0,
        "max_gen_toks": 32,
    }


def test_generation_kwargs_validate_and_sample_only_above_zero_temperature():
    assert generation_kwargs(temperature=0.7, until=["\n\n"])["do_sample"] is True
    assert generation_kwargs(until=["\n\n"])["until"] == ["\n\n"]
    with pytest.raises(ValueError):
        generation_kwargs(max_gen_toks=0)
    with pytest.raises(ValueError):
        generation_kwargs(temperature=-1)


def test_task_names_are_registry_safe():
    assert task_name_for("/a/b/My Items-v2.jsonl.gz") == "distill_doctor_my_items_v2"
    assert task_name_for("...jsonl") == "distill_doctor_items"


def test_offline_variables_are_set_but_an_explicit_choice_wins():
    env = {"HF_HUB_OFFLINE": "0"}
    got = set_offline_env(env)
    assert got["HF_DATASETS_OFFLINE"] == "1" and got["TRANSFORMERS_OFFLINE"] == "1"
    assert env["HF_HUB_OFFLINE"] == "0"


def test_docs_are_the_items_rows_when_they_survive_the_loader(tmp_path):
    path = write_items(tmp_path / "items.jsonl", 4)
    items = load_items(path)
    docs = tmp_path / "docs.jsonl"
    assert write_docs(items, docs, items_path=path, cache_dir=tmp_path / "cache") == "verbatim"
    loaded = load_docs_like_lm_eval(docs, tmp_path / "cache")
    from distill_doctor.data.items import lm_doc_hash

    # lm-eval's doc_hash of each loaded doc is one the items loader accepts for that row.
    assert all(lm_doc_hash(d) in items.doc_hashes[i] for i, d in enumerate(loaded))


def test_docs_are_normalised_when_the_loader_would_change_them(tmp_path):
    path = write_items(tmp_path / "items.jsonl", 4, mixed_reference_types=True)
    items = load_items(path)
    docs = tmp_path / "docs.jsonl"
    assert write_docs(items, docs, items_path=path, cache_dir=tmp_path / "cache") == "normalized"
    rows = read_jsonl(docs)
    assert [r["id"] for r in rows] == [it.id for it in items]
    assert all(isinstance(r["reference"], str) for r in rows)
    assert load_docs_like_lm_eval(docs, tmp_path / "cache") == rows  # loads back unchanged


def test_exported_yaml_is_loadable_and_points_at_absolute_docs(tmp_path):
    path = write_items(tmp_path / "items.jsonl", 3)
    out = export_task(load_items(path), path, tmp_path / "task", max_gen_toks=16)
    cfg = yaml.safe_load(out.read_text())
    docs = Path(cfg["dataset_kwargs"]["data_files"]["test"])
    assert out.name == "distill_doctor_items.yaml" and docs.is_absolute() and docs.exists()
    assert cfg["generation_kwargs"]["max_gen_toks"] == 16
    assert sorted(p.name for p in (tmp_path / "task").iterdir()) == [
        "distill_doctor_items.jsonl",
        "distill_doctor_items.yaml",
    ]


def test_to_jsonable_turns_numpy_values_into_plain_python():
    got = to_jsonable({"a": np.float64(0.5), "b": [np.int64(3), (np.bool_(True),)], "c": np.arange(2)})
    assert got == {"a": 0.5, "b": [3, [True]], "c": [0, 1]}
    assert type(got["a"]) is float and type(got["b"][0]) is int and type(got["b"][1][0]) is bool
    json.dumps(got)


@pytest.mark.integration
def test_simple_evaluate_offline_on_a_tiny_model_joins_outputs_to_items(tmp_path):
    """A real lm-eval run (< 30 s): outputs in item order, greedy, BOS as in training, reproducible."""
    from distill_doctor.produce.sampling import HFSampler, SamplingParams, load_model

    assert os.environ.get("HF_DATASETS_OFFLINE") == "1"
    teacher, _ = tiny_models()
    path = write_items(tmp_path / "items.jsonl", 5)
    items = load_items(path)
    start = time.perf_counter()
    lm = load_hflm(teacher, batch_size=4, quiet=True)
    run = run_items(lm, items, items_path=path, max_gen_toks=12, quiet=True)
    again = run_items(lm, items, items_path=path, max_gen_toks=12, quiet=True)  # one HFLM, reused
    elapsed = time.perf_counter() - start
    assert elapsed < 30
    assert [o.id for o in run.outputs] == [it.id for it in items]
    assert [o.output for o in again.outputs] == [o.output for o in run.outputs]
    assert len({o.output for o in run.outputs}) > 1  # outputs depend on the prompt
    assert run.docs_mode == "verbatim" and isinstance(run.metrics["exact_match,none"], float)
    # Same text as our own greedy sampler, which tokenises exactly like training (BOS included).
    model, tok = load_model(teacher)
    greedy = HFSampler(model, tok, SamplingParams(temperature=0, max_new_tokens=12, batch_size=5))
    assert [g[0] for g in greedy([it.prompt for it in items], 1)] == [o.output for o in run.outputs]
    # Both files are accepted by the outputs loader and agree.
    native = write_outputs(tmp_path / "outputs.jsonl", run.outputs)
    samples = write_samples(tmp_path / samples_filename(run.task), run.samples)
    a, b = load_outputs(native, items), load_outputs(samples, items)
    assert {k: v.output for k, v in a.outputs.items()} == {k: v.output for k, v in b.outputs.items()}
    assert not a.missing and not b.missing


@pytest.mark.integration
def test_generation_budget_is_lowered_to_fit_the_model_length(tmp_path):
    from produce_helpers import make_model

    short = make_model(tmp_path / "short", max_positions=32)
    lm = load_hflm(short, quiet=True)
    items = load_items(write_items(tmp_path / "items.jsonl", 2))
    longest = max(len(lm.tok_encode(it.prompt)) for it in items)
    assert fit_max_gen_toks(lm, items, 256) == 32 - longest
    assert fit_max_gen_toks(lm, items, 4) == 4
    long_item = [items[0].__class__(id="x", prompt="9" * 40, reference=1, verifier="numeric", line=7)]
    with pytest.raises(InputError, match="no room to generate") as err:
        fit_max_gen_toks(lm, long_item, 4)
    assert err.value.line == 7 and err.value.field == "prompt"


def test_join_samples_maps_doc_ids_to_items_and_checks_them():
    from distill_doctor.data.records import Item
    from distill_doctor.produce.lm_eval_runner import join_samples

    items = [Item(id=str(i), prompt=f"{i}+1=", reference=i + 1, verifier="numeric") for i in range(2)]
    samples = [
        {"doc_id": 1, "doc": {"id": 1}, "resps": [["2"]], "filtered_resps": ["[invalid]"]},
        {"doc_id": 0, "doc": {"id": 0}, "resps": [["1 raw"]], "filtered_resps": ["1"]},
    ]
    got = join_samples(samples, items, source="x")
    assert [(o.id, o.output) for o in got] == [("1", "2"), ("0", "1 raw")]  # raw text, JSON-int ids
    with pytest.raises(InputError, match="doc 0 has id"):
        join_samples([{"doc_id": 0, "doc": {"id": "zz"}, "resps": [["a"]]}], items, source="x")
    with pytest.raises(InputError, match="doc_id 5"):
        join_samples([{"doc_id": 5, "resps": [["a"]]}], items, source="x")
