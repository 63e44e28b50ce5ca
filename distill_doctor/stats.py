"""Small, pure statistics the probes share: exact intervals and tests, bootstraps, agreement.

Every function is deterministic given its ``seed`` and returns plain Python floats.
Conventions:
- Confidence intervals are two-sided at ``level`` (0.95 by default) and returned as ``(lo, hi)``.
- Exact binomial tests and intervals come from ``scipy.stats``; no normal approximations
  where an exact answer is cheap.
- Bootstraps are vectorised: the statistic receives resampled arrays with a leading
  replicate axis, shape ``(B, n)``, and must return shape ``(B,)`` (reduce over ``axis=-1``).
- Quantities that are undefined (an empty sample, a kappa whose chance agreement is 1)
  come back as ``nan``; :func:`json_float` turns them into ``None`` for reports.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as _st

# Keep one bootstrap chunk to about this many resampled elements (memory bound).
_CHUNK_ELEMENTS = 4_000_000


def json_float(x: float | None, digits: int = 6) -> float | None:
    """``x`` rounded for a report, or ``None`` when it is missing, nan or infinite."""
    if x is None:
        return None
    x = float(x)
    if not math.isfinite(x):
        return None
    return round(x, digits)


def json_interval(ci) -> list[float | None] | None:
    """An interval ``(lo, hi)`` as a report's ``[lo, hi]`` (each through :func:`json_float`); None when missing."""
    if not ci:
        return None
    return [json_float(x) for x in ci]


# --- binomial proportions -------------------------------------------------------------


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval for a binomial proportion k/n. ``n == 0`` gives (0, 1)."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    a = 1.0 - level
    lo = 0.0 if k == 0 else float(_st.beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(_st.beta.ppf(1 - a / 2, k + 1, n - k))
    return (lo, hi)


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n. ``n == 0`` gives (0, 1)."""
    if n <= 0:
        return (0.0, 1.0)
    z = float(_st.norm.ppf(1 - (1 - level) / 2))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def binom_test_greater(k: int, n: int, p0: float) -> float:
    """Exact one-sided binomial p-value P(X >= k) for X ~ Binomial(n, p0). ``n == 0`` gives 1."""
    if n <= 0 or k <= 0:
        return 1.0
    if p0 <= 0.0:
        return 0.0
    if p0 >= 1.0:
        return 1.0
    return float(_st.binom.sf(k - 1, n, p0))


def exact_mcnemar(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value on the discordant pairs ``b`` and ``c``.

    Under the null, b ~ Binomial(b + c, 1/2); p = min(1, 2 * P(X <= min(b, c))).
    No discordant pairs gives 1.
    """
    m = b + c
    if m == 0:
        return 1.0
    return float(min(1.0, 2.0 * _st.binom.cdf(min(b, c), m, 0.5)))


def fisher_exact(a: int, b: int, c: int, d: int, alternative: str = "two-sided") -> tuple[float, float]:
    """Fisher's exact test on the 2x2 table [[a, b], [c, d]]: (sample odds ratio, p-value).

    ``alternative`` is ``"two-sided"``, ``"greater"`` (odds ratio > 1) or ``"less"``.
    """
    res = _st.fisher_exact([[a, b], [c, d]], alternative=alternative)
    return (float(res.statistic), float(res.pvalue))


def two_proportion_diff_ci(k1: int, n1: int, k2: int, n2: int, level: float = 0.95) -> tuple[float, float]:
    """Newcombe's hybrid score interval for p1 - p2 from two *independent* samples.

    Built from the Wilson intervals of each proportion (Newcombe 1998, method 10).
    An empty sample gives (-1, 1).
    """
    if n1 <= 0 or n2 <= 0:
        return (-1.0, 1.0)
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, level)
    l2, u2 = wilson(k2, n2, level)
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return (max(-1.0, lo), min(1.0, hi))


# --- multiplicity -----------------------------------------------------------------------


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given, monotone, capped at 1)."""
    p = np.asarray(list(p_values), dtype=float)
    m = p.size
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    scaled = (m - np.arange(m)) * p[order]
    adjusted_sorted = np.minimum(1.0, np.maximum.accumulate(scaled))
    out = np.empty(m)
    out[order] = adjusted_sorted
    return [float(x) for x in out]


# --- agreement --------------------------------------------------------------------------


def cohen_kappa(a: Sequence[bool] | np.ndarray, b: Sequence[bool] | np.ndarray) -> float:
    """Error consistency of two classifiers' correctness (Geirhos et al. 2020).

    c_obs = share of items where both are right or both wrong; c_exp = p_a p_b +
    (1 - p_a)(1 - p_b) with p the accuracies; kappa = (c_obs - c_exp) / (1 - c_exp).
    Returns ``nan`` when undefined (no items, or c_exp == 1: one model all right and the
    other all right too, or both all wrong). ``a`` and ``b`` are bool arrays, shape (n,).
    """
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    if a.size == 0:
        return float("nan")
    return float(_kappa_rows(a[None, :].astype(float), b[None, :].astype(float))[0])


def _kappa_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Kappa per row of float 0/1 arrays shaped (B, n); nan where 1 - c_exp == 0."""
    pa = a.mean(axis=-1)
    pb = b.mean(axis=-1)
    c_obs = (a * b + (1 - a) * (1 - b)).mean(axis=-1)
    c_exp = pa * pb + (1 - pa) * (1 - pb)
    denom = 1 - c_exp
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = np.where(denom > 1e-12, (c_obs - c_exp) / np.where(denom > 1e-12, denom, 1.0), np.nan)
    return kappa


def kappa_statistic(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Vectorised kappa for :func:`bootstrap_ci`: a, b shaped (B, n) -> (B,)."""
    return _kappa_rows(np.asarray(a, dtype=float), np.asarray(b, dtype=float))


# --- bootstrap and permutation ----------------------------------------------------------


def smoothed_log_odds(rate: np.ndarray | float, n: int) -> np.ndarray:
    """Log odds of success rates (any shape) of ``n`` trials, with 0.5 added to both counts
    (Haldane-Anscombe), so a rate of 0 or 1 stays finite: log((r n + 0.5) / ((1 - r) n + 0.5))."""
    k = np.asarray(rate, dtype=float) * n
    return np.log((k + 0.5) / (n - k + 0.5))


def log_odds_gap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(B, n) 0/1 outcomes of two models on the same n items -> (B,) smoothed log odds of a's
    success rate minus b's: the gap between two models on the logistic scale, where a uniformly
    weaker model (one fixed number of logits behind on every item) has the same gap everywhere."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = a.shape[-1]
    return smoothed_log_odds(a.mean(-1), n) - smoothed_log_odds(b.mean(-1), n)


def bootstrap_distribution(
    statistic_fn: Callable[..., np.ndarray],
    *arrays: np.ndarray,
    n_boot: int = 2000,
    seed: int = 0,
    paired: bool = True,
) -> np.ndarray:
    """Bootstrap replicates of ``statistic_fn``, shape (n_boot,).

    ``arrays`` are 1-d. With ``paired=True`` all arrays must have the same length and
    one set of indices is drawn per replicate (items keep their pairing); otherwise each
    array is resampled independently. ``statistic_fn(*resampled)`` gets arrays shaped
    (B, n_i) and returns (B,). Replicates are computed in chunks to bound memory.
    """
    arrs = [np.asarray(x) for x in arrays]
    if not arrs:
        raise ValueError("bootstrap needs at least one array")
    lengths = [x.shape[0] for x in arrs]
    if paired and len(set(lengths)) != 1:
        raise ValueError(f"paired bootstrap needs equal lengths, got {lengths}")
    if min(lengths) == 0:
        return np.full(n_boot, np.nan)
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // max(lengths))
    out = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        if paired:
            idx = rng.integers(0, lengths[0], size=(b, lengths[0]))
            sampled = [x[idx] for x in arrs]
        else:
            sampled = [x[rng.integers(0, len(x), size=(b, len(x)))] for x in arrs]
        out[start : start + b] = np.asarray(statistic_fn(*sampled), dtype=float).reshape(b)
    return out


def percentile_ci(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (nan replicates are ignored)."""
    r = np.asarray(replicates, dtype=float)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return (float("nan"), float("nan"))
    a = (1 - level) / 2
    lo, hi = np.quantile(r, [a, 1 - a])
    return (float(lo), float(hi))


def bootstrap_ci(
    statistic_fn: Callable[..., np.ndarray],
    *arrays: np.ndarray,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    paired: bool = True,
) -> tuple[float, float]:
    """Percentile bootstrap interval for ``statistic_fn`` (see :func:`bootstrap_distribution`).

    Example: ``bootstrap_ci(lambda t, s: t.mean(-1) - s.mean(-1), teacher_ok, student_ok)``.
    """
    reps = bootstrap_distribution(statistic_fn, *arrays, n_boot=n_boot, seed=seed, paired=paired)
    return percentile_ci(reps, level)


def cluster_weights(groups: Sequence[object] | np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """Item weights for a cluster bootstrap, shape (n_boot, n).

    Each replicate draws the G clusters with replacement (multinomial counts); an item's
    weight is its cluster's count. A weighted statistic over these weights equals the
    statistic over the concatenated resampled clusters.
    """
    _, inverse = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    n_groups = int(inverse.max()) + 1 if inverse.size else 0
    if n_groups == 0:
        return np.zeros((n_boot, 0))
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot)
    return counts[:, inverse].astype(float)


def cluster_bootstrap_means(
    groups: Sequence[object] | np.ndarray, *arrays: np.ndarray, n_boot: int = 2000, seed: int = 0
) -> np.ndarray:
    """Cluster-bootstrap replicates of the mean of each array, shape (len(arrays), n_boot).

    Resamples the G clusters with replacement (multinomial counts, as :func:`cluster_weights`)
    but works on per-cluster sums, so memory is O(n_boot * G) rather than O(n_boot * n).
    Replicate means are sum(count_g * sum_g) / sum(count_g * size_g). Arrays have shape (n,).
    """
    _, inverse = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    n_groups = int(inverse.max()) + 1 if inverse.size else 0
    if n_groups == 0:
        return np.full((len(arrays), n_boot), np.nan)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot).astype(float)
    denom = counts @ np.bincount(inverse, minlength=n_groups).astype(float)
    out = np.empty((len(arrays), n_boot))
    for k, x in enumerate(arrays):
        sums = np.bincount(inverse, weights=np.asarray(x, dtype=float), minlength=n_groups)
        out[k] = (counts @ sums) / denom
    return out


def weighted_mean(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Row-wise weighted mean: x shaped (n,), w shaped (B, n) -> (B,); nan where weights sum to 0."""
    x = np.asarray(x, dtype=float)
    total = w.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, (w * x).sum(axis=-1) / np.where(total > 0, total, 1.0), np.nan)


def permutation_test(
    statistic_fn: Callable[[np.ndarray], np.ndarray],
    labels: Sequence[object] | np.ndarray,
    *,
    strata: Sequence[object] | np.ndarray | None = None,
    n_perm: int = 2000,
    seed: int = 0,
    alternative: str = "greater",
) -> tuple[float, float, np.ndarray]:
    """Permutation test that shuffles ``labels`` (within ``strata`` when given).

    ``statistic_fn(perm)`` gets label arrays shaped (P, n) and returns (P,); the observed
    statistic is ``statistic_fn(labels[None])``. Returns (observed, p, null replicates)
    with p = (1 + #{null >= observed}) / (1 + P) for ``alternative="greater"`` (``"less"``
    mirrors it; ``"two-sided"`` doubles the smaller tail, capped at 1).
    """
    lab = np.asarray(labels)
    n = lab.shape[0]
    observed = float(np.asarray(statistic_fn(lab[None, :]), dtype=float).reshape(1)[0])
    rng = np.random.default_rng(seed)
    perms = np.empty((n_perm, n), dtype=lab.dtype)
    if strata is None:
        perms[:] = lab[rng.permuted(np.tile(np.arange(n), (n_perm, 1)), axis=1)]
    else:
        st = np.asarray(strata, dtype=object).astype(str)
        perms[:] = lab[None, :]
        for s in np.unique(st):
            pos = np.flatnonzero(st == s)
            if pos.size < 2:
                continue
            shuffled = rng.permuted(np.tile(pos, (n_perm, 1)), axis=1)
            perms[:, pos] = lab[shuffled]
    null = np.asarray(statistic_fn(perms), dtype=float).reshape(n_perm)
    ge = float((1 + np.sum(null >= observed - 1e-12)) / (1 + n_perm))
    le = float((1 + np.sum(null <= observed + 1e-12)) / (1 + n_perm))
    if alternative == "greater":
        p = ge
    elif alternative == "less":
        p = le
    elif alternative == "two-sided":
        p = min(1.0, 2 * min(ge, le))
    else:
        raise ValueError(f"unknown alternative {alternative!r}")
    return observed, float(p), null


# --- robust location/scale ---------------------------------------------------------------


def robust_z(x: Sequence[float] | np.ndarray, min_scale: float = 0.0) -> np.ndarray:
    """(x - median) / max(1.4826 * MAD, min_scale); zeros when that scale is 0.

    ``min_scale`` keeps near-constant data (MAD ~ 0) from turning small deviations into
    huge z values.
    """
    x = np.asarray(x, dtype=float)
    if x.size == 0:
        return x
    med = np.median(x)
    mad = max(1.4826 * np.median(np.abs(x - med)), min_scale)
    if mad <= 0:
        return np.zeros_like(x)
    return (x - med) / mad
