"""Provenance manifest loader: YAML or JSON, known fields type-checked, unknown fields kept."""

from __future__ import annotations

import json

import pytest

from distill_doctor.data import load_manifest
from distill_doctor.errors import InputError

FULL = """
teacher: {name: org/teacher-7b, revision: 3f2a9c1, license: apache-2.0}
student_base: {name: org/student-1b, revision: main, license: mit}
prompts:
  - {source: gsm8k-train, license: mit, count: 7473}
generation: {temperature: 0.7, top_p: 0.95, max_new_tokens: 512, samples_per_prompt: 4, seed: 1234}
filters:
  - {name: verifier, rule: final answer matches reference, kept: 6000, dropped: 1473}
decontamination: {benchmarks: [gsm8k-test], method: 13-gram, ngram: 13, threshold: 0.8, removed: 12}
dataset_sha256: %s
created: 2024-05-01
notes: {anything: [1, 2, 3]}
""" % ("ab" * 32)


def test_full_yaml_manifest(tmp_path):
    p = tmp_path / "provenance.yaml"
    p.write_text(FULL)
    m = load_manifest(p)
    assert m["teacher"]["license"] == "apache-2.0"
    assert m["generation"]["samples_per_prompt"] == 4 and m["prompts"][0]["count"] == 7473
    assert m["created"] == "2024-05-01"  # YAML date -> ISO string
    assert m["notes"] == {"anything": [1, 2, 3]}  # unknown fields kept
    json.dumps(m)  # report-ready


def test_json_manifest_and_missing_fields_are_fine(tmp_path):
    p = tmp_path / "m.json"
    p.write_text(json.dumps({"teacher": {"name": "t"}, "extra": 1}))
    assert load_manifest(p) == {"teacher": {"name": "t"}, "extra": 1}


def test_numeric_revision_is_kept_as_text(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("teacher: {revision: 1234}\n")
    assert load_manifest(p)["teacher"]["revision"] == "1234"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("teacher: {license: [a, b]}", "teacher.license"),
        ("teacher: apache", "teacher"),
        ("prompts: {source: x}", "prompts"),
        ("prompts: [{source: x, count: -1}]", "prompts[0].count"),
        ("prompts: [{source: x}, {count: many}]", "prompts[1].count"),
        ("generation: {temperature: hot}", "generation.temperature"),
        ("generation: {top_p: 1.5}", "generation.top_p"),
        ("generation: {max_new_tokens: 0}", "generation.max_new_tokens"),
        ("generation: {seed: 1.5}", "generation.seed"),
        ("generation: {samples_per_prompt: true}", "generation.samples_per_prompt"),
        ("filters: [{name: f, kept: 1.5}]", "filters[0].kept"),
        ("decontamination: {benchmarks: gsm8k}", "decontamination.benchmarks"),
        ("decontamination: {benchmarks: [[x]]}", "decontamination.benchmarks[0]"),
        ("decontamination: {ngram: -1}", "decontamination.ngram"),
        ("dataset_sha256: abc", "dataset_sha256"),
    ],
)
def test_type_errors_name_the_field_path(tmp_path, text, field):
    p = tmp_path / "m.yaml"
    p.write_text(text + "\n")
    with pytest.raises(InputError) as err:
        load_manifest(p)
    assert err.value.field == field and f"field '{field}'" in str(err.value)


def test_null_counts_as_missing(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("teacher: {name: t, license: null}\ngeneration: null\n")
    assert load_manifest(p) == {"teacher": {"name": "t", "license": None}, "generation": None}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("m.yaml", b"", "empty"),
        ("m.yaml", b"- a\n- b\n", "top level must be a mapping"),
        ("m.yaml", b"teacher: {name: [unclosed\n", "not valid YAML"),
        ("m.json", b'{"teacher": ', "not valid JSON"),
        ("m.yaml", b"teacher: {name: \xff}\n", "UTF-8"),
        ("m.yaml", b"a: &a [*a]\n", "nested too deeply|aliases"),
    ],
)
def test_broken_files(tmp_path, name, content, message):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(InputError, match=message):
        load_manifest(p)


def test_yaml_error_names_the_line(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("teacher:\n  name: t\n  license: [x\nprompts: 3\n")
    with pytest.raises(InputError) as err:
        load_manifest(p)
    assert err.value.line is not None and err.value.line >= 3


def test_alias_bomb_is_refused(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    p = tmp_path / "bomb.yaml"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="aliases"):
        load_manifest(p)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_manifest(tmp_path / "none.yaml")
