"""Training-data loader: validated in a streaming pass, returned as a memory-mapped datasets.Dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from distill_doctor.data import load_training
from distill_doctor.errors import InputError


def write_lines(path, rows):
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def test_plain_and_chat_rows(tmp_path, cache):
    rows = [
        {"prompt": "2+2?", "response": "4", "id": "a", "source": "gsm8k", "reference": 4},
        "",
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "3+3?"},
                {"role": "assistant", "content": "6"},
            ],
            "reference": "6",
        },
        {"prompt": "hi", "response": "hello"},
    ]
    ds = load_training(write_lines(tmp_path / "t.jsonl", rows), cache_dir=cache)
    assert ds.column_names == ["prompt", "response", "id", "source", "reference"]
    assert ds[0] == {"prompt": "2+2?", "response": "4", "id": "a", "source": "gsm8k", "reference": "4"}
    assert ds[1]["prompt"] == "system: Be brief.\nuser: 3+3?" and ds[1]["response"] == "6"
    assert ds[1]["id"] == "line-3" and ds[1]["source"] is None
    assert ds[2]["reference"] is None and ds[2]["id"] == "line-4"


def test_changed_file_is_not_served_from_cache(tmp_path, cache):
    p = write_lines(tmp_path / "t.jsonl", [{"prompt": "a", "response": "1"}])
    assert load_training(p, cache_dir=cache)[0]["response"] == "1"
    write_lines(p, [{"prompt": "a", "response": "2"}, {"prompt": "b", "response": "3"}])
    os.utime(p, ns=(time.time_ns(), time.time_ns() + 10**9))
    ds = load_training(p, cache_dir=cache)
    assert ds["response"] == ["2", "3"]


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ({"response": "x"}, "prompt", "required"),
        ({"prompt": "x"}, "response", "required"),
        ({"prompt": 1, "response": "x"}, "prompt", "string"),
        ({"prompt": "p", "response": "x", "reference": {"a": 1}}, "reference", "string or a number"),
        ({"prompt": "p", "response": "x", "source": 3}, "source", "string"),
        ({"prompt": "p", "response": "x", "id": 1.5}, "id", "string"),
        ({"messages": []}, "messages", "non-empty list"),
        ({"messages": "hi"}, "messages", "non-empty list"),
        ({"messages": [{"role": "user", "content": "q"}]}, "messages[0].role", "assistant"),
        (
            {"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]},
            "messages[0].content",
            "string",
        ),
        ({"messages": ["x", {"role": "assistant", "content": "a"}]}, "messages[0]", "object"),
    ],
)
def test_row_errors_name_line_and_field(tmp_path, cache, row, field, message):
    p = write_lines(tmp_path / "t.jsonl", [{"prompt": "ok", "response": "ok"}, row])
    with pytest.raises(InputError, match=message) as err:
        load_training(p, cache_dir=cache)
    assert (err.value.line, err.value.field) == (2, field)


def test_empty_and_broken_files(tmp_path, cache):
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(InputError, match="empty"):
        load_training(tmp_path / "e.jsonl", cache_dir=cache)
    (tmp_path / "b.jsonl").write_text('{"prompt": "a", "response": "b"}\n{oops\n')
    with pytest.raises(InputError, match="not valid JSON") as err:
        load_training(tmp_path / "b.jsonl", cache_dir=cache)
    assert err.value.line == 2


_MEASURE = """
import resource, sys
import datasets  # noqa: F401  (imported before the baseline)
from distill_doctor.data import load_training
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ds = load_training(sys.argv[1], cache_dir=sys.argv[2])
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(ds), ds[199_999]["reference"], bool(ds.cache_files), (after - before) / 1024)
"""


def test_200k_rows_stream_with_modest_memory(tmp_path, cache):
    p = tmp_path / "big.jsonl"
    line = '{"prompt": "What is %d plus %d?", "response": "It is %d. #### %d", "reference": %d}\n'
    with open(p, "w", encoding="utf-8") as fh:
        fh.writelines(line % (i, i, 2 * i, 2 * i, 2 * i) for i in range(200_000))
    env = dict(os.environ, HF_DATASETS_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(p), str(cache)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    n, last_ref, mapped, grew_mb = done.stdout.split()
    assert (int(n), last_ref, mapped) == (200_000, "399998", "True")
    # a list of 200k row dicts alone would take well over 100 MB; streaming stays flat
    assert float(grew_mb) < 60, f"peak RSS grew {grew_mb} MB for a {p.stat().st_size / 1e6:.0f} MB file"
