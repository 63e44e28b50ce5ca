"""Outputs loader: native lines and lm-evaluation-harness samples_*.jsonl, joined to items."""

from __future__ import annotations

import json

import pytest

from distill_doctor.data import lm_doc_hash, load_items, load_outputs
from distill_doctor.errors import InputError


def write_lines(path, rows):
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


ROWS = [{"id": f"q{i}", "prompt": f"What is {i}+{i}?", "reference": 2 * i} for i in range(4)]


@pytest.fixture
def items(tmp_path):
    return load_items(write_lines(tmp_path / "items.jsonl", ROWS))


def lm_row(doc_id, text, *, doc=None, filt="none", repeats=1, with_hash=True):
    """A record shaped like lm-eval 0.4.x ``--log_samples`` output (evaluator.py)."""
    doc = ROWS[doc_id] if doc is None else doc
    row = {
        "doc_id": doc_id,
        "doc": doc,
        "target": str(doc.get("reference")),
        "arguments": {"gen_args_0": {"arg_0": doc.get("prompt"), "arg_1": {"until": ["\n\n"]}}},
        "resps": [[text] * repeats],
        "filtered_resps": [text if filt == "none" else "[invalid]"],
        "filter": filt,
        "metrics": ["exact_match"],
        "exact_match": 0.0,
    }
    if with_hash:
        row["doc_hash"] = lm_doc_hash(doc)
        row["prompt_hash"] = "0" * 64
    return row


def test_native_outputs_and_missing(tmp_path, items):
    p = write_lines(
        tmp_path / "student.jsonl",
        [{"id": "q0", "output": "0"}, "", {"id": "q2", "output": "so 4", "samples": ["so 4", "5"]}],
    )
    got = load_outputs(p, items)
    assert set(got.outputs) == {"q0", "q2"}
    assert got.outputs["q2"].samples == ("so 4", "5") and got.outputs["q2"].line == 3
    assert got.missing == ["q1", "q3"]


def test_samples_only_uses_first_sample_as_output(tmp_path, items):
    got = load_outputs(write_lines(tmp_path / "o.jsonl", [{"id": "q1", "samples": ["a", "b"]}]), items)
    assert got.outputs["q1"].output == "a"


@pytest.mark.parametrize(
    ("rows", "line", "field", "message"),
    [
        ([{"id": "q0", "output": "x"}, {"id": "zz", "output": "y"}], 2, "id", "unknown id 'zz'"),
        ([{"id": "q0", "output": "x"}, {"id": "q0", "output": "y"}], 2, "id", "duplicate output"),
        ([{"id": "q0"}], 1, "output", "required"),
        ([{"id": "q0", "output": 5}], 1, "output", "string"),
        ([{"id": "q0", "output": "x", "samples": "x"}], 1, "samples", "list of strings"),
        ([{"id": "q0", "output": "x", "samples": ["a", 1]}], 1, "samples[1]", "string"),
        ([{"id": "q0", "output": "x", "samples": ["a", "x"]}], 1, "output", "differs from samples"),
        ([{"output": "x"}], 1, "id", "required"),
    ],
)
def test_native_errors(tmp_path, items, rows, line, field, message):
    with pytest.raises(InputError, match=message) as err:
        load_outputs(write_lines(tmp_path / "o.jsonl", rows), items)
    assert (err.value.line, err.value.field) == (line, field)


def test_empty_outputs_file(tmp_path, items):
    (tmp_path / "o.jsonl").write_text("\n")
    with pytest.raises(InputError, match="empty"):
        load_outputs(tmp_path / "o.jsonl", items)


def test_lm_eval_hash_recipe_matches_the_installed_harness():
    from lm_eval.utils import handle_non_serializable, hash_string

    doc = {"id": "q1", "prompt": "Ünïcode ✓", "reference": 2, "tags": {"d": 1.5}}
    expected = hash_string(json.dumps(doc, indent=2, default=handle_non_serializable, ensure_ascii=False))
    assert lm_doc_hash(doc) == expected


def test_lm_eval_samples_join_by_content(tmp_path, items):
    rows = [lm_row(2, "4 #### 4", repeats=3), lm_row(0, "zero"), lm_row(2, "x", filt="strict-match")]
    got = load_outputs(write_lines(tmp_path / "samples_add_2026-01-01T00-00-00.jsonl", rows), items)
    assert set(got.outputs) == {"q0", "q2"}  # the strict-match rows repeat the docs: skipped
    assert got.outputs["q2"].output == "4 #### 4" and got.outputs["q2"].samples == ("4 #### 4",) * 3
    assert got.missing == ["q1", "q3"]


def test_lm_eval_uses_raw_text_not_filtered(tmp_path, items):
    row = lm_row(1, "The answer is 2.", filt="strict-match")
    got = load_outputs(write_lines(tmp_path / "s.jsonl", [row]), items)
    assert got.outputs["q1"].output == "The answer is 2."


def test_lm_eval_filtered_resps_when_no_resps(tmp_path, items):
    row = lm_row(1, "two")
    del row["resps"]
    got = load_outputs(write_lines(tmp_path / "s.jsonl", [row]), items)
    assert got.outputs["q1"].output == "two"


def test_lm_eval_edited_doc_fails_hash(tmp_path, items):
    row = lm_row(1, "x")
    row["doc"] = dict(row["doc"], prompt="What is 9+9?")  # edited after the hash was computed
    with pytest.raises(InputError, match="doc_hash does not match") as err:
        load_outputs(write_lines(tmp_path / "s.jsonl", [lm_row(0, "y"), row]), items)
    assert err.value.line == 2 and err.value.field == "doc_hash"


def test_lm_eval_doc_of_another_items_file(tmp_path, items):
    other = {"id": "other", "prompt": "Something else", "reference": 1}
    with pytest.raises(InputError, match="another items file") as err:
        load_outputs(write_lines(tmp_path / "s.jsonl", [lm_row(0, "y"), lm_row(1, "x", doc=other)]), items)
    assert err.value.line == 2 and err.value.field == "doc"


def test_lm_eval_doc_id_proves_nothing(tmp_path, items):
    """A document joins the item with its content, whatever its doc_id (lm-eval's dataset position)."""
    got = load_outputs(write_lines(tmp_path / "s.jsonl", [lm_row(1, "x", doc=ROWS[3])]), items)
    assert set(got.outputs) == {"q3"}


def test_lm_eval_doc_matching_by_prompt_text(tmp_path, items):
    """No doc_hash match (the doc has other columns), but the doc's text is an item's prompt."""
    doc = {"question": ROWS[2]["prompt"], "answer": "#### 4"}

    def row(doc_id, d):
        r = lm_row(doc_id, "4", doc=d)
        r["arguments"]["gen_args_0"]["arg_0"] = f"Question: {d['question']}\nAnswer:"
        return r

    got = load_outputs(write_lines(tmp_path / "s.jsonl", [row(0, doc)]), items)
    assert set(got.outputs) == {"q2"}
    twice = [row(0, doc), row(1, dict(doc, answer="#### 5"))]
    with pytest.raises(InputError, match="is item 'q2' again") as err:
        load_outputs(write_lines(tmp_path / "s2.jsonl", twice), items)
    assert err.value.line == 2


def test_lm_eval_hash_without_doc_checked_against_item_row(tmp_path, items):
    good = lm_row(1, "x")
    del good["doc"]
    got = load_outputs(write_lines(tmp_path / "s.jsonl", [good]), items)
    assert got.outputs["q1"].output == "x"
    bad = lm_row(1, "x", doc={"id": "q1", "prompt": "changed", "reference": 2})
    del bad["doc"]
    with pytest.raises(InputError, match="cannot prove which item") as err:
        load_outputs(write_lines(tmp_path / "s2.jsonl", [bad]), items)
    assert err.value.line == 1


def test_lm_eval_hash_of_datasets_normalised_doc(tmp_path):
    rows = [
        {"id": "a", "prompt": "p", "reference": 1},
        {"id": "b", "prompt": "q", "reference": 2, "group": "g"},
    ]
    its = load_items(write_lines(tmp_path / "i.jsonl", rows))
    doc = {"id": "a", "prompt": "p", "reference": 1, "group": None}  # how `datasets` gives row 0 to lm-eval
    row = {
        "doc_id": 0,
        "resps": [["ok"]],
        "filtered_resps": ["ok"],
        "filter": "none",
        "doc_hash": lm_doc_hash(doc),
    }
    assert load_outputs(write_lines(tmp_path / "s.jsonl", [row]), its).outputs["a"].output == "ok"


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"doc_id": "1"}, "doc_id", "integer"),
        (
            {"resps": [[["-1.5", "False"]]], "filtered_resps": [["-1.5", "False"]]},
            "resps",
            "no generated text|no answer to score",
        ),
        ({"doc_hash": 5}, "doc_hash", "string"),
    ],
)
def test_lm_eval_field_errors(tmp_path, items, change, field, message):
    row = lm_row(1, "x")
    row.update(change)
    if change.get("resps"):
        row["resps"] = [[1.5, False]]
    with pytest.raises(InputError, match=message) as err:
        load_outputs(write_lines(tmp_path / "s.jsonl", [row]), items)
    assert err.value.field == field and err.value.line == 1


def test_lm_eval_duplicate_doc_id_same_filter(tmp_path, items):
    with pytest.raises(InputError, match="duplicate output") as err:
        load_outputs(write_lines(tmp_path / "s.jsonl", [lm_row(1, "x"), lm_row(1, "y")]), items)
    assert err.value.line == 2


def test_mixed_formats_rejected(tmp_path, items):
    with pytest.raises(InputError, match="mixes native and lm-eval") as err:
        load_outputs(write_lines(tmp_path / "s.jsonl", [{"id": "q0", "output": "x"}, lm_row(1, "y")]), items)
    assert err.value.line == 2
    with pytest.raises(InputError, match="mixes lm-eval and native") as err:
        load_outputs(write_lines(tmp_path / "s2.jsonl", [lm_row(1, "y"), {"id": "q0", "output": "x"}]), items)
    assert err.value.line == 2


def test_identical_lm_eval_documents_pair_by_doc_id(tmp_path):
    """A dataset with the same row twice: the items read from one model's samples and the other
    model's samples pair the two copies by doc_id (their content is equal, so the join is proven)."""
    from distill_doctor.data.outputs import items_from_samples

    doc = {"question": "What is 2+2?", "answer": "#### 4"}

    def rows(texts):
        out = []
        for k, text in enumerate(texts):
            r = lm_row(k, text, doc=doc)
            r["target"] = doc["answer"]
            r["arguments"]["gen_args_0"]["arg_0"] = f"Question: {doc['question']}\nAnswer:"
            out.append(r)
        return out

    (tmp_path / "t").mkdir()
    (tmp_path / "s").mkdir()  # one task, two models' folders (another task would be refused)
    teacher = write_lines(tmp_path / "t" / "samples_t_2026-01-01T00-00-00.jsonl", rows(["4", "5"]))
    student = write_lines(tmp_path / "s" / "samples_t_2026-01-01T00-00-00.jsonl", rows(["6", "4"]))
    items = items_from_samples(teacher)
    assert [it.id for it in items] == ["0", "1"] and {it.reference for it in items} == {"4"}
    got = load_outputs(student, items)
    assert {k: v.output for k, v in got.outputs.items()} == {"0": "6", "1": "4"}
