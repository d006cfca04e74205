"""Bar interval detection and the annualisation factor."""

from __future__ import annotations

import pandas as pd
import pytest

from trainer.data.bars import detect_bar_interval, periods_per_year
from trainer.data.loaders import bundled_path, load_ohlcv
from trainer.errors import DataError


def _session_hours(start: str, days: int) -> pd.DatetimeIndex:
    """Hourly bars 09:30 .. 15:30 (7 a session) on business days: exchange-hours data."""
    sessions = pd.bdate_range(start, periods=days)
    return pd.DatetimeIndex([s + pd.Timedelta(hours=9, minutes=30) + pd.Timedelta(hours=h) for s in sessions for h in range(7)])


@pytest.mark.parametrize("symbol", ["SPY", "QQQ"])
def test_bundled_daily_data(symbol: str) -> None:
    index = load_ohlcv(bundled_path(symbol)).index
    assert detect_bar_interval(index) == pd.Timedelta(days=1)
    assert periods_per_year(index) == 252.0


def test_short_daily_exchange_data_uses_252() -> None:
    index = pd.bdate_range("2020-01-01", periods=60)
    assert detect_bar_interval(index) == pd.Timedelta(days=1)
    assert periods_per_year(index) == 252.0


def test_short_hourly_exchange_data_is_measured_not_guessed() -> None:
    """20 sessions of 7 hourly bars, weekdays without holidays: 7 x 5 bars a week (the old rule
    guessed 252 x 6.5 = 1,638 and halved the Sharpe of 24x5 data)."""
    index = _session_hours("2021-03-01", 20)
    assert detect_bar_interval(index) == pd.Timedelta(hours=1)
    assert periods_per_year(index) == pytest.approx(7 * 5 * 365.25 / 7)


def test_long_hourly_data_uses_the_observed_bars_per_year() -> None:
    index = _session_hours("2019-01-01", 520)  # about two years of sessions
    assert detect_bar_interval(index) == pd.Timedelta(hours=1)
    assert periods_per_year(index) == pytest.approx(7 * 5 * 365.25 / 7)  # 7 bars x ~261 weekdays


def test_weekly_and_round_the_clock_data() -> None:
    weekly = pd.date_range("2015-01-02", periods=300, freq="W-FRI")
    assert detect_bar_interval(weekly) == pd.Timedelta(days=7)
    assert periods_per_year(weekly) == pytest.approx(365.25 / 7, rel=1e-3)
    assert periods_per_year(weekly[:20]) == pytest.approx(365.25 / 7)
    crypto_hourly = pd.date_range("2022-01-01", periods=24 * 30, freq="h")
    assert periods_per_year(crypto_hourly) == pytest.approx(365.25 * 24)
    crypto_daily = pd.date_range("2020-01-01", periods=3 * 365, freq="D")
    assert periods_per_year(crypto_daily) == pytest.approx(365.25, rel=1e-2)


def test_median_ignores_gaps_duplicates_and_order() -> None:
    index = pd.bdate_range("2020-01-01", periods=40)
    messy = index.delete(range(10, 15)).append(index[[3, 3]])[::-1]
    assert detect_bar_interval(messy) == pd.Timedelta(days=1)


def test_too_few_timestamps() -> None:
    with pytest.raises(DataError, match="at least 2 timestamps"):
        detect_bar_interval(pd.DatetimeIndex(["2020-01-01"]))
    with pytest.raises(DataError, match="all timestamps are equal"):
        periods_per_year(pd.DatetimeIndex(["2020-01-01", "2020-01-01"]))
