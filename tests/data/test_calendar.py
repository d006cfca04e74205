"""periods_per_year measures the data's calendar: realistic synthetic indexes, short and long samples.

Each calendar is generated from its definition; the true bars per year is the same definition
counted over 40 whole years (2000-2039), independent of how periods_per_year measures it.

Calendars:
- US equities daily: weekdays minus NYSE holidays, from pandas' holiday rules (New Year's Day,
  Martin Luther King Jr. Day, Presidents' Day, Good Friday, Memorial Day, Juneteenth from 2022,
  Independence Day, Labor Day, Thanksgiving, Christmas). Expected: exactly 252.0.
- US equities hourly: bars 09:30..15:30 America/New_York (7 a session; 09:30..12:30 on the
  13:00 early closes of July 3, the day after Thanksgiving and December 24), stored as UTC.
  Expected ~ 7 x 252 = 1,764 (true: 7 x the sessions per year, less the early-close hours).
- FX 24x5: hourly bars from Sunday 17:00 to Friday 17:00 New York time, stored as UTC, so the
  week opens Sunday 21:00 UTC (summer) or 22:00 UTC (winter): 120 bars a week -> 120 x 365.25 / 7
  = 6,261.4.
- FX 24x5 without weekend bars: Monday 00:00 .. Friday 23:00 UTC, also 120 a week (the old rule,
  seeing no weekend bars, called it exchange data: 252 x 6.5 = 1,638).
- Crypto 24x7: hourly, 24 x 365.25 = 8,766.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import ClassVar

import pandas as pd
import pytest
from pandas.tseries.holiday import (
    AbstractHolidayCalendar,
    GoodFriday,
    Holiday,
    USLaborDay,
    USMartinLutherKingJr,
    USMemorialDay,
    USPresidentsDay,
    USThanksgivingDay,
    nearest_workday,
    sunday_to_monday,
)
from pandas.tseries.offsets import CustomBusinessDay

from trainer.data.bars import periods_per_year
from trainer.errors import DataError

NEW_YORK = "America/New_York"
TOLERANCE = 0.02  # relative; the 6-month samples differ from the long run by their holidays only
REFERENCE = ("2000-01-01", "2040-01-01")  # 40 whole years
REFERENCE_YEARS = 40.0
SAMPLES = {
    # Wednesday to Wednesday: partial first and last weeks; H1 holds 6 of the 10 holidays
    "6_months": ("2024-01-10", "2024-07-10"),
    "3_years": ("2021-02-17", "2024-02-14"),
}


class NYSEHolidayCalendar(AbstractHolidayCalendar):
    rules: ClassVar[list[Holiday]] = [
        Holiday("New Year's Day", month=1, day=1, observance=sunday_to_monday),
        USMartinLutherKingJr,
        USPresidentsDay,
        GoodFriday,
        USMemorialDay,
        Holiday("Juneteenth", month=6, day=19, start_date="2022-01-01", observance=nearest_workday),
        Holiday("Independence Day", month=7, day=4, observance=nearest_workday),
        USLaborDay,
        USThanksgivingDay,
        Holiday("Christmas", month=12, day=25, observance=nearest_workday),
    ]


def _sessions(start: str, end: str) -> pd.DatetimeIndex:
    return pd.date_range(start, end, freq=CustomBusinessDay(calendar=NYSEHolidayCalendar()), inclusive="left")


def equities_daily(start: str, end: str) -> pd.DatetimeIndex:
    return _sessions(start, end)


def equities_hourly(start: str, end: str) -> pd.DatetimeIndex:
    sessions = _sessions(start, end)
    thanksgiving = USThanksgivingDay.dates(start, end)
    early = set(thanksgiving + pd.Timedelta(days=1))
    early |= {d for d in sessions if (d.month, d.day) in ((7, 3), (12, 24))}
    stamps = [
        day + pd.Timedelta(hours=9, minutes=30) + pd.Timedelta(hours=h)
        for day in sessions
        for h in range(4 if day in early else 7)
    ]
    return pd.DatetimeIndex(stamps).tz_localize(NEW_YORK).tz_convert("UTC").tz_localize(None)


def fx_sunday_open(start: str, end: str) -> pd.DatetimeIndex:
    hours = pd.date_range(pd.Timestamp(start, tz=NEW_YORK), pd.Timestamp(end, tz=NEW_YORK), freq="h", inclusive="left")
    day, hour = hours.dayofweek, hours.hour
    open_ = ((day == 6) & (hour >= 17)) | (day <= 3) | ((day == 4) & (hour < 17))
    return hours[open_].tz_convert("UTC").tz_localize(None)


def fx_weekdays_utc(start: str, end: str) -> pd.DatetimeIndex:
    hours = pd.date_range(start, end, freq="h", inclusive="left")
    return hours[hours.dayofweek <= 4]


def crypto(start: str, end: str) -> pd.DatetimeIndex:
    return pd.date_range(start, end, freq="h", inclusive="left")


CALENDARS: dict[str, Callable[[str, str], pd.DatetimeIndex]] = {
    "us_equities_daily": equities_daily,
    "us_equities_hourly": equities_hourly,
    "fx_24x5_sunday_open": fx_sunday_open,
    "fx_24x5_weekdays_utc": fx_weekdays_utc,
    "crypto_24x7": crypto,
}


@cache
def true_bars_per_year(name: str) -> float:
    return len(CALENDARS[name](*REFERENCE)) / REFERENCE_YEARS


def test_true_figures_are_those_of_the_definitions() -> None:
    # sanity of the generators: the long-run counts are the textbook figures
    assert true_bars_per_year("us_equities_daily") == pytest.approx(252, abs=1.0)
    assert true_bars_per_year("us_equities_hourly") == pytest.approx(7 * 252, rel=0.01)  # less ~3 early closes
    assert true_bars_per_year("fx_24x5_sunday_open") == pytest.approx(120 * 365.25 / 7, rel=1e-4)
    assert true_bars_per_year("fx_24x5_weekdays_utc") == pytest.approx(120 * 365.25 / 7, rel=1e-4)
    assert true_bars_per_year("crypto_24x7") == pytest.approx(24 * 365.25, rel=1e-6)


@pytest.mark.parametrize("sample", sorted(SAMPLES))
@pytest.mark.parametrize("name", sorted(CALENDARS))
def test_bars_per_year_within_2_percent_of_the_calendars(name: str, sample: str) -> None:
    index = CALENDARS[name](*SAMPLES[sample])
    measured = periods_per_year(index)
    assert measured == pytest.approx(true_bars_per_year(name), rel=TOLERANCE), (name, sample, measured)
    if name == "us_equities_daily":
        assert measured == 252.0  # the daily convention, so Sharpe uses sqrt(252)


def test_findings_eurusd_utc_six_months_is_not_round_the_clock() -> None:
    # the old rule saw Sunday-evening bars, called it calendar data and returned 8,766 (Sharpe x1.18)
    measured = periods_per_year(fx_sunday_open(*SAMPLES["6_months"]))
    assert measured == pytest.approx(6261.4, rel=TOLERANCE)
    assert measured < 0.75 * 8766


def test_findings_24x5_without_weekend_bars_is_not_exchange_hours() -> None:
    # the old rule saw no weekend bars, assumed 6.5 h sessions and returned 1,638 (Sharpe x0.51)
    measured = periods_per_year(fx_weekdays_utc(*SAMPLES["6_months"]))
    assert measured == pytest.approx(6261.4, rel=TOLERANCE)
    assert measured > 3 * 1638


@pytest.mark.parametrize("start", pd.date_range("2023-03-01 05:00", periods=7, freq="25h").astype(str))
def test_partial_weeks_do_not_bias_a_weekly_calendar(start: str) -> None:
    # FX without holidays repeats every week: any start, any end, the same figure (DST moves the
    # UTC session by an hour twice a year: +-1 bar over the sample's weeks)
    end = str(pd.Timestamp(start) + pd.Timedelta(days=83, hours=7))
    assert periods_per_year(fx_sunday_open(start, end)) == pytest.approx(120 * 365.25 / 7, rel=0.002)


def test_time_zone_aware_index_is_read_in_its_own_clock() -> None:
    naive_utc = equities_hourly(*SAMPLES["6_months"])
    aware = naive_utc.tz_localize("UTC").tz_convert(NEW_YORK)
    assert periods_per_year(aware) == pytest.approx(periods_per_year(naive_utc), rel=0.002)
    assert periods_per_year(aware) == pytest.approx(true_bars_per_year("us_equities_hourly"), rel=TOLERANCE)


def test_duplicates_and_order_do_not_change_the_figure() -> None:
    index = crypto("2023-05-03 13:00", "2023-08-01")
    messy = index.append(index[[5, 5, 900]])[::-1]
    assert periods_per_year(messy) == pytest.approx(periods_per_year(index), rel=1e-12)


def test_samples_under_two_weeks_fall_back_to_bars_over_elapsed_time() -> None:
    index = crypto("2023-05-03 13:00", "2023-05-13 13:00")  # 10 days
    assert periods_per_year(index) == pytest.approx(24 * 365.25, rel=1e-12)
    daily = pd.date_range("2020-01-01", periods=12, freq="D")
    assert periods_per_year(daily) == pytest.approx(365.25, rel=1e-12)


def test_fewer_than_two_timestamps_is_a_data_error() -> None:
    with pytest.raises(DataError, match="at least 2 timestamps"):
        periods_per_year(pd.DatetimeIndex(["2020-01-01"]))
    with pytest.raises(DataError, match="at least 2 timestamps"):
        periods_per_year(pd.DatetimeIndex([]))
