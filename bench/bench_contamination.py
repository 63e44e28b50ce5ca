"""Contamination scan: 1,000,000 training rows against 10,000 eval items (target: at most 2 minutes, 2 cores).

    .venv/bin/python bench/bench_contamination.py [--rows 1000000] [--items 10000] [--janitor-rows 20000]

Data (synthetic, seeded): words drawn from a Zipf-like distribution over a 20,000-word vocabulary
(some with attached punctuation), eval prompts of 20-80 words behind a shared instruction, training
prompts of 10-40 and responses of 20-60 words (slices of a separate 5 M-word corpus, produced on
the fly while scanning), and 200 planted eval items (50 verbatim prompts, 50 inside a response,
50 behind an extra prefix, 50 with one word replaced) plus 50 items of which only a 16-word
fragment is copied (a partial overlap that must not count as dirty).

Measured:
1. ``OverlapIndex`` as the contamination probe uses it (punctuation kept as tokens, template
   removal on): index build and full scan time, hits by kind, planted items found, other items flagged.
2. Agreement with ``lm_eval.decontamination.janitor.Janitor`` (its Python path; the C++ helper is
   not built) on a seeded random subsample plus every planted row: "the row shares at least one word 13-gram with the
   eval set" under Janitor's own normalisation, against ``OverlapIndex(punctuation="delete")`` with
   template removal disabled (the same question). Janitor is too slow for 1 M rows in Python, so its
   full-run time is extrapolated linearly from the subsample (stated in the results).
Results: ``bench/results/contamination.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill_doctor.atomic import atomic_write_text  # noqa: E402
from distill_doctor.probes.overlap import OverlapIndex, summarize_hits  # noqa: E402

BUDGET_S = 120.0
TEMPLATE = "Answer the following question."


class Corpus:
    """A long space-joined word string; ``words(start, k)`` slices k words without copying lists."""

    def __init__(self, rng: np.random.Generator, vocab: np.ndarray, p: np.ndarray, n_words: int) -> None:
        idx = rng.choice(len(vocab), size=n_words, p=p)
        words = vocab[idx]
        self.text = " ".join(words.tolist())
        lengths = np.fromiter((len(w) + 1 for w in words.tolist()), dtype=np.int64, count=n_words)
        self.starts = np.concatenate(([0], np.cumsum(lengths)))
        self.n = n_words

    def words(self, start: int, k: int) -> str:
        return self.text[self.starts[start] : self.starts[start + k] - 1]


def make_vocab(rng: np.random.Generator, size: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = set()
    while len(words) < size:
        k = int(rng.integers(2, 10))
        words.add("".join(rng.choice(letters, size=k)))
    vocab = np.array(sorted(words), dtype=object)
    rng.shuffle(vocab)
    for j in rng.choice(size, size=size // 20, replace=False):  # 5% carry punctuation
        vocab[j] = vocab[j] + str(rng.choice([",", ".", "?", ";", ":"]))
    p = 1.0 / np.arange(1, size + 1) ** 1.05
    return vocab, p / p.sum()


def build(args):
    rng = np.random.default_rng(args.seed)
    vocab, p = make_vocab(rng)
    eval_corpus = Corpus(rng, vocab, p, args.items * 60)
    items: dict[str, str] = {}
    pos = 0
    for i in range(args.items):
        k = int(rng.integers(20, 81))
        if pos + k > eval_corpus.n:
            pos = 0
        items[f"e{i:05d}"] = f"{TEMPLATE} {eval_corpus.words(pos, k)}?"
        pos += k
    train_corpus = Corpus(rng, vocab, p, 5_000_000)
    p_len = rng.integers(10, 41, size=args.rows)
    r_len = rng.integers(20, 61, size=args.rows)
    p_start = rng.integers(0, train_corpus.n - 41, size=args.rows)
    r_start = rng.integers(0, train_corpus.n - 61, size=args.rows)
    ids = list(items)
    chosen = [ids[j] for j in rng.choice(len(ids), size=250, replace=False)]
    planted_ids, fragment_ids = chosen[:200], chosen[200:]
    planted_rows = rng.choice(args.rows, size=250, replace=False).tolist()
    overrides = {}
    for eid, row in zip(fragment_ids, planted_rows[200:]):
        w = items[eid].split()
        overrides[row] = ("Summarise this passage.", " ".join(w[1 : 1 + 16]))  # partial overlap only
    for k, (eid, row) in enumerate(zip(planted_ids, planted_rows[:200])):
        text, how = items[eid], k % 4
        if how == 0:
            overrides[row] = (text, "Sure, here is the answer.")
        elif how == 1:
            overrides[row] = ("Repeat the question.", text)
        elif how == 2:
            overrides[row] = ("This comes from a benchmark. " + text, "ok")
        else:
            w = text.split()
            w[len(w) // 2] = "zzzreplaced"
            overrides[row] = (" ".join(w), "ok")

    def row(i: int) -> tuple[str, str]:
        if i in overrides:
            return overrides[i]
        return (
            f"{TEMPLATE} {train_corpus.words(int(p_start[i]), int(p_len[i]))}?",
            train_corpus.words(int(r_start[i]), int(r_len[i])),
        )

    def rows(indices=None):
        for i in range(args.rows) if indices is None else indices:
            yield row(i)

    return items, rows, set(planted_ids), set(fragment_ids), planted_rows


def janitor_compare(items, rows, sample: list[int]) -> dict:
    from lm_eval.decontamination.janitor import Janitor, word_ngrams_indices

    jan = Janitor(ngram_n=13)
    t = time.perf_counter()
    for text in items.values():
        jan.register_contaminant_python(text)
    jan_build = time.perf_counter() - t
    texts = [p + "\n" + r for p, r in rows(sample)]
    t, c = time.perf_counter(), time.process_time()
    jan_hit = [
        any(jan.normalize_string(g) in jan.dirt_ngrams for g, _ in word_ngrams_indices(x, 13)) for x in texts
    ]
    jan_scan, jan_cpu = time.perf_counter() - t, time.process_time() - c

    t = time.perf_counter()
    ours_idx = OverlapIndex(items, punctuation="delete", template_min_items=10**9)
    ours_build = time.perf_counter() - t
    t, c = time.perf_counter(), time.process_time()
    ours_rows = {h.row for h in ours_idx.scan(texts) if h.kind == "ngram"}
    ours_scan, ours_cpu = time.perf_counter() - t, time.process_time() - c
    ours_hit = [k in ours_rows for k in range(len(texts))]
    both = sum(a and b for a, b in zip(jan_hit, ours_hit))
    only_j = sum(a and not b for a, b in zip(jan_hit, ours_hit))
    only_o = sum(b and not a for a, b in zip(jan_hit, ours_hit))
    return {
        "subsample_rows": len(texts),
        "janitor_build_s": round(jan_build, 3),
        "janitor_scan_s": round(jan_scan, 3),
        "ours_build_s": round(ours_build, 3),
        "ours_scan_s": round(ours_scan, 3),
        "rows_flagged_both": both,
        "rows_flagged_janitor_only": only_j,
        "rows_flagged_ours_only": only_o,
        "row_agreement": round(1 - (only_j + only_o) / len(texts), 6),
        "janitor_scan_cpu_s": round(jan_cpu, 3),
        "ours_scan_cpu_s": round(ours_cpu, 3),
        "scan_speed_ratio_janitor_over_ours": round(jan_cpu / ours_cpu, 2) if ours_cpu > 0 else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="training rows")
    ap.add_argument("--items", type=int, default=10_000, help="eval items")
    ap.add_argument(
        "--janitor-rows", type=int, default=20_000, help="rows of the Janitor comparison subsample"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="results folder")
    args = ap.parse_args(argv)

    t = time.perf_counter()
    items, rows, planted, fragments, planted_rows = build(args)
    data_s = time.perf_counter() - t

    t, c = time.perf_counter(), time.process_time()
    index = OverlapIndex(items, punctuation="keep")
    build_s, build_cpu = time.perf_counter() - t, time.process_time() - c
    t, c = time.perf_counter(), time.process_time()
    hits = list(index.scan(rows()))
    scan_s, scan_cpu = time.perf_counter() - t, time.process_time() - c
    per_item = summarize_hits(index, hits)
    dirty = {i for i, rec in per_item.items() if rec["dirty"]}
    kinds: dict[str, int] = {}
    for h in hits:
        kinds[h.kind] = kinds.get(h.kind, 0) + 1

    rng = np.random.default_rng(args.seed + 1)
    sample = rng.choice(args.rows, size=min(args.janitor_rows, args.rows), replace=False).tolist()
    sample = sorted(set(sample) | set(planted_rows))  # random rows plus every planted row
    cmp = janitor_compare(items, rows, sample)
    scale = args.rows / max(1, cmp["subsample_rows"])
    cmp["janitor_full_scan_s_extrapolated"] = round(cmp["janitor_scan_s"] * scale, 1)
    cmp["janitor_full_scan_cpu_s_extrapolated"] = round(cmp["janitor_scan_cpu_s"] * scale, 1)

    total = build_s + scan_s
    result = {
        "n_items": args.items,
        "n_train_rows": args.rows,
        "data_generation_s": round(data_s, 2),
        "index_build_s": round(build_s, 2),
        "scan_s": round(scan_s, 2),
        "total_s": round(total, 2),
        "index_build_cpu_s": round(build_cpu, 2),
        "scan_cpu_s": round(scan_cpu, 2),
        "total_cpu_s": round(build_cpu + scan_cpu, 2),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "rows_per_s": round(args.rows / scan_s),
        "budget_s": BUDGET_S,
        "within_budget": total <= BUDGET_S,
        "hits_by_kind": kinds,
        "planted_items": len(planted),
        "planted_found": len(planted & dirty),
        "fragment_items": len(fragments),
        "fragment_items_flagged_dirty": len(fragments & dirty),
        "fragment_items_with_partial_overlap": sum(
            1 for i in fragments if per_item.get(i, {}).get("coverage", 0) > 0
        ),
        "unplanted_items_flagged_dirty": len(dirty - planted),
        "index_params": index.params(),
        "janitor_comparison": cmp,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "contamination.json", json.dumps(result, indent=2) + "\n")
    md = [
        f"# Contamination scan: {args.rows:,} training rows vs {args.items:,} eval items",
        "",
        f"- index build {build_s:.1f} s + scan {scan_s:.1f} s = **{total:.1f} s** (budget {BUDGET_S:.0f} s; "
        f"{'within' if total <= BUDGET_S else 'OVER'}), {args.rows / scan_s:,.0f} rows/s; CPU time "
        f"{build_cpu + scan_cpu:.1f} s (single-threaded; {os.cpu_count()} CPUs shared, 1-min load average "
        f"{os.getloadavg()[0]:.1f} at the end)",
        f"- planted items found: {len(planted & dirty)}/{len(planted)}; other items flagged dirty: {len(dirty - planted)} "
        f"(of which items with only a 16-word fragment in training: {len(fragments & dirty)}/{len(fragments)})",
        f"- hits by kind: {kinds}",
        "",
        f"## Against lm-eval's Janitor (Python path), on a {cmp['subsample_rows']:,}-row subsample "
        "(random rows plus all 250 planted rows)",
        "",
        "| | Janitor | OverlapIndex (delete punctuation, no template removal) |",
        "|---|---:|---:|",
        f"| build over eval items (s) | {cmp['janitor_build_s']} | {cmp['ours_build_s']} |",
        f"| scan of the subsample, wall (s) | {cmp['janitor_scan_s']} | {cmp['ours_scan_s']} |",
        f"| scan of the subsample, CPU (s) | {cmp['janitor_scan_cpu_s']} | {cmp['ours_scan_cpu_s']} |",
        f"| rows with a 13-gram hit | {cmp['rows_flagged_both'] + cmp['rows_flagged_janitor_only']} | "
        f"{cmp['rows_flagged_both'] + cmp['rows_flagged_ours_only']} |",
        "",
        f"Row-level agreement {cmp['row_agreement']:.4%} (Janitor only: {cmp['rows_flagged_janitor_only']}, "
        f"ours only: {cmp['rows_flagged_ours_only']}); scan speed ratio Janitor/ours "
        f"{cmp['scan_speed_ratio_janitor_over_ours']}x (CPU time). Janitor's full {args.rows:,}-row scan, "
        f"extrapolated linearly from the subsample: about {cmp['janitor_full_scan_s_extrapolated']} s wall, "
        f"{cmp['janitor_full_scan_cpu_s_extrapolated']} s CPU (not run in full).",
    ]
    atomic_write_text(args.out / "contamination.md", "\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
