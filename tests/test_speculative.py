"""The speculative block: formulas, acceptance from logits, the summary, its rendering, the gate,
and ``diagnose --teacher-model --student-model`` on an organism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sample_report import sample_report

from distill_doctor.cli import main
from distill_doctor.data.records import Item
from distill_doctor.errors import InputError
from distill_doctor.reports.gate import evaluate
from distill_doctor.reports.html import render_html
from distill_doctor.reports.markdown import render_markdown
from distill_doctor.reports.policy import parse_policy
from distill_doctor.reports.schema import schema_errors
from distill_doctor.speculative.acceptance import TokenAcceptance, acceptance_from_logits
from distill_doctor.speculative.report import summarize
from distill_doctor.speculative.theory import block_efficiency, sequential_block_efficiency, speedup

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "organisms"


def test_block_efficiency_and_speedup_formulas():
    assert block_efficiency(0.5, 1) == pytest.approx(1.5)
    assert block_efficiency(0.0, 5) == pytest.approx(1.0)
    assert block_efficiency(1.0, 4) == 5.0
    assert block_efficiency(0.8, 3) == pytest.approx(1 + 0.8 + 0.64 + 0.512)
    assert speedup(0.8, 3, 0.1) == pytest.approx((1 + 0.8 + 0.64 + 0.512) / 1.3)


def test_sequential_replay_matches_formula_on_long_iid_outputs_and_is_capped_on_short_ones():
    long = [np.full(4000, 0.8)]
    assert sequential_block_efficiency(long, 3, n_sim=20) == pytest.approx(block_efficiency(0.8, 3), rel=0.02)
    short = [np.full(6, 1.0)] * 10  # perfect acceptance, 6 tokens: two calls of 4 and 2 at gamma 3
    assert sequential_block_efficiency(short, 3, n_sim=5) == pytest.approx(3.0)
    assert block_efficiency(1.0, 3) == 4.0


def test_acceptance_is_one_minus_total_variation():
    torch.manual_seed(0)
    lt, ls = torch.randn(5, 7), torch.randn(5, 7)
    accept, agree = acceptance_from_logits(lt, ls, 1.0)
    tv = 0.5 * (lt.softmax(-1) - ls.softmax(-1)).abs().sum(-1)
    assert torch.allclose(accept, 1 - tv, atol=1e-6)
    same, _ = acceptance_from_logits(lt, lt.clone(), 1.0)
    assert torch.allclose(same, torch.ones(5))
    greedy, agree = acceptance_from_logits(lt, ls, 0.0)
    assert torch.equal(greedy.bool(), agree) and torch.equal(agree, lt.argmax(-1) == ls.argmax(-1))


def _rows(
    rate: float, n_items: int = 40, length: int = 20, seed: int = 0, prefix: str = "q"
) -> list[TokenAcceptance]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_items):
        a = np.clip(rng.normal(rate, 0.05, size=length), 0, 1)
        rows.append(TokenAcceptance(f"{prefix}{i}", a, a > 0.5))
    return rows


def _items(n: int = 40, prefix: str = "q") -> dict[str, Item]:
    return {
        f"{prefix}{i}": Item(f"{prefix}{i}", "p", 1, "numeric", tags={"difficulty": i % 2 + 1})
        for i in range(n)
    }


def _block(rate: float, **kw):
    return summarize(
        {"teacher": _rows(rate, **kw), "student": _rows(rate - 0.05, **kw)},
        _items(),
        temperature=1.0,
        draft_cost=0.2,
        cost_source="given",
    )


def test_summary_block_is_valid_and_consistent():
    block = _block(0.8)
    assert block["along"] == "teacher outputs" and block["n_tokens"] == 800
    lo, hi = block["acceptance_ci"]
    assert lo < block["acceptance_rate"] < hi and hi - lo < 0.05
    assert block["block_efficiency"]["3"] == pytest.approx(
        block_efficiency(block["acceptance_rate"], 3), rel=1e-5
    )
    assert block["speedup"]["3"] == pytest.approx(block["block_efficiency"]["3"] / 1.6, rel=1e-5)
    assert [s["value"] for s in block["by_slice"]["difficulty"]] == ["1", "2"]
    assert set(block["per_item"]) == {f"q{i}" for i in range(40)}
    report = sample_report(speculative=block)
    assert schema_errors(report) == []
    md, html = render_markdown(report), render_html(report)
    assert "## Speculative decoding readiness" in md and "█" in md
    assert "Speculative decoding readiness" in html and "Draft acceptance by output position" in html


def _policy(text_tables: dict):
    return parse_policy({"version": 1, **text_tables}, "p.toml")


def _spec_checks(result):
    return {c.name: c for c in result.checks if "speculative" in c.name}


def test_gate_minimum_acceptance_and_missing_block():
    policy = _policy({"speculative": {"min_acceptance": 0.85}})
    low = _spec_checks(evaluate(sample_report(speculative=_block(0.8)), policy))
    assert low["speculative.acceptance_rate"].status == "failed"
    ok = _spec_checks(evaluate(sample_report(speculative=_block(0.9)), policy))
    assert ok["speculative.acceptance_rate"].status == "passed"
    missing = _spec_checks(evaluate(sample_report(), policy))
    assert missing["speculative.acceptance_rate"].status == "failed"
    lenient = _policy({"speculative": {"min_acceptance": 0.85, "if_missing": "pass"}})
    assert _spec_checks(evaluate(sample_report(), lenient))["speculative.acceptance_rate"].status == "skipped"


@pytest.mark.parametrize(
    "table, field",
    [
        ({"min_acceptence": 0.5}, "speculative.min_acceptence"),
        ({"min_acceptance": 1.5}, "speculative.min_acceptance"),
        ({}, "speculative"),
    ],
)
def test_policy_refuses_bad_speculative_tables(table, field):
    with pytest.raises(InputError) as err:
        _policy({"speculative": table})
    assert err.value.field == field


def test_baseline_drop_is_paired_by_item():
    policy = _policy({})
    old = sample_report(speculative=_block(0.85))
    same = sample_report(speculative=_block(0.85, seed=1))
    drop = sample_report(speculative=_block(0.80, seed=1))
    name = "baseline speculative.acceptance_rate"
    assert _spec_checks(evaluate(same, policy, old))[name].status == "passed"
    failed = _spec_checks(evaluate(drop, policy, old))[name]
    assert failed.status == "failed" and "paired by item on 40 common items" in failed.reason
    off = _policy({"baseline": {"speculative": False}})
    assert name not in _spec_checks(evaluate(drop, off, old))


def test_baseline_drop_without_common_items_uses_the_intervals():
    policy = _policy({})
    other = summarize(
        {"teacher": _rows(0.80, prefix="z")},
        _items(prefix="z"),
        temperature=1.0,
        draft_cost=0.2,
        cost_source="given",
    )
    check = _spec_checks(
        evaluate(sample_report(speculative=other), policy, sample_report(speculative=_block(0.85)))
    )
    assert check["baseline speculative.acceptance_rate"].status == "failed"
    assert "unpaired z-test" in check["baseline speculative.acceptance_rate"].reason


@pytest.mark.integration
def test_diagnose_with_both_models_writes_the_block_and_gate_reads_it(tmp_path, capsys):
    rows = [json.loads(x) for x in (FIXTURES / "items.jsonl").read_text().splitlines()][:24]
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps(r) + "\n" for r in rows))
    keep = {r["id"] for r in rows}
    for role in ("teacher", "student"):
        lines = [
            x
            for x in (FIXTURES / "clean" / f"{role}.jsonl").read_text().splitlines()
            if json.loads(x)["id"] in keep
        ]
        (tmp_path / f"{role}.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    code = main(
        [
            "diagnose",
            "--items",
            str(items),
            "--teacher",
            str(tmp_path / "teacher.jsonl"),
            "--student",
            str(tmp_path / "student.jsonl"),
            "--teacher-model",
            str(FIXTURES / "models" / "teacher"),
            "--student-model",
            str(FIXTURES / "clean" / "model"),
            "--draft-cost",
            "0.25",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    block = report["speculative"]
    assert block["draft_cost"] == 0.25 and block["draft_cost_source"] == "given"
    assert block["n_items"] == 24 and 0.5 < block["acceptance_rate"] <= 1
    assert set(block["by_source"]) == {"teacher", "student"}
    assert "Speculative decoding readiness" in (out / "report.md").read_text()
    policy = tmp_path / "gate.toml"
    policy.write_text("[speculative]\nmin_acceptance = 0.999\n")
    capsys.readouterr()
    assert main(["gate", str(out / "report.json"), "--policy", str(policy)]) == 1
    assert "speculative.acceptance_rate" in capsys.readouterr().out
    assert (
        main(
            [
                "diagnose",
                "--items",
                str(items),
                "--student",
                str(tmp_path / "student.jsonl"),
                "--draft-cost",
                "-1",
                "--out",
                str(tmp_path / "o2"),
            ]
        )
        == 2
    )


def test_a_run_without_scored_tokens_gives_an_empty_but_valid_block():
    empty = [TokenAcceptance("q0", np.zeros(0), np.zeros(0, bool))]
    block = summarize({"student": empty}, _items(1), temperature=0.0, draft_cost=0.3, cost_source="given")
    assert block["acceptance_rate"] is None and block["n_tokens"] == 0 and block["speedup"] == {}
    assert schema_errors(sample_report(speculative=block)) == []
    assert "Speculative decoding readiness" in render_markdown(sample_report(speculative=block))
    assert "Speculative decoding readiness" in render_html(sample_report(speculative=block))
    assert summarize({}, {}, temperature=1.0, draft_cost=0.3, cost_source="given")["n_tokens"] == 0
