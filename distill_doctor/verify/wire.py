"""Plain data across the sandbox boundary: length-prefixed JSON frames and a strict codec.

Both ends load this file by path (standard library only): the candidate's process
(``sandbox_boot.py``) answers calls with it, the trusted test process (``harness.py``)
reads the answers with it. Only these values cross: ``None``, ``bool``, ``int``, ``float``,
``str``, ``list``, ``tuple``, ``dict`` (keys: those scalars or tuples of them; HumanEval/95
passes ``int`` keys), checked by exact type (an ``int``
subclass with a lying ``__eq__`` is refused). On the wire a list is a JSON array, a tuple
``{"T": [...]}`` and a dict ``{"D": [[key, value], ...]}``; the decoder builds fresh
built-in objects only, so nothing the candidate defines ever reaches the trusted side.
A frame over ``MAX_MESSAGE_BYTES``, nesting deeper than ``MAX_DEPTH``, an int of more than
4,300 digits or any other JSON object is a ``WireError``.
"""

import _json  # the C scanner and encoder: ``json`` itself imports ``re``, 25 ms of every start
import os

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 100
PLAIN = "None, bool, int, float, str, list, tuple, dict with scalar or tuple keys"
_HEADER_SIZE = 4
_SCALARS = (type(None), bool, int, float, str)


class WireError(ValueError):
    """A frame that is not plain data within the limits (too big, too deep, malformed)."""


class NotPlainData(TypeError):
    """A value of a type that may not cross the boundary."""


def encode(value, depth=0):
    """``value`` as JSON-ready data (tuples and dicts tagged); raises ``NotPlainData``."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if depth >= MAX_DEPTH:
        raise NotPlainData(f"nested deeper than {MAX_DEPTH} levels")
    if kind is list:
        return [encode(v, depth + 1) for v in value]
    if kind is tuple:
        return {"T": [encode(v, depth + 1) for v in value]}
    if kind is dict:
        pairs = []
        for key, v in value.items():
            if type(key) not in _SCALARS and type(key) is not tuple:
                raise NotPlainData(f"a dict key of type {type(key).__name__} is not plain data ({PLAIN})")
            pairs.append([encode(key, depth + 1), encode(v, depth + 1)])
        return {"D": pairs}
    raise NotPlainData(f"a value of type {kind.__name__} is not plain data ({PLAIN})")


def _tagged(obj: dict):
    """JSON object -> tuple or dict; anything else is malformed."""
    if len(obj) == 1:
        if type(obj.get("T")) is list:
            return tuple(obj["T"])
        pairs = obj.get("D")
        if type(pairs) is list and all(
            type(p) is list and len(p) == 2 and type(p[0]) is not list for p in pairs
        ):
            try:
                return dict(pairs)
            except TypeError:  # a key holding a list or dict
                raise WireError("an unhashable dict key") from None
    raise WireError("a JSON object that is neither a tagged tuple nor a tagged dict")


def _check_depth(value) -> None:
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise WireError(f"nested deeper than {MAX_DEPTH} levels")
        if type(v) in (list, tuple):
            stack.extend((x, depth + 1) for x in v)
        elif type(v) is dict:
            stack.extend((x, depth + 1) for x in v.values())


def _not_json(obj):
    raise NotPlainData(f"a {type(obj).__name__} is not JSON")


class _Context:
    """What ``_json.make_scanner`` reads from a ``json.JSONDecoder``."""

    strict = True
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float  # NaN, Infinity, -Infinity

    def __init__(self, object_hook):
        self.object_hook = object_hook
        self.memo = {}


_ENCODER = _json.make_encoder(
    None, _not_json, _json.encode_basestring_ascii, None, ":", ",", False, False, True
)
# typeshed wants a JSONDecoder-like make_scanner here; _json reads only _Context's attributes.
_TAGGED_SCANNER = _json.make_scanner(_Context(_tagged))  # type: ignore[arg-type]
_PLAIN_SCANNER = _json.make_scanner(_Context(None))  # type: ignore[arg-type]


def json_dumps(obj) -> str:
    """Compact JSON of JSON-native ``obj`` (``json.dumps`` with ``separators=(",", ":")``)."""
    return "".join(_ENCODER(obj, 0))


def json_loads(text: str, *, tagged: bool = False):
    """Strict JSON (no surrounding whitespace); ``tagged`` turns tagged objects into tuples/dicts."""
    scanner = _TAGGED_SCANNER if tagged else _PLAIN_SCANNER
    try:
        value, end = scanner(text, 0)
    except WireError:
        raise
    except (StopIteration, ValueError, RecursionError) as err:
        raise WireError(f"malformed JSON ({type(err).__name__})") from None
    if end != len(text):
        raise WireError("malformed JSON (extra data)")
    return value


def dumps(message) -> bytes:
    """One frame: 4-byte big-endian length, then compact JSON (``message`` already encoded)."""
    body = json_dumps(message).encode("ascii")
    if len(body) > MAX_MESSAGE_BYTES:
        raise NotPlainData(f"the value is over {MAX_MESSAGE_BYTES // (1024 * 1024)} MiB as JSON")
    return len(body).to_bytes(_HEADER_SIZE, "big") + body


def loads(body: bytes):
    """A frame body -> plain data; raises ``WireError`` for anything else."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise WireError("malformed frame (not ASCII)") from None
    value = json_loads(text, tagged=True)
    _check_depth(value)
    return value


def _read_exact(fd: int, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise EOFError("the other side closed the channel")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, limit: int = MAX_MESSAGE_BYTES):
    """The next frame from ``fd``, decoded; ``EOFError`` at end of stream, ``WireError`` if bad."""
    size = int.from_bytes(_read_exact(fd, _HEADER_SIZE), "big")
    if size > limit:
        raise WireError(f"a frame of {size} bytes is over the {limit}-byte limit")
    return loads(_read_exact(fd, size))


def write_frame(fd: int, message) -> None:
    """Write one frame (``message`` already encoded) to ``fd``."""
    data = dumps(message)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
