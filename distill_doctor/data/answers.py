"""Final-answer extraction from free model text, and the canonical forms answers are compared in.

Here in ``data`` because the loaders need it too (is a reference a number, an option letter, a
fenced program?); the verifiers (:mod:`distill_doctor.verify`) build on it and re-export it.

Reasoning blocks come first (SPEC "Reasoning blocks"): ``<think>..</think>`` and its variants
are never the answer. Extraction reads only the text after the last closing tag; an output
cut off inside its reasoning (an opening tag with no close after it) has no answer at all.

Order (SPEC "Items"): the last ``\\boxed{..}`` (nested braces allowed), then the last
``#### X``, then the last ``answer is X`` / ``Answer: X``; when none of these yields an
answer of the wanted kind, the fallback: numeric -> the last number in the text, exact ->
the last non-empty line, choice -> the last option-looking letter ("(B)", "B)", a line "B").

Canonical forms (what :func:`extract_answer` returns, and ``Judgement.answer`` holds):

- numeric: the exact value, written plainly: integers as ``"1234"`` (from ``1,234``,
  ``1234.0``, ``$1,234``, ``1234 apples``, ``1.234e3``), finite decimals as ``"-3.5"``,
  other fractions as ``"1/3"`` (``\\frac{1}{2}``, ``1/2`` and ``0.5`` all give ``"0.5"``).
  A trailing ``%`` is dropped (``50%`` -> ``"50"``); unicode minus counts as minus.
  Integer powers are evaluated (``10^{3}`` -> ``"1000"``, ``3 \\times 10^{8}`` -> ``"300000000"``);
  a power, root or nested fraction that is not a plain number yields no number at all
  (``x^{2}``, ``\\sqrt{2}``), never the digits inside it.
- exact: trimmed, surrounding quotes / backticks / ``**`` and one trailing period removed,
  case-folded.
- choice: the upper-case option letter.

Model text is untrusted: every function here is linear-time in the text and never raises.
"""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction

KINDS = ("numeric", "exact", "choice")
_MAX_DIGITS = 200  # longer digit strings are compared as text, not converted to numbers
_MAX_EXPONENT = 60

_MINUS = str.maketrans({"\u2212": "-", "\ufe63": "-", "\uff0d": "-"})
# A number: thousands-grouped or plain integer part, optional decimals, optional exponent,
# optional "/denominator". The sign is decided by looking at the text before the match.
_NUMBER = re.compile(
    r"(?<![\d.])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?(?![\d])"
    r"|(?<![\d.])\.\d+(?:[eE][-+]?\d+)?"
)
_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*([^{}]*?)\s*\}\s*\{\s*([^{}]*?)\s*\}|\\[dt]?frac\s*(\d)\s*(\d)")
_TEXT_CMD = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_LATEX_NOISE = re.compile(r"\\[,;:! ]|\\left|\\right|\\\$|\\%|\{,\}|\^\s*\{?\\circ\}?|\\circ")
_HASHES = re.compile(r"####[ \t]*([^\n]*)")
_ANSWER_IS = re.compile(
    r"\banswer\b\s*(?:\*\*|__)?\s*(?:is|was|would be|will be|:|=)\s*(?:\*\*|__)?\s*:?[ \t]*([^\n]*)",
    re.IGNORECASE,
)
_LEADS_WITH_NUMBER = re.compile(r"^[\s$*(\\\-+\u2212]*[\d.]")
_BOXED = re.compile(r"\\(?:boxed|fbox)\b")
_CHOICE_START = re.compile(r"^[\s*_$]*(?:\\text\{)?\s*(?:\(([A-Za-z])\)|([A-Z]))(?![A-Za-z0-9])")
_CHOICE_ANYWHERE = re.compile(r"\(([A-Za-z])\)|(?m:^[\s*_]*([A-Z])[\s*_]*[.):]?[\s*_]*$)|\b([A-Z])\)")
_QUOTES = "\"'`\u201c\u201d\u2018\u2019*_"

# Reasoning blocks: (opening, closing) markers, matched case-insensitively. The harmony format
# (gpt-oss) opens an "analysis" channel and gives the answer in the "final" channel.
REASONING_TAGS: tuple[tuple[str, str], ...] = (
    ("<think>", "</think>"),
    ("<thinking>", "</thinking>"),
    ("<reasoning>", "</reasoning>"),
    ("<seed:think>", "</seed:think>"),
    ("<|begin_of_thought|>", "<|end_of_thought|>"),
    ("\u25c1think\u25b7", "\u25c1/think\u25b7"),  # Kimi: ◁think▷ .. ◁/think▷
    ("[THINK]", "[/THINK]"),  # Magistral
    ("<|channel|>analysis<|message|>", "<|channel|>final<|message|>"),  # harmony (gpt-oss)
)
_OPEN_TAG = re.compile("|".join(re.escape(o) for o, _ in REASONING_TAGS), re.IGNORECASE)
_CLOSE_TAG = re.compile("|".join(re.escape(c) for _, c in REASONING_TAGS), re.IGNORECASE)

# Powers. "3 \times 10^{8}" is scientific notation; "2^{10}" an integer power evaluated when
# small; anything else raised to a power ("x^{2}", "2^{x}", "10^{1000}") is no plain number.
_SCIENTIFIC = re.compile(
    r"(?<![\d.])(\d+(?:\.\d+)?)\s*(?:\\times|\\cdot|\u00d7|\*)\s*10\s*\^\s*(?:\{\s*([-+]?\d{1,3})\s*\}|([-+]?\d{1,3})(?!\d))"
)
_INT_POWER = re.compile(r"(?<![\w.])(\d{1,6})\s*\^\s*(?:\{\s*([-+]?\d{1,4})\s*\}|([-+]?\d{1,4})(?!\d))")
_OTHER_POWER = re.compile(r"(?<![\w.])[\w.]*\s*\^\s*")  # base and caret; the exponent follows
_EXPONENT_TOKEN = re.compile(r"\\?[\w.]+|\S")
_OPAQUE_CMDS = {"sqrt": 1, "frac": 2, "dfrac": 2, "tfrac": 2, "binom": 2}
_OPAQUE_CMD = re.compile(r"\\(sqrt|d?frac|tfrac|binom)\b")
_OPAQUE = " \u2047 "  # stands for a non-number; never part of a number match
_MAX_POWER_DIGITS = 200


# ---- numbers ----------------------------------------------------------------------------


def _clean_latex(text: str) -> str:
    """Rewrite the LaTeX that wraps answers (``\\frac``, ``\\text``, ``\\$``, ``{,}``, powers) as
    plain text; constructs that are no plain number (``x^2``, ``\\sqrt{2}``) become an opaque mark."""
    text = text.translate(_MINUS)
    text = _TEXT_CMD.sub(r" \1 ", text)
    text = _LATEX_NOISE.sub("", text)
    text = _powers(text)
    text = _FRAC.sub(lambda m: f"{m.group(1) or m.group(3)}/{m.group(2) or m.group(4)}", text)
    return _opaque_commands(text)


def _int_power(m: re.Match[str]) -> str:
    base, exp = int(m.group(1)), int(m.group(2) or m.group(3))
    if base == 0 and exp < 0:
        return _OPAQUE
    if base > 1 and abs(exp) * len(str(base)) > _MAX_POWER_DIGITS:
        return _OPAQUE  # too large to write out: no number rather than a wrong one
    return _canonical_value(Fraction(base) ** exp)


def _powers(text: str) -> str:
    """``3 \\times 10^{8}`` -> ``3e8``; ``2^{10}`` -> ``1024``; any other power -> opaque."""
    if "^" not in text:
        return text
    text = _SCIENTIFIC.sub(lambda m: f"{m.group(1)}e{m.group(2) or m.group(3)}", text)
    text = _INT_POWER.sub(_int_power, text)
    if "^" not in text:
        return text
    match = _matching_braces(text)
    out: list[str] = []
    pos = 0
    for m in _OTHER_POWER.finditer(text):
        if m.start() < pos:
            continue  # inside an exponent already replaced
        end = m.end()
        if end < len(text) and text[end] == "{" and end in match:
            end = match[end] + 1  # a braced exponent, nested braces included
        else:
            token = _EXPONENT_TOKEN.match(text, end)
            end = token.end() if token else end
        out.append(text[pos : m.start()] + _OPAQUE)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _opaque_commands(text: str) -> str:
    """Replace each ``\\sqrt{..}`` and each ``\\frac{..}{..}`` left after the plain-fraction rewrite
    (nested braces) by an opaque mark, so the digits inside are never taken for the answer."""
    if "\\" not in text or not _OPAQUE_CMD.search(text):
        return text
    match = _matching_braces(text)
    out: list[str] = []
    pos = 0
    for m in _OPAQUE_CMD.finditer(text):
        if m.start() < pos:
            continue  # inside a group already replaced
        end = m.end()
        groups = _OPAQUE_CMDS[m.group(1)]
        while end < len(text) and text[end] in " \t":
            end += 1
        if m.group(1) == "sqrt" and end < len(text) and text[end] == "[":
            close = text.find("]", end, end + 32)
            end = close + 1 if close != -1 else end
        for _ in range(groups):
            while end < len(text) and text[end] in " \t":
                end += 1
            if end < len(text) and text[end] == "{" and end in match:
                end = match[end] + 1
            elif end < len(text) and text[end].isalnum():
                end += 1  # "\\sqrt2", "\\frac12"
        out.append(text[pos : m.start()] + _OPAQUE)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _canonical_value(value: Fraction) -> str:
    """``"1234"``, ``"-3.5"`` (finite decimals, exact to the last digit) or ``"1/3"``."""
    num, den = value.numerator, value.denominator
    if den == 1:
        return str(num)
    twos = fives = 0
    rest = den
    while rest % 2 == 0:
        rest //= 2
        twos += 1
    while rest % 5 == 0:
        rest //= 5
        fives += 1
    if rest != 1:  # not a finite decimal
        return f"{num}/{den}"
    places = max(twos, fives)
    digits = str(abs(num) * 10**places // den).rjust(places + 1, "0")
    text = f"{digits[:-places]}.{digits[-places:]}".rstrip("0").rstrip(".")
    return ("-" if num < 0 else "") + text


def _number_text_to_canonical(body: str, negative: bool) -> str | None:
    """Canonical string for one matched number (``1,234.5``, ``3e8``, ``1/2``), or None."""
    body = body.replace(",", "").replace(" ", "")
    num, _, den = body.partition("/")
    digits = sum(c.isdigit() for c in body)
    sign = "-" if negative else ""
    if digits > _MAX_DIGITS:  # too long to convert safely: compare as normalised text
        stripped = num.lstrip("0") or "0"
        return sign + stripped + (f"/{den}" if den else "")
    try:
        dn = Decimal(num)
        if not dn.is_finite() or _far_exponent(dn):
            return sign + num.lower()  # astronomically large or small: compare as written
        value = Fraction(dn)
        if den:
            dd = Decimal(den)
            if dd == 0 or _far_exponent(dd):
                return None
            value /= Fraction(dd)
    except (ArithmeticError, ValueError):  # decimal errors are ArithmeticErrors
        return None
    if negative:
        value = -value
    return _canonical_value(value)


def _far_exponent(d: Decimal) -> bool:
    """An exponent beyond ``_MAX_EXPONENT`` (or none: infinity, NaN): too far to convert."""
    exponent = d.as_tuple().exponent
    return not isinstance(exponent, int) or abs(exponent) > _MAX_EXPONENT


def _is_negative(text: str, start: int) -> bool:
    """Whether the number starting at ``start`` carries a unary minus (``-3``, ``= -$3``, not ``5-3``)."""
    i = start - 1
    if i >= 0 and text[i] == "$":
        i -= 1
    if i < 0 or text[i] != "-":
        return False
    j = i - 1
    while j >= 0 and text[j] in " \t":
        j -= 1
    return j < 0 or not (text[j].isdigit() or text[j] in ")]}")


def iter_numbers(text: str) -> list[str]:
    """Canonical strings of every number in ``text``, in order (LaTeX cleaned first)."""
    text = _clean_latex(text)
    out = []
    for m in _NUMBER.finditer(text):
        canon = _number_text_to_canonical(m.group(0), _is_negative(text, m.start()))
        if canon is not None:
            out.append(canon)
    return out


def parse_number(value: object) -> str | None:
    """Canonical string when ``value`` is one number and nothing else, else None.

    Accepts ints/floats (not booleans) and strings such as ``"1,234"``, ``"$5"``,
    ``"-3.50"``, ``"50%"``, ``"1/2"``, ``"\\frac{1}{2}"``, ``"1e3"``. Used to pick the
    default verifier of an item from its reference.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if value.bit_length() > 3 * _MAX_DIGITS:
            return None
        return _number_text_to_canonical(str(abs(value)), value < 0)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        return _number_text_to_canonical(repr(abs(value)), value < 0)
    if not isinstance(value, str) or len(value) > 1000:
        return None
    text = _clean_latex(value).strip().strip("$").strip()
    text = text.removesuffix("%").strip()
    negative = text.startswith("-")
    if text[:1] in "+-":
        text = text[1:].lstrip().lstrip("$")
    m = _NUMBER.fullmatch(text)
    if m is None:
        return None
    return _number_text_to_canonical(m.group(0), negative)


# ---- reasoning blocks -------------------------------------------------------------------


def answer_text(text: str) -> str | None:
    """The part of an output that may hold its answer: what follows the last closing reasoning tag
    (``</think>`` and the variants in ``REASONING_TAGS``), the whole text when there is none, and
    ``None`` when the output was cut off inside its reasoning (an opening tag not closed after it)."""
    if not isinstance(text, str):
        return None
    start = 0
    for close in _CLOSE_TAG.finditer(text):
        start = close.end()
    if _OPEN_TAG.search(text, start):
        return None
    return text[start:]


def cut_off_in_reasoning(text: str | None) -> bool:
    """True when ``text`` opened a reasoning block it never closed (so it has no answer)."""
    return isinstance(text, str) and answer_text(text) is None


# ---- markers ----------------------------------------------------------------------------


def _matching_braces(text: str) -> dict[int, int]:
    """One linear pass: index of each ``{`` -> index of its matching ``}`` (``\\{`` ignored)."""
    stack: list[int] = []
    match: dict[int, int] = {}
    escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            match[stack.pop()] = i
    return match


def boxed_contents(text: str) -> list[str]:
    """Contents of every ``\\boxed{..}`` / ``\\fbox{..}`` with balanced braces, in order."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    if not starts:
        return []
    match = _matching_braces(text)
    out = []
    for pos in starts:
        while pos < len(text) and text[pos] in " \t":
            pos += 1
        if pos < len(text) and text[pos] == "{":
            end = match.get(pos)
            if end is not None:
                out.append(text[pos + 1 : end])
        elif pos < len(text):  # "\boxed 5": the next token
            token = re.match(r"[^\s$]+", text[pos:])
            if token:
                out.append(token.group(0))
    return out


def marked_answers(text: str) -> list[tuple[str, str]]:
    """``(marker, content)`` of the final-answer candidates in priority order: the last
    ``\\boxed``, the last ``####``, the last ``answer is`` / ``Answer:`` (markers absent are left out)."""
    out = []
    boxed = boxed_contents(text)
    if boxed:
        out.append(("boxed", boxed[-1]))
    hashes = [m.group(1).strip() for m in _HASHES.finditer(text)]
    hashes = [h for h in hashes if h]
    if hashes:
        out.append(("####", hashes[-1]))
    answers = [m.group(1).strip() for m in _ANSWER_IS.finditer(text)]
    answers = [a for a in answers if a]
    if answers:
        out.append(("answer is", answers[-1]))
    return out


# ---- per kind ---------------------------------------------------------------------------


def canonical_exact(text: str) -> str:
    """Trim, drop surrounding quotes/backticks/``**`` and one trailing period, case-fold."""
    text = _TEXT_CMD.sub(r"\1", text).strip()
    for _ in range(4):
        before = text
        text = text.strip()
        if text.endswith("."):
            text = text[:-1].rstrip()
        text = text.removeprefix("**").removesuffix("**").strip()  # Markdown bold, either end
        if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
            text = text.strip(_QUOTES).strip()
        if text == before:
            break
    return " ".join(text.split()).casefold()


def _choice_from(fragment: str) -> str | None:
    m = _CHOICE_START.match(fragment)
    if m is None:
        return None
    return (m.group(1) or m.group(2)).upper()


def _numeric(text: str) -> str | None:
    for marker, content in marked_answers(text):
        if marker == "####" and not _LEADS_WITH_NUMBER.match(_clean_latex(content)):
            continue  # a Markdown heading ("#### Step 1"), not a GSM8K answer line
        nums = iter_numbers(content)
        if nums:  # boxed: the last number ("x = 5"); after a phrase: the first ("42 apples, since ...")
            return nums[-1] if marker == "boxed" else nums[0]
    nums = iter_numbers(text)
    return nums[-1] if nums else None


def _exact(text: str) -> str | None:
    for _, content in marked_answers(text):
        canon = canonical_exact(content)
        if canon:
            return canon
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    return canonical_exact(lines[-1]) or None


def _choice(text: str) -> str | None:
    for _, content in marked_answers(text):
        letter = _choice_from(content)
        if letter:
            return letter
    found = None
    for m in _CHOICE_ANYWHERE.finditer(text):
        found = m.group(1) or m.group(2) or m.group(3)
    return found.upper() if found else None


_LONE_LETTER = re.compile(r"\s*\(?\s*([A-Za-z])\s*\)?\s*[.:]?\s*")


def parse_choice(value: object) -> str | None:
    """A reference option letter: ``"B"``, ``"b"``, ``"(B)"``, ``"B."`` -> ``"B"``; else as extracted from text."""
    if not isinstance(value, str):
        return None
    m = _LONE_LETTER.fullmatch(value)
    if m is not None:
        return m.group(1).upper()
    return _choice(value) if value.strip() else None


def raw_final_answer(text: str) -> str | None:
    """The final answer as written (not canonicalised): first marked candidate, else the last line.
    Reasoning blocks are skipped; an output cut off inside one has none."""
    body = answer_text(text)
    if body is None:
        return None
    text = body
    marked = marked_answers(text)
    if marked:
        return marked[0][1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else None


def extract_answer(text: str, kind: str) -> str | None:
    """The final answer of ``kind`` (numeric/exact/choice; regex counts as exact) in canonical form, or None.

    >>> extract_answer("so 1,234 apples. #### 1,234", "numeric")
    '1234'
    >>> extract_answer("The answer is (b).", "choice")
    'B'
    """
    if kind == "regex" or kind.startswith("regex:"):
        kind = "exact"  # a regex item's answer is compared in exact form (see verifiers.py)
    if kind not in KINDS:
        raise ValueError(f"unknown answer kind {kind!r}; expected one of {KINDS} (or regex)")
    if not isinstance(text, str):
        return None
    body = answer_text(text)
    if body is None or not body.strip():
        return None
    text = body
    if kind == "numeric":
        return _numeric(text)
    if kind == "exact":
        return _exact(text)
    return _choice(text)


_FENCE_LINE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})(.*)$")


def last_code_block(text: str) -> str | None:
    """The body of the last fenced code block (```` ``` ```` or ``~~~``, any language tag), or None.

    A block left open at the end (a truncated answer) counts, up to the end of the text.
    """
    blocks: list[str] = []
    fence: str | None = None
    body: list[str] = []
    for line in text.splitlines():
        m = _FENCE_LINE.match(line)
        if fence is None:
            if m is not None:
                fence, body = m.group(1), []
        elif (
            m is not None
            and m.group(1).startswith(fence[0])
            and len(m.group(1)) >= len(fence)
            and not m.group(2).strip()
        ):
            blocks.append("\n".join(body) + "\n")
            fence = None
        else:
            body.append(line)
    if fence is not None and body:
        blocks.append("\n".join(body) + "\n")
    return blocks[-1] if blocks else None
