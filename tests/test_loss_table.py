"""The divergence table: every row has its dense and closed-form implementations, the config
accepts exactly its names, the extra-argument rule holds on every path, and losses never import
the training package."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from distill_doctor.errors import InputError
from distill_doctor.losses import closed_form, per_token
from distill_doctor.losses.chunked import chunked_distill_loss
from distill_doctor.losses.divergences import divergence
from distill_doctor.losses.per_token import token_divergence
from distill_doctor.losses.table import DIVERGENCES, TABLE, lookup
from distill_doctor.losses.topk import sparse_kd_loss
from distill_doctor.train.config import GKDConfig, LossConfig


def test_every_row_has_both_implementations_and_a_unique_name():
    assert len(set(DIVERGENCES)) == len(TABLE) == 6
    for row in TABLE:
        assert per_token.function(row.name).__name__ == closed_form.function(row.name).__name__ == row.name
        assert row.parameter in (None, "beta", "alpha")


def test_config_accepts_exactly_the_table_names():
    for name in DIVERGENCES:
        assert LossConfig(divergence=name).divergence == name
        assert GKDConfig(divergence=name).divergence == name
    with pytest.raises(InputError, match="must be one of forward_kl, reverse_kl, jsd, skew_forward_kl"):
        LossConfig(divergence="kl")


@pytest.mark.parametrize("name", ["jsd", "skew_forward_kl", "skew_reverse_kl"])
def test_a_missing_extra_argument_is_refused_on_the_dense_and_top_k_paths(name):
    needs = lookup(name).parameter
    s, t = torch.randn(4, 9), torch.randn(4, 9)
    with pytest.raises(ValueError, match=f"divergence '{name}' needs {needs}"):
        divergence(name, s, t)
    with pytest.raises(ValueError, match=f"needs {needs}"):
        token_divergence(name, s.log_softmax(-1), t.log_softmax(-1))
    ids = t.topk(3, dim=-1).indices
    with pytest.raises(ValueError, match=f"needs {needs}"):
        sparse_kd_loss(s, ids, torch.full((4, 3), -2.0), torch.full((4,), -1.0), divergence=name)


@pytest.mark.parametrize("row", TABLE, ids=lambda r: r.name)
def test_each_path_reads_only_its_own_argument(row):
    """beta moves jsd and nothing else; alpha moves the skew KLs and nothing else (dense and chunked)."""
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(5, 11, generator=g), torch.randn(5, 11, generator=g)
    head = torch.eye(11)
    for beta, alpha in ((0.2, 0.3), (0.7, 0.6)):
        dense = divergence(row.name, s, t, beta=beta, alpha=alpha)
        chunked = chunked_distill_loss(s, head, t, head, divergence=row.name, beta=beta, alpha=alpha).loss
        assert float(dense) == pytest.approx(float(chunked), rel=1e-5, abs=1e-7)
        moved = {"beta": beta != 0.2, "alpha": alpha != 0.3}
        first = divergence(row.name, s, t, beta=0.2, alpha=0.3)
        changed = abs(float(dense) - float(first)) > 1e-9
        assert changed == (row.parameter is not None and moved[row.parameter])


def test_losses_import_neither_train_nor_torch_for_config():
    code = (
        "import sys, pkgutil, importlib, distill_doctor.losses as L\n"
        "import distill_doctor.train.config\n"
        "assert 'torch' not in sys.modules, 'config imported torch'\n"
        "for m in pkgutil.iter_modules(L.__path__): importlib.import_module('distill_doctor.losses.' + m.name)\n"
        "bad = [m for m in sys.modules if m.startswith('distill_doctor.train') and m != 'distill_doctor.train.config'"
        " and m != 'distill_doctor.train']\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
