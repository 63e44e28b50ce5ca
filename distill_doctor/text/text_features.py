"""Output-level text features the probes share: structure, markers, loops, truncation, overlap.

All functions take untrusted model text and never raise on odd input. They are cheap
(regular expressions and word sets; no tokenizer), so they run on a million rows.

- ``words`` / ``word_count``: whitespace-and-punctuation word split (lower-cased).
- ``has_final_answer(text, kind)``: an answer the verifier could extract.
- ``explicit_answer_format(text)``: which answer convention the text uses (``boxed``,
  ``hashes``, ``answer_is``, or ``None``).
- ``markers(text)``: the set of style marker phrases present (``Step``, ``####``, ...).
- ``step_lines(text)``: number of non-empty lines; ``numbered_steps``: lines that open a step.
- ``repetition_loop(text)``: the text ends in (or is dominated by) a repeated span (lines, word
  n-grams); ``periodic_loop(text)``: a unit of characters repeated back to back (the ``generate``
  filter's rule, which also catches loops inside one line or without words, e.g. ``"?????"``).
- ``truncated(text)``: cut off inside a reasoning block, an unbalanced code fence or brace, or
  an ending mid-sentence; ``cut_off_in_reasoning(text)``: the first of these alone.
- Answer conventions and truncation are read in the answer part of an output, after its last
  reasoning block (``</think>`` and variants, see ``verify.extract.answer_text``).
- ``scripts(text)`` / ``mixed_script(text)``: letters per writing system; more than one.
- ``ngram_jaccard(a, b, n)``: Jaccard similarity of word n-gram sets.
- ``normalised_code(text)``: the code of an output with comments and blank space removed.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from distill_doctor.verify.extract import answer_text, cut_off_in_reasoning

__all__ = ["cut_off_in_reasoning"]  # re-exported: probes read the text features from here

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_BOXED = re.compile(r"\\boxed\s*\{")
_HASHES = re.compile(r"(?m)^\s*####\s*\S")
_ANSWER_IS = re.compile(r"(?i)\b(?:the\s+)?(?:final\s+)?answer\s*(?:is|:)\s*\S")
_ANSWER_FORMATS = ((_BOXED, "boxed"), (_HASHES, "hashes"), (_ANSWER_IS, "answer_is"))  # first found wins
_FENCE = "```"
_CODE_BLOCK = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.S)
_STEP_LINE = re.compile(r"(?im)^\s*(?:step\s*\d+|\d+[.)]\s|[-*]\s)")

MARKER_PATTERNS: dict[str, re.Pattern[str]] = {
    "step": re.compile(r"(?i)\bstep\s*\d*\s*[:.]"),
    "hashes": _HASHES,
    "boxed": _BOXED,
    "answer_is": re.compile(r"(?i)\banswer\s+is\b"),
    "answer_colon": re.compile(r"(?i)\banswer\s*:"),
    "therefore": re.compile(r"(?i)\b(?:therefore|thus|so the)\b"),
    "let_us": re.compile(r"(?i)\blet(?:'s| us)\b"),
    "code_fence": re.compile(r"```"),
    "numbered": re.compile(r"(?m)^\s*\d+[.)]\s"),
    "bullet": re.compile(r"(?m)^\s*[-*]\s"),
    "equation": re.compile(r"\d\s*[-+*/x×]\s*\d+\s*="),
}

# Letters by writing system. Greek is left out on purpose: math text uses it freely.
_SCRIPT_RANGES = {
    "latin": r"A-Za-z\u00C0-\u024F",
    "cyrillic": r"\u0400-\u04FF",
    "cjk": r"\u3040-\u30FF\u3400-\u4DBF\u4E00-\u9FFF\uAC00-\uD7AF",
    "arabic": r"\u0600-\u06FF",
    "hebrew": r"\u0590-\u05FF",
    "devanagari": r"\u0900-\u097F",
    "thai": r"\u0E00-\u0E7F",
}
_SCRIPT_RE = {name: re.compile(f"[{rng}]") for name, rng in _SCRIPT_RANGES.items()}

# Words a finished sentence practically never ends on ("and so on", "log in", "I think so"
# do end on other function words, so those are not listed).
_DANGLING_WORDS = frozenset("the an and or of to with by because which from into".split())
# Characters that leave an expression open. Not "*" (markdown bold), "-" (a rule), "/" (a URL).
_DANGLING_CHARS = set(",;:([{=+\\")


def words(text: str | None) -> list[str]:
    """Lower-cased words (letters/digits runs) of ``text``."""
    if not text:
        return []
    return [w.lower() for w in _WORD.findall(text)]


def word_count(text: str | None) -> int:
    return len(words(text))


def explicit_answer_format(text: str | None) -> str | None:
    """The answer convention used: ``boxed``, ``hashes`` (``#### X``), ``answer_is``, or ``None``."""
    text = answer_text(text) if text else None
    if not text:
        return None
    return first_label(text, _ANSWER_FORMATS)


def first_label(text: str, table: Sequence[tuple[re.Pattern[str], str]]) -> str | None:
    """The label of the first pattern in ``table`` that ``re.search`` finds in ``text``, or None."""
    return next((label for pattern, label in table if pattern.search(text)), None)


def has_final_answer(text: str | None, kind: str = "numeric") -> bool:
    """Whether the verifier's answer extraction finds a final answer of ``kind`` in ``text``."""
    if not text or not text.strip():
        return False
    from distill_doctor.verify import extract_answer  # local: verify is a sibling package

    try:
        return extract_answer(text, kind) is not None
    except Exception:  # untrusted text must never crash a probe
        return False


def markers(text: str | None) -> frozenset[str]:
    """Names of the style markers (see ``MARKER_PATTERNS``) present in ``text``."""
    if not text:
        return frozenset()
    return frozenset(name for name, pat in MARKER_PATTERNS.items() if pat.search(text))


def step_lines(text: str | None) -> int:
    """Number of non-empty lines."""
    if not text:
        return 0
    return sum(1 for line in text.splitlines() if line.strip())


def numbered_steps(text: str | None) -> int:
    """Lines that open a step: ``Step 3``, ``2.``/``2)``, or a bullet."""
    if not text:
        return 0
    return len(_STEP_LINE.findall(text))


def repetition_loop(text: str | None, *, n: int = 4, min_words: int = 24) -> bool:
    """True when the text is stuck in a loop.

    Either (a) the same line (6+ characters) occurs 4+ times in a row, or (b) on texts of at
    least ``min_words`` words, fewer than 40% of the word ``n``-grams are distinct and the
    most frequent one occurs 4+ times (ordinary prose keeps ~90% distinct).
    """
    if not text:
        return False
    run, prev = 1, None
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        run = run + 1 if s == prev else 1
        if run >= 4 and len(s) >= 6:
            return True
        prev = s
    w = words(text)
    if len(w) < min_words:
        return False
    grams = list(zip(*(w[i:] for i in range(n))))
    counts = Counter(grams)
    return counts.most_common(1)[0][1] >= 4 and len(counts) / len(grams) < 0.4


def periodic_runs(codes: np.ndarray, max_period: int, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """For each period ``p = 1..max_period``: the longest run of positions with
    ``codes[i] == codes[i + p]``, and where it starts. Returns ``(length, start)``, each ``(max_period,)``.

    All periods at once: rows of ``E[i, p - 1] = codes[i] == codes[i + p]`` are processed in blocks
    of ``block`` positions (memory ``block * max_period``), the run ending at each position is
    ``i - (last position <= i where E is False)``, via a running maximum carried across blocks.
    """
    n = len(codes)
    # Pad with values no character has (and that differ from each other): comparisons past the end fail.
    pad = np.arange(0x110000, 0x110000 + max_period, dtype=np.uint32)
    windows = np.lib.stride_tricks.sliding_window_view(np.concatenate([codes, pad]), max_period + 1)
    best_len = np.zeros(max_period, dtype=np.int64)
    best_end = np.zeros(max_period, dtype=np.int64)
    last_break = np.full(max_period, -1, dtype=np.int64)  # carried from the previous block
    for s in range(0, n, block):
        w = windows[s : min(s + block, n)]  # (b, P + 1)
        equal = w[:, 1:] == w[:, :1]  # (b, P)
        idx = np.arange(s, s + len(w), dtype=np.int64)[:, None]  # (b, 1)
        breaks = np.where(equal, -1, idx)  # (b, P)
        breaks[0] = np.maximum(breaks[0], last_break)
        breaks = np.maximum.accumulate(breaks, axis=0)
        run = idx - breaks  # (b, P): length of the run of equal comparisons ending at each position
        end = run.argmax(axis=0)  # (P,)
        length = run[end, np.arange(max_period)]
        better = length > best_len
        best_len[better], best_end[better] = length[better], end[better] + s
        last_break = breaks[-1]
    return best_len, best_end - best_len + 1


def periodic_loop(
    text: str | None, *, min_repeats: int = 4, min_chars: int = 40, max_period: int = 200
) -> tuple[int, int, int] | None:
    """``(start, period, length)`` of a back-to-back loop in ``text``, else None.

    A loop: some unit of ``p`` characters (``p <= max_period``) repeated back to back over a
    stretch of at least ``max(min_chars, min_repeats * p)`` characters. A run of ``r`` positions
    with ``text[i] == text[i + p]`` means the stretch ``text[i : i + r + p]`` repeats its first
    ``p`` characters; the smallest period that qualifies is reported.
    """
    if not text or len(text) < min_chars:
        return None
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # one code point per entry
    periods = min(max_period, len(codes) // min_repeats)
    if periods < 1:
        return None
    run, start = periodic_runs(codes, periods)
    p = np.arange(1, periods + 1)
    ok = (run > 0) & (run + p >= np.maximum(min_chars, min_repeats * p))
    if not ok.any():
        return None
    k = int(np.flatnonzero(ok)[0])
    return int(start[k]), k + 1, int(run[k]) + k + 1


def truncated(text: str | None) -> bool:
    """True when the text looks cut off.

    Cut off inside a reasoning block (opened, never closed); else, in the answer part: an odd number of code fences, more ``{`` than ``}`` after a ``\\boxed{``, or an ending
    on a dangling character (``,;:([{=+\\``) or a function word (``the``, ``and``, ...).
    Endings on a digit, a letter of a content word or punctuation that closes a sentence
    are not flagged.
    """
    if text is None:
        return False
    body = answer_text(text)
    if body is None:
        return True  # cut off inside its reasoning
    s = body.rstrip()
    if not s:
        return False
    if s.count(_FENCE) % 2 == 1:
        return True
    box = _BOXED.search(s)
    if box and s[box.start() :].count("{") > s[box.start() :].count("}"):
        return True
    if s[-1] in _DANGLING_CHARS:
        return True
    last = _WORD.findall(s[-40:])
    return bool(last) and s[-1].isalpha() and last[-1].lower() in _DANGLING_WORDS and len(words(s)) > 3


def scripts(text: str | None) -> dict[str, int]:
    """Letters per writing system (only systems present), e.g. ``{"latin": 120, "cjk": 4}``."""
    if not text:
        return {}
    out = {}
    for name, pat in _SCRIPT_RE.items():
        k = len(pat.findall(text))
        if k:
            out[name] = k
    return out


def dominant_script(text: str | None) -> str | None:
    counts = scripts(text)
    return max(counts, key=counts.__getitem__) if counts else None


def mixed_script(text: str | None, *, min_letters: int = 5, min_share: float = 0.1) -> bool:
    """True when a second writing system holds at least ``min_letters`` letters and ``min_share`` of them."""
    counts = scripts(text)
    if len(counts) < 2:
        return False
    total = sum(counts.values())
    second = sorted(counts.values(), reverse=True)[1]
    return second >= min_letters and second / total >= min_share


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    """Set of word n-grams; a text shorter than n gives its whole token tuple (if any)."""
    if len(tokens) < n:
        return {tuple(tokens)} if tokens else set()
    return set(zip(*(tokens[i:] for i in range(n))))


def jaccard(a: set, b: set) -> float:
    """|a & b| / |a | b|; two empty sets are identical (1.0)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def ngram_jaccard(a: str | None, b: str | None, n: int = 2) -> float:
    """Jaccard similarity of the word n-gram sets of two texts."""
    return jaccard(ngrams(words(a), n), ngrams(words(b), n))


def normalised_code(text: str | None) -> str:
    """The last fenced code block (or the whole text), without comments and blank space."""
    if not text:
        return ""
    blocks = _CODE_BLOCK.findall(text)
    code = blocks[-1] if blocks else text
    lines = []
    for line in code.splitlines():
        stripped = line.split("#", 1)[0].strip()
        if stripped:
            lines.append(" ".join(stripped.split()))
    return "\n".join(lines)
