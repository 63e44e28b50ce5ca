"""Property tests: random bytes and random JSON at every loader give an InputError or a valid result."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill_doctor.data import load_items, load_manifest, load_outputs, load_training
from distill_doctor.data.records import Item, OutputSet
from distill_doctor.errors import InputError
from distill_doctor.verify import verify

FIELDS = [
    "id", "prompt", "reference", "verifier", "tags", "group", "variant", "tests", "entry_point",
    "output", "samples", "doc_id", "resps", "filtered_resps", "doc", "doc_hash", "filter",
    "messages", "role", "content", "response", "source",
]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["numeric", "exact", "choice", "code", "regex:^a", "regex:(", "B", "42", "1,234", "f"]),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=5), inner, max_size=6),
    ),
    max_leaves=20,
)
IDS = st.one_of(st.sampled_from(["q0", "q1", "q2"]), st.integers(0, 3), SCALARS)
TEXT = st.text(max_size=20)
KINDS = (  # close to valid records of each kind, so valid results happen too (one field may be off)
    st.fixed_dictionaries(
        {
            "id": IDS,
            "prompt": TEXT,
            "reference": st.one_of(st.integers(), st.sampled_from(["B", "Paris", "1/2"])),
        },
        optional={"verifier": SCALARS, "tags": st.dictionaries(st.text(max_size=4), SCALARS, max_size=2)},
    ),
    st.fixed_dictionaries({"id": IDS, "output": TEXT}, optional={"samples": st.lists(TEXT, max_size=3)}),
    st.fixed_dictionaries(
        {"doc_id": st.integers(-1, 4), "resps": st.lists(st.lists(TEXT, max_size=2), max_size=2)},
        optional={"filter": st.sampled_from(["none", "strict"]), "doc_hash": TEXT, "doc": JSON},
    ),
    st.fixed_dictionaries({"prompt": TEXT, "response": TEXT}, optional={"id": IDS, "reference": SCALARS}),
    st.fixed_dictionaries(
        {
            "messages": st.lists(
                st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": TEXT}),
                max_size=3,
            )
        }
    ),
)
ALMOST = st.one_of(*KINDS)
RECORD = st.one_of(ALMOST, st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=8))
LINE = st.one_of(RECORD.map(lambda r: json.dumps(r)), JSON.map(json.dumps), st.text(max_size=40), st.just(""))
JSONL = st.one_of(
    st.lists(LINE, max_size=6), *[st.lists(k.map(json.dumps), min_size=1, max_size=4) for k in KINDS]
).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))
CONTENT = st.one_of(st.binary(max_size=300), JSONL)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_counter = itertools.count()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _file(folder, content: bytes, suffix: str = ".jsonl"):
    p = folder / f"f{next(_counter)}{suffix}"  # a fresh name each time: caches are keyed by path
    p.write_bytes(content)
    return p


ITEMS = [Item(id=f"q{i}", prompt=f"p{i}", reference=i, verifier="numeric") for i in range(3)]


@FUZZ
@given(content=CONTENT, text=st.text(max_size=60))
def test_items_loader(folder, content, text):
    try:
        items = load_items(_file(folder, content))
    except InputError:
        return
    assert items and all(isinstance(it, Item) for it in items)
    assert len({it.id for it in items}) == len(items)
    for it in items:
        if it.verifier_kind != "code":
            v = verify(it, text)  # loaded items can always be verified, whatever the text
            assert isinstance(v.passed, bool)


@FUZZ
@given(content=CONTENT)
def test_outputs_loader(folder, content):
    try:
        out = load_outputs(_file(folder, content), ITEMS)
    except InputError:
        return
    assert isinstance(out, OutputSet)
    assert set(out.outputs) <= {it.id for it in ITEMS}
    assert set(out.missing) == {it.id for it in ITEMS} - set(out.outputs)
    assert all(isinstance(o.output, str) for o in out.outputs.values())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=CONTENT)
def test_training_loader(folder, content):
    try:
        ds = load_training(_file(folder, content), cache_dir=folder / "cache")
    except InputError:
        return
    assert ds.column_names == ["prompt", "response", "id", "source", "reference"]
    assert len(ds) >= 1 and all(isinstance(p, str) for p in ds["prompt"])


YAMLISH = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.dictionaries(
        st.sampled_from(["teacher", "student_base", "prompts", "generation", "filters", "decontamination",
                         "dataset_sha256", "name", "license", "count", "seed", "top_p", "benchmarks"]),
        JSON,
        max_size=6,
    ).map(lambda d: json.dumps(d).encode()),
)  # fmt: skip


@FUZZ
@given(content=YAMLISH, suffix=st.sampled_from([".yaml", ".json", ".yml"]))
def test_manifest_loader(folder, content, suffix):
    try:
        m = load_manifest(_file(folder, content, suffix))
    except InputError:
        return
    assert isinstance(m, dict)
    json.dumps(m, allow_nan=True)  # report-ready


# Lone surrogates (category Cs) are valid in JSON escapes but not as text; st.text() leaves them out.
SURROGATE_TEXT = st.text(st.characters(codec=None, categories=["Cs", "Ll", "Nd"]), min_size=1, max_size=6)


def _all_strings_encode(value) -> bool:
    if isinstance(value, str):
        return _encodes(value)
    if isinstance(value, dict):
        return all(_all_strings_encode(k) and _all_strings_encode(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_all_strings_encode(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return all(_all_strings_encode(getattr(value, f)) for f in value.__dataclass_fields__)
    return True


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@FUZZ
@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {"id": SURROGATE_TEXT, "prompt": SURROGATE_TEXT, "reference": SURROGATE_TEXT | st.integers(0, 9),
             "output": SURROGATE_TEXT, "response": SURROGATE_TEXT},
            optional={"tags": st.dictionaries(SURROGATE_TEXT, SURROGATE_TEXT, max_size=2)},
        ),
        min_size=1,
        max_size=4,
    )
)  # fmt: skip
def test_loaders_return_only_valid_unicode_text(folder, rows):
    content = "\n".join(json.dumps(r) for r in rows).encode()  # surrogates written as \\udXXX escapes
    for load in (
        load_items,
        lambda p: load_outputs(p, ITEMS),
        lambda p: load_training(p, cache_dir=folder / "c"),
    ):
        try:
            loaded = load(_file(folder, content))
        except InputError as err:
            str(err).encode("utf-8", "backslashreplace")
            continue
        records = list(loaded.outputs.values()) if isinstance(loaded, OutputSet) else loaded
        if hasattr(loaded, "to_list"):
            records = loaded.to_list()
        assert _all_strings_encode(records)
