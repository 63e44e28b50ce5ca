"""``generate --engine vllm``: the flag, the refusal when the engine cannot run, and (slow) the real
engine writing the same rows as HF generate on an organism teacher through the real CLI."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
import yaml

from distill_doctor.cli import build_parser, main
from distill_doctor.train import vllm_client

ORGANISMS = Path(__file__).resolve().parents[1] / "fixtures" / "organisms" / "models"
TEACHER = ORGANISMS / "sort_teacher"  # head_dim 32: vLLM's CPU attention refuses smaller heads


@pytest.fixture
def prompts(tmp_path) -> Path:
    """Eight sorting prompts (items format) from the organism's own training data."""
    path = tmp_path / "prompts.jsonl"
    with gzip.open(ORGANISMS / "sort_teacher_train.jsonl.gz", "rt") as fh:
        rows = [json.loads(line) for _, line in zip(range(8), fh)]
    path.write_text(
        "".join(json.dumps({k: r[k] for k in ("id", "prompt", "reference")}) + "\n" for r in rows)
    )
    return path


def generate_args(prompts: Path, out: Path, *extra: str) -> list[str]:
    return [
        "generate",
        "--prompts", str(prompts),
        "--teacher-model", str(TEACHER),
        "--out", str(out),
        "--quiet",
        *extra,
    ]  # fmt: skip


def test_engine_flag_defaults_to_hf_and_accepts_vllm(tmp_path):
    parser = build_parser()
    base = generate_args(tmp_path / "p.jsonl", tmp_path / "o.jsonl")
    assert parser.parse_args(base).engine == "hf"
    assert parser.parse_args([*base, "--engine", "vllm"]).engine == "vllm"


def test_unknown_engine_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(
            [*generate_args(tmp_path / "p.jsonl", tmp_path / "o.jsonl"), "--engine", "sglang"]
        )
    assert exc.value.code == 2
    assert "invalid choice: 'sglang'" in capsys.readouterr().err


def test_unavailable_engine_is_refused_in_one_line(prompts, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DISTILL_DOCTOR_VLLM_PYTHON", str(tmp_path / "no-such-python"))
    out = tmp_path / "out.jsonl"
    assert main(generate_args(prompts, out, "--engine", "vllm")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("distill-doctor generate: generation engine failed: vLLM engine unavailable")
    assert "scripts/setup_vllm.sh" in err
    assert not out.exists() and not out.with_name("out.provenance.yaml").exists()


def test_engine_that_dies_at_start_is_refused_in_one_line(prompts, tmp_path, monkeypatch, capsys):
    """A real process that exits at once stands for an engine that crashes while loading."""
    false = shutil.which("false")
    assert false is not None
    monkeypatch.setenv("DISTILL_DOCTOR_VLLM_PYTHON", false)
    out = tmp_path / "out.jsonl"
    assert main(generate_args(prompts, out, "--engine", "vllm")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "generation engine failed: the vLLM engine process stopped answering" in err
    # (", the engine process exited with code 1" follows when the exit was reaped before the read)
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.skipif(
    vllm_client.unavailable_reason() is not None, reason=str(vllm_client.unavailable_reason())
)
@pytest.mark.parametrize("max_new_tokens", ["64", "6"])  # 6: most rows are cut (truncated filter)
def test_greedy_vllm_writes_the_same_rows_as_hf(prompts, tmp_path, max_new_tokens):
    common = [
        "--temperature", "0",
        "--samples-per-prompt", "2",
        "--keep", "all",
        "--reject-with", "none",
        "--max-new-tokens", max_new_tokens,
        "--batch-size", "6",
    ]  # fmt: skip
    written = {}
    for engine in ("hf", "vllm"):
        out = tmp_path / f"{engine}.jsonl"
        assert main(generate_args(prompts, out, *common, "--engine", engine)) == 0
        manifest = yaml.safe_load(out.with_name(f"{engine}.provenance.yaml").read_text())
        written[engine] = (out.read_text(), manifest)
    (hf_rows, hf_manifest), (vllm_rows, vllm_manifest) = written["hf"], written["vllm"]
    assert vllm_rows == hf_rows
    assert vllm_manifest["filters"] == hf_manifest["filters"]  # same truncated/empty/... counts
    assert vllm_manifest["dataset_sha256"] == hf_manifest["dataset_sha256"]
    assert vllm_manifest["dataset"]["rows"] == hf_manifest["dataset"]["rows"]
    assert vllm_manifest["generation"]["sampler"].startswith("vLLM")
    assert hf_manifest["generation"]["sampler"].startswith("transformers generate")
    if max_new_tokens == "64":
        assert len(hf_rows.splitlines()) == 8  # every prompt answered (duplicates dropped)
    else:
        truncated = next(f for f in hf_manifest["filters"] if f["name"] == "truncated")
        assert truncated["dropped"] > 0


@pytest.mark.slow
@pytest.mark.skipif(
    vllm_client.unavailable_reason() is not None, reason=str(vllm_client.unavailable_reason())
)
def test_sampled_vllm_rows_are_reproducible(prompts, tmp_path):
    """Temperature 0.7, top-p 0.9: one seed per row from --seed, so a rerun writes the same file."""
    common = [
        "--temperature", "0.7",
        "--top-p", "0.9",
        "--samples-per-prompt", "3",
        "--keep", "all",
        "--reject-with", "none",
        "--max-new-tokens", "48",
        "--engine", "vllm",
    ]  # fmt: skip
    texts = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.jsonl"
        assert main(generate_args(prompts, out, *common)) == 0
        texts.append(out.read_text())
    assert texts[0] == texts[1]
    assert len(texts[0].splitlines()) >= 4  # the filters drop some samples, not most
