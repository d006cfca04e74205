"""Bar spacing and the annualisation factor (bars per year) used for Sharpe, CAGR and volatility.

The rule of `periods_per_year(index)`:
1. When the data spans at least a year (>= 365 days), count: bars per year actually observed,
   (n - 1) / (span in days / 365.25). For daily bars whose count is within 10% of 252 the
   trading-day convention 252 is returned, so daily Sharpe ratios match the usual sqrt(252) figure.
2. Otherwise derive it from the median bar interval:
   - exchange data (no bar on a Saturday or Sunday): daily bars -> 252; intraday bars ->
     252 sessions x 6.5 h / interval (hourly -> 1638); multi-day bars -> 365.25 days / interval;
   - calendar data (bars on weekends, e.g. crypto): 365.25 days x 24 h / interval.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trainer.errors import DataError

TRADING_DAYS_PER_YEAR = 252.0
TRADING_HOURS_PER_SESSION = 6.5
DAYS_PER_YEAR = 365.25
_DAILY_TOLERANCE = 0.10  # observed daily count within 10% of 252 -> 252
_ONE_DAY = pd.Timedelta(days=1)


def _sorted_index(index: pd.Index) -> pd.DatetimeIndex:
    index = pd.DatetimeIndex(index).dropna().sort_values()
    if len(index) < 2:
        raise DataError(f"need at least 2 timestamps to measure the bar interval, got {len(index)}")
    return index


def detect_bar_interval(index: pd.Index) -> pd.Timedelta:
    """Median spacing between consecutive (sorted, distinct) timestamps."""
    index = _sorted_index(index)
    steps = np.diff(index.as_unit("ns").asi8)
    steps = steps[steps > 0]  # duplicates say nothing about spacing
    if len(steps) == 0:
        raise DataError("all timestamps are equal; cannot measure the bar interval")
    return pd.Timedelta(int(np.median(steps)), unit="ns")


def periods_per_year(index: pd.Index) -> float:
    """Bars per year for annualising per-bar statistics (see the module docstring for the rule)."""
    index = _sorted_index(index)
    interval = detect_bar_interval(index)
    span = index[-1] - index[0]
    is_daily = _ONE_DAY * 0.9 <= interval <= _ONE_DAY * 1.1
    if span >= pd.Timedelta(days=365):
        observed = (len(index) - 1) / (span / _ONE_DAY / DAYS_PER_YEAR)
        if is_daily and abs(observed / TRADING_DAYS_PER_YEAR - 1) <= _DAILY_TOLERANCE:
            return TRADING_DAYS_PER_YEAR
        return float(observed)
    has_weekend_bars = bool((index.dayofweek >= 5).any())
    if has_weekend_bars:
        return float(DAYS_PER_YEAR * _ONE_DAY / interval)
    if is_daily:
        return TRADING_DAYS_PER_YEAR
    if interval < _ONE_DAY:
        return float(TRADING_DAYS_PER_YEAR * pd.Timedelta(hours=TRADING_HOURS_PER_SESSION) / interval)
    return float(DAYS_PER_YEAR * _ONE_DAY / interval)
