"""JSONL reading and the items loader: every user mistake is an InputError naming file, line, field."""

from __future__ import annotations

import gzip
import json
import time

import pytest

from distill_doctor.data import load_items
from distill_doctor.data.jsonl import iter_jsonl
from distill_doctor.errors import InputError


def write_lines(path, rows):
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def item(i, **kw):
    row = {"id": f"q{i}", "prompt": f"What is {i}+{i}?", "reference": 2 * i}
    row.update(kw)
    return row


def test_blank_lines_skipped_and_line_numbers_kept(tmp_path):
    p = write_lines(tmp_path / "a.jsonl", [item(1), "", "   ", item(2)])
    items = load_items(p)
    assert [it.id for it in items] == ["q1", "q2"]
    assert [it.line for it in items] == [1, 4]


def test_gzip_file_read_by_content(tmp_path):
    p = tmp_path / "items.jsonl.gz"
    with gzip.open(p, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps(item(1)) + "\n" + json.dumps(item(2)) + "\n")
    assert [it.id for it in load_items(p)] == ["q1", "q2"]


def test_corrupt_gzip_is_input_error(tmp_path):
    p = tmp_path / "bad.jsonl.gz"
    data = gzip.compress((json.dumps(item(1)) + "\n").encode() * 200)
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="gzip"):
        load_items(p)


def test_invalid_json_names_file_and_line(tmp_path):
    p = write_lines(tmp_path / "a.jsonl", [item(1), '{"id": "q2", "prompt": '])
    with pytest.raises(InputError) as err:
        load_items(p)
    assert err.value.line == 2 and err.value.path == str(p)
    assert "a.jsonl:2" in str(err.value) and "not valid JSON" in str(err.value)


def test_non_object_line(tmp_path):
    p = write_lines(tmp_path / "a.jsonl", ["[1, 2]"])
    with pytest.raises(InputError, match="JSON object") as err:
        load_items(p)
    assert err.value.line == 1


def test_non_utf8_bytes_name_the_line(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(json.dumps(item(1)).encode() + b"\n" + b'{"id": "q\xff", "prompt": "x", "reference": 1}\n')
    with pytest.raises(InputError, match="UTF-8") as err:
        load_items(p)
    assert err.value.line == 2


def test_utf8_bom_is_accepted(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps(item(1)).encode() + b"\n")
    assert load_items(p)[0].id == "q1"


def test_huge_line_is_a_clean_fast_error(tmp_path):
    p = tmp_path / "big.jsonl"
    with open(p, "wb") as fh:
        fh.write(json.dumps(item(1)).encode() + b"\n")
        fh.write(b'{"id": "q2", "prompt": "' + b"x" * (50 * 1024 * 1024) + b'", "reference": 1}\n')
    start = time.perf_counter()
    with pytest.raises(InputError, match="longer than") as err:
        load_items(p)
    assert err.value.line == 2
    assert time.perf_counter() - start < 5


def test_line_cap_is_configurable(tmp_path):
    p = write_lines(tmp_path / "a.jsonl", [item(1)])
    with pytest.raises(InputError, match="longer than 10 bytes"):
        list(iter_jsonl(p, max_line_bytes=10))


def test_empty_file_and_only_blank_lines(tmp_path):
    for name, text in (("empty.jsonl", ""), ("blank.jsonl", "\n  \n\n")):
        p = tmp_path / name
        p.write_text(text)
        with pytest.raises(InputError, match="empty"):
            load_items(p)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_items(tmp_path / "nope.jsonl")


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ({"prompt": "p", "reference": 1}, "id", "required"),
        ({"id": ["x"], "prompt": "p", "reference": 1}, "id", "string"),
        ({"id": "a", "reference": 1}, "prompt", "required"),
        ({"id": "a", "prompt": 3, "reference": 1}, "prompt", "string"),
        ({"id": "a", "prompt": "p"}, "reference", "required"),
        ({"id": "a", "prompt": "p", "reference": [1]}, "reference", "string or a number"),
        ({"id": "a", "prompt": "p", "reference": True}, "reference", "string or a number"),
        ({"id": "a", "prompt": "p", "reference": "  "}, "reference", "must not be empty"),
        ({"id": "a", "prompt": "p", "reference": 1, "tags": []}, "tags", "object"),
        ({"id": "a", "prompt": "p", "reference": 1, "tags": {"d": [1]}}, "tags.d", "string or a number"),
        ({"id": "a", "prompt": "p", "reference": 1, "group": 5}, "group", "string"),
        ({"id": "a", "prompt": "p", "reference": 1, "verifier": "fuzzy"}, "verifier", "unknown verifier"),
        ({"id": "a", "prompt": "p", "reference": 1, "verifier": "regex:("}, "verifier", "does not compile"),
        ({"id": "a", "prompt": "p", "reference": 1, "verifier": "regex:"}, "verifier", "needs a pattern"),
        ({"id": "a", "prompt": "p", "reference": "Paris", "verifier": "numeric"}, "reference", "no number"),
        (
            {"id": "a", "prompt": "p", "reference": "maybe", "verifier": "choice"},
            "reference",
            "option letter",
        ),
        ({"id": "a", "prompt": "p", "verifier": "code", "entry_point": "f"}, "tests", "required"),
        (
            {"id": "a", "prompt": "p", "verifier": "code", "tests": "def check(c): pass"},
            "entry_point",
            "required",
        ),
        (
            {"id": "a", "prompt": "p", "verifier": "code", "tests": "t", "entry_point": "f(x)"},
            "entry_point",
            "function name",
        ),
    ],
)
def test_field_errors_name_the_field(tmp_path, row, field, message):
    p = write_lines(tmp_path / "items.jsonl", [item(1), row])
    with pytest.raises(InputError, match=message) as err:
        load_items(p)
    assert err.value.field == field
    assert err.value.line == 2
    assert f"field '{field}'" in str(err.value)


def test_duplicate_ids(tmp_path):
    p = write_lines(tmp_path / "a.jsonl", [item(1), item(2), item(1)])
    with pytest.raises(InputError, match="duplicate id 'q1' \\(first on line 1\\)") as err:
        load_items(p)
    assert err.value.line == 3 and err.value.field == "id"


def test_default_verifier_resolution(tmp_path):
    rows = [
        {"id": "n1", "prompt": "p", "reference": 42},
        {"id": "n2", "prompt": "p", "reference": "1,234"},
        {"id": "n3", "prompt": "p", "reference": "-3.5"},
        {"id": "n4", "prompt": "p", "reference": "$5"},
        {"id": "e1", "prompt": "p", "reference": "Paris"},
        {"id": "e2", "prompt": "p", "reference": "12 apples"},
        {"id": "c1", "prompt": "p", "reference": "B", "verifier": "choice"},
        {"id": "r1", "prompt": "p", "reference": "x", "verifier": "regex:^\\d+$"},
        {
            "id": "k1",
            "prompt": "def f():\n",
            "verifier": "code",
            "tests": "def check(c): pass",
            "entry_point": "f",
        },
    ]
    items = {it.id: it for it in load_items(write_lines(tmp_path / "a.jsonl", rows))}
    assert [items[k].verifier for k in ("n1", "n2", "n3", "n4")] == ["numeric"] * 4
    assert items["e1"].verifier == "exact" and items["e2"].verifier == "exact"
    assert items["c1"].verifier == "choice"
    assert items["r1"].verifier == "regex:^\\d+$" and items["r1"].verifier_kind == "regex"
    assert items["k1"].reference is None and items["k1"].entry_point == "f"


def test_optional_fields_and_integer_ids(tmp_path):
    row = {"id": 7, "prompt": "p", "reference": 3, "tags": {"domain": "math", "difficulty": 2}}
    row.update(group="g1", variant="numbers", extra_field={"kept": "ignored"})
    it = load_items(write_lines(tmp_path / "a.jsonl", [row]))[0]
    assert it.id == "7" and it.tags == {"domain": "math", "difficulty": 2}
    assert it.group == "g1" and it.variant == "numbers" and not it.is_original


def test_items_file_records_doc_hashes(tmp_path):
    items = load_items(write_lines(tmp_path / "a.jsonl", [item(1), item(2)]))
    assert items.path == str(tmp_path / "a.jsonl")
    assert len(items.doc_hashes) == 2 and all(len(h) >= 1 for h in items.doc_hashes)
