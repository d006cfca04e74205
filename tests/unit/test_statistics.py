"""Sharpe statistics against hand computations from the published formulas and a published example."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from trainer.evaluation.statistics import (
    EULER_MASCHERONI,
    deflated_sharpe_ratio,
    dsr_from_moments,
    expected_max_sharpe,
    ledoit_wolf_sharpe_test,
    min_track_record_length,
    min_trl_from_moments,
    probabilistic_sharpe_ratio,
    psr_from_moments,
    return_moments,
    sharpe_difference_test,
    sharpe_summary,
)

SMALL = np.array([0.02, -0.01, 0.03, 0.0, -0.02, 0.04, 0.01, -0.005])


def _hand_moments(r):
    """Sample moments written out: SR with ddof=1; g3 = m3 / m2^1.5, g4 = m4 / m2^2 (population)."""
    n = len(r)
    mean = sum(r) / n
    dev = [x - mean for x in r]
    m2 = sum(d**2 for d in dev) / n
    m3 = sum(d**3 for d in dev) / n
    m4 = sum(d**4 for d in dev) / n
    sr = mean / math.sqrt(sum(d**2 for d in dev) / (n - 1))
    return sr, n, m3 / m2**1.5, m4 / m2**2


def test_moments_match_hand_formulas():
    sr, n, g3, g4 = _hand_moments(SMALL)
    got = return_moments(SMALL)
    assert got[1] == n
    assert got[0] == pytest.approx(sr, rel=1e-12)
    assert got[2] == pytest.approx(g3, rel=1e-10)
    assert got[3] == pytest.approx(g4, rel=1e-10)


def test_psr_matches_formula_on_small_array():
    sr, n, g3, g4 = _hand_moments(SMALL)
    for benchmark in (0.0, 0.1):
        expected = norm.cdf((sr - benchmark) * math.sqrt(n - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2))
        assert probabilistic_sharpe_ratio(SMALL, benchmark) == pytest.approx(expected, rel=1e-12)


def test_psr_of_three_years_at_sharpe_0_3_is_about_0_70():
    # 0.3 / sqrt(252) = 0.018898; * sqrt(755) = 0.5193; / sqrt(1 + 0.5 * 0.018898^2) -> Phi(0.5192) = 0.698
    assert psr_from_moments(0.3 / math.sqrt(252), 756, 0.0, 3.0) == pytest.approx(0.698, abs=1e-3)


def test_deflated_sharpe_published_example():
    # Bailey & López de Prado (2014), section "A numerical example": N = 100 trials, V[SR] = 0.5
    # annualised, best annualised SR 2.5, T = 1250 daily returns, skew -3, kurtosis 10
    # -> SR0 = 0.1132 (non-annualised) and DSR = 0.9004.
    variance = 0.5 / 250
    assert expected_max_sharpe(100, variance) == pytest.approx(0.1132, abs=1e-4)
    assert dsr_from_moments(2.5 / math.sqrt(250), 1250, -3.0, 10.0, 100, variance) == pytest.approx(0.9004, abs=5e-4)


def test_expected_max_sharpe_formula():
    n, v = 10, 0.004
    g = EULER_MASCHERONI
    expected = math.sqrt(v) * ((1 - g) * norm.ppf(1 - 1 / n) + g * norm.ppf(1 - 1 / (n * math.e)))
    assert expected_max_sharpe(n, v) == pytest.approx(expected, rel=1e-12)
    assert expected_max_sharpe(1, v) == 0.0


def test_dsr_with_one_trial_is_psr_against_zero():
    assert deflated_sharpe_ratio(SMALL, n_trials=1) == pytest.approx(probabilistic_sharpe_ratio(SMALL, 0.0), rel=1e-12)


def test_dsr_default_variance_is_the_estimators_asymptotic_variance():
    sr, n, g3, g4 = _hand_moments(SMALL)
    variance = (1 - g3 * sr + (g4 - 1) / 4 * sr**2) / (n - 1)
    g = EULER_MASCHERONI
    sr0 = math.sqrt(variance) * ((1 - g) * norm.ppf(1 - 1 / 20) + g * norm.ppf(1 - 1 / (20 * math.e)))
    expected = norm.cdf((sr - sr0) * math.sqrt(n - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2))
    assert deflated_sharpe_ratio(SMALL, n_trials=20) == pytest.approx(expected, rel=1e-10)
    assert deflated_sharpe_ratio(SMALL, n_trials=20) < probabilistic_sharpe_ratio(SMALL, 0.0)


def test_min_trl_normal_case_by_hand_and_consistent_with_psr():
    # normal returns, SR = 0.1 per period: 1 + (1 + 0.1^2 / 2) * (1.644854 / 0.1)^2 = 272.9
    assert min_trl_from_moments(0.1, 0.0, 3.0, 0.0, 0.95) == pytest.approx(
        1 + 1.005 * (norm.ppf(0.95) / 0.1) ** 2, rel=1e-12
    )
    assert min_trl_from_moments(0.1, 0.0, 3.0) == pytest.approx(272.9, abs=0.1)
    # PSR at exactly MinTRL observations equals the confidence
    sr, g3, g4 = 0.05, -1.0, 6.0
    trl = min_trl_from_moments(sr, g3, g4, 0.0, 0.95)
    assert psr_from_moments(sr, trl, g3, g4, 0.0) == pytest.approx(0.95, abs=1e-12)
    assert min_trl_from_moments(-0.1, 0.0, 3.0) == math.inf
    sr_s, _, g3_s, g4_s = _hand_moments(SMALL)
    assert min_track_record_length(SMALL) == pytest.approx(
        1 + (1 - g3_s * sr_s + (g4_s - 1) / 4 * sr_s**2) * (norm.ppf(0.95) / sr_s) ** 2, rel=1e-10
    )


# ------------------------------------------------------------------ paired tests


A = np.array([0.01, 0.02, -0.01, 0.03, 0.0, -0.02])
B = np.array([0.00, 0.01, 0.01, 0.02, -0.01, 0.0])


def test_memmel_matches_formula_by_hand():
    sr_a, n, _, _ = _hand_moments(A)
    sr_b, _, _, _ = _hand_moments(B)
    ma, mb = A.mean(), B.mean()
    cov = sum((x - ma) * (y - mb) for x, y in zip(A, B)) / n
    rho = cov / math.sqrt(sum((x - ma) ** 2 for x in A) / n * sum((y - mb) ** 2 for y in B) / n)
    theta = (2 * (1 - rho) + 0.5 * (sr_a**2 + sr_b**2 - 2 * sr_a * sr_b * rho**2)) / n
    z = (sr_a - sr_b) / math.sqrt(theta)
    result = sharpe_difference_test(A, B)
    assert result["z"] == pytest.approx(z, rel=1e-10)
    assert result["p_value"] == pytest.approx(1 - norm.cdf(z), rel=1e-10)
    assert result["p_value_two_sided"] == pytest.approx(2 * (1 - norm.cdf(abs(z))), rel=1e-10)
    assert result["diff"] == pytest.approx(sr_a - sr_b, rel=1e-10)


@pytest.mark.parametrize("test", [sharpe_difference_test, ledoit_wolf_sharpe_test])
def test_equal_sharpes_give_z_zero(test):
    # the reversed series has the same mean and std, hence the same Sharpe
    result = test(A, A[::-1].copy())
    assert result["z"] == pytest.approx(0.0, abs=1e-12)
    assert result["p_value"] == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize("test", [sharpe_difference_test, ledoit_wolf_sharpe_test])
def test_swapping_candidate_and_baseline_flips_z(test):
    forward, backward = test(A, B), test(B, A)
    assert forward["z"] == pytest.approx(-backward["z"], rel=1e-12)
    assert forward["p_value"] + backward["p_value"] == pytest.approx(1.0, rel=1e-12)


def test_ledoit_wolf_lag_zero_matches_formula_by_hand():
    n = len(A)
    mu = np.array([A.mean(), B.mean()])
    g = np.array([(A**2).mean(), (B**2).mean()])
    var = g - mu**2
    grad = np.array([g[0] / var[0] ** 1.5, -g[1] / var[1] ** 1.5, -mu[0] / (2 * var[0] ** 1.5), mu[1] / (2 * var[1] ** 1.5)])
    y = np.column_stack([A - mu[0], B - mu[1], A**2 - g[0], B**2 - g[1]])
    psi = sum(np.outer(row, row) for row in y) / n * n / (n - 4)
    z = (mu[0] / math.sqrt(var[0]) - mu[1] / math.sqrt(var[1])) / math.sqrt(grad @ psi @ grad / n)
    assert ledoit_wolf_sharpe_test(A, B, lags=0)["z"] == pytest.approx(z, rel=1e-10)


def test_ledoit_wolf_agrees_with_memmel_for_iid_normal_returns():
    rng = np.random.default_rng(7)
    a = rng.normal(0.0006, 0.01, 4000)
    b = 0.5 * a + rng.normal(0.0002, 0.01, 4000)
    lw = ledoit_wolf_sharpe_test(a, b, lags=0)
    jk = sharpe_difference_test(a, b)
    assert lw["se"] == pytest.approx(jk["se"], rel=0.1)


def test_paired_tests_refuse_unpaired_series():
    with pytest.raises(ValueError, match="same bars"):
        sharpe_difference_test(A, B[:-1])


# ------------------------------------------------------------------ summary


def _series_with_sharpe(annual_sharpe, n, seed=3):
    z = np.random.default_rng(seed).standard_normal(n)
    z = (z - z.mean()) / z.std(ddof=1)
    return 0.01 * (z + annual_sharpe / math.sqrt(252))


def test_summary_three_years_at_sharpe_0_3_is_not_distinguishable_from_zero():
    r = _series_with_sharpe(0.3, 756)
    s = sharpe_summary(r, None, periods_per_year=252, n_trials=1)
    assert set(s) == {
        "stats.psr_zero", "stats.psr_baseline", "stats.min_trl", "stats.sharpe_diff_pvalue", "stats.dsr",
        "interpretation",
    }
    assert s["stats.psr_zero"] == pytest.approx(0.70, abs=0.02)
    assert s["stats.psr_zero"] == pytest.approx(probabilistic_sharpe_ratio(r), rel=1e-12)
    assert s["stats.dsr"] == pytest.approx(s["stats.psr_zero"], rel=1e-12)
    # normal-ish returns: MinTRL ~ 1 + (1.645 / 0.0189)^2 ~ 7,600 bars, about 30 years
    assert 6500 < s["stats.min_trl"] < 8700
    assert s["stats.psr_baseline"] is None and s["stats.sharpe_diff_pvalue"] is None
    assert "Annualised Sharpe 0.30 over 756 bars (3.0 years" in s["interpretation"]
    assert "not distinguishable from zero at 95%" in s["interpretation"]


def test_summary_with_baseline_uses_ledoit_wolf_pvalue():
    r = _series_with_sharpe(1.5, 1000, seed=1)
    base = _series_with_sharpe(0.2, 1000, seed=2)
    s = sharpe_summary(r, base, periods_per_year=252, n_trials=5)
    assert s["stats.sharpe_diff_pvalue"] == pytest.approx(ledoit_wolf_sharpe_test(r, base)["p_value"], rel=1e-12)
    assert s["stats.psr_baseline"] == pytest.approx(
        probabilistic_sharpe_ratio(r, benchmark_sr=0.2 / math.sqrt(252)), rel=1e-9
    )
    assert s["stats.dsr"] < s["stats.psr_zero"]
    assert ": distinguishable from zero at 95%" in s["interpretation"]
    assert "not distinguishable" not in s["interpretation"]
    assert "Against the baseline (Sharpe 0.20)" in s["interpretation"]


def test_sharpe_summary_with_a_flat_candidate_leaves_the_paired_test_missing():
    """A candidate that never traded has constant returns: no paired test, p-value None."""
    from trainer.evaluation.statistics import sharpe_summary

    baseline = np.random.default_rng(3).normal(0.0005, 0.01, 500)
    summary = sharpe_summary(np.zeros(500), baseline, periods_per_year=252)
    assert summary["stats.sharpe_diff_pvalue"] is None
    assert summary["stats.psr_zero"] == pytest.approx(0.5)
    assert "candidate returns are constant" in summary["interpretation"]
