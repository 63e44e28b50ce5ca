"""Contamination scan against lm-eval's Janitor: 1,000,000 training rows vs 10,000 eval items, same rows, one run.

    .venv/bin/python bench/bench_contamination.py [--rows 1000000] [--items 10000] [--workers N] [--no-janitor]

Data (synthetic, seeded): words drawn from a Zipf-like distribution over a 20,000-word vocabulary
(some with attached punctuation); eval prompts behind a shared instruction: 80% of 20-80 words,
10% short (10-15 words), 10% holding three numbers; training prompts of 10-40 and responses of
20-60 words (slices of a separate 5 M-word corpus, produced on the fly while scanning). Planted
rows (``PLANTS``, each kind defined exactly in ``PLANT_KINDS``): verbatim prompts, prompts inside a
response, behind a prefix, with one or two words changed, re-punctuated, short prompts with one
word changed (all must be dirty), and "same story, other numbers" twins and 16-word fragments (must
stay clean). A word-changed plant is drawn only from items whose content words allow its edits
under the documented rule (docs/scaling.md: one edit per 10 content words, at most 2): a short
item whose first words are shared template text (the commonest words open 1-12% of the bodies, so
"the following question. <word>" is a template shingle) may have 9 content words in 10 words, and
the rule rightly calls its one-word edit another question.

Measured in one run on the same rows: the contamination index (``text.decontamination.index_for``'s
settings: punctuation kept, templates removed) built once and scanned in shards on ``--workers``
processes (every core by default), and ``lm_eval.decontamination.janitor.Janitor`` (its Python
path: the C++ helper is not built) over every row, single-threaded as it comes. Reported: wall and
CPU time of both, the speed ratio, recall per kind of plant, false flags, and the rows Janitor
flags (a shared word 13-gram) that our scan does not (any hit, dirty or partial).
Results: ``bench/results/contamination.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import resource
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from distill_doctor.atomic import atomic_write_text  # noqa: E402
from distill_doctor.probes.shards import Shard, TrainingSource, map_shards, resolve_workers  # noqa: E402
from distill_doctor.text import fast_tokens  # noqa: E402
from distill_doctor.text.overlap import (  # noqa: E402
    EDIT_MAX,
    EDIT_WORDS_PER_EDIT,
    FREE_PUNCTUATION,
    Hit,
    HitSummary,
    OverlapIndex,
    tokens,
)

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
    words: set[str] = set()
    while len(words) < size:
        k = int(rng.integers(2, 10))
        words.add("".join(rng.choice(letters, size=k)))
    vocab = np.array(sorted(words), dtype=object)
    rng.shuffle(vocab)
    for j in rng.choice(size, size=size // 20, replace=False):  # 5% carry punctuation
        vocab[j] = vocab[j] + str(rng.choice([",", ".", "?", ";", ":"]))
    p = 1.0 / np.arange(1, size + 1) ** 1.05
    return vocab, p / p.sum()


def _replace_words(rng: np.random.Generator, text: str, k: int, first: int) -> str:
    """``k`` words at distinct positions after ``first`` (the template) replaced by new words."""
    w = text.split()
    for j in rng.choice(np.arange(first, len(w) - 1), size=k, replace=False):
        w[int(j)] = f"zzzedit{j}"
    return " ".join(w)


def _repunctuate(text: str) -> str:
    """Commas after every fourth word and the final '?' turned into '.': the same words."""
    w = text.rstrip("?").split()
    return " ".join(x + "," if i % 4 == 3 else x for i, x in enumerate(w)) + "."


PLANT_KINDS = {  # the exact definition of each kind; "long" items: 20-80 words after TEMPLATE, no numbers
    "verbatim_prompt": "a long item, unchanged, as the prompt",
    "inside_response": "a long item, unchanged, as the response (prompt 'Repeat the question.')",
    "behind_prefix": "a long item behind the prompt prefix 'This comes from a benchmark. '",
    "one_word_changed": "a long item with >= 10 content words, one word after TEMPLATE (not the last) replaced",
    "two_words_changed": "a long item with >= 20 content words, two words after TEMPLATE (not the last) replaced",
    "re_punctuated": "a long item with a comma after every 4th word and its final '?' made '.'",
    "short_one_word_changed": "a short item (10-15 words after TEMPLATE) with >= 10 content words, "
    "one word after TEMPLATE (not the last) replaced",
    "twin_other_numbers": "an item holding three numbers, every number + 7",
    "fragment_16_words": "the 16 words after TEMPLATE of a long item, as the response",
}
# Content words (docs/scaling.md): the words (tokens of ``tokens(text, "keep")`` other than prose
# punctuation) outside every 5-token shingle that at least max(10, 1% of the items) items share: the
# index's template. The rule allows one edit per EDIT_WORDS_PER_EDIT content words (EDIT_MAX at most).
EDITS = {"one_word_changed": 1, "two_words_changed": 2, "short_one_word_changed": 1}
TEMPLATE_SHINGLE = 5

PLANTS: tuple[tuple[str, int, bool], ...] = (  # kind, count, must be dirty
    ("verbatim_prompt", 50, True),
    ("inside_response", 50, True),
    ("behind_prefix", 50, True),
    ("one_word_changed", 50, True),
    ("two_words_changed", 25, True),
    ("re_punctuated", 25, True),
    ("short_one_word_changed", 25, True),
    ("twin_other_numbers", 25, False),
    ("fragment_16_words", 50, False),
)
TEMPLATE_WORDS = len(TEMPLATE.split())


def content_words(items: dict[str, str]) -> dict[str, int]:
    """Each item's content words (the definition above), counted here in plain Python from the
    documented rule, not read from the index: the plants must not depend on the code they test."""
    toks = {eid: tokens(text, "keep") for eid, text in items.items()}
    shared: Counter[tuple[str, ...]] = Counter()
    k = TEMPLATE_SHINGLE
    for ts in toks.values():
        shared.update({tuple(ts[i : i + k]) for i in range(len(ts) - k + 1)})
    least = max(10, math.ceil(0.01 * len(items)))
    out = {}
    for eid, ts in toks.items():
        covered = [False] * len(ts)
        for i in range(len(ts) - k + 1):
            if shared[tuple(ts[i : i + k])] >= least:
                covered[i : i + k] = [True] * k
        out[eid] = sum(not c and t not in FREE_PUNCTUATION for c, t in zip(covered, ts))
    return out


def allows(content: int, edits: int) -> bool:
    """Whether the documented rule calls an item of ``content`` content words with ``edits`` edits dirty."""
    return edits <= min(EDIT_MAX, content // EDIT_WORDS_PER_EDIT)


def build(args):
    """Eval items (80% of 20-80 words, 10% short of 10-15 words, 10% with three numbers), a row
    generator over a separate corpus, and the planted rows of each kind (``PLANTS``)."""
    rng = np.random.default_rng(args.seed)
    vocab, p = make_vocab(rng)
    eval_corpus = Corpus(rng, vocab, p, args.items * 60)
    items: dict[str, str] = {}
    short, numeric = set(), set()
    pos = 0
    for i in range(args.items):
        variant = i % 10
        k = int(rng.integers(10, 16)) if variant == 0 else int(rng.integers(20, 81))
        if pos + k > eval_corpus.n:
            pos = 0
        body = eval_corpus.words(pos, k)
        pos += k
        eid = f"e{i:05d}"
        if variant == 0:
            short.add(eid)
        elif variant == 1:
            w = body.split()
            for j, at in enumerate(sorted(rng.choice(len(w), size=3, replace=False))):
                w[int(at)] = str(int(rng.integers(2, 999)) + 1000 * j)
            body = " ".join(w)
            numeric.add(eid)
        items[eid] = f"{TEMPLATE} {body}?"
    train_corpus = Corpus(rng, vocab, p, 5_000_000)
    p_len = rng.integers(10, 41, size=args.rows)
    r_len = rng.integers(20, 61, size=args.rows)
    p_start = rng.integers(0, train_corpus.n - 41, size=args.rows)
    r_start = rng.integers(0, train_corpus.n - 61, size=args.rows)

    long_ids = [i for i in items if i not in short and i not in numeric]
    order = rng.permutation(len(long_ids)).tolist()
    pools = {
        "short": [sorted(short)[j] for j in rng.permutation(len(short))],
        "numeric": [sorted(numeric)[j] for j in rng.permutation(len(numeric))],
        "long": [long_ids[j] for j in order],
    }
    n_plants = sum(c for _, c, _ in PLANTS)
    plant_rows = rng.choice(args.rows, size=n_plants, replace=False).tolist()
    content = content_words(items)
    overrides: dict[int, tuple[str, str]] = {}
    planted: dict[str, set[str]] = {}
    for kind, count, _ in PLANTS:
        pool = pools[
            "short" if kind.startswith("short") else "numeric" if kind.startswith("twin") else "long"
        ]
        # The first ``count`` items of the pool that the kind's definition admits (the others stay).
        fits = [eid for eid in pool if allows(content[eid], EDITS.get(kind, 0))][:count]
        if len(fits) < count:
            raise SystemExit(f"{kind}: only {len(fits)} of {count} items fit; use more --items")
        taken = set(fits)
        chosen, pool[:] = fits, [eid for eid in pool if eid not in taken]
        planted[kind] = set(chosen)
        for eid in chosen:
            text, at = items[eid], plant_rows.pop()
            if kind == "verbatim_prompt":
                overrides[at] = (text, "Sure, here is the answer.")
            elif kind == "inside_response":
                overrides[at] = ("Repeat the question.", text)
            elif kind == "behind_prefix":
                overrides[at] = ("This comes from a benchmark. " + text, "ok")
            elif kind in ("one_word_changed", "short_one_word_changed"):
                overrides[at] = (_replace_words(rng, text, 1, TEMPLATE_WORDS), "ok")
            elif kind == "two_words_changed":
                overrides[at] = (_replace_words(rng, text, 2, TEMPLATE_WORDS), "ok")
            elif kind == "re_punctuated":
                overrides[at] = (_repunctuate(text), "ok")
            elif kind == "twin_other_numbers":
                twin = " ".join(str(int(w) + 7) if w.isdigit() else w for w in text.rstrip("?").split()) + "?"
                overrides[at] = (twin, "ok")
            else:  # fragment: 16 words of the item, a partial overlap only
                overrides[at] = (
                    "Summarise this passage.",
                    " ".join(text.split()[TEMPLATE_WORDS : TEMPLATE_WORDS + 16]),
                )

    def row(i: int) -> tuple[str, str]:
        if i in overrides:
            return overrides[i]
        return (
            f"{TEMPLATE} {train_corpus.words(int(p_start[i]), int(p_len[i]))}?",
            train_corpus.words(int(r_start[i]), int(r_len[i])),
        )

    row.planted_rows = sorted(overrides)  # type: ignore[attr-defined]  # for check_hits
    row.content = content  # type: ignore[attr-defined]  # for edit_budgets_agree
    return items, row, planted


class BenchRows(TrainingSource):
    """The generated rows as a shard source (forked workers inherit the generator)."""

    def __init__(self, row, n_rows: int) -> None:
        self.row, self.n_rows = row, n_rows

    def column_names(self) -> list[str]:
        return ["prompt", "response"]

    def read(self, shard: Shard, columns) -> dict[str, list]:
        pairs = [self.row(i) for i in range(shard.start, shard.stop)]
        return {"prompt": [p for p, _ in pairs], "response": [r for _, r in pairs]}


@dataclass(frozen=True)
class RowsWithHits:
    """One shard: the rows with any hit (dirty or partial), the hit summary and the number of ASCII
    rows (those the compiled tokeniser takes; ``str.isascii`` reads a flag, not the text)."""

    index: OverlapIndex
    source: BenchRows

    def __call__(self, shard: Shard) -> tuple[list[int], HitSummary, int]:
        cols = self.source.read(shard, ())
        summary, rows = HitSummary(), set()
        for h in self.index.scan_columns(cols["prompt"], cols["response"], first_row=shard.start):
            summary.add(h)
            rows.add(h.row)
        n_ascii = sum(p.isascii() and r.isascii() for p, r in zip(cols["prompt"], cols["response"]))
        return sorted(rows), summary, n_ascii


def run_ours(items, source: BenchRows, workers: int) -> dict:
    t, c = time.perf_counter(), time.process_time()
    fast_tokens.warm_up()  # numba: compiled, or loaded from its on-disk cache (also done by the index)
    jit_s = time.perf_counter() - t
    index = OverlapIndex(items, punctuation="keep")  # contamination.index_for, on plain texts
    build_s, build_cpu = time.perf_counter() - t, time.process_time() - c
    t, c = time.perf_counter(), time.process_time()
    total, rows, n_ascii = HitSummary(), [], 0
    scan = RowsWithHits(index, source)
    for part_rows, part, part_ascii in map_shards(scan, source.shards(), workers=workers):
        rows += part_rows
        total.merge(part)
        n_ascii += part_ascii
    scan_s = time.perf_counter() - t
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    scan_cpu = time.process_time() - c + children.ru_utime + children.ru_stime
    return {
        "index": index, "per_item": total.finish(index), "rows": set(rows), "ascii_rows": n_ascii,
        "build_s": build_s, "build_cpu_s": build_cpu, "scan_s": scan_s, "scan_cpu_s": scan_cpu,
        "jit_s": jit_s, "kernel": fast_tokens.kernel_record(),
    }  # fmt: skip


def check_hits(index: OverlapIndex, source: BenchRows, n_rows: int) -> dict:
    """The first ``n_rows`` rows and every planted row, scanned as in the bench (compiled tokeniser,
    prefilter) and by the reference path (Python tokeniser, no prefilter): the full hit lists must
    be equal."""
    reference = copy.copy(index)
    reference._ascii, reference._prefilter_on = None, False
    rows = sorted(set(range(min(n_rows, source.n_rows))) | set(source.row.planted_rows))
    fast: list[Hit] = []
    slow: list[Hit] = []
    for start in range(0, len(rows), 20_000):
        part = rows[start : start + 20_000]
        texts = [source.row(i) for i in part]
        for idx, out in ((index, fast), (reference, slow)):
            out += [replace(h, row=part[h.row]) for h in idx.scan(texts)]
    return {"rows": len(rows), "hits": len(fast), "identical": fast == slow}


def edit_budgets_agree(index: OverlapIndex, planted: dict[str, set[str]], content: dict[str, int]) -> dict:
    """For every word-changed plant, the edits the documented rule allows (from ``content_words``)
    equal those the index allows (``OverlapIndex.edit_allowed``)."""
    pos = {eid: e for e, eid in enumerate(index.eval_ids)}
    eids = sorted(set().union(*(planted[k] for k in EDITS)))
    ours = [min(EDIT_MAX, content[eid] // EDIT_WORDS_PER_EDIT) for eid in eids]
    return {"plants": len(eids), "equal": ours == [int(index.edit_allowed[pos[eid]]) for eid in eids]}


def run_janitor(items, source: BenchRows) -> dict:
    """lm-eval's Janitor (Python path): rows sharing at least one word 13-gram with an eval item."""
    from lm_eval.decontamination.janitor import Janitor, word_ngrams_indices

    t = time.perf_counter()
    jan = Janitor(ngram_n=13)
    for text in items.values():
        jan.register_contaminant_python(text)
    build_s = time.perf_counter() - t
    t, c = time.perf_counter(), time.process_time()
    rows = set()
    for shard in source.shards():
        cols = source.read(shard, ())
        for k, (p, r) in enumerate(zip(cols["prompt"], cols["response"])):
            x = p + "\n" + r
            if any(jan.normalize_string(g) in jan.dirt_ngrams for g, _ in word_ngrams_indices(x, 13)):
                rows.add(shard.start + k)
    return {
        "rows": rows,
        "build_s": build_s,
        "scan_s": time.perf_counter() - t,
        "scan_cpu_s": time.process_time() - c,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="training rows")
    ap.add_argument("--items", type=int, default=10_000, help="eval items")
    ap.add_argument("--workers", type=int, default=None, help="scan processes (default: every core)")
    ap.add_argument("--no-janitor", action="store_true", help="skip the Janitor run (quick checks only)")
    ap.add_argument(
        "--check-rows", type=int, default=40_000,
        help="after the timed runs, compare the full hit lists with the reference path on this many "
        "rows and the planted ones (0: no check)",
    )  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="results folder")
    args = ap.parse_args(argv)

    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    t = time.perf_counter()
    items, row, planted = build(args)
    source = BenchRows(row, args.rows)
    data_s = time.perf_counter() - t
    workers = resolve_workers(args.workers)
    ours = run_ours(items, source, workers)
    jan = None if args.no_janitor else run_janitor(items, source)
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    check = check_hits(ours["index"], source, args.check_rows) if args.check_rows else None

    per_item = ours["per_item"]
    dirty = {i for i, rec in per_item.items() if rec["dirty"]}
    must_dirty = set().union(*(planted[k] for k, _, d in PLANTS if d))
    recall = {
        kind: {"planted": len(planted[kind]), "dirty": len(planted[kind] & dirty)} for kind, _, _ in PLANTS
    }
    kinds: dict[str, int] = {}
    for i in dirty:
        k = per_item[i]["best"].kind
        kinds[k] = kinds.get(k, 0) + 1
    ours_total = ours["build_s"] + ours["scan_s"]
    result = {
        "n_items": args.items,
        "n_train_rows": args.rows,
        "workers": workers,
        "data_generation_s": round(data_s, 2),
        "ours": {
            "index_build_s": round(ours["build_s"], 2),
            "of_which_numba_jit_s": round(ours["jit_s"], 2),
            "numba_kernel": ours["kernel"],
            "scan_s": round(ours["scan_s"], 2),
            "total_s": round(ours_total, 2),
            "index_build_cpu_s": round(ours["build_cpu_s"], 2),
            "scan_cpu_s_all_processes": round(ours["scan_cpu_s"], 2),
            "rows_per_s": round(args.rows / ours["scan_s"]),
            "rows_with_any_hit": len(ours["rows"]),
            "ascii_rows_compiled_path": ours["ascii_rows"],
            "other_rows_python_path": args.rows - ours["ascii_rows"],
        },
        "hits_equal_reference_path": check,
        "edit_budgets_equal_index": edit_budgets_agree(ours["index"], planted, row.content),
        "recall_by_plant": recall,
        "dirty_items_by_strongest_kind": kinds,
        "false_flags_unplanted_dirty": len(
            dirty - must_dirty - planted["twin_other_numbers"] - planted["fragment_16_words"]
        ),
        "load_average_1min": round(load_end, 2) if load_end is not None else None,
        "load_average_1min_start": round(load_start, 2) if load_start is not None else None,
        "index_params": ours["index"].params(),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
    }
    if jan is not None:
        result["janitor"] = {
            "build_s": round(jan["build_s"], 2),
            "scan_s": round(jan["scan_s"], 2),
            "scan_cpu_s": round(jan["scan_cpu_s"], 2),
            "rows_flagged": len(jan["rows"]),
            "rows_flagged_not_by_us": len(jan["rows"] - ours["rows"]),
            "speed_ratio_wall": round((jan["build_s"] + jan["scan_s"]) / ours_total, 2),
            "scan_speed_ratio_cpu": round(jan["scan_cpu_s"] / ours["scan_cpu_s"], 2),
        }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "contamination.json", json.dumps(result, indent=2) + "\n")
    md = _markdown(args, result)
    atomic_write_text(args.out / "contamination.md", "\n".join(md) + "\n")
    print("\n".join(md))
    return 0


def _markdown(args, r: dict) -> list[str]:
    o = r["ours"]
    md = [
        f"# Contamination scan: {args.rows:,} training rows vs {args.items:,} eval items",
        "",
        f"Machine: {r['machine']['cpus']} CPUs shared with other jobs (1-min load average "
        f"{r['load_average_1min_start']} at the start, {r['load_average_1min']} after both scans); "
        f"{r['workers']} scan workers.",
        "",
        f"- ours: index build {o['index_build_s']} s + scan {o['scan_s']} s = **{o['total_s']} s** wall, "
        f"{o['rows_per_s']:,} rows/s; CPU {o['index_build_cpu_s']} s + {o['scan_cpu_s_all_processes']} s (all processes)",
        f"- the build includes {o['of_which_numba_jit_s']} s to get the numba kernel "
        f"({'compiled' if o['numba_kernel']['compiled'] else 'loaded from its on-disk cache'}); "
        f"rows tokenised by the compiled path (ASCII): {o['ascii_rows_compiled_path']:,}, "
        f"by the Python path: {o['other_rows_python_path']:,}",
    ]
    if r["hits_equal_reference_path"]:
        c = r["hits_equal_reference_path"]
        md.append(
            f"- full hit lists on {c['rows']:,} rows (the first {args.check_rows:,} and the planted ones) "
            f"equal to the reference path's (Python tokeniser, no prefilter): **{c['identical']}** "
            f"({c['hits']} hits)"
        )
    b = r["edit_budgets_equal_index"]
    md.append(
        f"- edits allowed on the {b['plants']} word-changed plants, counted from the documented rule "
        f"(content words) and by the index: equal: **{b['equal']}**"
    )
    md += [
        "",
        "| plant | planted | dirty | definition |",
        "|---|---:|---:|---|",
    ]
    md += [
        f"| {k} | {v['planted']} | {v['dirty']} | {PLANT_KINDS[k]} |" for k, v in r["recall_by_plant"].items()
    ]
    md += [
        "",
        "twin_other_numbers and fragment_16_words must stay clean (not dirty); the others must be dirty.",
        "Content words: words (prose punctuation , . ; : ! ? ' \" not counted) outside every 5-token "
        "shingle shared by max(10, 1% of the items) items; the rule allows one edit per 10 (docs/scaling.md).",
        f"Unplanted items flagged dirty (false flags): {r['false_flags_unplanted_dirty']}.",
        f"Dirty items by strongest kind: {r['dirty_items_by_strongest_kind']}.",
    ]
    if "janitor" in r:
        j = r["janitor"]
        md += [
            "",
            "## Against lm-eval's Janitor (Python path, 13-grams), same rows, same run",
            "",
            "| | Janitor | ours |",
            "|---|---:|---:|",
            f"| build (s) | {j['build_s']} | {o['index_build_s']} |",
            f"| scan, wall (s) | {j['scan_s']} | {o['scan_s']} |",
            f"| scan, CPU (s) | {j['scan_cpu_s']} | {o['scan_cpu_s_all_processes']} |",
            f"| rows flagged (ours: any hit, dirty or partial) | {j['rows_flagged']} | {o['rows_with_any_hit']} |",
            "",
            f"Speed ratio Janitor/ours (build + scan, wall): **{j['speed_ratio_wall']}x**; scan CPU ratio "
            f"{j['scan_speed_ratio_cpu']}x. Rows Janitor flags that we do not: {j['rows_flagged_not_by_us']}.",
        ]
    return md


if __name__ == "__main__":
    raise SystemExit(main())
