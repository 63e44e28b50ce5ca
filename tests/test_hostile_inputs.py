"""Issue 18's hostile inputs, one regression test each: exit 2 with one line, never a traceback.

Every case runs the real CLI entry point in-process. Before the fixes these crashed with a
traceback (exit 1, indistinguishable from a failed gate), hung (a FIFO, a gzip bomb), or
silently did the wrong thing (``eval --device cuda:7`` on CPU, ``--resume`` starting fresh, NaN
accuracy making the gate's accuracy rule "not applicable").
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from sample_report import sample_report

from distill_doctor.cli import main
from distill_doctor.data import load_manifest
from distill_doctor.errors import InputError

N_ITEMS = 24


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def cli(capsys, *argv) -> tuple[int, str]:
    """Run ``distill-doctor *argv``; return (exit code, stderr). Never a traceback, errors one line."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse: usage line + one error line, exit 2
        code = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err + out
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("usage:", " "))]
    if code == 2:
        assert len(lines) == 1, err
    return code, err


@pytest.fixture(scope="module")
def run_files(tmp_path_factory) -> dict[str, Path]:
    """A small valid run: items, teacher and student outputs, training rows, a manifest, a report."""
    d = tmp_path_factory.mktemp("run")
    items, teacher, student, train = [], [], [], []
    for i in range(N_ITEMS):
        a, b = 10 + i, 30 + 2 * i
        items.append({"id": f"q{i}", "prompt": f"What is {a}+{b}?", "reference": a + b})
        teacher.append({"id": f"q{i}", "output": f"#### {a + b}"})
        student.append({"id": f"q{i}", "output": f"#### {a + b + (i % 4 == 0)}"})
        train.append({"prompt": f"{a}+{b}=", "response": str(a + b)})
    files = {
        "items": write_jsonl(d / "items.jsonl", items),
        "teacher": write_jsonl(d / "teacher.jsonl", teacher),
        "student": write_jsonl(d / "student.jsonl", student),
        "train": write_jsonl(d / "train.jsonl", train),
        "report": d / "report.json",
        "dir": d,
    }
    files["report"].write_text(json.dumps(sample_report()), encoding="utf-8")
    return files


def diagnose_args(files: dict[str, Path], out: Path, **replace: Path) -> list:
    paths = {k: files[k] for k in ("items", "teacher", "student", "train")} | replace
    args = ["diagnose", "--out", out, "--quiet"]
    for key, path in paths.items():
        args += [f"--{key}", path]
    return args


def with_row(files, tmp_path: Path, kind: str, index: int, **fields) -> Path:
    """A copy of ``files[kind]`` with row ``index`` changed by ``fields``."""
    rows = [json.loads(ln) for ln in files[kind].read_text(encoding="utf-8").splitlines()]
    rows[index].update(fields)
    return write_jsonl(tmp_path / f"{kind}.jsonl", rows)


# ---------------------------------------------------------------- inputs that crashed


LONE = "x\ud800y"  # valid JSON ("x\\ud800y"), not valid Unicode text


@pytest.mark.parametrize(
    ("kind", "field"),
    [("items", "prompt"), ("train", "response"), ("student", "output"), ("items", "tags")],
)
def test_lone_surrogate_is_refused_naming_line_and_field(capsys, run_files, tmp_path, kind, field):
    value = {"domain": LONE} if field == "tags" else LONE
    bad = with_row(run_files, tmp_path, kind, 3, **{field: value})
    code, err = cli(capsys, *diagnose_args(run_files, tmp_path / "out", **{kind: bad}))
    assert code == 2 and f"{bad}:4: field '{field}" in err and "lone UTF-16 surrogate" in err
    assert not (tmp_path / "out" / "report.json").exists()


def test_lone_surrogate_in_prompts_is_refused_by_generate(capsys, run_files, tmp_path):
    bad = with_row(run_files, tmp_path, "items", 0, prompt=LONE)
    (tmp_path / "teacher").mkdir()  # the prompts are read (and refused) before any model loads
    code, err = cli(capsys, "generate", "--prompts", bad, "--teacher-model", tmp_path / "teacher",
                    "--out", tmp_path / "train.jsonl")  # fmt: skip
    assert code == 2 and "lone UTF-16 surrogate" in err and f"{bad}:1" in err


def test_a_180_digit_numeric_reference_is_scored(capsys, run_files, tmp_path):
    big = int("9" * 180)
    items = with_row(run_files, tmp_path, "items", 0, reference=big)
    code, err = cli(capsys, *diagnose_args(run_files, tmp_path / "out", items=items))
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert report["accuracy"]["n"] == N_ITEMS


REPORT_BODIES = {
    "deeply nested": ("[" * 100_000, "nested too deeply"),
    "5,000 digits": ('{"schema_version": ' + "9" * 5000 + "}", "4300 digits"),
    "NaN accuracy": (None, "NaN is not a number JSON allows"),
    "Infinity": ('{"schema_version": Infinity}', "Infinity is not a number JSON allows"),
}


@pytest.mark.parametrize("command", ["report", "gate"])
@pytest.mark.parametrize("case", sorted(REPORT_BODIES))
def test_hostile_report_json_is_exit_2(capsys, tmp_path, command, case):
    body, message = REPORT_BODIES[case]
    if body is None:  # NaN accuracy used to turn the gate's accuracy rule into "not applicable"
        body = json.dumps(sample_report(accuracy={"n": 130, "teacher": 0.9, "student": float("nan")}))
    path = tmp_path / "report.json"
    path.write_text(body, encoding="utf-8")
    code, err = cli(capsys, command, path)
    assert code == 2 and str(path) in err and message in err


def test_nan_accuracy_in_a_baseline_is_refused_too(capsys, run_files, tmp_path):
    base = tmp_path / "base.json"
    base.write_text(json.dumps(sample_report(accuracy={"n": 130, "teacher": 0.9, "student": float("nan")})))
    code, err = cli(capsys, "gate", run_files["report"], "--baseline", base)
    assert code == 2 and "NaN" in err


# ---------------------------------------------------------------- output paths


def _out_cases() -> dict[str, Callable[[Path], tuple[Path, str]]]:
    def file_as_folder(tmp: Path):
        (tmp / "afile").write_text("x")
        return tmp / "afile" / "sub", "is a file"

    def dangling(tmp: Path):
        (tmp / "link").symlink_to(tmp / "nowhere")
        return tmp / "link", "symlink to a missing"

    def too_long(tmp: Path):
        return tmp / ("a" * 300), "over 255 bytes"

    def parent_is_file(tmp: Path):
        (tmp / "afile").write_text("x")
        return tmp / "afile" / "deeper" / "out", "is a file, not a folder"

    return {"file where a folder is expected": file_as_folder, "dangling symlink": dangling,
            "name too long": too_long, "parent is a file": parent_is_file}  # fmt: skip


OUT_CASES = _out_cases()


@pytest.mark.parametrize("case", sorted(OUT_CASES))
@pytest.mark.parametrize("command", ["diagnose", "report", "gate --junit", "eval", "train"])
def test_bad_output_paths_are_refused_before_any_work(capsys, run_files, tmp_path, case, command):
    target, message = OUT_CASES[case](tmp_path)
    if command == "diagnose":
        argv = diagnose_args(run_files, target)
    elif command == "train":  # output_dir is checked before any model is loaded
        argv = ["train", "sft", "--config", write_config(tmp_path, run_files), "--output-dir", target]
    elif command == "report":
        argv = ["report", run_files["report"], "--out", target]
    elif command == "gate --junit":
        argv = ["gate", run_files["report"], "--junit", target]
    else:
        (tmp_path / "model").mkdir()
        argv = ["eval", "--items", run_files["items"], "--model", tmp_path / "model", "--out", target]
    if command in ("report", "gate --junit", "eval") and case == "file where a folder is expected":
        target.parent.unlink()  # for a file output: a folder where the file should go
        target.mkdir(parents=True)
        message = "is a folder"
    code, err = cli(capsys, *argv)
    assert code == 2 and message in err, err


@pytest.mark.parametrize(
    "argv",
    [
        ["diagnose", "--items", "ITEMS", "--student", "ITEMS", "--out", ""],
        ["report", "REPORT", "--out", ""],
        ["gate", "REPORT", "--junit", ""],
        ["eval", "--items", "ITEMS", "--model", "ITEMS", "--out", ""],
        ["generate", "--prompts", "ITEMS", "--teacher-model", "ITEMS", "--out", ""],
    ],
    ids=lambda a: a[0],
)
def test_empty_output_path_is_refused(capsys, run_files, argv):
    argv = [{"ITEMS": run_files["items"], "REPORT": run_files["report"]}.get(a, a) for a in argv]
    code, err = cli(capsys, *argv)
    assert code == 2 and "must not be empty" in err


@contextlib.contextmanager
def read_only_folder(path: Path):
    """A folder this process cannot write: a read-only tmpfs as root, chmod 555 otherwise."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip("running as root without permission to mount a read-only tmpfs")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


@pytest.mark.parametrize("command", ["diagnose", "report", "gate --junit", "train"])
def test_read_only_output_is_refused_before_any_work(capsys, run_files, tmp_path, command):
    with read_only_folder(tmp_path / "ro") as ro:
        argv = {
            "train": [
                "train",
                "sft",
                "--config",
                write_config(tmp_path, run_files),
                "--output-dir",
                ro / "out",
            ],
            "diagnose": diagnose_args(run_files, ro / "out"),
            "report": ["report", run_files["report"], "--out", ro / "r.md"],
            "gate --junit": ["gate", run_files["report"], "--junit", ro / "gate.xml"],
        }[command]
        code, err = cli(capsys, *argv)
    assert code == 2 and "cannot write in" in err


# ---------------------------------------------------------------- inputs that are not files


def test_symlink_loop_as_input_is_refused(capsys, run_files, tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    code, err = cli(capsys, *diagnose_args(run_files, tmp_path / "out", items=tmp_path / "a"))
    assert code == 2 and "symlink loop" in err
    code, err = cli(capsys, "gate", tmp_path / "a")
    assert code == 2 and "symlink loop" in err


@contextlib.contextmanager
def alarm(seconds: int):
    """Fail instead of hanging forever (a FIFO blocked ``open`` until a writer came)."""

    def boom(*_):
        raise TimeoutError(f"blocked for {seconds} s")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("role", ["items", "train", "student", "manifest", "report", "policy", "config"])
def test_fifo_input_is_refused_without_blocking(capsys, run_files, tmp_path, role):
    fifo = tmp_path / ("fifo.yaml" if role in ("manifest", "config") else "fifo.jsonl")
    os.mkfifo(fifo)
    argv = {
        "report": ["gate", fifo],
        "policy": ["gate", run_files["report"], "--policy", fifo],
        "config": ["train", "sft", "--config", fifo],
    }.get(role) or diagnose_args(run_files, tmp_path / "out", **{role: fifo})
    with alarm(20):
        code, err = cli(capsys, *argv)
    assert code == 2 and "FIFO" in err


def test_device_file_is_refused(capsys, run_files, tmp_path):
    code, err = cli(capsys, *diagnose_args(run_files, tmp_path / "out", items=Path("/dev/zero")))
    assert code == 2 and "character device" in err


# ---------------------------------------------------------------- bounded work


def test_gzip_bomb_is_refused_quickly(capsys, run_files, tmp_path):
    bomb = tmp_path / "items.jsonl.gz"
    bomb.write_bytes(gzip.compress(b"\n" * (16 * 1024 * 1024)))  # 16 MiB of blank lines in 16 KB
    start = time.perf_counter()
    code, err = cli(capsys, *diagnose_args(run_files, tmp_path / "out", items=bomb))
    assert code == 2 and "decompression bomb" in err
    assert time.perf_counter() - start < 15


def test_gzip_of_real_jsonl_still_reads(capsys, run_files, tmp_path):
    gz = tmp_path / "items.jsonl.gz"
    gz.write_bytes(gzip.compress(run_files["items"].read_bytes()))
    code, err = cli(capsys, *diagnose_args(run_files, tmp_path / "out", items=gz))
    assert code == 0, err


def test_yaml_alias_budget_counts_bytes(tmp_path):
    big = "x" * (1024 * 1024)  # 20 aliases of one 1 MiB string: 1 MiB on disk, 20 MiB expanded
    text = f"teacher: {{name: &s {big}}}\nnotes: [{', '.join(['*s'] * 20)}]\n"
    path = tmp_path / "m.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match="MiB once YAML aliases are expanded"):
        load_manifest(path)


@pytest.mark.parametrize(
    ("suffix", "text", "field"),
    [
        (".yaml", "generation: {temperature: .nan}\n", "generation.temperature"),
        (".yaml", "generation: {top_p: .inf}\n", "generation.top_p"),
        (".yaml", "decontamination: {threshold: -.inf}\n", "decontamination.threshold"),
        (".json", '{"generation": {"temperature": NaN}}', None),
        (".yaml", "extra: {score: .nan}\n", "extra.score"),
    ],
)
def test_manifest_refuses_nan_and_infinity(tmp_path, suffix, text, field):
    path = tmp_path / f"m{suffix}"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_manifest(path)
    assert info.value.field == field
    assert "finite" in str(info.value) or "NaN is not a number" in str(info.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [("reference", float("nan")), ("reference", float("-inf")), ("tags", {"difficulty": float("nan")})],
)
def test_nan_in_an_item_tag_or_reference_is_refused(capsys, run_files, tmp_path, field, value):
    items = with_row(run_files, tmp_path, "items", 2, **{field: value})  # json.dumps writes NaN / -Infinity
    code, err = cli(capsys, *diagnose_args(run_files, tmp_path / "out", items=items))
    assert code == 2 and f"items.jsonl:3: field '{field}" in err and "finite" in err


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--temperature", "nan"), ("--temperature", "inf"), ("--top-p", "nan"), ("--near-dup-threshold", "nan")],
)
def test_generate_refuses_non_finite_numbers(capsys, run_files, tmp_path, flag, value):
    (tmp_path / "teacher").mkdir()
    code, err = cli(capsys, "generate", "--prompts", run_files["items"], "--teacher-model", tmp_path / "teacher",
                    "--out", tmp_path / "train.jsonl", flag, value)  # fmt: skip
    assert code == 2 and flag in err


# ---------------------------------------------------------------- models and devices


@pytest.fixture(scope="module")
def corrupt_model(tmp_path_factory) -> Path:
    from train_helpers import tiny_student

    model = tiny_student(tmp_path_factory.mktemp("m") / "model")
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return model


def test_eval_refuses_a_truncated_model_safetensors(capsys, run_files, tmp_path, corrupt_model):
    code, err = cli(capsys, "eval", "--items", run_files["items"], "--model", corrupt_model,
                    "--out", tmp_path / "o.jsonl", "--quiet")  # fmt: skip
    assert code == 2 and str(corrupt_model) in err and "cannot load" in err


def test_eval_refuses_an_unknown_dtype(capsys, run_files, tmp_path, corrupt_model):
    code, err = cli(capsys, "eval", "--items", run_files["items"], "--model", corrupt_model,
                    "--out", tmp_path / "o.jsonl", "--dtype", "float7")  # fmt: skip
    assert code == 2 and "float7" in err


@pytest.mark.skipif(torch.cuda.device_count() > 7, reason="this machine has a cuda:7")
@pytest.mark.parametrize("command", ["eval", "generate"])
def test_a_missing_gpu_is_an_error_not_a_silent_cpu_run(capsys, run_files, tmp_path, corrupt_model, command):
    if command == "eval":
        argv = [
            "eval",
            "--items",
            run_files["items"],
            "--model",
            corrupt_model,
            "--out",
            tmp_path / "o.jsonl",
        ]
    else:
        argv = ["generate", "--prompts", run_files["items"], "--teacher-model", corrupt_model,
                "--out", tmp_path / "t.jsonl"]  # fmt: skip
    code, err = cli(capsys, *argv, "--device", "cuda:7")
    assert code == 2 and "cuda:7" in err


def test_bad_device_name_is_refused(capsys, run_files, tmp_path, corrupt_model):
    code, err = cli(capsys, "eval", "--items", run_files["items"], "--model", corrupt_model,
                    "--out", tmp_path / "o.jsonl", "--device", "gpu please")  # fmt: skip
    assert code == 2 and "not a torch device" in err


# ---------------------------------------------------------------- train configs


def write_config(tmp_path: Path, run_files, body: str = "") -> Path:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"student: {tmp_path / 'student'}\ndata: {run_files['train']}\noutput_dir: {tmp_path / 'out'}\n"
        + body,
        encoding="utf-8",
    )
    return cfg


@pytest.mark.parametrize(
    ("body", "extra", "message"),
    [
        ("", ["--set", "seed=-1"], "field 'seed'"),
        ("", ["--set", "lr=.nan"], "finite"),
        ("", ["--set", "epochs=.inf"], "finite"),
        ("", ["--set", "lr=nan"], "finite"),
        ("method: gkd\nteacher: t\n", [], "says method 'gkd' but the command is `train sft`"),
        ("", ["--set", "method=gkd"], "says method 'gkd'"),
        ("", ["--resume"], "no checkpoint to resume"),
    ],
)
def test_train_config_mistakes_are_exit_2(capsys, run_files, tmp_path, body, extra, message):
    cfg = write_config(tmp_path, run_files, body)
    code, err = cli(capsys, "train", "sft", "--config", cfg, *extra)
    assert code == 2 and message in err, err
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


def test_train_config_with_an_invalid_byte(capsys, run_files, tmp_path):
    cfg = write_config(tmp_path, run_files)
    cfg.write_bytes(cfg.read_bytes() + b"steps: 3 # \xff\n")
    code, err = cli(capsys, "train", "sft", "--config", cfg)
    assert code == 2 and f"{cfg}:4" in err and "UTF-8" in err


# ---------------------------------------------------------------- exit codes


def test_internal_error_is_exit_3_with_one_line_and_debug_shows_the_traceback(capsys, monkeypatch, run_files):
    import distill_doctor.reports.gate as gate

    def broken(*_a, **_k):
        raise KeyError("a bug of ours")

    monkeypatch.setattr(gate, "evaluate", broken)
    code = main(["gate", str(run_files["report"])])
    err = capsys.readouterr().err
    assert code == 3 and err.count("\n") == 1 and "internal error: KeyError" in err and "--debug" in err
    for argv in (
        ["--debug", "gate", str(run_files["report"])],
        ["gate", str(run_files["report"]), "--debug"],
    ):
        assert main(argv) == 3
        err = capsys.readouterr().err
        assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith(
            "distill-doctor gate: internal"
        )


def test_disk_full_is_exit_2_not_a_crash(capsys, monkeypatch, run_files, tmp_path):
    import errno

    import distill_doctor.atomic as atomic

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "report.html"))

    monkeypatch.setattr(atomic, "_stage", full)
    code, err = cli(capsys, *diagnose_args(run_files, tmp_path / "out"))
    assert code == 2 and "No space left on device" in err


def test_train_refuses_a_truncated_student_safetensors(capsys, run_files, tmp_path, corrupt_model):
    cfg = write_config(tmp_path, run_files, f"student: {corrupt_model}\n")
    code, err = cli(capsys, "train", "sft", "--config", cfg, "--quiet")
    assert code == 2 and "field 'student'" in err and "cannot load a causal LM" in err


def test_gzip_total_inflation_cap(capsys, run_files, tmp_path, monkeypatch):
    import distill_doctor.data.jsonl as jsonl

    monkeypatch.setattr(jsonl, "RATIO_CHECK_AFTER", 100)  # check early and often
    monkeypatch.setattr(jsonl, "MAX_INFLATED_BYTES", 1000)  # a real items file, over the (shrunk) cap
    gz = tmp_path / "items.jsonl.gz"
    gz.write_bytes(gzip.compress(run_files["items"].read_bytes()))
    code, err = cli(capsys, *diagnose_args(run_files, tmp_path / "out", items=gz))
    assert code == 2 and "inflates to over" in err
