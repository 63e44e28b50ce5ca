"""Provenance probe: a complete control manifest passes; each hard gap fails; soft gaps warn."""

from __future__ import annotations

import copy
import hashlib

import pytest

from distill_doctor.probes.base import DiagnosisInputs
from distill_doctor.probes.licenses import LICENSES, VERDICT_OF_CATEGORY, classify_license
from distill_doctor.probes.provenance import PROBE, run
from distill_doctor.testing.synthetic_runs import make_run

TRAIN = b'{"prompt": "Compute 1 + 2.", "response": "3"}\n'
COMPLETE = {
    "teacher": {"name": "acme/teacher-7b", "revision": "a1b2c3", "license": "apache-2.0"},
    "student_base": {"name": "acme/student-1b", "revision": "d4e5f6", "license": "mit"},
    "prompts": [{"source": "gsm8k-train", "license": "mit", "count": 7473}],
    "generation": {
        "temperature": 0.7,
        "top_p": 0.95,
        "max_new_tokens": 512,
        "samples_per_prompt": 4,
        "seed": 1,
    },
    "filters": [{"name": "verified", "rule": "answer matches reference", "kept": 20000, "dropped": 9892}],
    "decontamination": {
        "benchmarks": ["gsm8k-test"],
        "method": "13-gram + minhash",
        "ngram": 13,
        "threshold": 0.8,
        "removed": 12,
    },
    "dataset_sha256": hashlib.sha256(TRAIN).hexdigest(),
}


def inputs_with(manifest, tmp_path, *, train: bytes | None = TRAIN) -> DiagnosisInputs:
    base = make_run("clean_high", 20, 0)
    base.manifest = manifest
    if train is not None:
        path = tmp_path / "train.jsonl"
        path.write_bytes(train)
        base.train_path = path
    return base


def edited(path: str, value) -> dict:
    m = copy.deepcopy(COMPLETE)
    *parents, last = path.split(".")
    node = m
    for p in parents:
        node = node[p]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return m


def test_complete_manifest_passes(tmp_path):
    import datetime
    import json

    m = copy.deepcopy(COMPLETE)
    m["teacher"]["revision"] = datetime.date(2024, 5, 1)  # YAML turns bare dates into objects
    f = run(inputs_with(m, tmp_path))
    json.dumps(f.to_dict())
    assert f.verdict == "pass", f.evidence
    assert f.metrics["dataset_sha256"]["match"] is True
    assert f.p_value is None and PROBE.needs == ("manifest",)


@pytest.mark.parametrize(
    "path,value,field",
    [
        ("dataset_sha256", "0" * 64, "dataset_sha256"),
        ("decontamination", KeyError, "decontamination"),
        ("decontamination.method", "", "decontamination.method"),
        ("decontamination.benchmarks", [], "decontamination.benchmarks"),
        ("decontamination.removed", "many", "decontamination.removed"),
        ("teacher.license", "CC-BY-NC-4.0", "teacher.license"),
        ("teacher.license", "llama2", "teacher.license"),
        ("teacher.license", "OpenAI terms of use", "teacher.license"),
        ("teacher.license", "research only", "teacher.license"),
        ("teacher.license", KeyError, "teacher.license"),
        ("teacher.license", "unknown", "teacher.license"),
        ("teacher.name", None, "teacher.name"),
        ("student_base.license", "cc-by-nc-sa-4.0", "student_base.license"),
    ],
)
def test_hard_gaps_fail(tmp_path, path, value, field):
    f = run(inputs_with(edited(path, value), tmp_path))
    assert f.verdict == "fail", f.evidence
    assert f.evidence[0]["severity"] == "fail"
    assert field in [e["id"] for e in f.evidence if e["severity"] == "fail"]
    assert f.guardrail


@pytest.mark.parametrize(
    "path,value",
    [
        ("generation.seed", KeyError),
        ("generation.top_p", None),
        ("teacher.revision", KeyError),
        ("decontamination.removed", KeyError),
        ("dataset_sha256", KeyError),
        ("teacher.license", "llama3.1"),
        ("teacher.license", "gemma"),
        ("teacher.license", "bsl-1.0-custom"),
        ("student_base.license", "llama2"),
        ("prompts", [{"source": "web", "license": "cc-by-nc-4.0", "count": 5}]),
        ("filters", KeyError),
        ("prompts", []),
    ],
)
def test_soft_gaps_warn(tmp_path, path, value):
    f = run(inputs_with(edited(path, value), tmp_path))
    assert f.verdict == "warn", f.evidence


def test_llama2_teacher_for_a_llama2_student_is_only_a_warning(tmp_path):
    m = edited("teacher.license", "llama2")
    m["student_base"]["license"] = "Llama 2 Community License"
    assert run(inputs_with(m, tmp_path)).verdict == "warn"


def test_lenient_spellings_of_a_complete_manifest_pass(tmp_path):
    m = copy.deepcopy(COMPLETE)
    m["dataset_sha256"] = "sha256:" + m["dataset_sha256"].upper()
    m["decontamination"] = {"benchmarks": "gsm8k", "method": "exact 13-gram", "removed": "0"}
    m["teacher"]["license"] = "Apache License 2.0"
    m["filters"] = []
    m["generation"]["seed"] = 0
    f = run(inputs_with(m, tmp_path))
    assert f.verdict == "pass", f.evidence


def test_without_training_file_the_hash_is_not_checked(tmp_path):
    f = run(inputs_with(COMPLETE, tmp_path, train=None))
    assert f.verdict == "pass"
    assert f.metrics["dataset_sha256"]["match"] is None


@pytest.mark.parametrize("manifest", [{}, [], "teacher: x", {"teacher": "gpt", "decontamination": 3}])
def test_malformed_manifests_fail_without_crashing(tmp_path, manifest):
    f = run(inputs_with(manifest, tmp_path))
    assert f.verdict == "fail"


def test_license_table():
    for key, (category, _) in LICENSES.items():
        assert classify_license(key).category == category
        assert category in VERDICT_OF_CATEGORY
    assert classify_license("Apache 2.0").id == "apache-2.0"
    assert classify_license("MIT").verdict == "ok"
    assert classify_license("CC BY-NC 2.0").category == "noncommercial"
    assert classify_license("meta-llama-3.2-community").category == "conditional"
    assert classify_license(None).category == "unknown"
    assert classify_license("unknown").category == "unknown"
    assert classify_license("some-new-license").verdict == "warn"
