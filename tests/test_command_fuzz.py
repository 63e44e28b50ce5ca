"""Property tests (issue 18): mutated inputs never crash a command.

Valid files of every kind (items, outputs, training rows, manifests, reports, policies, train
configs) are mutated at the byte level (cut, spliced, bytes flipped, hostile snippets inserted)
and at the JSON level (a field set to NaN, a 5,000-digit number, a lone surrogate, deep nesting,
a wrong type, or removed). Whatever comes out, a command exits 0, 1 (a failed gate) or 2 (an
input error, one line): never 3 (an internal error) and never a traceback.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sample_report import sample_report
from test_hostile_inputs import cli, diagnose_args, run_files  # noqa: F401 - fixture

from distill_doctor.errors import InputError
from distill_doctor.train.config import TrainConfig, load_config

HOSTILE_TEXT = [
    "\\ud800", "NaN", "Infinity", "-Infinity", "9" * 5000, "[" * 3000, "{" * 3000, "1e999", "-0", "null",
    "\"\\u0000\"", "\xff", "\t", "\r\n", "&a [*a, *a]", "!!python/object:os.system", "0x10", "1_000",
]  # fmt: skip
HOSTILE_VALUES = [
    float("nan"), float("inf"), -float("inf"), 10**180, -(10**180), "\ud800", "", " ", None, True, [], {},
    [[[[[]]]]], {"a": {"b": {"c": None}}}, "x" * 10_000, -1, 0, 2**63, 1e-320,
]  # fmt: skip

RAW = st.binary(max_size=24) | st.sampled_from([t.encode("utf-8", "surrogatepass") for t in HOSTILE_TEXT])


@st.composite
def byte_mutation(draw, data: bytes) -> bytes:
    """One byte-level change: cut, drop a slice, insert hostile bytes, flip a byte, repeat a line."""
    n = len(data)
    at = draw(st.integers(0, max(n - 1, 0)))
    kind = draw(st.sampled_from(["cut", "drop", "insert", "flip", "repeat"]))
    if kind == "cut":
        return data[:at]
    if kind == "drop":
        return data[:at] + data[at + draw(st.integers(1, 40)) :]
    if kind == "insert":
        return data[:at] + draw(RAW) + data[at:]
    if kind == "flip" and n:
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    lines = data.splitlines(keepends=True) or [b""]
    i = draw(st.integers(0, len(lines) - 1))
    return b"".join(lines[: i + 1] + lines[i:])


JSON_VALUE = st.sampled_from(HOSTILE_VALUES) | st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


def _dumps(value) -> str:
    # json.dumps writes NaN/Infinity (accepted by Python's parser) and keeps lone surrogates as escapes.
    return json.dumps(value)


@st.composite
def jsonl_mutation(draw, data: bytes) -> bytes:
    """One record-level change: a field of one row replaced by a hostile value, or removed."""
    rows = [json.loads(ln) for ln in data.decode("utf-8").splitlines() if ln.strip()]
    if not rows:
        return draw(byte_mutation(data))
    row = rows[draw(st.integers(0, len(rows) - 1))]
    keys = sorted(row) + ["tags", "samples", "verifier", "messages", "reference", "id"]
    key = draw(st.sampled_from(keys))
    if draw(st.booleans()) and key in row:
        del row[key]
    else:
        row[key] = draw(JSON_VALUE)
    return "".join(_dumps(r) + "\n" for r in rows).encode("utf-8", "surrogatepass")


def mutated(data: bytes, *, jsonl: bool = False):
    """Up to three mutations in a row (JSON-level ones first, when the base is JSONL)."""
    step = (lambda d: byte_mutation(d)) if not jsonl else (lambda d: jsonl_mutation(d) | byte_mutation(d))

    @st.composite
    def chain(draw):
        out = data
        for _ in range(draw(st.integers(1, 3))):
            out = draw(step(out)) if jsonl and _is_jsonl(out) else draw(byte_mutation(out))
        return out

    return chain()


def _is_jsonl(data: bytes) -> bool:
    try:
        return all(isinstance(json.loads(ln), dict) for ln in data.decode("utf-8").splitlines() if ln.strip())
    except ValueError:
        return False


FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # the same examples on every run: a failure here is reproducible in CI
)
_counter = itertools.count()


def fresh(folder: Path, content: bytes, name: str) -> Path:
    path = folder / f"{next(_counter)}-{name}"
    path.write_bytes(content)
    return path


MANIFEST = b"""teacher: {name: t, revision: abc, license: mit}
student_base: {name: s, revision: def, license: apache-2.0}
prompts: [{source: gsm8k, license: mit, count: 24}]
generation: {temperature: 0.7, top_p: 0.95, max_new_tokens: 256, samples_per_prompt: 4, seed: 0}
filters: [{name: verifier, rule: exact, kept: 20, dropped: 4}]
decontamination: {benchmarks: [gsm8k], method: ngram, ngram: 13, threshold: 0.8, removed: 0}
"""


@FUZZ
@given(data=st.data(), kind=st.sampled_from(["items", "teacher", "student", "train", "manifest"]))
def test_diagnose_never_crashes_on_mutated_inputs(capsys, run_files, tmp_path_factory, data, kind):  # noqa: F811
    folder = tmp_path_factory.getbasetemp() / "fuzz-diagnose"
    folder.mkdir(exist_ok=True)
    if kind == "manifest":
        suffix = data.draw(st.sampled_from([".yaml", ".json"]))
        base = MANIFEST if suffix == ".yaml" else json.dumps(_yaml(MANIFEST)).encode()
        path = fresh(folder, data.draw(mutated(base)), f"manifest{suffix}")
    else:
        path = fresh(folder, data.draw(mutated(run_files[kind].read_bytes(), jsonl=True)), f"{kind}.jsonl")
    code, err = cli(capsys, *diagnose_args(run_files, folder / f"out{next(_counter)}", **{kind: path}))
    assert code in (0, 2), err


def _yaml(text: bytes):
    import yaml

    return yaml.safe_load(text)


@pytest.fixture(scope="module")
def report_bytes() -> bytes:
    return json.dumps(sample_report(), indent=2).encode()


@FUZZ
@given(data=st.data(), command=st.sampled_from(["report", "gate", "gate --baseline"]))
def test_report_and_gate_never_crash_on_mutated_reports(capsys, run_files, tmp_path_factory, report_bytes,  # noqa: F811
                                                         data, command):  # fmt: skip
    folder = tmp_path_factory.getbasetemp() / "fuzz-report"
    folder.mkdir(exist_ok=True)
    content = data.draw(mutated(report_bytes) | _report_field_mutation(report_bytes))
    path = fresh(folder, content, "report.json")
    argv = {
        "report": ["report", path, "--format", data.draw(st.sampled_from(["md", "html", "junit"]))],
        "gate": ["gate", path],
        "gate --baseline": ["gate", run_files["report"], "--baseline", path],
    }[command]
    code, err = cli(capsys, *argv)
    assert code in (0, 1, 2), err


@st.composite
def _report_field_mutation(draw, data: bytes) -> bytes:
    """A value somewhere in the report (top level, accuracy, or a finding's field) made hostile."""
    report = json.loads(data)
    where = draw(st.sampled_from(["top", "accuracy", "finding", "metrics"]))
    if where == "top":
        target = report
    elif where == "accuracy":
        target = report["accuracy"]
    else:
        finding = report["findings"][draw(st.integers(0, len(report["findings"]) - 1))]
        target = finding if where == "finding" else finding["metrics"]
    key = draw(st.sampled_from(sorted(target) or ["x"]))
    target[key] = draw(JSON_VALUE)
    return _dumps(report).encode("utf-8", "surrogatepass")


POLICY = b"""version = 1
[defaults]
max_verdict = "warn"
required = false
[modes.capacity_gap]
max_verdict = "pass"
[accuracy]
min_student = 0.5
max_gap = 0.1
min_n = 10
[[rules]]
mode = "capacity_gap"
metric = "did.estimate"
max = 0.2
if_missing = "pass"
[baseline]
alpha = 0.05
"""

POLICY_SNIPPETS = [b"nan", b"inf", b"-inf", b"1e999", b"9" * 5000, b'"\\ud800"', b"[[[[[[", b"=", b"[rules]"]


@FUZZ
@given(data=st.data())
def test_gate_never_crashes_on_mutated_policies(capsys, run_files, tmp_path_factory, data):  # noqa: F811
    folder = tmp_path_factory.getbasetemp() / "fuzz-policy"
    folder.mkdir(exist_ok=True)
    content = data.draw(mutated(POLICY))
    if data.draw(st.booleans()):  # a value replaced by a hostile TOML literal
        lines = content.split(b"\n")
        i = data.draw(st.integers(0, len(lines) - 1))
        if b"=" in lines[i]:
            lines[i] = lines[i].split(b"=")[0] + b"= " + data.draw(st.sampled_from(POLICY_SNIPPETS))
        content = b"\n".join(lines)
    policy = fresh(folder, content, "policy.toml")
    code, err = cli(
        capsys, "gate", run_files["report"], "--policy", policy, "--baseline", run_files["report"]
    )
    assert code in (0, 1, 2), err


CONFIG = b"""method: sft
student: models/student
data: data/train.jsonl
output_dir: runs/out
steps: 10
batch_size: 4
lr: 5.0e-4
loss: {divergence: forward_kl, beta: 0.5, temperature: 1.0}
gkd: {lmbda: 0.5, max_new_tokens: 16}
"""
OVERRIDES = st.lists(
    st.builds(
        lambda key, value: f"{key}={value}",
        st.sampled_from(
            ["steps", "lr", "seed", "epochs", "loss.beta", "loss", "gkd.lmbda", "method", "x.y", ""]
        ),
        st.sampled_from(HOSTILE_TEXT + ["1", "-1", "0.5", "[1]", "{a: 1}", ""]),
    ),
    max_size=2,
)


@FUZZ
@given(data=st.data(), overrides=OVERRIDES)
def test_train_config_loader_never_crashes(tmp_path_factory, data, overrides):
    folder = tmp_path_factory.getbasetemp() / "fuzz-config"
    folder.mkdir(exist_ok=True)
    path = fresh(folder, data.draw(mutated(CONFIG)), "cfg.yaml")
    try:
        cfg = load_config(path, overrides, method="sft")
    except InputError as err:
        assert "\n" not in str(err).strip() or "Traceback" not in str(err)
        return
    assert isinstance(cfg, TrainConfig) and cfg.method == "sft"
