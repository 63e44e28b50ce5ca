"""Every training data source, written by ``datasets`` itself, reads to the same examples."""

from __future__ import annotations

import datasets
import pytest

from distill_doctor.errors import InputError
from distill_doctor.train.data import read_examples
from distill_doctor.train.sources import RowFormat

ROWS = [{"id": f"r{i}", "prompt": f"{i}+{i}=", "completion": str(2 * i)} for i in range(3)]


def write(kind: str, tmp_path, rows=ROWS):
    ds = datasets.Dataset.from_list(rows)
    if kind == "jsonl":
        path = tmp_path / "d.jsonl"
        ds.to_json(str(path))
    elif kind == "json":  # a JSON array, not lines
        path = tmp_path / "d.json"
        ds.to_json(str(path), lines=False)
    elif kind == "parquet":
        path = tmp_path / "d.parquet"
        ds.to_parquet(str(path))
    elif kind == "csv":
        path = tmp_path / "d.csv"
        ds.to_csv(str(path), index=False)
    elif kind == "save_to_disk":
        path = tmp_path / "saved"
        ds.save_to_disk(str(path))
    elif kind == "dataset_dict":
        path = tmp_path / "saved_dict"
        datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(path))
    elif kind == "arrow":
        ds.save_to_disk(str(tmp_path / "saved"))
        path = next((tmp_path / "saved").glob("*.arrow"))
    elif kind == "load_dataset":  # a dataset repository's layout, read by name through load_dataset
        path = tmp_path / "repo"
        (path / "data").mkdir(parents=True)
        ds.to_parquet(str(path / "data" / "train-00000-of-00001.parquet"))
    else:
        raise AssertionError(kind)
    return path


KINDS = ["jsonl", "json", "parquet", "csv", "save_to_disk", "dataset_dict", "arrow", "load_dataset"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_source_reads_the_same_examples(tmp_path, kind):
    examples = read_examples(write(kind, tmp_path))
    assert [(e.id, e.prompt, e.response, e.format) for e in examples] == [
        (r["id"], r["prompt"], r["completion"], RowFormat.PROMPT_COMPLETION) for r in ROWS
    ]


def test_a_named_split_of_a_saved_dataset_dict(tmp_path):
    path = write("dataset_dict", tmp_path)
    assert [e.id for e in read_examples(path, split="test")] == ["r0"]
    with pytest.raises(InputError, match="no split 'validation'") as info:
        read_examples(path, split="validation")
    assert info.value.field == "dataset_split"


def test_trl_formats_from_parquet(tmp_path):
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    cases = {
        RowFormat.TEXT: [{"text": "hello"}],
        RowFormat.MESSAGES: [{"messages": msgs}],
        RowFormat.CHAT_PROMPT_COMPLETION: [{"prompt": msgs[:1], "completion": msgs[1:]}],
        RowFormat.PROMPT_ONLY: [{"prompt": "q"}],
        RowFormat.CHAT_PROMPT_ONLY: [{"prompt": msgs[:1]}],
    }
    for fmt, rows in cases.items():
        sub = tmp_path / fmt.name
        sub.mkdir()
        (example,) = read_examples(write("parquet", sub, rows))
        assert example.format is fmt
        if fmt.conversational:
            assert example.messages[0] == {"role": "user", "content": "q"}
            assert example.train_from == (0 if fmt is RowFormat.MESSAGES else 1)


def test_errors_name_file_row_and_field(tmp_path):
    rows = [{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": None}]
    path = write("parquet", tmp_path, rows)
    with pytest.raises(InputError) as info:
        read_examples(path)
    assert info.value.path == str(path) and info.value.field == "completion" and "row 2" in str(info.value)


def test_unreadable_sources_exit_cleanly(tmp_path):
    bad = tmp_path / "d.parquet"
    bad.write_text("not parquet", encoding="utf-8")
    with pytest.raises(InputError, match="cannot read the training data") as info:
        read_examples(bad)
    assert info.value.field == "data"
    with pytest.raises(InputError, match="cannot read the training data"):
        read_examples(tmp_path / "no_such_dataset")
