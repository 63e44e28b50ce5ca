"""``eval --engine vllm``: the flag, the lm-eval command line, refusals in one line, the subprocess
path end to end on lm-eval's HF backend, and (slow) the real vLLM engine writing the same greedy
outputs as ``--engine hf`` on organism models, teacher and student."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from distill_doctor.cli import build_parser, main
from distill_doctor.data import load_items, load_outputs
from distill_doctor.produce import lm_eval_vllm
from distill_doctor.produce.lm_eval_runner import load_hflm, run_items
from distill_doctor.produce.lm_eval_vllm import LmEvalCommand, run_items_vllm
from distill_doctor.train import vllm_client
from distill_doctor.train.vllm_client import EngineError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "organisms"
TEACHER = FIXTURES / "models" / "teacher"  # head_dim 32: vLLM's CPU attention refuses smaller heads
STUDENT = FIXTURES / "clean" / "model"
NEEDS_VLLM = pytest.mark.skipif(
    vllm_client.unavailable_reason() is not None, reason=str(vllm_client.unavailable_reason())
)


@pytest.fixture
def items_path(tmp_path) -> Path:
    """Every 7th organism item (47 items, arithmetic of every difficulty), as the items file."""
    path = tmp_path / "items.jsonl"
    lines = (FIXTURES / "items.jsonl").read_text(encoding="utf-8").splitlines()[::7]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def eval_args(items: Path, *extra: str) -> list[str]:
    return ["eval", "--items", str(items), "--quiet", *extra]


# ---- the flag and the command line ---------------------------------------------------------------


def test_engine_flag_defaults_to_hf_and_accepts_vllm(tmp_path, capsys):
    parser = build_parser()
    base = eval_args(tmp_path / "i.jsonl", "--model", str(TEACHER), "--out", str(tmp_path / "o.jsonl"))
    assert parser.parse_args(base).engine == "hf"
    assert parser.parse_args([*base, "--engine", "vllm"]).engine == "vllm"
    with pytest.raises(SystemExit) as exc:
        parser.parse_args([*base, "--engine", "sglang"])
    assert exc.value.code == 2 and "invalid choice: 'sglang'" in capsys.readouterr().err


def test_command_line_is_lm_evals_own_vllm_run(tmp_path):
    """The argv parses with lm-eval's own CLI parser into the run we mean (model args as JSON, so a
    model path holding commas stays one value)."""
    from lm_eval._cli.harness import HarnessCLI

    model = tmp_path / "a,b=c model"
    command = LmEvalCommand(
        python=Path("/env/bin/python"),
        model_dir=model,
        task="distill_doctor_items",
        include_path=tmp_path / "task",
        output_path=tmp_path / "results",
        dtype="float32",
        seed=3,
        max_model_len=77,
        batch_size=4,
        enforce_eager=True,
    )
    argv = command.argv()
    assert argv[:4] == ["/env/bin/python", "-m", "lm_eval", "run"]
    args = HarnessCLI()._parser.parse_args(argv[3:])
    assert args.model == "vllm"
    assert args.model_args == {
        "pretrained": str(model.resolve()),
        "dtype": "float32",
        "seed": 3,
        "max_model_len": 77,
        "enforce_eager": True,
    }
    assert args.tasks == ["distill_doctor_items"]
    assert args.include_path == str((tmp_path / "task").resolve())
    assert args.output_path == str((tmp_path / "results").resolve())
    assert args.log_samples is True
    assert str(args.batch_size) == "4" and args.seed == [3, 3, 3, 3]
    gpu = LmEvalCommand(**{**command.__dict__, "enforce_eager": False})
    assert "enforce_eager" not in gpu.model_args()  # on a GPU vLLM keeps its CUDA graphs


def test_auto_dtype_is_the_checkpoints_own():
    """vLLM's own "auto" runs a float32 checkpoint in half precision; HF's loads float32."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(TEACHER))
    assert lm_eval_vllm.engine_dtype("auto", config) == "float32"
    assert lm_eval_vllm.engine_dtype("bfloat16", config) == "bfloat16"


def test_truncation_warning_is_lm_evals_own(caplog):
    """The log check looks for the warning lm-eval really writes when a prompt does not fit."""
    from lm_eval.models.utils import maybe_truncate

    with caplog.at_level(logging.WARNING):
        tokens, _ = maybe_truncate(list(range(10)), max_gen_toks=4, max_model_len=12)
    assert len(tokens) == 8
    assert lm_eval_vllm.TRUNCATION_WARNING in caplog.text


def test_version_problems_are_named():
    python = Path("/env/bin/python")
    assert (
        lm_eval_vllm.lm_eval_version_problem({"lm_eval": "0.4.13", "vllm": "0.32.0+cpu"}, "0.4.13", python)
        is None
    )
    missing = lm_eval_vllm.lm_eval_version_problem({}, "0.4.13", python)
    assert missing is not None and "not installed" in missing and "setup_vllm.sh" in missing
    other = lm_eval_vllm.lm_eval_version_problem({"lm_eval": "0.4.9", "vllm": "1"}, "0.4.13", python)
    assert other is not None and "0.4.9" in other and "0.4.13" in other
    alias = lm_eval_vllm.lm_eval_version_problem({"lm_eval": "0.4.13", "vllm": None}, "0.4.13", python)
    assert alias is not None and "'vllm' distribution" in alias


# ---- refusals: exit 2, one line ------------------------------------------------------------------


def refused(capsys, args: list[str], *expected: str) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith("distill-doctor eval: vLLM engine failed"), err
    for text in expected:
        assert text in err, err
    return err


def test_no_engine_environment_is_refused(items_path, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DISTILL_DOCTOR_VLLM_PYTHON", str(tmp_path / "no-such-python"))
    out = tmp_path / "out.jsonl"
    args = eval_args(items_path, "--model", str(TEACHER), "--out", str(out), "--engine", "vllm")
    refused(capsys, args, "vLLM engine unavailable", "scripts/setup_vllm.sh")
    assert not out.exists()


def test_engine_environment_without_lm_eval_is_refused(items_path, tmp_path, monkeypatch, capsys):
    """A real interpreter that lacks lm-eval (a bare venv) stands for a .venv-vllm set up before
    eval used it; in pair mode the first model's failure ends the run, naming the side."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    monkeypatch.setenv("DISTILL_DOCTOR_VLLM_PYTHON", str(tmp_path / "bare" / "bin" / "python"))
    out_dir = tmp_path / "outputs"
    args = eval_args(
        items_path,
        "--teacher-model", str(TEACHER),
        "--student-model", str(STUDENT),
        "--out-dir", str(out_dir),
        "--engine", "vllm",
    )  # fmt: skip
    refused(capsys, args, "(teacher)", "lm-eval is not installed", "setup_vllm.sh")
    assert not list(out_dir.glob("*.jsonl"))


# ---- the subprocess path end to end, on lm-eval's HF backend -------------------------------------


@pytest.mark.integration
def test_subprocess_run_matches_the_in_process_run(items_path, tmp_path):
    """The same task, command line, samples reading and join as the vllm engine, with lm-eval's HF
    backend in a subprocess of this venv: the outputs equal the in-process HF path's, and
    lm-eval's own samples and results files are kept."""
    items = load_items(items_path)[:12]
    log, kept = tmp_path / "out_lm_eval.log", tmp_path / "out_lm_eval"
    sub = run_items_vllm(
        TEACHER,
        items,
        items_path=items_path,
        log_path=log,
        max_gen_toks=24,
        until=None,
        dtype="auto",
        seed=0,
        batch_size=4,
        enforce_eager=True,
        keep_samples_in=kept,
        quiet=True,
        backend="hf",
        python=Path(sys.executable),
    )
    lm = load_hflm(TEACHER, batch_size=4, quiet=True)
    here = run_items(lm, items, items_path=items_path, max_gen_toks=24, quiet=True)
    assert [o.output for o in sub.outputs] == [o.output for o in here.outputs]
    assert [o.id for o in sub.outputs] == [it.id for it in items]
    assert sub.max_gen_toks == here.max_gen_toks == 24 and sub.task == here.task
    assert "exact_match,none" in sub.metrics
    assert log.read_text().startswith(f"$ {sys.executable} -m lm_eval run --model hf ")
    (samples,) = kept.glob(f"samples_{sub.task}_*.jsonl")
    assert len(list(kept.glob("results_*.json"))) == 1
    logged = load_outputs(samples, items)
    assert [logged.outputs[it.id].output for it in items] == [o.output for o in sub.outputs]


@pytest.mark.integration
def test_failing_lm_eval_run_names_its_error_and_log(items_path, tmp_path):
    """A truncated weights file makes lm-eval itself fail in the subprocess: one line with its
    error and the log path; the log holds the traceback."""
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in TEACHER.iterdir():
        if f.is_file():
            (broken / f.name).write_bytes(f.read_bytes())
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    log = tmp_path / "out_lm_eval.log"
    with pytest.raises(EngineError) as exc:
        run_items_vllm(
            broken,
            load_items(items_path)[:2],
            items_path=items_path,
            log_path=log,
            max_gen_toks=8,
            until=None,
            dtype="auto",
            seed=0,
            batch_size=2,
            enforce_eager=True,
            backend="hf",
            python=Path(sys.executable),
        )
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith("lm-eval (hf backend) exited with code 1 on ")
    assert message.endswith(f"; log: {log}")
    assert "Traceback" in log.read_text()


# ---- the real engine (slow) ----------------------------------------------------------------------


@pytest.mark.slow
@NEEDS_VLLM
def test_vllm_pair_writes_the_same_outputs_as_hf(items_path, tmp_path):
    """Teacher and student, greedy, 47 items: the files are equal byte for byte, lm-eval's own
    samples are kept, and each side's lm-eval log is beside its outputs."""
    common = [
        "--teacher-model", str(TEACHER),
        "--student-model", str(STUDENT),
        "--max-new-tokens", "32",
        "--keep-samples",
    ]  # fmt: skip
    for engine in ("hf", "vllm"):
        assert (
            main(eval_args(items_path, *common, "--out-dir", str(tmp_path / engine), "--engine", engine)) == 0
        )
    items = load_items(items_path)
    for side in ("teacher", "student"):
        hf, vllm = tmp_path / "hf" / f"{side}.jsonl", tmp_path / "vllm" / f"{side}.jsonl"
        assert vllm.read_text() == hf.read_text(), side
        (samples,) = (tmp_path / "vllm" / f"{side}_lm_eval").glob("samples_distill_doctor_items_*.jsonl")
        logged = load_outputs(samples, items)
        native = load_outputs(vllm, items)
        assert {k: v.output for k, v in logged.outputs.items()} == {
            k: v.output for k, v in native.outputs.items()
        }
        assert "--model vllm" in (tmp_path / "vllm" / f"{side}_lm_eval.log").read_text()
    teacher = [
        json.loads(x)["output"] for x in (tmp_path / "vllm" / "teacher.jsonl").read_text().splitlines()
    ]
    student = [
        json.loads(x)["output"] for x in (tmp_path / "vllm" / "student.jsonl").read_text().splitlines()
    ]
    assert teacher != student  # two different models


@pytest.mark.slow
@NEEDS_VLLM
def test_vllm_stop_strings_and_token_budget_match_hf(items_path, tmp_path):
    """``--until`` (vLLM's stop strings vs HF's stopping criteria) and a budget that cuts the longer
    answers: the same text item for item."""
    common = ["--model", str(TEACHER), "--until", "\n", "--max-new-tokens", "8"]
    texts = {}
    for engine in ("hf", "vllm"):
        out = tmp_path / f"{engine}.jsonl"
        assert main(eval_args(items_path, *common, "--out", str(out), "--engine", engine)) == 0
        texts[engine] = [json.loads(x)["output"] for x in out.read_text().splitlines()]
    assert texts["vllm"] == texts["hf"]
    assert all("\n" not in t for t in texts["hf"])
    assert any(len(t) == 8 for t in texts["hf"]) and any(len(t) < 8 for t in texts["hf"])


def random_model(out: Path, seed: int = 0) -> Path:
    """A random Llama (hidden 128, 2 layers, head_dim 32) on the organism tokenizer, weights drawn at
    scale 0.5 so that its greedy outputs depend on the prompt and include <pad>, <bos> and <unk>."""
    import torch
    from transformers import PreTrainedTokenizerFast

    from distill_doctor.testing.tiny_model import build_tiny_llama, save_model

    tok = PreTrainedTokenizerFast.from_pretrained(str(TEACHER))
    model = build_tiny_llama(tok, hidden_size=128, num_layers=2, num_heads=4, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return save_model(model, tok, out)


@pytest.mark.slow
@NEEDS_VLLM
def test_vllm_drops_generated_special_tokens_as_hf_does(items_path, tmp_path):
    """A model that generates special tokens mid-answer: lm-eval's vllm backend keeps them in the
    text unless the task says ``skip_special_tokens``, its HF backend drops them. The outputs must
    be equal item for item."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = random_model(tmp_path / "random")
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    specials = {tok.pad_token_id, tok.bos_token_id, tok.unk_token_id}
    drawn = 0
    for item in load_items(items_path):
        ids = tok(item.prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id)
        drawn += sum(int(t) in specials for t in out[0, ids.shape[1] :])
    assert drawn > 0  # the case is really exercised
    texts = {}
    for engine in ("hf", "vllm"):
        out_path = tmp_path / f"{engine}.jsonl"
        args = ["--model", str(model_dir), "--max-new-tokens", "24", "--out", str(out_path)]
        assert main(eval_args(items_path, *args, "--engine", engine)) == 0
        texts[engine] = [json.loads(x)["output"] for x in out_path.read_text().splitlines()]
    assert texts["vllm"] == texts["hf"]
    assert not any("<bos>" in t or "<pad>" in t for t in texts["vllm"])
