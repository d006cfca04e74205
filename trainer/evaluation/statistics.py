"""Is the backtest's Sharpe ratio real? The Sharpe statistics the gates and the report use.

Every formula works on the *per-period* (non-annualised) Sharpe ratio SR = mean(r) / std(r, ddof=1)
of the per-bar returns; annualised values (SR * sqrt(periods_per_year)) appear only in outputs.
Skewness g3 and kurtosis g4 are the sample moments (biased, non-excess: g4 = 3 for a normal),
as in Bailey & López de Prado.

References
- [BLdP12] D. Bailey, M. López de Prado (2012), "The Sharpe Ratio Efficient Frontier",
  Journal of Risk 15(2): Probabilistic Sharpe Ratio and Minimum Track Record Length.
- [BLdP14] D. Bailey, M. López de Prado (2014), "The Deflated Sharpe Ratio: Correcting for
  Selection Bias, Backtest Overfitting and Non-Normality", Journal of Portfolio Management 40(5).
- [Mer02] A. Mertens (2002), asymptotic variance of the Sharpe ratio estimator under non-normal iid returns.
- [JK81] J. Jobson, B. Korkie (1981), "Performance Hypothesis Testing with the Sharpe and Treynor
  Measures", Journal of Finance 36(4); [Mem03] C. Memmel (2003), "Performance Hypothesis Testing
  with the Sharpe Ratio", Finance Letters 1: the corrected variance.
- [LW08] O. Ledoit, M. Wolf (2008), "Robust Performance Hypothesis Testing with the Sharpe Ratio",
  Journal of Empirical Finance 15(5): the delta method with a HAC covariance.
- [NW94] W. Newey, K. West (1994): the Bartlett kernel and the lag rule floor(4 (T/100)^(2/9)).

Which paired test the report uses: `stats.sharpe_diff_pvalue` comes from Ledoit–Wolf with a
Newey–West (Bartlett) HAC covariance, one-sided (H1: candidate Sharpe > baseline Sharpe), because
daily strategy returns are fat-tailed and autocorrelated and Jobson–Korkie/Memmel assumes iid
normal returns. `sharpe_difference_test` (Memmel) stays available as the textbook cross-check.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

from trainer.evaluation.metrics import ZERO_TOLERANCE, sharpe_ratio

EULER_MASCHERONI = 0.5772156649015329

ArrayLike = Sequence[float] | np.ndarray


# --------------------------------------------------------------------------------------------
# Moments
# --------------------------------------------------------------------------------------------


def _returns(values: ArrayLike, name: str = "returns") -> np.ndarray:
    r = np.asarray(values, dtype=np.float64)
    if r.ndim != 1 or r.size < 3:
        raise ValueError(f"{name}: need a one-dimensional series of at least 3 returns, got shape {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return r


def return_moments(returns: ArrayLike) -> tuple[float, int, float, float]:
    """(per-period SR, n, skewness g3, kurtosis g4) of a return series.

    A series with zero variance has SR 0 (see metrics.sharpe_ratio) and is given the normal
    moments g3 = 0, g4 = 3 (its skewness and kurtosis are 0/0).
    """
    r = _returns(returns)
    sr = sharpe_ratio(r, periods_per_year=1.0)
    if np.std(r) <= ZERO_TOLERANCE:
        return sr, r.size, 0.0, 3.0
    skew = float(sps.skew(r, bias=True))
    kurt = float(sps.kurtosis(r, fisher=False, bias=True))
    return sr, r.size, skew, kurt


def _sr_variance_factor(sr: float, skew: float, kurtosis: float) -> float:
    """1 - g3*SR + (g4 - 1)/4 * SR^2  [Mer02]; >= 0 for any distribution since g4 >= g3^2 + 1."""
    return max(1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr, 1e-12)


def sharpe_standard_error(sr: float, n: int, skew: float = 0.0, kurtosis: float = 3.0) -> float:
    """Standard error of the per-period SR estimator [Mer02, BLdP12]:
    sqrt( (1 - g3*SR + (g4 - 1)/4 * SR^2) / (n - 1) )."""
    return math.sqrt(_sr_variance_factor(sr, skew, kurtosis) / (n - 1))


# --------------------------------------------------------------------------------------------
# Probabilistic Sharpe Ratio and Minimum Track Record Length [BLdP12]
# --------------------------------------------------------------------------------------------


def psr_from_moments(sr: float, n: int, skew: float, kurtosis: float, benchmark_sr: float = 0.0) -> float:
    """PSR(SR*) = Phi( (SR - SR*) * sqrt(n - 1) / sqrt(1 - g3*SR + (g4 - 1)/4 * SR^2) )  [BLdP12].

    The probability that the true per-period Sharpe exceeds `benchmark_sr` given the estimate
    `sr` from `n` returns with skewness `skew` and (non-excess) kurtosis `kurtosis`.
    """
    if n < 2:
        raise ValueError(f"PSR needs n >= 2 returns, got {n}")
    z = (sr - benchmark_sr) * math.sqrt(n - 1) / math.sqrt(_sr_variance_factor(sr, skew, kurtosis))
    return float(sps.norm.cdf(z))


def probabilistic_sharpe_ratio(returns: ArrayLike, benchmark_sr: float = 0.0) -> float:
    """PSR of a return series against a per-period benchmark Sharpe `benchmark_sr` (see psr_from_moments)."""
    sr, n, skew, kurt = return_moments(returns)
    return psr_from_moments(sr, n, skew, kurt, benchmark_sr)


def min_trl_from_moments(
    sr: float, skew: float, kurtosis: float, benchmark_sr: float = 0.0, confidence: float = 0.95
) -> float:
    """Minimum Track Record Length, in returns (bars) [BLdP12]:

        MinTRL = 1 + (1 - g3*SR + (g4 - 1)/4 * SR^2) * ( Phi^-1(confidence) / (SR - SR*) )^2

    the number of returns needed for PSR(SR*) to reach `confidence` if SR, g3, g4 stay as
    measured. +inf when SR <= SR* (no track record is long enough).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if sr <= benchmark_sr:
        return math.inf
    z = sps.norm.ppf(confidence)
    return float(1.0 + _sr_variance_factor(sr, skew, kurtosis) * (z / (sr - benchmark_sr)) ** 2)


def min_track_record_length(returns: ArrayLike, benchmark_sr: float = 0.0, confidence: float = 0.95) -> float:
    """MinTRL (in bars) of a return series against a per-period benchmark (see min_trl_from_moments)."""
    sr, _, skew, kurt = return_moments(returns)
    return min_trl_from_moments(sr, skew, kurt, benchmark_sr, confidence)


# --------------------------------------------------------------------------------------------
# Deflated Sharpe Ratio [BLdP14]
# --------------------------------------------------------------------------------------------


def expected_max_sharpe(n_trials: int, sr_variance: float) -> float:
    """SR0, the expected maximum per-period SR of `n_trials` unskilled trials [BLdP14]:

        SR0 = sqrt(V[SR]) * ( (1 - gamma) * Phi^-1(1 - 1/N) + gamma * Phi^-1(1 - 1/(N e)) )

    with gamma the Euler–Mascheroni constant. N = 1 gives 0 (no selection, nothing to deflate).
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if sr_variance < 0:
        raise ValueError(f"sr_variance must be >= 0, got {sr_variance}")
    if n_trials == 1:
        return 0.0
    g = EULER_MASCHERONI
    quantiles = (1.0 - g) * sps.norm.ppf(1.0 - 1.0 / n_trials) + g * sps.norm.ppf(1.0 - 1.0 / (n_trials * math.e))
    return float(math.sqrt(sr_variance) * quantiles)


def dsr_from_moments(
    sr: float, n: int, skew: float, kurtosis: float, n_trials: int, sr_variance: float | None = None
) -> float:
    """DSR = PSR(SR0) with SR0 = expected_max_sharpe(n_trials, V[SR])  [BLdP14].

    `sr_variance` is the variance of the per-period SR estimates across the trials. When only
    this candidate's returns are known (None), V[SR] is the asymptotic variance of the SR
    estimator, (1 - g3*SR + (g4 - 1)/4 * SR^2) / (n - 1) [Mer02]: under the null that every
    trial has the same true Sharpe, their estimates differ by estimation error alone, and this is
    its variance.
    """
    variance = sharpe_standard_error(sr, n, skew, kurtosis) ** 2 if sr_variance is None else sr_variance
    return psr_from_moments(sr, n, skew, kurtosis, benchmark_sr=expected_max_sharpe(n_trials, variance))


def deflated_sharpe_ratio(returns: ArrayLike, n_trials: int, sr_variance_across_trials: float | None = None) -> float:
    """DSR of the selected candidate's returns after `n_trials` trials (see dsr_from_moments).

    `sr_variance_across_trials` is in per-period SR units (divide an annualised variance by
    periods_per_year). With n_trials = 1 the DSR is PSR against 0.
    """
    sr, n, skew, kurt = return_moments(returns)
    return dsr_from_moments(sr, n, skew, kurt, n_trials, sr_variance_across_trials)


# --------------------------------------------------------------------------------------------
# Paired tests of a Sharpe difference (candidate a vs baseline b on the same bars)
# --------------------------------------------------------------------------------------------


def _paired(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    ra, rb = _returns(a, "candidate returns"), _returns(b, "baseline returns")
    if ra.size != rb.size:
        raise ValueError(f"paired test needs returns on the same bars: {ra.size} vs {rb.size}")
    if np.std(ra) <= ZERO_TOLERANCE or np.std(rb) <= ZERO_TOLERANCE:
        raise ValueError("paired Sharpe test: a return series has zero variance")
    return ra, rb


def _test_result(z: float, sr_a: float, sr_b: float, se: float, method: str) -> dict[str, float | str]:
    return {
        "z": z,
        "p_value": float(sps.norm.sf(z)),  # one-sided, H1: SR_a > SR_b
        "p_value_two_sided": float(2.0 * sps.norm.sf(abs(z))),
        "sr_a": sr_a,
        "sr_b": sr_b,
        "diff": sr_a - sr_b,
        "se": se,
        "method": method,
    }


def sharpe_difference_test(a: ArrayLike, b: ArrayLike) -> dict[str, float | str]:
    """Jobson–Korkie test with Memmel's correction [JK81, Mem03] of H0: SR_a = SR_b.

        theta = (1/T) * ( 2 (1 - rho) + 1/2 (SR_a^2 + SR_b^2 - 2 SR_a SR_b rho^2) )
        z = (SR_a - SR_b) / sqrt(theta)

    with per-period SR = mean / std(ddof=1) and rho the correlation of a and b. Assumes iid
    normal returns. `p_value` is one-sided (H1: SR_a > SR_b: the candidate beats the baseline);
    `p_value_two_sided` is also returned. z = 0 when the Sharpes are equal.
    """
    ra, rb = _paired(a, b)
    n = ra.size
    sr_a, sr_b = sharpe_ratio(ra, 1.0), sharpe_ratio(rb, 1.0)
    rho = float(np.corrcoef(ra, rb)[0, 1])
    theta = (2.0 * (1.0 - rho) + 0.5 * (sr_a**2 + sr_b**2 - 2.0 * sr_a * sr_b * rho**2)) / n
    se = math.sqrt(max(theta, 0.0))
    z = 0.0 if se <= ZERO_TOLERANCE else (sr_a - sr_b) / se
    return _test_result(float(z), sr_a, sr_b, se, "jobson_korkie_memmel")


def newey_west_lags(n: int) -> int:
    """Bartlett-kernel truncation lag, floor(4 * (n / 100) ** (2/9))  [NW94]."""
    return int(math.floor(4.0 * (n / 100.0) ** (2.0 / 9.0)))


def ledoit_wolf_sharpe_test(a: ArrayLike, b: ArrayLike, lags: int | None = None) -> dict[str, float | str]:
    """Ledoit–Wolf (2008) HAC test of H0: SR_a = SR_b [LW08].

    With u = (mu_a, mu_b, g_a, g_b) the sample first and second moments (g = mean(r^2)),
    SR = mu / sqrt(g - mu^2) (population std, as in [LW08]) and f(u) = SR_a - SR_b:

        grad f = ( g_a / (g_a - mu_a^2)^1.5,  -g_b / (g_b - mu_b^2)^1.5,
                  -mu_a / (2 (g_a - mu_a^2)^1.5),  mu_b / (2 (g_b - mu_b^2)^1.5) )
        Psi    = T/(T-4) * ( Gamma_0 + sum_{j=1..L} (1 - j/(L+1)) (Gamma_j + Gamma_j') )
        se     = sqrt( grad' Psi grad / T ),   z = (SR_a - SR_b) / se

    where Gamma_j is the lag-j autocovariance of y_t = (a_t - mu_a, b_t - mu_b, a_t^2 - g_a, b_t^2 - g_b)
    (Newey–West / Bartlett kernel; L defaults to newey_west_lags(T); T/(T-4) is [LW08]'s
    small-sample factor). Robust to fat tails and autocorrelation. p-values as in
    sharpe_difference_test.
    """
    ra, rb = _paired(a, b)
    n = ra.size
    lag = newey_west_lags(n) if lags is None else int(lags)
    if lag < 0 or lag >= n:
        raise ValueError(f"lags must be in 0..{n - 1}, got {lag}")
    mu_a, mu_b = ra.mean(), rb.mean()
    g_a, g_b = np.mean(ra**2), np.mean(rb**2)
    var_a, var_b = g_a - mu_a**2, g_b - mu_b**2
    sr_a, sr_b = float(mu_a / math.sqrt(var_a)), float(mu_b / math.sqrt(var_b))
    grad = np.array(
        [g_a / var_a**1.5, -g_b / var_b**1.5, -mu_a / (2.0 * var_a**1.5), mu_b / (2.0 * var_b**1.5)]
    )
    y = np.column_stack([ra - mu_a, rb - mu_b, ra**2 - g_a, rb**2 - g_b])
    psi = y.T @ y / n
    for j in range(1, lag + 1):
        gamma_j = y[j:].T @ y[:-j] / n
        psi += (1.0 - j / (lag + 1.0)) * (gamma_j + gamma_j.T)
    psi *= n / (n - 4.0)
    se = math.sqrt(max(float(grad @ psi @ grad) / n, 0.0))
    z = 0.0 if se <= ZERO_TOLERANCE else (sr_a - sr_b) / se
    return _test_result(float(z), sr_a, sr_b, se, f"ledoit_wolf_hac_bartlett_{lag}")


# --------------------------------------------------------------------------------------------
# The report's summary
# --------------------------------------------------------------------------------------------


def sharpe_summary(
    returns: ArrayLike,
    baseline_returns: ArrayLike | None,
    periods_per_year: float,
    n_trials: int = 1,
    confidence: float = 0.95,
) -> dict[str, float | str | None]:
    """The `stats.*` metrics of docs/contracts.md plus an `interpretation` sentence.

    - `stats.psr_zero`: PSR against SR* = 0.
    - `stats.psr_baseline`: PSR against the baseline's measured per-period Sharpe, taken as a
      known constant (the paired test below also accounts for the baseline's estimation error).
    - `stats.min_trl`: MinTRL against 0 at `confidence`, in bars (+inf when SR <= 0).
    - `stats.sharpe_diff_pvalue`: one-sided Ledoit–Wolf HAC p-value of H1: SR > SR_baseline.
    - `stats.dsr`: DSR after `n_trials` trials, V[SR] from the SR estimator's asymptotic variance.
    Baseline entries are None when `baseline_returns` is None.
    """
    sr, n, skew, kurt = return_moments(returns)
    annual = math.sqrt(periods_per_year)
    years = n / periods_per_year
    psr_zero = psr_from_moments(sr, n, skew, kurt, 0.0)
    min_trl = min_trl_from_moments(sr, skew, kurt, 0.0, confidence)
    dsr = dsr_from_moments(sr, n, skew, kurt, n_trials)

    psr_baseline: float | None = None
    diff_pvalue: float | None = None
    baseline_text = "No baseline returns: no comparison."
    if baseline_returns is not None:
        sr_base = sharpe_ratio(_returns(baseline_returns, "baseline returns"), 1.0)
        psr_baseline = psr_from_moments(sr, n, skew, kurt, sr_base)
        flat = [name for name, r in (("candidate", returns), ("baseline", baseline_returns))
                if np.std(_returns(r)) <= ZERO_TOLERANCE]
        if flat:
            # A book that never moved (e.g. never traded) has no Sharpe difference to test: the
            # p-value stays missing, so a gate on it fails as "missing" instead of passing.
            baseline_text = (
                f"Against the baseline (Sharpe {sr_base * annual:.2f}): PSR = {psr_baseline:.2f}; no paired "
                f"test: the {' and '.join(flat)} returns are constant."
            )
        else:
            diff_pvalue = float(ledoit_wolf_sharpe_test(returns, baseline_returns)["p_value"])
            verdict = "significantly better" if diff_pvalue <= 1.0 - confidence else "not significantly better"
            baseline_text = (
                f"Against the baseline (Sharpe {sr_base * annual:.2f}): PSR = {psr_baseline:.2f}; paired "
                f"Ledoit-Wolf test p = {diff_pvalue:.3f} (one-sided), {verdict} at {1.0 - confidence:.0%}."
            )

    level = f"{confidence:.0%}"
    if psr_zero >= confidence:
        psr_text = f"PSR(0) = {psr_zero:.2f} >= {confidence:.2f}: distinguishable from zero at {level}."
    else:
        psr_text = f"PSR(0) = {psr_zero:.2f} < {confidence:.2f}: not distinguishable from zero at {level}."
    if math.isinf(min_trl):
        trl_text = "With a Sharpe <= 0 no track record length reaches that confidence."
    else:
        trl_text = (
            f"At this Sharpe, {level} confidence needs {min_trl:,.0f} bars "
            f"({min_trl / periods_per_year:.1f} years); the test has {n:,}."
        )
    interpretation = " ".join(
        [
            f"Annualised Sharpe {sr * annual:.2f} over {n:,} bars ({years:.1f} years,"
            f" skew {skew:.2f}, kurtosis {kurt:.2f}).",
            psr_text,
            trl_text,
            f"Deflated for {n_trials} trial{'s' if n_trials != 1 else ''}: DSR = {dsr:.2f}.",
            baseline_text,
        ]
    )
    return {
        "stats.psr_zero": psr_zero,
        "stats.psr_baseline": psr_baseline,
        "stats.min_trl": min_trl,
        "stats.sharpe_diff_pvalue": diff_pvalue,
        "stats.dsr": dsr,
        "interpretation": interpretation,
    }
