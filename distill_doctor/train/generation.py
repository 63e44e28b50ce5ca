"""Sampling completions for on-policy methods: plain sampling (gkd) and speculative correction (skd).

Prompts are left-padded so that every row's next token sits in the last column; position ids
are ``cumsum(attention_mask) - 1`` so left padding does not shift positions. Both loops use the
models' KV caches and the global torch RNG (restored exactly on resume). ``temperature == 0``
means greedy. A completion stops after its EOS (which is kept) or at ``max_new_tokens``; ``eos_id``
may be a list of stop ids (EOS and a chat template's end-of-turn token such as ``<|im_end|>``).
Only the first ``vocab_size`` columns of the logits are used, so padded model rows (ids with
no token) are never sampled.
"""

from __future__ import annotations

import inspect
import statistics
from dataclasses import dataclass

import torch

from distill_doctor.train.data import left_pad


def pick(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """One token per row from logits (B, V): argmax when ``temperature == 0``, else a softmax sample."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, num_samples=1).squeeze(-1)


def _cache_argument(model) -> str:
    """The forward argument that takes the KV cache: ``cache`` in transformers >= 5.2x, before that
    ``past_key_values`` (deprecated since, and to be removed in 5.40)."""
    inner = getattr(model, "module", model)  # a DDP wrapper's forward takes **kwargs
    if hasattr(inner, "get_base_model"):  # so does a peft model's, which passes them on to its base model
        inner = inner.get_base_model()
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


def _cache_of(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


class _Stepper:
    """Feeds tokens to one model with a KV cache; ``logits`` is the next-token distribution (B, V)."""

    def __init__(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor, vocab_size: int):
        self.model, self.vocab_size = model, vocab_size
        self.mask = attention_mask
        self.cache_argument = _cache_argument(model)
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        out = model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=True
        )
        self.past, self.position = _cache_of(out), positions[:, -1:]
        self.logits = out.logits[:, -1, :vocab_size]

    def feed(self, tokens: torch.Tensor) -> None:  # tokens (B,)
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        self.position = self.position + 1
        out = self.model(
            input_ids=tokens[:, None],
            attention_mask=self.mask,
            position_ids=self.position,
            use_cache=True,
            **{self.cache_argument: self.past},
        )
        self.past, self.logits = _cache_of(out), out.logits[:, -1, : self.vocab_size]


@torch.no_grad()
def sample_completions(
    model,
    prompts: list[list[int]],
    *,
    pad_id: int,
    eos_id: int | list[int] | None,
    vocab_size: int,
    max_new_tokens: int,
    temperature: float,
) -> list[list[int]]:
    """Sample one completion per prompt (token ids, EOS included when reached)."""
    device = next(model.parameters()).device
    ids, mask = left_pad(prompts, pad_id)
    was_training = model.training
    model.eval()
    try:
        state = _Stepper(model, ids.to(device), mask.to(device), vocab_size)
        stops = _stop_tensor(eos_id, device)
        completions: list[list[int]] = [[] for _ in prompts]
        done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
        for _ in range(max_new_tokens):
            tokens = pick(state.logits, temperature)  # (B,)
            _append(completions, tokens, done)
            if stops is not None:
                done |= torch.isin(tokens, stops)
            if done.all():
                break
            state.feed(torch.where(done, torch.full_like(tokens, pad_id), tokens))
    finally:
        model.train(was_training)
    return completions


@dataclass
class SpeculativeOutput:
    """What speculative generation produced; lists are per row, one entry per completion token."""

    completions: list[list[int]]  # the corrected completions (what is trained on)
    proposals: list[list[int]]  # the student's proposal at each position
    replaced: list[list[bool]]  # True where the teacher replaced the proposal
    teacher_topk: list[list[list[int]]]  # the teacher's top-K ids at each position

    @property
    def replaced_fraction(self) -> float:
        flags = [f for row in self.replaced for f in row]
        return sum(flags) / max(len(flags), 1)


@torch.no_grad()
def speculative_completions(
    student,
    teacher,
    prompts: list[list[int]],
    *,
    top_k: int,
    pad_id: int,
    eos_id: int | list[int] | None,
    vocab_size: int,
    max_new_tokens: int,
    temperature: float,
) -> SpeculativeOutput:
    """Speculative KD generation (Xu et al. 2024, "Speculative Knowledge Distillation").

    At every position the student proposes a token (sampled at ``temperature``). If the proposal
    is among the teacher's ``top_k`` tokens at that position it is kept; otherwise it is replaced
    by a token sampled from the teacher's distribution truncated to its top-K (so a corrected
    sequence never holds a token outside the teacher's top-K, and with ``top_k == 1`` every token
    is the teacher's argmax). Generation continues from the corrected prefix, in both models.
    With ``top_k >= vocab_size`` nothing is ever replaced: it is plain student sampling.
    """
    device = next(student.parameters()).device
    ids, mask = left_pad(prompts, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    k = min(top_k, vocab_size)
    was_training = student.training
    student.eval()
    try:
        s_state = _Stepper(student, ids, mask, vocab_size)
        t_state = _Stepper(teacher, ids, mask, vocab_size)
        B = len(prompts)
        out = SpeculativeOutput(
            [[] for _ in range(B)], [[] for _ in range(B)], [[] for _ in range(B)], [[] for _ in range(B)]
        )
        done = torch.zeros(B, dtype=torch.bool, device=device)
        stops = _stop_tensor(eos_id, device)
        for _ in range(max_new_tokens):
            proposal = pick(s_state.logits, temperature)  # (B,)
            t_logits = t_state.logits.float()  # (B, V)
            topk = t_logits.topk(k, dim=-1).indices  # (B, K)
            accepted = (topk == proposal[:, None]).any(dim=-1)  # (B,)
            truncated = torch.full_like(t_logits, float("-inf")).scatter(1, topk, t_logits.gather(1, topk))
            replacement = pick(truncated, temperature)  # (B,) always inside the top-K
            tokens = torch.where(accepted, proposal, replacement)
            for i in range(B):
                if not done[i]:
                    out.completions[i].append(int(tokens[i]))
                    out.proposals[i].append(int(proposal[i]))
                    out.replaced[i].append(not bool(accepted[i]))
                    out.teacher_topk[i].append(topk[i].tolist())
            if stops is not None:
                done |= torch.isin(tokens, stops)
            if done.all():
                break
            fed = torch.where(done, torch.full_like(tokens, pad_id), tokens)
            s_state.feed(fed)
            t_state.feed(fed)
    finally:
        student.train(was_training)
    return out


def _stop_tensor(eos_id: int | list[int] | None, device) -> torch.Tensor | None:
    ids = [eos_id] if isinstance(eos_id, int) else [i for i in (eos_id or []) if i is not None]
    return torch.tensor(ids, dtype=torch.long, device=device) if ids else None


def _append(completions: list[list[int]], tokens: torch.Tensor, done: torch.Tensor) -> None:
    for i, tok in enumerate(tokens.tolist()):
        if not done[i]:
            completions[i].append(tok)


@torch.no_grad()
def speculative_by_rounds(
    propose,
    teacher,
    prompts: list[list[int]],
    *,
    top_k: int,
    pad_id: int,
    eos_id: int | list[int] | None,
    vocab_size: int,
    max_new_tokens: int,
    temperature: float,
) -> SpeculativeOutput:
    """Speculative KD generation with a whole-sequence proposer (an engine such as vLLM).

    Same rule as :func:`speculative_completions`, in rounds: ``propose(sequences, max_tokens)`` (the
    student) continues every unfinished row from its corrected prefix; the teacher scores those
    continuations in one forward pass; each row keeps its proposals up to the first one outside the
    teacher's top-K, which is replaced by a sample from the teacher's top-K distribution, and the
    next round continues from there. The student's proposals after a replacement were made from a
    prefix the corrected sequence does not have, so they are dropped, exactly as the token-by-token
    loop never makes them: at temperature 0 both give the same tokens, otherwise the same
    distribution. A round costs one engine call and one teacher forward; rows stop at a stop id or
    ``max_new_tokens``. Each round asks for at most ``window`` tokens per row, like a speculative
    decoder's draft length: proposals past the first rejection are wasted engine work, so the
    window follows the acceptance (twice the median accepted run of the last round, from 8).
    """
    device = next(teacher.parameters()).device
    k = min(top_k, vocab_size)
    stop_tensor = _stop_tensor(eos_id, "cpu")
    stops = set(stop_tensor.tolist()) if stop_tensor is not None else set()
    B = len(prompts)
    out = SpeculativeOutput(
        [[] for _ in range(B)], [[] for _ in range(B)], [[] for _ in range(B)], [[] for _ in range(B)]
    )
    active = list(range(B))
    window = min(8, max_new_tokens)
    while active:
        limits = [min(window, max_new_tokens - len(out.completions[i])) for i in active]
        sequences = [prompts[i] + out.completions[i] for i in active]
        proposals = [p[:n] for p, n in zip(propose(sequences, max(limits)), limits)]
        logits = _teacher_logits(teacher, sequences, proposals, pad_id, vocab_size, device)
        still, runs = [], []
        for row, (i, cont) in enumerate(zip(active, proposals)):
            goes_on, run = _accept_round(out, i, cont, logits[row], k, temperature, stops, max_new_tokens)
            runs.append(run)
            if goes_on and (run < len(cont) or len(cont) == limits[row]):  # a short reply without a stop: the
                still.append(i)  # engine hit its length limit, so the row cannot go on
        window = max(1, min(max_new_tokens, 2 * int(statistics.median(runs)) if runs else window))
        active = still
    return out


def _teacher_logits(teacher, sequences, proposals, pad_id: int, vocab_size: int, device) -> torch.Tensor:
    """Teacher logits (B, P, V) predicting each row's proposals, right-aligned (row i's first proposal
    at column ``P - len(proposals[i])``); only the last P + 1 positions are projected to the vocabulary."""
    P = max(len(p) for p in proposals)
    ids, mask = left_pad([s + p for s, p in zip(sequences, proposals)], pad_id)
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = teacher(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=P + 1)
    return out.logits[:, -(P + 1) : -1, :vocab_size].float()


def _accept_round(
    out: SpeculativeOutput,
    i: int,
    cont: list[int],
    logits: torch.Tensor,
    k: int,
    temperature: float,
    stops: set[int],
    max_new_tokens: int,
) -> tuple[bool, int]:
    """Apply one row's round to ``out``: (whether the row may go on, proposals accepted before a rejection)."""
    P = logits.shape[0]
    for j, token in enumerate(cont):
        row_logits = logits[P - len(cont) + j]
        topk = row_logits.topk(k).indices
        accepted = bool((topk == token).any())
        if not accepted:
            truncated = torch.full_like(row_logits, float("-inf")).scatter(0, topk, row_logits[topk])
            chosen = int(pick(truncated[None], temperature)[0])
        else:
            chosen = token
        out.completions[i].append(chosen)
        out.proposals[i].append(token)
        out.replaced[i].append(not accepted)
        out.teacher_topk[i].append(topk.tolist())
        if chosen in stops or len(out.completions[i]) >= max_new_tokens:
            return False, j + int(accepted)
        if not accepted:
            return True, j
    return True, len(cont)  # all accepted: go on when the engine used the whole window
