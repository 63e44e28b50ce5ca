"""Gate policies: a TOML file that says which verdicts and numbers a report may have.

The format is documented in ``docs/ci.md``; ``default_policy.toml`` is the one used when
``--policy`` is not given. Every mistake is an :class:`InputError` naming the file and the
key (``modes.capacity_gap.max_verdict``, ``rules[2].metric``), and unknown keys are
mistakes too, so a typo can never silently switch a check off.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from distill_doctor.errors import InputError
from distill_doctor.vocabulary import MODE_ORDER, Verdict

DEFAULT_POLICY = "default_policy.toml"
MODES: tuple[str, ...] = tuple(m.value for m in MODE_ORDER)  # plain strings: messages show them
# The verdicts a max_verdict may name (a cap of "skipped" would mean nothing).
MAX_VERDICTS: tuple[str, ...] = tuple(v.value for v in (Verdict.PASS, Verdict.WARN, Verdict.FAIL))
# if_missing: what a check does when its number is absent (a check's outcome, not a verdict).
MISSING_ACTIONS = ("fail", "pass")
# [baseline] verdicts: which verdict regressions fail the gate (docs/ci.md). max_verdict caps a
# verdict on its own; this rule is about the change against the baseline, whatever max_verdict says.
BASELINE_VERDICT_RULES = ("fail", "any", "off")


@dataclass
class Threshold:
    """``[[rules]]``: a bound on one finding's number (``metric`` is a dotted path)."""

    mode: str
    metric: str
    min: float | None = None
    max: float | None = None
    if_missing: str = "fail"
    key: str = ""  # where in the policy, e.g. "rules[0]"


@dataclass
class BaselineMetric:
    """``[[baseline.metrics]]``: a number that must not get worse than in the baseline report."""

    mode: str
    metric: str
    worse: str  # "higher" or "lower": which direction is bad
    ci: str | None = None  # dotted path to the new report's [lo, hi] interval for ``metric``
    tolerance: float | None = None  # used when there is no interval: allowed absolute change
    key: str = ""


@dataclass
class SpeculativeBounds:
    """``[speculative]``: bounds on the report's top-level ``speculative`` block (draft quality)."""

    min_acceptance: float | None = None  # on acceptance_rate
    min_greedy_agreement: float | None = None  # on greedy_agreement
    if_missing: str = "fail"  # when the report has no speculative block


@dataclass
class Policy:
    source: str  # the file it came from, for messages
    default_max_verdict: str = Verdict.WARN.value
    default_required: bool = False
    max_verdict: dict[str, str] = field(default_factory=dict)
    required: dict[str, bool] = field(default_factory=dict)
    min_student: float | None = None
    min_teacher: float | None = None
    max_gap: float | None = None  # teacher accuracy - student accuracy
    min_n: int | None = None
    rules: list[Threshold] = field(default_factory=list)
    baseline_verdicts: str = "fail"  # one of BASELINE_VERDICT_RULES
    baseline_accuracy: bool = True
    baseline_alpha: float = 0.05
    baseline_metrics: list[BaselineMetric] = field(default_factory=list)
    speculative: SpeculativeBounds | None = None
    baseline_speculative: bool = True  # acceptance must not drop significantly against the baseline

    def allowed(self, mode: str) -> str:
        return self.max_verdict.get(mode, self.default_max_verdict)

    def is_required(self, mode: str) -> bool:
        return self.required.get(mode, self.default_required)


def _toml_loads(text: str) -> dict[str, Any]:
    return tomllib.loads(text)


class _Reader:
    """Typed access to one TOML table; remembers the keys it read to reject the rest."""

    def __init__(self, table: Any, key: str, source: str) -> None:
        self.source, self.key = source, key
        if not isinstance(table, dict):
            self.fail(key, f"expected a table, got {type(table).__name__}")
        self.table = table
        self.seen: set[str] = set()

    def fail(self, key: str, message: str) -> None:
        raise InputError(message, path=self.source, field=key)

    def where(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def get(self, name: str, kinds: tuple[type, ...], default: Any = None, *, choices: tuple = ()) -> Any:
        self.seen.add(name)
        if name not in self.table:
            return default
        value = self.table[name]
        numeric = float in kinds and isinstance(value, int) and not isinstance(value, bool)
        if isinstance(value, bool) and bool not in kinds or not (isinstance(value, kinds) or numeric):
            names = " or ".join(k.__name__.replace("str", "string").replace("float", "number") for k in kinds)
            self.fail(self.where(name), f"expected a {names}, got {value!r}")
        if numeric:
            value = float(value)
        if isinstance(value, float) and not math.isfinite(value):
            self.fail(self.where(name), f"expected a finite number, got {value!r}")
        if choices and value not in choices:
            self.fail(self.where(name), f"expected one of {', '.join(map(repr, choices))}, got {value!r}")
        return value

    def required(self, name: str, kinds: tuple[type, ...], **kw: Any) -> Any:
        if name not in self.table:
            self.fail(self.where(name), "is required")
        return self.get(name, kinds, **kw)

    def done(self) -> None:
        extra = sorted(set(self.table) - self.seen)
        if extra:
            self.fail(self.where(extra[0]), "unknown key (check the spelling; see docs/ci.md)")


def _mode(reader: _Reader) -> str:
    return reader.required("mode", (str,), choices=MODES)


def parse_policy(data: dict[str, Any], source: str) -> Policy:
    """Build a :class:`Policy` from parsed TOML; raises InputError naming ``source`` and the key.

    The tables are read in file-format order, so the first mistake reported is always the same."""
    top = _Reader(data, "", source)
    version = top.get("version", (int,), 1)
    if version != 1:
        top.fail("version", f"unsupported policy version {version}; this distill-doctor reads 1")
    policy = Policy(source=source)
    _read_defaults(top, policy)
    _read_modes(top, policy)
    _read_accuracy(top, policy)
    policy.rules = [_threshold(table, i, source) for i, table in enumerate(top.get("rules", (list,), []))]
    _read_baseline(top, policy)
    policy.speculative = _speculative_bounds(top.get("speculative", (dict,)), source)
    top.done()
    return policy


def _read_defaults(top: _Reader, policy: Policy) -> None:
    """``[defaults]``: the verdict cap and whether a mode is required, for modes not named."""
    defaults = _Reader(top.get("defaults", (dict,), {}), "defaults", top.source)
    policy.default_max_verdict = defaults.get("max_verdict", (str,), Verdict.WARN.value, choices=MAX_VERDICTS)
    policy.default_required = defaults.get("required", (bool,), False)
    defaults.done()


def _read_modes(top: _Reader, policy: Policy) -> None:
    """``[modes.<mode>]``: a mode's own verdict cap and whether it is required."""
    modes = _Reader(top.get("modes", (dict,), {}), "modes", top.source)
    for mode in list(modes.table):
        if mode not in MODES:
            modes.fail(f"modes.{mode}", f"unknown mode; expected one of {', '.join(MODES)}")
        modes.seen.add(mode)
        entry = _Reader(modes.table[mode], f"modes.{mode}", top.source)
        if "max_verdict" in entry.table:
            policy.max_verdict[mode] = entry.get("max_verdict", (str,), choices=MAX_VERDICTS)
        if "required" in entry.table:
            policy.required[mode] = entry.get("required", (bool,))
        entry.done()


def _read_accuracy(top: _Reader, policy: Policy) -> None:
    """``[accuracy]``: bounds on the report's accuracies (shares) and its item count."""
    acc = _Reader(top.get("accuracy", (dict,), {}), "accuracy", top.source)
    for name in ("min_student", "min_teacher", "max_gap"):
        value = acc.get(name, (float,))
        if value is not None and not -1 <= value <= 1:
            acc.fail(acc.where(name), f"expected a share between 0 and 1, got {value}")
        setattr(policy, name, value)
    policy.min_n = acc.get("min_n", (int,))
    acc.done()


def _threshold(table: Any, i: int, source: str) -> Threshold:
    """``[[rules]]`` number ``i``: a bound on one finding's metric."""
    r = _Reader(table, f"rules[{i}]", source)
    rule = Threshold(
        mode=_mode(r),
        metric=r.required("metric", (str,)),
        min=r.get("min", (float,)),
        max=r.get("max", (float,)),
        if_missing=r.get("if_missing", (str,), "fail", choices=MISSING_ACTIONS),
        key=f"rules[{i}]",
    )
    r.done()  # an unknown key first: `maxx = 1` is a typo, not a missing bound
    if rule.min is None and rule.max is None:
        r.fail(f"rules[{i}]", "needs 'min', 'max' or both")
    return rule


def _read_baseline(top: _Reader, policy: Policy) -> None:
    """``[baseline]``: which changes against a baseline report fail the gate."""
    base = _Reader(top.get("baseline", (dict,), {}), "baseline", top.source)
    verdicts_rule = base.get("verdicts", (str, bool), "fail")
    if isinstance(verdicts_rule, bool):  # the 0.x spelling: true meant "any" regression, false "off"
        verdicts_rule = "any" if verdicts_rule else "off"
    if verdicts_rule not in BASELINE_VERDICT_RULES:
        choices = ", ".join(map(repr, BASELINE_VERDICT_RULES))
        base.fail("baseline.verdicts", f"expected one of {choices} (or true/false), got {verdicts_rule!r}")
    policy.baseline_verdicts = verdicts_rule
    policy.baseline_accuracy = base.get("accuracy", (bool,), True)
    policy.baseline_alpha = base.get("alpha", (float,), 0.05)
    policy.baseline_speculative = base.get("speculative", (bool,), True)
    if not 0 < policy.baseline_alpha < 1:
        base.fail("baseline.alpha", f"expected a number between 0 and 1, got {policy.baseline_alpha}")
    for i, table in enumerate(base.get("metrics", (list,), [])):
        policy.baseline_metrics.append(_baseline_metric(table, i, top.source))
    base.done()


def _baseline_metric(table: Any, i: int, source: str) -> BaselineMetric:
    """``[[baseline.metrics]]`` number ``i``: a number that must not get worse."""
    m = _Reader(table, f"baseline.metrics[{i}]", source)
    spec = BaselineMetric(
        mode=_mode(m),
        metric=m.required("metric", (str,)),
        worse=m.required("worse", (str,), choices=("higher", "lower")),
        ci=m.get("ci", (str,)),
        tolerance=m.get("tolerance", (float,)),
        key=f"baseline.metrics[{i}]",
    )
    m.done()
    if (spec.ci is None) == (spec.tolerance is None):
        m.fail(spec.key, "needs exactly one of 'ci' (a significance rule) or 'tolerance' (a plain bound)")
    if spec.tolerance is not None and spec.tolerance < 0:
        m.fail(f"{spec.key}.tolerance", "must not be negative")
    return spec


def _speculative_bounds(table: dict[str, Any] | None, source: str) -> SpeculativeBounds | None:
    """``[speculative]`` (shares in [0, 1]); None when the policy has no such table."""
    if table is None:
        return None
    r = _Reader(table, "speculative", source)
    bounds = SpeculativeBounds(
        min_acceptance=r.get("min_acceptance", (float,)),
        min_greedy_agreement=r.get("min_greedy_agreement", (float,)),
        if_missing=r.get("if_missing", (str,), "fail", choices=MISSING_ACTIONS),
    )
    r.done()
    for name in ("min_acceptance", "min_greedy_agreement"):
        value = getattr(bounds, name)
        if value is not None and not 0 <= value <= 1:
            r.fail(r.where(name), f"expected a share between 0 and 1, got {value}")
    if bounds.min_acceptance is None and bounds.min_greedy_agreement is None:
        r.fail("speculative", "needs 'min_acceptance', 'min_greedy_agreement' or both")
    return bounds


def load_policy(path: str | Path | None = None) -> Policy:
    """Read a policy file; ``None`` reads the shipped ``default_policy.toml``."""
    if path is None:
        ref = resources.files("distill_doctor.reports").joinpath(DEFAULT_POLICY)
        return parse_policy(_toml_loads(ref.read_text(encoding="utf-8")), f"(default) {DEFAULT_POLICY}")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("policy file not found", path=path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read policy: {err}", path=path) from None
    try:
        data = _toml_loads(text)
    except InputError:
        raise
    except Exception as err:  # tomllib.TOMLDecodeError (message carries line and column)
        raise InputError(f"invalid TOML: {err}", path=path) from None
    return parse_policy(data, str(path))
