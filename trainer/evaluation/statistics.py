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
- [Lo02] A. Lo (2002), "The Statistics of Sharpe Ratios", Financial Analysts Journal 58(4):
  annualising a Sharpe ratio of autocorrelated returns.
- [Opd07] J. Opdyke (2007), "Comparing Sharpe Ratios: So Where Are the p-Values?", Journal of
  Asset Management 8(5): the non-normal iid standard error behind the confidence interval.

Which paired test the report uses: `stats.sharpe_diff_pvalue` comes from Ledoit–Wolf with a
Newey–West (Bartlett) HAC covariance, one-sided (H1: candidate Sharpe > baseline Sharpe), because
daily strategy returns are fat-tailed and autocorrelated and Jobson–Korkie/Memmel assumes iid
normal returns. `sharpe_difference_test` (Memmel) stays available as the textbook cross-check.
Against the champion the same test is read in the other tail: `stats.vs_champion.pvalue_worse`
is the one-sided p-value of H1: candidate Sharpe < champion Sharpe, so a small value means the
candidate was found worse.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
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
    """SR0, the expected maximum per-period SR of `n_trials` unskilled trials [BLdP14, eq. for SR0]:

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


class DsrTrials(NamedTuple):
    """What the DSR was deflated for."""

    n_trials: int
    """N: the comparable trials, this candidate included."""
    sr_variance: float
    """V[SR] in per-period SR units."""
    variance_source: str
    """`trials` (sample variance of the trials' Sharpes) or `asymptotic` (the SR estimator's)."""


def dsr_trials(
    sr: float,
    n: int,
    skew: float,
    kurtosis: float,
    trial_sharpes: Sequence[float] | None = None,
    *,
    n_trials: int | None = None,
) -> DsrTrials:
    """N and V[SR] for the DSR of a candidate with per-period SR `sr` from `n` returns [BLdP14].

    `trial_sharpes` are the recorded per-period (non-annualised: divide an annualised Sharpe by
    sqrt(periods_per_year)) Sharpe ratios of the *other* comparable trials: the other versions
    of the same symbol, profile and stage. The candidate's own `sr` is added here.

    - N = len(trial_sharpes) + 1. A trial whose Sharpe was not recorded (None / NaN) still
      counts in N: it was tried, and selection happened over it. A caller that holds only the
      recorded Sharpes passes the full count as `n_trials` (>= len(trial_sharpes) + 1) instead.
    - V[SR] = the sample variance (ddof=1) of the finite Sharpes, the candidate's included,
      when there are at least 2 of them: [BLdP14] estimate V[SR] across the trials actually run.
    - Otherwise V[SR] = the asymptotic variance of the SR estimator,
      (1 - g3*SR + (g4 - 1)/4 * SR^2) / (n - 1) [Mer02]: under the null that every trial has the
      same true Sharpe, their estimates differ by estimation error alone, and this is its variance.
    """
    given = [] if trial_sharpes is None else list(trial_sharpes)
    others = np.asarray([math.nan if s is None else s for s in given], dtype=np.float64)
    finite = np.concatenate([[sr], others[np.isfinite(others)]])
    if n_trials is None:
        n_trials = int(others.size) + 1
    elif n_trials < others.size + 1:
        raise ValueError(f"n_trials = {n_trials} is fewer than the {others.size} trial Sharpes plus the candidate")
    if finite.size >= 2:
        return DsrTrials(n_trials, float(np.var(finite, ddof=1)), "trials")
    return DsrTrials(n_trials, sharpe_standard_error(sr, n, skew, kurtosis) ** 2, "asymptotic")


def dsr_from_moments(
    sr: float,
    n: int,
    skew: float,
    kurtosis: float,
    trial_sharpes: Sequence[float] | None = None,
    *,
    n_trials: int | None = None,
) -> float:
    """DSR = PSR(SR0), SR0 = expected_max_sharpe(N, V[SR]) with N, V[SR] from dsr_trials [BLdP14].

    With no other trials (N = 1) SR0 = 0 and the DSR is PSR against 0.
    """
    trials = dsr_trials(sr, n, skew, kurtosis, trial_sharpes, n_trials=n_trials)
    sr0 = expected_max_sharpe(trials.n_trials, trials.sr_variance)
    return psr_from_moments(sr, n, skew, kurtosis, benchmark_sr=sr0)


def deflated_sharpe_ratio(
    returns: ArrayLike, trial_sharpes: Sequence[float] | None = None, *, n_trials: int | None = None
) -> float:
    """DSR of the candidate's returns among the comparable trials' per-period Sharpes (see dsr_trials)."""
    sr, n, skew, kurt = return_moments(returns)
    return dsr_from_moments(sr, n, skew, kurt, trial_sharpes, n_trials=n_trials)


# --------------------------------------------------------------------------------------------
# Annualisation under autocorrelation [Lo02] and the Sharpe confidence interval [Mer02, Opd07]
# --------------------------------------------------------------------------------------------


def lo_eta_from_autocorrelations(q: int, autocorrelations: ArrayLike) -> float:
    """eta(q) = q / sqrt( q + 2 * sum_{k=1}^{m} (q - k) rho_k )  [Lo02, eq. for SR(q)].

    The factor that turns a per-period SR into the SR of q-period sums, given the
    autocorrelations rho_1..rho_m of the per-period returns (m <= q - 1; lags past m count as 0).
    For iid returns eta(q) = sqrt(q). NaN when the bracket (the variance ratio of a q-period sum
    times q) is not positive, which sample autocorrelations can produce but true ones cannot.
    """
    if q < 1:
        raise ValueError(f"q must be >= 1, got {q}")
    rho = np.asarray(autocorrelations, dtype=np.float64)
    if rho.size > q - 1:
        raise ValueError(f"at most q - 1 = {q - 1} autocorrelations, got {rho.size}")
    k = np.arange(1, rho.size + 1)
    bracket = q + 2.0 * float(np.sum((q - k) * rho))
    return q / math.sqrt(bracket) if bracket > 0 else math.nan


def lo_max_lag(q: int, n: int) -> int:
    """Default number of autocorrelations in eta(q): min(q - 1, newey_west_lags(n), n - 1).

    Why not all q - 1 (or n/4): each sample autocorrelation carries noise ~ 1/sqrt(n) and bias
    ~ -1/n, and the sum weighs them by q - k ~ q. Over m lags that is noise ~ q * sqrt(m / n) and
    bias ~ -q * m / n in a bracket of size q. On iid returns, q = 252 and 3 years of bars
    (n = 756), n/4 = 189 lags give eta a median of 1.25 sqrt(q) and a 90% range of 0.77-2.3
    sqrt(q); the Newey–West count [NW94], 6 lags, gives 1.01 and 0.89-1.17. Autocorrelation that
    persists beyond the cap is under-corrected; pass `max_lag` to lo_annualisation_factor to
    choose otherwise.
    """
    return max(0, min(q - 1, newey_west_lags(n), n - 1))


def _autocorrelations(r: np.ndarray, lags: int) -> np.ndarray:
    """Sample autocorrelations rho_1..rho_lags (the usual biased estimator, as in [Lo02])."""
    d = r - r.mean()
    denom = float(d @ d)
    if denom <= ZERO_TOLERANCE**2 * r.size:
        return np.zeros(lags)  # constant returns: no autocorrelation to correct for
    return np.array([float(d[k:] @ d[:-k]) / denom for k in range(1, lags + 1)])


def lo_annualisation_factor(returns: ArrayLike, periods_per_year: float, max_lag: int | None = None) -> float:
    """Lo's autocorrelation-adjusted annualisation factor eta(q) for these returns [Lo02].

    q = periods_per_year rounded; rho_k are the returns' sample autocorrelations for
    k = 1..max_lag (default lo_max_lag(q, n)). The annualised Sharpe is SR * eta(q) in place of
    SR * sqrt(q): positive autocorrelation (trend-following P&L, smoothed marks) gives
    eta < sqrt(q), so sqrt(q) overstates the annual Sharpe; negative gives eta > sqrt(q).
    """
    r = _returns(returns)
    q = round(periods_per_year)
    lags = lo_max_lag(q, r.size) if max_lag is None else int(max_lag)
    if not 0 <= lags <= min(q - 1, r.size - 1):
        raise ValueError(f"max_lag must be in 0..{min(q - 1, r.size - 1)}, got {lags}")
    return lo_eta_from_autocorrelations(q, _autocorrelations(r, lags))


def sharpe_confidence_interval(returns: ArrayLike, periods_per_year: float, level: float = 0.95) -> tuple[float, float]:
    """Annualised two-sided confidence interval of the Sharpe ratio [Mer02, Opd07]:

        (SR -+ Phi^-1((1 + level) / 2) * se) * sqrt(periods_per_year),
        se = sqrt( (1 - g3*SR + (g4 - 1)/4 * SR^2) / (n - 1) )

    (sharpe_standard_error: the non-normal iid standard error, with the skewness and kurtosis of
    the returns; n - 1 as in [BLdP12]). Autocorrelation is not accounted for.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    sr, n, skew, kurt = return_moments(returns)
    half = float(sps.norm.ppf(0.5 + level / 2.0)) * sharpe_standard_error(sr, n, skew, kurt)
    annual = math.sqrt(periods_per_year)
    return (sr - half) * annual, (sr + half) * annual


def _period_alias(freq: str) -> str:
    """A resample alias ("YE", "QE-MAR", "ME") as the matching Period alias ("Y", "Q-MAR", "M")."""
    match = re.fullmatch(r"(\d*)([YQM])E(-[A-Z]{3})?", freq)
    return f"{match[1]}{match[2]}{match[3] or ''}" if match else freq


def sharpe_by_period(
    timestamps: Sequence | pd.Index, returns: ArrayLike, periods_per_year: float, freq: str = "YE"
) -> list[tuple[str, float, int]]:
    """(label, annualised Sharpe, bars) per calendar period, first to last, empty periods included.

    `freq` is a pandas alias ("YE", "QE", "ME", "W", ...); labels are Period strings ("2021",
    "2021Q1", "2021-01"). A tz-aware index is grouped by its local dates. The Sharpe is
    mean / std(ddof=1) * sqrt(periods_per_year); NaN for a period with < 2 bars or zero variance.
    """
    r = np.asarray(returns, dtype=np.float64)
    index = pd.DatetimeIndex(timestamps)
    if r.ndim != 1 or r.size != len(index):
        raise ValueError(f"sharpe_by_period: {len(index)} timestamps but returns of shape {r.shape}")
    if r.size == 0:
        return []
    if not np.all(np.isfinite(r)) or index.hasnans:
        raise ValueError("sharpe_by_period: returns or timestamps contain NaN")
    if index.tz is not None:
        index = index.tz_localize(None)
    alias = _period_alias(freq)
    periods = index.to_period(alias)
    chunks = {period: part.to_numpy() for period, part in pd.Series(r, index=periods).groupby(level=0)}
    annual = math.sqrt(periods_per_year)
    rows = []
    for period in pd.period_range(periods.min(), periods.max(), freq=alias):
        chunk = chunks.get(period, np.empty(0))
        std = float(np.std(chunk, ddof=1)) if chunk.size >= 2 else 0.0
        sharpe = float(np.mean(chunk) / std * annual) if std > ZERO_TOLERANCE else math.nan
        rows.append((str(period), sharpe, int(chunk.size)))
    return rows


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


def _flat(named: Sequence[tuple[str, np.ndarray]]) -> list[str]:
    return [name for name, r in named if np.std(r) <= ZERO_TOLERANCE]


def sharpe_summary(
    returns: ArrayLike,
    baseline_returns: ArrayLike | None,
    periods_per_year: float,
    trial_sharpes: Sequence[float] | None = None,
    champion_returns: ArrayLike | None = None,
    confidence: float = 0.95,
    *,
    n_trials: int | None = None,
) -> dict[str, float | str | None]:
    """The `stats.*` metrics of docs/contracts.md plus an `interpretation` sentence.

    - `stats.psr_zero`: PSR against SR* = 0.
    - `stats.psr_baseline`: PSR against the baseline's measured per-period Sharpe, taken as a
      known constant (the paired test below also accounts for the baseline's estimation error).
    - `stats.min_trl`: MinTRL against 0 at `confidence`, in bars (+inf when SR <= 0).
    - `stats.sharpe_diff_pvalue`: one-sided Ledoit–Wolf HAC p-value of H1: SR > SR_baseline.
    - `stats.dsr`: DSR among the comparable trials; `trial_sharpes` are the other trials'
      per-period Sharpes, `n_trials` the optional full count N (see dsr_trials).
      `stats.dsr_trials` is N (candidate included) and `stats.dsr_sr_variance` the V[SR] used;
      whether V[SR] came from the trials or from the SR estimator's asymptotic variance is said
      in the interpretation (a string is no metric).
    - `stats.sharpe_sqrt_q`: SR * sqrt(q); `stats.sharpe_lo`: SR * eta(q), Lo's
      autocorrelation-adjusted annual Sharpe (None when eta is undefined); q = periods_per_year
      rounded, in both, so the two differ by the autocorrelation alone.
    - `stats.vs_champion.sharpe_diff` (annualised SR - champion's) and
      `stats.vs_champion.pvalue_worse`, the one-sided Ledoit–Wolf p-value of H1: SR < SR_champion
      (small = found worse; None when either series is constant): only when `champion_returns`
      (the champion's returns on the same bars) are given.
    Baseline entries are None when `baseline_returns` is None.
    """
    r = _returns(returns)
    sr, n, skew, kurt = return_moments(r)
    annual = math.sqrt(periods_per_year)
    years = n / periods_per_year
    psr_zero = psr_from_moments(sr, n, skew, kurt, 0.0)
    min_trl = min_trl_from_moments(sr, skew, kurt, 0.0, confidence)
    trials = dsr_trials(sr, n, skew, kurt, trial_sharpes, n_trials=n_trials)
    dsr = psr_from_moments(sr, n, skew, kurt, expected_max_sharpe(trials.n_trials, trials.sr_variance))
    q = round(periods_per_year)
    eta = lo_annualisation_factor(r, periods_per_year)
    sharpe_lo = sr * eta if math.isfinite(eta) else None
    significance = 1.0 - confidence

    psr_baseline: float | None = None
    diff_pvalue: float | None = None
    baseline_text = "No baseline returns: no comparison."
    if baseline_returns is not None:
        rb = _returns(baseline_returns, "baseline returns")
        sr_base = sharpe_ratio(rb, 1.0)
        psr_baseline = psr_from_moments(sr, n, skew, kurt, sr_base)
        flat = _flat([("candidate", r), ("baseline", rb)])
        if flat:
            # A book that never moved (e.g. never traded) has no Sharpe difference to test: the
            # p-value stays missing, so a gate on it fails as "missing" instead of passing.
            baseline_text = (
                f"Against the baseline (Sharpe {sr_base * annual:.2f}): PSR = {psr_baseline:.2f}; no paired "
                f"test: the {' and '.join(flat)} returns are constant."
            )
        else:
            diff_pvalue = float(ledoit_wolf_sharpe_test(r, rb)["p_value"])
            verdict = "significantly better" if diff_pvalue <= significance else "not significantly better"
            baseline_text = (
                f"Against the baseline (Sharpe {sr_base * annual:.2f}): PSR = {psr_baseline:.2f}; paired "
                f"Ledoit-Wolf test p = {diff_pvalue:.3f} (one-sided), {verdict} at {significance:.0%}."
            )

    champion: dict[str, float | None] = {}
    champion_text = ""
    if champion_returns is not None:
        rc = _returns(champion_returns, "champion returns")
        if rc.size != n:
            raise ValueError(f"champion returns must be on the candidate's bars: {rc.size} vs {n}")
        flat = _flat([("candidate", r), ("champion", rc)])
        # A champion that never moves (a flat book) earns Sharpe 0 with no estimation error, so
        # "candidate worse" is the one-sample test of SR < 0, whose p-value is PSR(0). Without
        # this, one flat champion would block every later candidate (its gate would be missing).
        sr_champ = 0.0 if flat == ["champion"] else sharpe_ratio(rc, 1.0)
        sharpe_diff = (sr - sr_champ) * annual
        pvalue_worse: float | None = None
        if flat == ["champion"]:
            pvalue_worse = psr_zero
            champion_text = (
                f"Against the champion (a flat book, Sharpe 0): difference {sharpe_diff:+.2f}; PSR(0) = "
                f"{psr_zero:.3f} is the one-sided p-value of 'worse than flat'."
            )
        elif flat:
            champion_text = (
                f"Against the champion (Sharpe {sr_champ * annual:.2f}): difference {sharpe_diff:+.2f}; no "
                f"paired test: the {' and '.join(flat)} returns are constant."
            )
        else:
            # H1: SR < SR_champion is the lower tail of the same z the baseline test uses
            pvalue_worse = float(sps.norm.cdf(ledoit_wolf_sharpe_test(r, rc)["z"]))
            verdict = "significantly worse" if pvalue_worse <= significance else "not significantly worse"
            champion_text = (
                f"Against the champion (Sharpe {sr_champ * annual:.2f}): difference {sharpe_diff:+.2f}; paired "
                f"Ledoit-Wolf test of 'worse' p = {pvalue_worse:.3f} (one-sided), {verdict} at {significance:.0%}."
            )
        champion = {"stats.vs_champion.sharpe_diff": sharpe_diff, "stats.vs_champion.pvalue_worse": pvalue_worse}

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
    lags = lo_max_lag(q, n)
    if sharpe_lo is None:
        lo_text = f"Lo's autocorrelation adjustment ({lags} lags) is undefined for these returns."
    else:
        lo_text = f"Adjusted for autocorrelation (Lo 2002, {lags} lags): {sharpe_lo:.2f} (eta {eta:.1f} vs sqrt(q) {math.sqrt(q):.1f})."
    if trials.n_trials == 1:
        dsr_text = f"No other comparable trials: DSR = PSR(0) = {dsr:.2f}."
    else:
        source = (
            "the variance of the trials' Sharpes"
            if trials.variance_source == "trials"
            else "the SR estimator's asymptotic variance (fewer than 2 trials with a recorded Sharpe)"
        )
        dsr_text = (
            f"Deflated for {trials.n_trials} comparable trials, V[SR] = {trials.sr_variance:.3g} per bar from "
            f"{source}: DSR = {dsr:.2f}."
        )
    interpretation = " ".join(
        [
            (
                f"Annualised Sharpe {sr * annual:.2f} over {n:,} bars ({years:.1f} years,"
                f" skew {skew:.2f}, kurtosis {kurt:.2f})."
            ),
            lo_text,
            psr_text,
            trl_text,
            dsr_text,
            baseline_text,
            champion_text,
        ]
    ).rstrip()
    return {
        "stats.psr_zero": psr_zero,
        "stats.psr_baseline": psr_baseline,
        "stats.min_trl": min_trl,
        "stats.sharpe_diff_pvalue": diff_pvalue,
        "stats.dsr": dsr,
        "stats.dsr_trials": float(trials.n_trials),
        "stats.dsr_sr_variance": trials.sr_variance,
        "stats.sharpe_sqrt_q": sr * math.sqrt(q),
        "stats.sharpe_lo": sharpe_lo,
        **champion,
        "interpretation": interpretation,
    }
