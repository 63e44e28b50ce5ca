"""Teacher data generation: rejection sampling, filters, dedup, decontamination, manifest, CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from produce_helpers import read_jsonl, tiny_models

from distill_doctor.cli import main
from distill_doctor.data import load_manifest, load_training
from distill_doctor.data.fingerprint import file_sha256
from distill_doctor.data.records import Item
from distill_doctor.errors import InputError
from distill_doctor.produce.dedup import NearDedup, exact_duplicates
from distill_doctor.produce.filters import no_final_answer, repetition_loop
from distill_doctor.produce.generate import GenerateOptions, generate_dataset
from distill_doctor.produce.generate_run import generate_files
from distill_doctor.produce.manifest_writer import describe_model, detect_license, git_commit, weights_sha256
from distill_doctor.produce.prompts import load_prompts
from distill_doctor.produce.sampling import Completion, HFSampler, SamplingParams, load_model


def addition_items(n: int = 6) -> list[Item]:
    return [
        Item(id=f"q{i}", prompt=f"What is {i} plus {i + 10}?", reference=2 * i + 10, verifier="numeric")
        for i in range(n)
    ]


def operands(prompt: str) -> tuple[int, int]:
    a, b = (int(x) for x in re.findall(r"\d+", prompt))
    return a, b


def fake_teacher(prompts: list[str], n: int) -> list[list[str]]:
    """Deterministic 'samples': wrong, empty, right (long form), right (short form)."""
    out = []
    for p in prompts:
        a, b = operands(p)
        pool = [f"I think it is {a + b + 1}.", "  ", f"{a} plus {b}: the answer is {a + b}.", f"#### {a + b}"]
        out.append([pool[k % len(pool)] for k in range(n)])
    return out


def by_name(result) -> dict[str, tuple[int, int]]:
    return {f.name: (f.kept, f.dropped) for f in result.filters}


# ---- the pipeline with an injected sampler --------------------------------------------------------


def test_rejection_sampling_keeps_only_verified_responses():
    items = addition_items(6)
    result = generate_dataset(items, fake_teacher, options=GenerateOptions(samples_per_prompt=4))
    assert result.n_candidates == 24 and len(result.rows) == 6 and result.prompts_covered == 6
    counts = by_name(result)
    assert counts["empty"] == (18, 6)
    assert counts["verifier"] == (12, 6)  # the 'I think it is a+b+1' samples
    assert counts["select"] == (6, 6)  # best-of-N: the first verified sample per prompt
    for row, item in zip(result.rows, items):
        a, b = operands(item.prompt)
        assert row == {
            "prompt": item.prompt,
            "response": f"{a} plus {b}: the answer is {a + b}.",
            "id": item.id,
            "source": "teacher",
            "reference": item.reference,
        }
    stages = result.dropped_by_stage()
    assert stages == {"empty": 6, "verifier": 6, "select": 6}
    wrong = [d for d in result.dropped if d.stage == "verifier"]
    assert all(d.sample == 0 and "rejected" in d.why for d in wrong)


def test_keep_all_gives_unique_ids_and_reject_none_keeps_wrong_answers():
    items = addition_items(3)
    every = generate_dataset(items, fake_teacher, options=GenerateOptions(samples_per_prompt=4, keep="all"))
    assert [r["id"] for r in every.rows] == ["q0#2", "q0#3", "q1#2", "q1#3", "q2#2", "q2#3"]
    unverified = generate_dataset(
        items, fake_teacher, options=GenerateOptions(samples_per_prompt=4, reject_with="none")
    )
    assert "verifier" not in by_name(unverified)
    assert [r["response"] for r in unverified.rows][0] == "I think it is 11."


def test_prompts_without_reference_cannot_be_verified():
    items = [Item(id="free", prompt="What is 1 plus 11?", reference=None, verifier="numeric")]
    verified = generate_dataset(items, fake_teacher, options=GenerateOptions(samples_per_prompt=4))
    assert verified.rows == [] and by_name(verified)["verifier"] == (0, 3)
    assert {d.why for d in verified.dropped if d.stage == "verifier"} == {"no reference to verify against"}
    free = generate_dataset(
        items, fake_teacher, options=GenerateOptions(samples_per_prompt=4, reject_with="none")
    )
    assert len(free.rows) == 1 and "reference" not in free.rows[0]


def test_the_pipeline_is_deterministic_under_a_deterministic_sampler():
    items = addition_items(5)
    a = generate_dataset(items, fake_teacher, options=GenerateOptions(chunk_prompts=2))
    b = generate_dataset(items, fake_teacher, options=GenerateOptions(chunk_prompts=5))
    assert a.rows == b.rows and by_name(a) == by_name(b)


def test_format_filters_drop_truncated_looping_and_answerless_responses():
    item = addition_items(1)[0]  # 0 plus 10

    def sampler(prompts, n):
        return [
            [
                Completion("the answer is 1", truncated=True),
                "the answer is 10. " * 6,
                "I do not know.",
                Completion("the answer is 10", truncated=False),
            ]
            for _ in prompts
        ]

    result = generate_dataset([item], sampler, options=GenerateOptions(samples_per_prompt=4))
    counts = by_name(result)
    assert counts["truncated"] == (3, 1)
    assert counts["repetition_loop"] == (2, 1)
    assert counts["no_final_answer"] == (1, 1)
    assert [r["response"] for r in result.rows] == ["the answer is 10"]


def test_exact_and_near_duplicates_are_removed_and_counted():
    # Two items share a prompt (different ids); two others differ by one word in a long response.
    long = " ".join(
        f"step {k}: carry the digit {k % 10} into column {k // 10} and write it down." for k in range(12)
    )
    items = [
        Item(id="a", prompt="Add 2 and 3.", reference=5, verifier="numeric"),
        Item(id="b", prompt="add 2  and 3.", reference=5, verifier="numeric"),
        Item(id="c", prompt="Sum of 7 and 8, carefully.", reference=15, verifier="numeric"),
        Item(id="d", prompt="Sum of 7 and 8, carefully!", reference=15, verifier="numeric"),
    ]
    responses = {
        "a": "The answer is 5.",
        "b": "the answer is 5.",
        "c": long + " The answer is 15.",
        "d": long + " So the answer is 15.",
    }
    by_prompt = {it.prompt: responses[it.id] for it in items}
    result = generate_dataset(
        items,
        lambda prompts, n: [[by_prompt[p]] * n for p in prompts],
        options=GenerateOptions(samples_per_prompt=1),
    )
    counts = by_name(result)
    assert counts["exact_dedup"] == (3, 1)
    assert counts["near_dedup"] == (2, 1)
    assert [r["id"] for r in result.rows] == ["a", "c"]
    why = {d.id: d.why for d in result.dropped}
    assert why["b"] == "exact duplicate of a" and why["d"].startswith("near duplicate of c")


def test_near_dedup_keeps_different_arithmetic():
    rows = [(f"What is {i}+{j}?", f"The answer is {i + j}.") for i in range(5) for j in range(5)]
    assert NearDedup(threshold=0.85).duplicates(rows) == {}
    assert exact_duplicates(rows + rows[:2]) == {25: 0, 26: 1}


def test_decontamination_removes_eval_prompts_and_records_it():
    items = addition_items(4)
    benchmark = {
        "gsm_eval.jsonl": [
            Item(id="e1", prompt="what is 2 plus 12", reference=14, verifier="numeric"),  # same words as q2
            Item(
                id="e2",
                prompt="An unrelated question about the capital of France?",
                reference="Paris",
                verifier="exact",
            ),
        ]
    }
    result = generate_dataset(items, fake_teacher, decontaminate=benchmark)
    dec = result.decontamination
    assert dec["benchmarks"] == ["gsm_eval.jsonl"] and dec["removed"] == 1 and dec["ngram"] == 13
    assert dec["eval_items_matched"] == 1 and dec["removed_by_kind"] == {"exact": 1}
    assert dec["method"] and dec["params"]["minhash"]["num_perm"] == 128
    assert by_name(result)["decontamination"] == (3, 1)
    assert "q2" not in [r["id"] for r in result.rows]
    clean = generate_dataset(items, fake_teacher)
    assert clean.decontamination["benchmarks"] == [] and clean.decontamination["removed"] == 0


def test_filter_units():
    item = addition_items(1)[0]
    assert repetition_loop(item, "?" * 50) and repetition_loop(item, "ab" * 30)
    assert repetition_loop(item, "Let us add 0 and 10 carefully: 0 + 10 = 10. The answer is 10.") is None
    assert repetition_loop(item, "=" * 20) is None  # short separators are not loops
    assert no_final_answer(item, "no digits here") and no_final_answer(item, "so 10") is None


def test_sampler_contract_is_checked():
    with pytest.raises(ValueError, match="2 strings per prompt"):
        generate_dataset(
            addition_items(1), lambda p, n: [["x"]], options=GenerateOptions(samples_per_prompt=2)
        )
    with pytest.raises(ValueError):
        GenerateOptions(keep="best")


# ---- the real sampler ---------------------------------------------------------------------------


def test_hf_sampler_is_seeded_and_batch_padding_does_not_change_greedy_text():
    teacher, _ = tiny_models()
    model, tok = load_model(teacher)
    prompts = ["What is 1 + 4? ", "Seven", "What is 12 + 30 and then some more? "]
    greedy_one = HFSampler(model, tok, SamplingParams(temperature=0, max_new_tokens=10, batch_size=1))
    greedy_all = HFSampler(model, tok, SamplingParams(temperature=0, max_new_tokens=10, batch_size=8))
    one, batched = greedy_one(prompts, 2), greedy_all(prompts, 2)
    assert one == batched and all(a == b for a, b in one)  # greedy: the n copies agree
    assert all(isinstance(c, Completion) and c.n_tokens <= 10 for row in one for c in row)
    params = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=10, seed=5, batch_size=4)
    rng = torch.get_rng_state()
    s1 = HFSampler(model, tok, params)(prompts, 3)
    assert torch.equal(rng, torch.get_rng_state())  # the caller's RNG is left alone
    s2 = HFSampler(model, tok, params)(prompts, 3)
    assert s1 == s2 and len({c for row in s1 for c in row}) > 3


# ---- files, manifest, CLI -------------------------------------------------------------------------


def write_prompts(path: Path, items: list[Item]) -> Path:
    path.write_text(
        "".join(json.dumps({"id": i.id, "prompt": i.prompt, "reference": i.reference}) + "\n" for i in items)
    )
    return path


def test_generate_files_writes_data_and_a_complete_manifest(tmp_path):
    teacher, _ = tiny_models()
    items = addition_items(6)
    prompts = write_prompts(tmp_path / "prompts.jsonl", items)
    evals = {"eval.jsonl": [Item(id="e", prompt="What is 3 plus 13?", reference=16, verifier="numeric")]}
    files = generate_files(
        items,
        prompts_path=prompts,
        teacher_model=teacher,
        out=tmp_path / "train.jsonl",
        manifest_out=tmp_path / "provenance.yaml",
        benchmarks=evals,
        teacher_license="apache-2.0",
        sampler=fake_teacher,
        params=SamplingParams(temperature=0.7, top_p=0.95, max_new_tokens=64, seed=3),
    )
    rows = read_jsonl(tmp_path / "train.jsonl")
    assert len(rows) == 5 and len(load_training(tmp_path / "train.jsonl")) == 5
    m = load_manifest(tmp_path / "provenance.yaml")
    assert m["dataset_sha256"] == file_sha256(tmp_path / "train.jsonl")
    assert m["teacher"]["name"] == "teacher" and m["teacher"]["license"] == "apache-2.0"
    assert m["teacher"]["revision"] == weights_sha256(teacher)
    expected = {"temperature": 0.7, "top_p": 0.95, "max_new_tokens": 64, "samples_per_prompt": 4, "seed": 3}
    assert {k: m["generation"][k] for k in expected} == expected
    assert m["prompts"] == [
        {"source": "prompts.jsonl", "license": "unknown", "count": 6, "sha256": file_sha256(prompts)}
    ]
    assert [f["name"] for f in m["filters"]][-1] == "decontamination"
    assert all(set(f) == {"name", "rule", "kept", "dropped"} for f in m["filters"])
    assert m["decontamination"]["benchmarks"] == ["eval.jsonl"] and m["decontamination"]["removed"] == 1
    assert {"method", "ngram", "threshold"} <= set(m["decontamination"])
    assert m["dataset"]["rows"] == 5 and files.result.n_candidates == 24
    assert "5 training rows from 6 prompts" in str(files)
    # The provenance probe finds nothing to fail in what was written (gaps only: no student base,
    # the prompts' unknown license).
    from distill_doctor.probes import provenance
    from distill_doctor.probes.base import DiagnosisInputs

    finding = provenance.run(
        DiagnosisInputs(
            items=[], student={}, student_verdicts={}, manifest=m, train_path=tmp_path / "train.jsonl"
        )
    )
    assert finding.verdict == "warn" and finding.metrics["dataset_sha256"]["match"] is True
    assert finding.metrics["n_fail_checks"] == 0


def test_prompts_may_omit_the_reference_but_not_be_malformed(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        json.dumps({"id": "a", "prompt": "What is 1 plus 2?", "reference": 3}) + "\n"
        + json.dumps({"id": "b", "prompt": "Tell me a story.", "tags": {"domain": "chat"}}) + "\n"
    )  # fmt: skip
    a, b = load_prompts(path)
    assert (a.reference, a.verifier) == (3, "numeric")
    assert (b.reference, b.verifier, b.tags, b.line) == (None, "exact", {"domain": "chat"}, 2)
    path.write_text(json.dumps({"id": "c", "prompt": "x", "verifier": "fuzzy"}) + "\n")
    with pytest.raises(InputError, match="unknown verifier") as err:
        load_prompts(path)
    assert (err.value.line, err.value.field) == (1, "verifier")
    path.write_text(
        json.dumps({"id": "d", "prompt": "x", "reference": 1}) + "\n" + json.dumps({"id": "d", "prompt": "y"})
    )
    with pytest.raises(InputError, match="duplicate id"):
        load_prompts(path)


def test_model_description_reads_license_and_commit(tmp_path):
    snap = tmp_path / "hub" / "snapshots" / ("ab" * 20)
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps({"_name_or_path": "org/teacher-7b"}))
    (snap / "model.safetensors").write_bytes(b"weights")
    (snap / "README.md").write_text("---\nlicense: mit\ntags: [x]\n---\n# Card\n")
    block = describe_model(snap)
    assert block["name"] == "org/teacher-7b" and block["license"] == "mit"
    assert block["revision"] == "ab" * 20 and block["weights_sha256"].startswith("sha256:")
    other = tmp_path / "plain"
    other.mkdir()
    (other / "LICENSE").write_text("\n   Apache License\n   Version 2.0, January 2004\n")
    assert detect_license(other) == ("apache-2.0", "LICENSE")
    assert git_commit(other) is None and weights_sha256(other) is None
    (other / "LICENSE").write_text("All rights reserved by nobody in particular.")
    assert detect_license(other)[0] == "unknown"


def test_cli_refuses_to_overwrite_and_runs_a_tiny_teacher(tmp_path, capsys):
    teacher, _ = tiny_models()
    prompts = write_prompts(tmp_path / "prompts.jsonl", addition_items(3))
    out = tmp_path / "train.jsonl"
    out.write_text("precious\n")
    args = [
        "generate", "--prompts", str(prompts), "--teacher-model", str(teacher), "--out", str(out),
        "--samples-per-prompt", "2", "--max-new-tokens", "8", "--temperature", "1.0",
        "--reject-with", "none", "--teacher-license", "mit", "--quiet",
    ]  # fmt: skip
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err and out.read_text() == "precious\n"
    assert main(args + ["--overwrite"]) == 0
    rows = read_jsonl(out)
    manifest = yaml.safe_load((tmp_path / "train.provenance.yaml").read_text())
    assert manifest["dataset_sha256"] == file_sha256(out)
    assert manifest["generation"]["samples_per_prompt"] == 2 and manifest["generation"]["temperature"] == 1.0
    kept = {f["name"]: f["kept"] for f in manifest["filters"]}
    assert kept["select"] == len(rows) <= 3
    assert main(args + ["--overwrite", "--top-p", "0"]) == 2
    assert main(args + ["--overwrite", "--manifest-out", str(prompts)]) == 2  # never over an input
    assert json.loads(prompts.read_text().splitlines()[0])["id"] == "q0"
