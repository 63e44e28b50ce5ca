"""distill_doctor.stats against scipy and analytic values."""

import math

import numpy as np
import pytest
from scipy import stats as st

from distill_doctor import stats


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (50, 200), (1, 1)])
def test_clopper_pearson_matches_scipy(k, n):
    ref = st.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    lo, hi = stats.clopper_pearson(k, n)
    assert lo == pytest.approx(ref.low, abs=1e-9)
    assert hi == pytest.approx(ref.high, abs=1e-9)


def test_clopper_pearson_empty_and_bad():
    assert stats.clopper_pearson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        stats.clopper_pearson(5, 3)


@pytest.mark.parametrize("k,n", [(0, 10), (7, 20), (20, 20), (123, 456)])
def test_wilson_matches_scipy(k, n):
    ref = st.binomtest(k, n).proportion_ci(confidence_level=0.9, method="wilson")
    lo, hi = stats.wilson(k, n, 0.9)
    assert lo == pytest.approx(ref.low, abs=1e-9)
    assert hi == pytest.approx(ref.high, abs=1e-9)


@pytest.mark.parametrize("k,n,p0", [(7, 10, 0.3), (0, 5, 0.5), (12, 40, 0.1), (40, 40, 0.9)])
def test_binom_test_greater_matches_scipy(k, n, p0):
    ref = st.binomtest(k, n, p0, alternative="greater").pvalue
    assert stats.binom_test_greater(k, n, p0) == pytest.approx(ref, rel=1e-9)


def test_binom_edges():
    assert stats.binom_test_greater(0, 0, 0.3) == 1.0
    assert stats.binom_test_greater(3, 5, 0.0) == 0.0


@pytest.mark.parametrize("b,c", [(0, 0), (5, 0), (10, 3), (7, 7), (1, 20)])
def test_exact_mcnemar(b, c):
    p = stats.exact_mcnemar(b, c)
    if b + c == 0:
        assert p == 1.0
    else:
        ref = st.binomtest(b, b + c, 0.5).pvalue
        assert p == pytest.approx(ref, rel=1e-9)
    assert stats.exact_mcnemar(c, b) == p
    # analytic: 5 vs 0 -> 2 * 0.5**5
    assert stats.exact_mcnemar(5, 0) == pytest.approx(2 / 32)


def test_fisher_exact():
    odds, p = stats.fisher_exact(8, 2, 1, 5, alternative="greater")
    ref = st.fisher_exact([[8, 2], [1, 5]], alternative="greater")
    assert odds == pytest.approx(20.0)
    assert p == pytest.approx(ref.pvalue)


def test_two_proportion_diff_ci_newcombe_example():
    # Newcombe (1998) Table II example: 56/70 vs 48/80 -> (0.0524, 0.3339)
    lo, hi = stats.two_proportion_diff_ci(56, 70, 48, 80)
    assert lo == pytest.approx(0.0524, abs=5e-4)
    assert hi == pytest.approx(0.3339, abs=5e-4)


def test_holm_matches_manual():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
    assert stats.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([]) == []
    assert stats.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])


def test_cohen_kappa_analytic():
    a = np.array([1, 1, 0, 0], dtype=bool)
    assert stats.cohen_kappa(a, a) == pytest.approx(1.0)
    assert stats.cohen_kappa(a, ~a) == pytest.approx(-1.0)
    b = np.array([1, 0, 1, 0], dtype=bool)
    assert stats.cohen_kappa(a, b) == pytest.approx(0.0)
    assert math.isnan(stats.cohen_kappa(np.ones(5, bool), np.ones(5, bool)))
    # kappa is Cohen's kappa on the 2x2 correctness table
    rng = np.random.default_rng(1)
    x, y = rng.random(200) < 0.6, rng.random(200) < 0.7
    po = np.mean(x == y)
    pe = x.mean() * y.mean() + (1 - x.mean()) * (1 - y.mean())
    assert stats.cohen_kappa(x, y) == pytest.approx((po - pe) / (1 - pe))


def test_bootstrap_ci_mean_close_to_normal_theory():
    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    lo, hi = stats.bootstrap_ci(lambda a: a.mean(-1), x, n_boot=4000, seed=1)
    se = x.std(ddof=1) / math.sqrt(len(x))
    assert lo == pytest.approx(x.mean() - 1.96 * se, abs=0.03)
    assert hi == pytest.approx(x.mean() + 1.96 * se, abs=0.03)


def test_bootstrap_paired_keeps_pairs_and_is_deterministic():
    x = np.arange(50, dtype=float)
    ci = stats.bootstrap_ci(lambda a, b: (a - b).mean(-1), x, x + 1.0, n_boot=500, seed=3)
    assert ci == pytest.approx((-1.0, -1.0))
    assert stats.bootstrap_ci(lambda a: a.mean(-1), x, seed=5) == stats.bootstrap_ci(
        lambda a: a.mean(-1), x, seed=5
    )


def test_bootstrap_is_fast_on_10k_items():
    import time

    rng = np.random.default_rng(0)
    t, s = rng.random(10_000) < 0.8, rng.random(10_000) < 0.7
    t0 = time.perf_counter()
    lo, hi = stats.bootstrap_ci(lambda a, b: a.mean(-1) - b.mean(-1), t, s, n_boot=2000)
    assert time.perf_counter() - t0 < 5.0
    assert lo < t.mean() - s.mean() < hi


def test_kappa_bootstrap_statistic():
    rng = np.random.default_rng(2)
    a = rng.random(300) < 0.5
    b = np.where(rng.random(300) < 0.8, a, ~a)
    lo, hi = stats.bootstrap_ci(stats.kappa_statistic, a, b, n_boot=1000)
    k = stats.cohen_kappa(a, b)
    assert lo < k < hi


def test_cluster_weights_and_weighted_mean():
    groups = ["a", "a", "b", "b", "c", "c"]
    w = stats.cluster_weights(groups, n_boot=200, seed=0)
    assert w.shape == (200, 6)
    assert np.all(w.sum(axis=1) == 6)  # 3 clusters of size 2 drawn 3 times
    assert np.all(w[:, 0] == w[:, 1])
    x = np.array([1, 1, 0, 0, 1, 0], dtype=float)
    m = stats.weighted_mean(x, w)
    assert np.all((m >= 0) & (m <= 1))


def test_permutation_test_detects_and_nulls():
    lab = np.array(list("abcdefghij") * 3)
    target = lab.copy()

    def matches(perm):
        return (perm == target[None, :]).mean(axis=-1)

    obs, p, null = stats.permutation_test(matches, lab, n_perm=999, seed=0)
    assert obs == 1.0 and p < 0.01
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(lab)
    obs2, p2, _ = stats.permutation_test(lambda q: (q == shuffled[None, :]).mean(-1), lab, n_perm=999)
    assert p2 > 0.01
    # within strata: a single-item stratum never moves
    strata = ["x"] * 29 + ["y"]
    _, _, null3 = stats.permutation_test(lambda q: (q[:, -1] == lab[-1]).astype(float), lab, strata=strata)
    assert np.all(null3 == 1.0)


def test_robust_outliers():
    x = np.r_[np.linspace(5, 15, 100), [100.0]]
    assert stats.robust_z(x)[-1] > 10


def test_json_float():
    assert stats.json_float(float("nan")) is None
    assert stats.json_float(None) is None
    assert stats.json_float(0.1234567891) == 0.123457


def test_cluster_bootstrap_means_match_weights():
    rng = np.random.default_rng(3)
    groups = rng.integers(0, 40, 300)
    x = (rng.random(300) < 0.6).astype(float)
    fast = stats.cluster_bootstrap_means(groups, x, n_boot=500, seed=9)[0]
    slow = stats.weighted_mean(x, stats.cluster_weights(groups, n_boot=500, seed=9))
    assert fast == pytest.approx(slow)


def test_smoothed_log_odds_analytic():
    # (k + 0.5) / (n - k + 0.5) in logs: finite at 0 and n, 0 at a half, odd around it
    assert stats.smoothed_log_odds(0.5, 10) == pytest.approx(0.0)
    assert stats.smoothed_log_odds(0.0, 10) == pytest.approx(math.log(0.5 / 10.5))
    assert stats.smoothed_log_odds(1.0, 10) == pytest.approx(math.log(10.5 / 0.5))
    r = np.array([0.1, 0.3, 0.8])
    assert np.allclose(stats.smoothed_log_odds(r, 50), -stats.smoothed_log_odds(1 - r, 50))
    assert np.allclose(stats.smoothed_log_odds(r, 10**9), np.log(r / (1 - r)), atol=1e-6)


def test_log_odds_gap_is_flat_for_a_fixed_logit_shift():
    # (B, n) outcomes -> (B,); exact rates that are one fixed number of logits apart give the same
    # gap at any accuracy level, while their difference in accuracy changes with the level
    def outcomes(p, n=100_000):
        k = round(p * n)
        return np.r_[np.ones(k), np.zeros(n - k)][None, :]

    shift = 1.8
    gaps, diffs = [], []
    for p_t in (0.99, 0.9, 0.6):
        p_s = 1 / (1 + math.exp(-(math.log(p_t / (1 - p_t)) - shift)))
        gaps.append(stats.log_odds_gap(outcomes(p_t), outcomes(p_s))[0])
        diffs.append(p_t - p_s)
    assert np.allclose(gaps, shift, atol=0.01)
    assert max(diffs) - min(diffs) > 0.2
    assert stats.log_odds_gap(np.ones((3, 7)), np.ones((3, 7))).shape == (3,)
