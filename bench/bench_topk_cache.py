"""Top-k teacher cache: bytes per token and the loss error against the full distribution, k in {8, 32, 128}.

    .venv/bin/python bench/bench_topk_cache.py [--vocab 4096] [--teacher-steps 1500] [--threads 1]

A small real model, built here in about a minute of CPU: a byte-level BPE tokenizer (``tokenizers``)
trained on the Python standard library's source (local, deterministic), a teacher Llama (hidden 128,
2 layers) and a weaker student Llama (hidden 64, 1 layer) trained briefly on the same text, so both
have the peaked, code-like next-token distributions of a trained LM, on a vocabulary much larger
than k. On held-out files, split into prompt/response rows, ``build_topk_cache`` stores the teacher's
targets; for every k we compare, over all response tokens, the bucketed losses of ``sparse_kd_loss``
with the dense ``forward_kl`` / ``reverse_kl`` on full logits, and the cosine between their gradients
with respect to the student logits. Results: ``bench/results/topk_cache.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from distill_doctor.atomic import atomic_write_text  # noqa: E402
from distill_doctor.losses.divergences import forward_kl, reverse_kl  # noqa: E402
from distill_doctor.losses.topk import sparse_kd_loss  # noqa: E402
from distill_doctor.train.data import Example, collate, tokenize_all  # noqa: E402
from distill_doctor.train.topk_cache import TopKCache, build_topk_cache  # noqa: E402


def corpus(max_chars: int) -> tuple[list[str], list[str]]:
    """Python standard library top-level modules, sorted by name: every 10th file held out."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    train, held, total = [], [], 0
    for i, f in enumerate(files):
        text = f.read_text(encoding="utf-8", errors="replace")
        (held if i % 10 == 0 else train).append(text)
        total += len(text)
        if total > max_chars:
            break
    return train, held


def build_tokenizer(texts: list[str], vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<pad>", "<bos>", "<eos>"])
    tok.train_from_iterator(texts, trainer)
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", bos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>"
    )


def train_lm(tokenizer, ids: torch.Tensor, *, hidden: int, layers: int, steps: int, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    T, B = 128, 16
    loss = torch.tensor(0.0)
    for _ in range(steps):
        starts = torch.randint(0, ids.numel() - T - 1, (B,), generator=g)
        batch = torch.stack([ids[s : s + T] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval(), float(loss.detach())


def held_out_rows(held: list[str], n_rows: int, prompt_chars: int, response_chars: int) -> list[dict]:
    rows = []
    for text in held:
        for start in range(0, len(text) - prompt_chars - response_chars, prompt_chars + response_chars):
            rows.append({
                "id": f"r{len(rows)}",
                "prompt": text[start : start + prompt_chars],
                "response": text[start + prompt_chars : start + prompt_chars + response_chars],
            })  # fmt: skip
            if len(rows) == n_rows:
                return rows
    return rows


def evaluate(student, teacher, tokenizer, rows, cache: TopKCache, max_len: int) -> dict:
    """Mean bucketed vs full losses over all response tokens, and gradient cosines."""
    kept = tokenize_all(tokenizer, [Example(r["id"], r["prompt"], r["response"]) for r in rows], max_len)
    sums = {"fkl_full": 0.0, "fkl_topk": 0.0, "rkl_full": 0.0, "rkl_topk": 0.0, "mass": 0.0}
    cos = {"fkl": [], "rkl": []}
    n_tok = 0
    for start in range(0, len(kept), 16):
        chunk = kept[start : start + 16]
        batch = collate(chunk, tokenizer.pad_token_id)
        with torch.no_grad():
            s_logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[
                :, :-1
            ]
            t_logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[
                :, :-1
            ]
        mask = batch["labels"][:, 1:] != -100
        B, T1 = mask.shape
        ids = torch.zeros(B, T1, cache.k, dtype=torch.long)
        lps = torch.full((B, T1, cache.k), float("-inf"))
        tail = torch.full((B, T1), float("-inf"))
        for row, ex in enumerate(chunk):
            tg = cache.get(start + row)
            a = ex.prompt_len - 1
            ids[row, a : a + len(tg.ids)], lps[row, a : a + len(tg.ids)], tail[row, a : a + len(tg.ids)] = (
                tg.ids, tg.logprobs, tg.tail_logprob,
            )  # fmt: skip
        n = int(mask.sum())
        for name, dense_fn in (("fkl", forward_kl), ("rkl", reverse_kl)):
            z = s_logits.clone().requires_grad_(True)
            full = dense_fn(z, t_logits, mask=mask, num_tokens=1)
            (g_full,) = torch.autograd.grad(full, z)
            z2 = s_logits.clone().requires_grad_(True)
            div = "forward_kl" if name == "fkl" else "reverse_kl"
            sparse = sparse_kd_loss(z2, ids, lps, tail, mask=mask, divergence=div, num_tokens=1)
            (g_sparse,) = torch.autograd.grad(sparse, z2)
            sums[f"{name}_full"] += float(full)
            sums[f"{name}_topk"] += float(sparse)
            per_tok = torch.nn.functional.cosine_similarity(g_full[mask], g_sparse[mask], dim=-1)
            cos[name].append(per_tok)
        sums["mass"] += float((lps[mask].exp().sum(-1)).sum())
        n_tok += n
    out = {k: v / n_tok for k, v in sums.items()}
    for name in ("fkl", "rkl"):
        out[f"{name}_rel_error"] = (out[f"{name}_full"] - out[f"{name}_topk"]) / out[f"{name}_full"]
        out[f"{name}_grad_cosine_mean"] = float(torch.cat(cos[name]).mean())
    out["tokens"] = n_tok
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vocab", type=int, default=4096, help="BPE vocabulary size")
    p.add_argument("--ks", type=int, nargs="+", default=[8, 32, 128], help="top-k sizes to compare")
    p.add_argument("--teacher-steps", type=int, default=1500, help="teacher training steps (batch 16 x 128)")
    p.add_argument("--student-steps", type=int, default=300, help="student training steps")
    p.add_argument("--rows", type=int, default=128, help="held-out prompt/response rows")
    p.add_argument("--corpus-chars", type=int, default=3_000_000, help="characters of stdlib source read")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "topk_cache"), help="output path stem")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    train, held = corpus(args.corpus_chars)
    tokenizer = build_tokenizer(train, args.vocab)
    ids = torch.tensor(tokenizer("\n".join(train), add_special_tokens=False)["input_ids"])
    teacher, t_loss = train_lm(tokenizer, ids, hidden=128, layers=2, steps=args.teacher_steps, seed=0)
    student, s_loss = train_lm(tokenizer, ids, hidden=64, layers=1, steps=args.student_steps, seed=1)
    rows = held_out_rows(held, args.rows, prompt_chars=200, response_chars=300)
    max_len = 256
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in args.ks:
            out = build_topk_cache(
                teacher, tokenizer, rows, Path(tmp) / f"k{k}", k=k, max_len=max_len, progress=False
            )
            cache = TopKCache(out)
            disk = sum(f.stat().st_size for f in out.iterdir() if f.suffix == ".bin")
            r = {
                "k": k,
                "bytes_per_token": cache.bytes_per_token,
                "disk_bytes_per_token": disk / cache.meta["num_tokens"],
            }
            r.update(evaluate(student, teacher, tokenizer, rows, cache, max_len))
            results.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "threads": args.threads},
        "setup": {"vocab": len(tokenizer), "teacher": "Llama hidden 128, 2 layers", "student": "Llama hidden 64, 1 layer",
                  "teacher_steps": args.teacher_steps, "student_steps": args.student_steps,
                  "teacher_final_train_loss": t_loss, "student_final_train_loss": s_loss,
                  "rows": len(rows), "logprob_dtype": "float16", "seconds": round(time.perf_counter() - t0, 1)},
        "results": results,
    }  # fmt: skip
    atomic_write_text(args.out + ".json", json.dumps(report, indent=1))
    atomic_write_text(args.out + ".md", render(report))
    print(render(report))
    return 0


def render(report: dict) -> str:
    s = report["setup"]
    lines = [
        "# Top-k teacher cache: size and loss error",
        "",
        f"BPE vocabulary {s['vocab']} trained on Python stdlib source; teacher {s['teacher']} "
        f"({s['teacher_steps']} steps, train loss {s['teacher_final_train_loss']:.2f}), student {s['student']} "
        f"({s['student_steps']} steps, train loss {s['student_final_train_loss']:.2f}); {s['rows']} held-out rows, "
        f"{report['results'][0]['tokens'] if report['results'] else 0} response tokens; log-probs stored as "
        f"{s['logprob_dtype']}, ids as uint16. {s['seconds']} s in all.",
        "",
        "Loss error = (full - top-k) / full of the mean per-token loss (with exact storage the bucketed KL is "
        "never above the full one; float16 storage adds a small error of either sign); gradient cosine = mean over tokens of cos(d loss_full / d z_S, d loss_topk / d z_S).",
        "",
        "| k | bytes/token | teacher mass in top-k | forward KL full | forward KL top-k | rel. error | grad cos "
        "| reverse KL full | reverse KL top-k | rel. error | grad cos |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['k']} | {r['bytes_per_token']} | {r['mass']:.4f} | {r['fkl_full']:.4f} | {r['fkl_topk']:.4f} | "
            f"{r['fkl_rel_error']:.2%} | {r['fkl_grad_cosine_mean']:.4f} | {r['rkl_full']:.4f} | {r['rkl_topk']:.4f} | "
            f"{r['rkl_rel_error']:.2%} | {r['rkl_grad_cosine_mean']:.4f} |"
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
