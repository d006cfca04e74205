"""Bar spacing and the annualisation factor (bars per year) used for Sharpe, CAGR and volatility.

The rule of `periods_per_year(index)`: measure the data's own calendar, never guess it.
1. Timestamps are sorted, de-duplicated and read as wall-clock time (a tz-aware index is read
   in its own time zone, so an exchange's sessions keep their clock time across DST changes).
2. Whole weeks, counted from the first bar: with k = floor(span / 7 days) >= 2, the bars in
   [first bar, first bar + k weeks) are k complete weeks of the calendar, whatever weekday or
   hour the sample starts on. Bars per year = (those bars / k) * 365.25 / 7. A calendar that
   repeats every week (24x7 crypto, 24x5 FX, exchange sessions) is measured exactly; holidays
   enter as the sample's own average, so the error falls as the sample grows. The partial week
   at the end is left out rather than scaled, so it cannot bias the figure.
3. Shorter samples (< 2 complete weeks): bars / elapsed time, (n - 1) / (span / 365.25 days).
   This is exact for calendars without gaps (24x7) and rough for anything with nights or
   weekends: such samples are too short to see the calendar.
4. Daily exchange bars: when the median bar interval is a day (0.9-1.1 days) and the measured
   figure is within 10% of 252, exactly 252.0 is returned, so daily Sharpe ratios match the
   usual sqrt(252) figure. Crypto daily bars (365.25) are too far from 252 and keep theirs.

Figures this rule gives (tests/data/test_calendar.py): US equities daily 252; hourly sessions
09:30..15:30 New York (7 bars) ~ 7 x 252 = 1,764; FX 24x5 ~ 120 x 52.18 = 6,261; crypto 24x7 8,766.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trainer.errors import DataError

TRADING_DAYS_PER_YEAR = 252.0
DAYS_PER_YEAR = 365.25
_DAILY_TOLERANCE = 0.10  # a measured daily figure within 10% of 252 -> 252
_MIN_COMPLETE_WEEKS = 2  # below this, one holiday moves a weekly count by 10% or more
_ONE_DAY = pd.Timedelta(days=1)
_ONE_WEEK = pd.Timedelta(days=7)


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


def _wall_clock(index: pd.DatetimeIndex) -> np.ndarray:
    """Distinct timestamps as sorted int64 ns of local wall-clock time."""
    index = index.unique()  # before dropping the zone: a DST fall-back hour is two real bars
    if index.tz is not None:
        index = index.tz_localize(None)
    return np.sort(index.as_unit("ns").asi8)


def periods_per_year(index: pd.Index) -> float:
    """Bars per year for annualising per-bar statistics (see the module docstring for the rule)."""
    interval = detect_bar_interval(index)  # also refuses < 2 timestamps and all-equal ones
    ns = _wall_clock(_sorted_index(index))
    first, span = ns[0], ns[-1] - ns[0]
    weeks = int(span // _ONE_WEEK.value)
    if weeks >= _MIN_COMPLETE_WEEKS:
        bars = int(np.searchsorted(ns, first + weeks * _ONE_WEEK.value, side="left"))
        measured = bars / weeks * DAYS_PER_YEAR / 7.0
    else:
        measured = (len(ns) - 1) / (span / _ONE_DAY.value / DAYS_PER_YEAR)
    is_daily = _ONE_DAY * 0.9 <= interval <= _ONE_DAY * 1.1
    if is_daily and abs(measured / TRADING_DAYS_PER_YEAR - 1.0) <= _DAILY_TOLERANCE:
        return TRADING_DAYS_PER_YEAR
    return float(measured)
