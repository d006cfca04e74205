"""Sharpe statistics against hand computations from the published formulas and a published example."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from trainer.evaluation.metrics import sharpe_ratio
from trainer.evaluation.statistics import (
    EULER_MASCHERONI,
    deflated_sharpe_ratio,
    dsr_from_moments,
    dsr_trials,
    expected_max_sharpe,
    ledoit_wolf_sharpe_test,
    lo_annualisation_factor,
    lo_eta_from_autocorrelations,
    lo_max_lag,
    min_track_record_length,
    min_trl_from_moments,
    newey_west_lags,
    probabilistic_sharpe_ratio,
    psr_from_moments,
    return_moments,
    sharpe_by_period,
    sharpe_confidence_interval,
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


def _trials_with_variance(candidate_sr, n_trials, variance, seed=0):
    """n_trials - 1 other per-bar Sharpes whose sample variance, with the candidate's, is `variance`."""
    z = np.random.default_rng(seed).standard_normal(n_trials)
    z = (z - z.mean()) / z.std(ddof=1) * math.sqrt(variance)
    z += candidate_sr - z[0]  # a shift keeps the variance; z[0] is the candidate
    return z[1:]


def test_deflated_sharpe_published_example():
    # Bailey & López de Prado (2014), section "A numerical example": N = 100 trials, V[SR] = 0.5
    # annualised, best annualised SR 2.5, T = 1250 daily returns, skew -3, kurtosis 10
    # -> SR0 = 0.1132 (non-annualised) and DSR = 0.9004.
    variance = 0.5 / 250
    sr = 2.5 / math.sqrt(250)
    assert expected_max_sharpe(100, variance) == pytest.approx(0.1132, abs=1e-4)
    others = _trials_with_variance(sr, 100, variance)
    trials = dsr_trials(sr, 1250, -3.0, 10.0, others)
    assert (trials.n_trials, trials.variance_source) == (100, "trials")
    assert trials.sr_variance == pytest.approx(variance, rel=1e-12)
    assert dsr_from_moments(sr, 1250, -3.0, 10.0, others) == pytest.approx(0.9004, abs=5e-4)


def test_expected_max_sharpe_formula():
    n, v = 10, 0.004
    g = EULER_MASCHERONI
    expected = math.sqrt(v) * ((1 - g) * norm.ppf(1 - 1 / n) + g * norm.ppf(1 - 1 / (n * math.e)))
    assert expected_max_sharpe(n, v) == pytest.approx(expected, rel=1e-12)
    assert expected_max_sharpe(1, v) == 0.0


@pytest.mark.parametrize("trial_sharpes", [None, [], [math.nan]])
def test_dsr_with_one_trial_is_psr_against_zero(trial_sharpes):
    psr = probabilistic_sharpe_ratio(SMALL, 0.0)
    if trial_sharpes == [math.nan]:  # an unrecorded trial still counts: N = 2, deflated
        assert deflated_sharpe_ratio(SMALL, trial_sharpes) < psr
    else:
        assert deflated_sharpe_ratio(SMALL, trial_sharpes) == pytest.approx(psr, rel=1e-12)
        assert dsr_trials(*return_moments(SMALL), trial_sharpes).n_trials == 1


def test_dsr_without_recorded_sharpes_uses_the_estimators_asymptotic_variance():
    sr, n, g3, g4 = _hand_moments(SMALL)
    variance = (1 - g3 * sr + (g4 - 1) / 4 * sr**2) / (n - 1)
    g = EULER_MASCHERONI
    sr0 = math.sqrt(variance) * ((1 - g) * norm.ppf(1 - 1 / 20) + g * norm.ppf(1 - 1 / (20 * math.e)))
    expected = norm.cdf((sr - sr0) * math.sqrt(n - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2))
    unrecorded = [None] * 10 + [math.nan] * 9  # 19 other trials, none with a finite Sharpe
    trials = dsr_trials(sr, n, g3, g4, unrecorded)
    assert (trials.n_trials, trials.variance_source) == (20, "asymptotic")
    assert trials.sr_variance == pytest.approx(variance, rel=1e-10)
    assert deflated_sharpe_ratio(SMALL, unrecorded) == pytest.approx(expected, rel=1e-10)
    assert deflated_sharpe_ratio(SMALL, unrecorded) < probabilistic_sharpe_ratio(SMALL, 0.0)
    # the same N given as a count beside no recorded Sharpes
    assert deflated_sharpe_ratio(SMALL, [], n_trials=20) == pytest.approx(expected, rel=1e-10)


def test_n_trials_counts_unrecorded_trials_beside_the_recorded_sharpes():
    recorded = [0.05, 0.02, 0.08]
    as_nan = dsr_trials(0.10, 500, 0.0, 3.0, [*recorded, math.nan, math.nan])
    as_count = dsr_trials(0.10, 500, 0.0, 3.0, recorded, n_trials=6)
    assert as_nan == as_count == (6, pytest.approx(0.001225, rel=1e-12), "trials")
    r = _series_with_sharpe(1.0, 500)
    assert sharpe_summary(r, None, 252, recorded, n_trials=6)["stats.dsr_trials"] == 6.0
    unrecorded_only = sharpe_summary(r, None, 252, [], n_trials=4)
    assert unrecorded_only["stats.dsr_sr_variance"] == pytest.approx(
        dsr_trials(*return_moments(r)).sr_variance, rel=1e-12
    )
    assert "Deflated for 4 comparable trials" in unrecorded_only["interpretation"]
    assert "from the SR estimator's asymptotic variance" in unrecorded_only["interpretation"]
    with pytest.raises(ValueError, match="fewer than the 3 trial Sharpes"):
        dsr_trials(0.10, 500, 0.0, 3.0, recorded, n_trials=3)


def test_sr0_by_hand_for_four_trials():
    # candidate 0.10, others 0.05, 0.02, 0.08 (per bar): mean 0.0625, squared deviations
    # 0.00140625 + 0.00015625 + 0.00180625 + 0.00030625 = 0.003675, / 3 -> V[SR] = 0.001225, sd 0.035.
    # SR0 = 0.035 * (0.42278 * Phi^-1(0.75) + 0.57722 * Phi^-1(1 - 1/(4e)))
    #     = 0.035 * (0.42278 * 0.67449 + 0.57722 * 1.32872) = 0.035 * 1.05215 = 0.036825
    trials = dsr_trials(0.10, 500, 0.0, 3.0, [0.05, 0.02, 0.08])
    assert trials == (4, pytest.approx(0.001225, rel=1e-12), "trials")
    sr0 = expected_max_sharpe(trials.n_trials, trials.sr_variance)
    assert sr0 == pytest.approx(0.036825, abs=2e-6)
    assert dsr_from_moments(0.10, 500, 0.0, 3.0, [0.05, 0.02, 0.08]) == pytest.approx(
        psr_from_moments(0.10, 500, 0.0, 3.0, sr0), rel=1e-12
    )


def test_dsr_falls_as_trials_grow_at_fixed_variance():
    sr, n, g3, g4 = 0.08, 1000, -0.5, 5.0
    dsrs = [dsr_from_moments(sr, n, g3, g4, _trials_with_variance(sr, k, 0.0004)) for k in (2, 5, 20, 100, 1000)]
    assert all(later < earlier for earlier, later in itertools.pairwise(dsrs))
    assert dsrs[0] < psr_from_moments(sr, n, g3, g4, 0.0)


def test_dsr_is_higher_when_the_trials_sharpes_are_clustered():
    sr, n = 0.08, 1000
    tight = dsr_from_moments(sr, n, 0.0, 3.0, [0.079, 0.081, 0.078, 0.080])
    spread = dsr_from_moments(sr, n, 0.0, 3.0, [0.0, 0.04, -0.03, 0.06])
    assert tight > spread
    assert tight == pytest.approx(psr_from_moments(sr, n, 0.0, 3.0, 0.0), abs=0.01)  # almost no selection


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
    s = sharpe_summary(r, None, periods_per_year=252)
    assert set(s) == {
        "stats.psr_zero", "stats.psr_baseline", "stats.min_trl", "stats.sharpe_diff_pvalue", "stats.dsr",
        "stats.dsr_trials", "stats.dsr_sr_variance", "stats.sharpe_sqrt_q", "stats.sharpe_lo", "interpretation",
    }
    assert s["stats.dsr_trials"] == 1.0
    assert s["stats.sharpe_sqrt_q"] == pytest.approx(0.3, rel=1e-9)
    assert s["stats.sharpe_lo"] == pytest.approx(
        sharpe_ratio(r, 1.0) * lo_annualisation_factor(r, 252), rel=1e-12
    )
    assert "No other comparable trials" in s["interpretation"]
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
    others = [0.05 / math.sqrt(252), 0.4 / math.sqrt(252), 0.9 / math.sqrt(252), math.nan]
    s = sharpe_summary(r, base, periods_per_year=252, trial_sharpes=others)
    assert s["stats.sharpe_diff_pvalue"] == pytest.approx(ledoit_wolf_sharpe_test(r, base)["p_value"], rel=1e-12)
    assert s["stats.psr_baseline"] == pytest.approx(
        probabilistic_sharpe_ratio(r, benchmark_sr=0.2 / math.sqrt(252)), rel=1e-9
    )
    assert s["stats.dsr"] < s["stats.psr_zero"]
    assert s["stats.dsr_trials"] == 5.0
    sr = sharpe_ratio(r, 1.0)
    assert s["stats.dsr_sr_variance"] == pytest.approx(np.var([sr, *others[:3]], ddof=1), rel=1e-12)
    assert s["stats.dsr"] == pytest.approx(deflated_sharpe_ratio(r, others), rel=1e-12)
    assert "Deflated for 5 comparable trials" in s["interpretation"]
    assert "from the variance of the trials' Sharpes" in s["interpretation"]
    assert not any(key.startswith("stats.vs_champion") for key in s)
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


def test_sharpe_summary_against_the_champion():
    champion = _series_with_sharpe(1.0, 1000, seed=4)
    same = sharpe_summary(champion, None, 252, champion_returns=champion.copy())
    assert same["stats.vs_champion.sharpe_diff"] == pytest.approx(0.0, abs=1e-12)
    assert same["stats.vs_champion.pvalue_worse"] == pytest.approx(0.5, abs=1e-9)
    assert "Against the champion (Sharpe 1.00): difference +0.00" in same["interpretation"]

    noise = np.random.default_rng(5).normal(0.0, 0.004, 1000)
    worse = 0.8 * champion + noise - 0.0015  # correlated with the champion, ~2.4 lower annual Sharpe
    found_worse = sharpe_summary(worse, None, 252, champion_returns=champion)
    assert found_worse["stats.vs_champion.sharpe_diff"] == pytest.approx(
        sharpe_ratio(worse, 252) - sharpe_ratio(champion, 252), rel=1e-12
    )
    assert found_worse["stats.vs_champion.sharpe_diff"] < -1.0
    p_worse = found_worse["stats.vs_champion.pvalue_worse"]
    assert p_worse < 0.01
    assert p_worse == pytest.approx(1.0 - ledoit_wolf_sharpe_test(worse, champion)["p_value"], abs=1e-12)
    assert "significantly worse at 5%" in found_worse["interpretation"]
    assert "not significantly worse" not in found_worse["interpretation"]

    better = sharpe_summary(champion, None, 252, champion_returns=worse)
    assert better["stats.vs_champion.pvalue_worse"] > 0.99
    assert "not significantly worse at 5%" in better["interpretation"]


def test_sharpe_summary_champion_comparison_with_a_constant_series_has_no_pvalue():
    champion = _series_with_sharpe(1.0, 300, seed=6)
    s = sharpe_summary(np.zeros(300), None, 252, champion_returns=champion)
    assert s["stats.vs_champion.pvalue_worse"] is None
    assert s["stats.vs_champion.sharpe_diff"] == pytest.approx(-sharpe_ratio(champion, 252), rel=1e-12)
    assert "candidate returns are constant" in s["interpretation"]
    with pytest.raises(ValueError, match="same bars|candidate's bars"):
        sharpe_summary(champion, None, 252, champion_returns=champion[:-1])


def test_a_flat_champion_is_compared_as_sharpe_zero_so_it_cannot_block_every_candidate():
    good = _series_with_sharpe(1.5, 500, seed=7)
    s = sharpe_summary(good, None, 252, champion_returns=np.zeros(500))
    assert s["stats.vs_champion.sharpe_diff"] == pytest.approx(sharpe_ratio(good, 252), rel=1e-12)
    assert s["stats.vs_champion.pvalue_worse"] == pytest.approx(s["stats.psr_zero"])
    assert s["stats.vs_champion.pvalue_worse"] > 0.95 and "flat book" in s["interpretation"]
    losing = sharpe_summary(-good, None, 252, champion_returns=np.zeros(500))
    assert losing["stats.vs_champion.pvalue_worse"] < 0.05  # worse than doing nothing: found worse


# ------------------------------------------------------------------ Lo (2002)


def _ar1(rho, n, seed, mean=0.0005):
    e = np.random.default_rng(seed).normal(0.0, 0.01, n)
    x = np.empty(n)
    x[0] = e[0]
    for t in range(1, n):
        x[t] = rho * x[t - 1] + e[t]
    return mean + x


def _eta_ar1(q, rho):
    """Closed form: sum_{k=1}^{q-1} (q - k) rho^k = rho / (1 - rho) * (q - (1 - rho^q) / (1 - rho))."""
    return q / math.sqrt(q + 2 * rho / (1 - rho) * (q - (1 - rho**q) / (1 - rho)))


def test_lo_eta_formula():
    assert lo_eta_from_autocorrelations(252, np.zeros(251)) == pytest.approx(math.sqrt(252), rel=1e-15)
    assert lo_eta_from_autocorrelations(2, [0.5]) == pytest.approx(2 / math.sqrt(2 + 2 * 0.5), rel=1e-15)
    for q, rho in ((12, 0.3), (12, -0.4), (252, 0.1), (252, -0.2)):
        rhos = rho ** np.arange(1, q)
        assert lo_eta_from_autocorrelations(q, rhos) == pytest.approx(_eta_ar1(q, rho), rel=1e-12)
    with pytest.raises(ValueError, match="at most q - 1"):
        lo_eta_from_autocorrelations(3, [0.1, 0.1, 0.1])


def test_lo_iid_returns_give_sqrt_q():
    r = np.random.default_rng(11).normal(0.0005, 0.01, 20_000)
    assert lo_annualisation_factor(r, 252) == pytest.approx(math.sqrt(252), rel=0.04)
    assert lo_annualisation_factor(r, 12) == pytest.approx(math.sqrt(12), rel=0.02)
    assert lo_annualisation_factor(np.zeros(50), 252) == pytest.approx(math.sqrt(252))


@pytest.mark.parametrize(("q", "tolerance"), [(12, 0.04), (252, 0.06)])  # ~3.5 sd over seeds at n = 50,000
@pytest.mark.parametrize("rho", [0.3, -0.3])
def test_lo_ar1_returns_match_the_closed_form(q, tolerance, rho):
    # Lo's example: positively autocorrelated returns -> eta < sqrt(q) (sqrt(q) overstates the Sharpe);
    # closed form for rho = 0.3: eta(12) = 0.75 sqrt(12), eta(252) = 0.73 sqrt(252)
    r = _ar1(rho, 50_000, seed=12)
    eta = lo_annualisation_factor(r, q)
    assert eta == pytest.approx(_eta_ar1(q, rho), rel=tolerance)
    assert (eta < math.sqrt(q)) if rho > 0 else (eta > math.sqrt(q))


def test_lo_default_lag_cap():
    assert lo_max_lag(252, 756) == newey_west_lags(756) == 6
    assert lo_max_lag(12, 100_000) == 11  # q - 1
    assert lo_max_lag(1, 500) == 0
    assert lo_annualisation_factor(SMALL, 1) == 1.0
    with pytest.raises(ValueError, match="max_lag"):
        lo_annualisation_factor(SMALL, 252, max_lag=8)


# ------------------------------------------------------------------ confidence interval, sub-periods


def test_sharpe_confidence_interval_matches_the_standard_error_and_covers():
    r = _series_with_sharpe(1.0, 756)
    sr, n, g3, g4 = _hand_moments(r)
    se = math.sqrt((1 - g3 * sr + (g4 - 1) / 4 * sr**2) / (n - 1))
    low, high = sharpe_confidence_interval(r, 252, level=0.9)
    assert low == pytest.approx((sr - norm.ppf(0.95) * se) * math.sqrt(252), rel=1e-10)
    assert high == pytest.approx((sr + norm.ppf(0.95) * se) * math.sqrt(252), rel=1e-10)

    rng = np.random.default_rng(21)
    true_sr = 0.05  # per bar; annual 0.79
    covered = 0
    for _ in range(200):
        low, high = sharpe_confidence_interval(rng.normal(true_sr * 0.01, 0.01, 500), 252)
        covered += low <= true_sr * math.sqrt(252) <= high
    assert 0.88 <= covered / 200 <= 0.99


def test_sharpe_confidence_interval_shrinks_with_n():
    rng = np.random.default_rng(22)
    widths = []
    for n in (250, 1000, 4000):
        low, high = sharpe_confidence_interval(rng.normal(0.0005, 0.01, n), 252)
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] / widths[0] == pytest.approx(0.25, rel=0.1)  # 1 / sqrt(n)


def test_sharpe_by_period_years_quarters_and_empty_periods():
    days = pd.bdate_range("2020-03-02", "2023-06-30")
    keep = (days.year != 2022) | (days == pd.Timestamp("2022-07-01"))  # 2022: one bar only
    index = days[keep]
    r = np.random.default_rng(31).normal(0.0005, 0.01, len(index))
    r[index.year == 2021] = 0.001  # constant: zero variance
    rows = sharpe_by_period(index, r, 252)
    assert [(label, bars) for label, _, bars in rows] == [
        ("2020", int((index.year == 2020).sum())), ("2021", int((index.year == 2021).sum())), ("2022", 1),
        ("2023", int((index.year == 2023).sum())),
    ]
    assert rows[0][1] == pytest.approx(sharpe_ratio(r[index.year == 2020], 252), rel=1e-12)
    assert rows[3][1] == pytest.approx(sharpe_ratio(r[index.year == 2023], 252), rel=1e-12)
    assert math.isnan(rows[1][1]) and math.isnan(rows[2][1])

    quarters = sharpe_by_period(index.tz_localize("America/New_York"), r, 252, freq="QE")
    assert quarters[0][0] == "2020Q1" and quarters[-1][0] == "2023Q2"
    assert ("2022Q1", 0) in [(label, bars) for label, _, bars in quarters]
    assert sum(bars for _, _, bars in quarters) == len(r)
    with pytest.raises(ValueError, match="timestamps"):
        sharpe_by_period(index[:-1], r, 252)
