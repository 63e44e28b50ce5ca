"""``distill-doctor eval``: flags, overwrite protection, one model and teacher + student runs."""

from __future__ import annotations

import pytest
from produce_helpers import read_jsonl, tiny_models, write_items

from distill_doctor.cli import main
from distill_doctor.data import load_items, load_outputs


def test_flag_combinations_are_checked(tmp_path, capsys):
    items = write_items(tmp_path / "items.jsonl", 2)
    teacher, _ = tiny_models()
    capsys.readouterr()  # building the model prints progress
    cases = [
        ["--model", str(teacher)],  # no --out
        ["--model", str(teacher), "--out", "o.jsonl", "--out-dir", "d"],  # both modes
        ["--out-dir", str(tmp_path / "d")],  # no model
        [],  # nothing
        ["--model", str(tmp_path / "missing"), "--out", str(tmp_path / "o.jsonl")],
        ["--model", str(teacher), "--out", str(items)],  # over the items file
        ["--model", str(teacher), "--out", str(tmp_path / "o.jsonl"), "--batch-size", "0"],
    ]
    for extra in cases:
        assert main(["eval", "--items", str(items), "--quiet", *extra]) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("distill-doctor eval: error:") and "Traceback" not in err
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.integration
def test_one_model_writes_outputs_in_item_order_and_never_overwrites(tmp_path, capsys):
    items_path = write_items(tmp_path / "items.jsonl", 5)
    teacher, _ = tiny_models()
    capsys.readouterr()
    out = tmp_path / "outputs.jsonl"
    args = [
        "eval",
        "--items",
        str(items_path),
        "--model",
        str(teacher),
        "--out",
        str(out),
        "--max-new-tokens",
        "8",
    ]
    assert main(args + ["--limit", "3"]) == 0
    summary = capsys.readouterr().out
    assert "accuracy" in summary and "/3 items pass the verifier" in summary
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == ["q0", "q1", "q2"] and all(set(r) == {"id", "output"} for r in rows)
    first = out.read_text()
    assert main(args + ["--quiet"]) == 2  # exists
    assert "--overwrite" in capsys.readouterr().err and out.read_text() == first
    assert main(args + ["--quiet", "--overwrite", "--keep-samples"]) == 0
    assert capsys.readouterr().out == ""  # --quiet: no summary
    items = load_items(items_path)
    native = load_outputs(out, items)
    assert sorted(native.outputs) == [f"q{i}" for i in range(5)] and not native.missing
    assert [o.output for o in list(native.outputs.values())[:3]] == [r["output"] for r in rows]
    (samples,) = (tmp_path / "outputs_lm_eval").glob("samples_distill_doctor_items_*.jsonl")
    logged = load_outputs(samples, items)
    assert {k: v.output for k, v in logged.outputs.items()} == {
        k: v.output for k, v in native.outputs.items()
    }


@pytest.mark.integration
def test_teacher_and_student_are_written_side_by_side(tmp_path):
    items_path = write_items(tmp_path / "items.jsonl", 4, mixed_reference_types=True)
    teacher, student = tiny_models()
    out_dir = tmp_path / "outputs"
    args = [
        "eval",
        "--items",
        str(items_path),
        "--teacher-model",
        str(teacher),
        "--student-model",
        str(student),
    ]
    assert main(args + ["--out-dir", str(out_dir), "--max-new-tokens", "6", "--quiet"]) == 0
    t, s = read_jsonl(out_dir / "teacher.jsonl"), read_jsonl(out_dir / "student.jsonl")
    assert [r["id"] for r in t] == [r["id"] for r in s] == ["q0", "q1", "q2", "q3"]
    assert [r["output"] for r in t] != [r["output"] for r in s]  # two different models
