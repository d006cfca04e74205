"""Loading market data: CSV layouts, Parquet, digests, sources, and unreadable input (DataError)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainer.data.loaders import (
    bundled_path,
    bundled_symbols,
    data_digest,
    load_ohlcv,
    read_raw_table,
    resolve_source,
)
from trainer.errors import DataError

OHLCV = ["open", "high", "low", "close", "volume"]


@pytest.fixture(scope="module")
def spy() -> pd.DataFrame:
    return load_ohlcv(bundled_path("SPY"))


def test_bundled_spy_matches_the_contract(spy: pd.DataFrame) -> None:
    assert isinstance(spy.index, pd.DatetimeIndex)
    assert spy.index.name == "timestamp" and spy.index.tz is None
    assert list(spy.columns) == [*OHLCV, "adj_close"]
    assert all(dtype == np.float64 for dtype in spy.dtypes)
    assert len(spy) == 5031
    assert spy.index[0] == pd.Timestamp("1999-01-04") and spy.index[-1] == pd.Timestamp("2018-12-31")
    assert spy.loc["1999-01-04", "close"] == pytest.approx(1228.099976)


def _layouts(table: pd.DataFrame, tmp_path: Path) -> dict[str, Path]:
    """The same bars in the layouts people export."""
    paths = {}
    lower = table.rename(columns=str.lower)
    paths["lower_case"] = tmp_path / "lower.csv"
    lower.to_csv(paths["lower_case"], index=False)
    paths["timestamp_column"] = tmp_path / "ts.csv"
    table.rename(columns={"Date": "timestamp"}).to_csv(paths["timestamp_column"], index=False)
    paths["datetime_upper"] = tmp_path / "upper.csv"
    table.rename(columns=lambda c: c.upper()).rename(columns={"DATE": "DateTime", "ADJ CLOSE": "adj  CLOSE"}).to_csv(
        paths["datetime_upper"], index=False
    )
    paths["no_adj_close"] = tmp_path / "noadj.csv"
    table.drop(columns=["Adj Close"]).to_csv(paths["no_adj_close"], index=False)
    paths["iso_utc_times"] = tmp_path / "utc.csv"
    table.assign(Date=table["Date"] + "T00:00:00Z").to_csv(paths["iso_utc_times"], index=False)
    return paths


def test_csv_layouts_load_to_the_same_bars(spy_table: pd.DataFrame, spy: pd.DataFrame, tmp_path: Path) -> None:
    for name, path in _layouts(spy_table, tmp_path).items():
        frame = load_ohlcv(path)
        pd.testing.assert_frame_equal(frame[OHLCV], spy[OHLCV], obj=name)
        assert ("adj_close" in frame.columns) == (name != "no_adj_close"), name
        if "adj_close" in frame.columns:
            assert data_digest(frame) == data_digest(spy), name


def test_parquet_loads_to_the_same_frame_and_digest(spy: pd.DataFrame, tmp_path: Path) -> None:
    with_index = tmp_path / "indexed.parquet"
    spy.to_parquet(with_index)
    as_column = tmp_path / "column.pq"
    spy.reset_index().rename(columns={"timestamp": "Date"}).to_parquet(as_column, index=False)
    for path in (with_index, as_column):
        frame = load_ohlcv(path)
        pd.testing.assert_frame_equal(frame, spy, check_freq=False, obj=path.name)
        assert data_digest(frame) == data_digest(spy)


def test_digest_changes_with_any_value(spy: pd.DataFrame) -> None:
    changed = spy.copy()
    changed.iloc[1234, changed.columns.get_loc("volume")] += 1
    shifted = spy.copy()
    shifted.index = shifted.index + pd.Timedelta(hours=1)
    digests = {data_digest(spy), data_digest(changed), data_digest(shifted), data_digest(spy[OHLCV])}
    assert len(digests) == 4
    assert len(data_digest(spy)) == 64 and int(data_digest(spy), 16) >= 0


def test_optional_columns_are_kept_as_floats(spy_table: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "with_signals.csv"
    spy_table.head(50).assign(Sentiment="0.25", SL_Confidence="0.9").to_csv(path, index=False)
    frame = load_ohlcv(path)
    assert frame["sentiment"].dtype == np.float64 and (frame["sentiment"] == 0.25).all()
    assert (frame["sl_confidence"] == 0.9).all()


def test_bad_content_is_refused_by_the_strict_loader(spy_table: pd.DataFrame, tmp_path: Path) -> None:
    text_close = spy_table.head(50).copy()
    text_close.loc[7, "Close"] = "twelve"
    path = tmp_path / "text.csv"
    text_close.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"column 'close' has 1 cell\(s\) that are not numbers \(row 7: 'twelve'\)"):
        load_ohlcv(path)
    no_volume = tmp_path / "novol.csv"
    spy_table.head(50).drop(columns=["Volume"]).to_csv(no_volume, index=False)
    with pytest.raises(DataError, match="missing required column.*volume"):
        load_ohlcv(no_volume)


def test_raw_table_keeps_cells_as_text_and_names_normalised(spy_table: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    spy_table.head(3).to_csv(path, index=False)
    raw = read_raw_table(path)
    assert list(raw.columns) == ["timestamp", "open", "high", "low", "close", "adj_close", "volume"]
    assert raw.loc[0, "close"] == "1228.099976"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "the file is empty"),
        ("blank.csv", b"\n\n  \n", "the file is empty"),
        ("header.csv", b"Date,Open,High,Low,Close,Adj Close,Volume\n", "has a header .* but no data rows"),
        ("garbage.csv", bytes(range(256)) * 8, "binary content"),
        ("latin1.csv", "Date,Open\n1999-01-04,caf\xe9\n".encode("latin-1"), "not UTF-8 text"),
        ("other.csv", b"name,age\nann,3\n", "not an OHLCV table"),
        ("garbage.parquet", b"PAR1 this is not parquet at all", "cannot read as Parquet"),
        ("two_times.csv", b"date,timestamp,close\n2020-01-01,2020-01-01,1\n", "more than one time column"),
    ],
)
def test_unreadable_tables_raise_data_error_naming_the_source(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as caught:
        load_ohlcv(path)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)  # one paragraph


def test_missing_paths_and_bad_schemes(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        load_ohlcv(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a directory"):
        load_ohlcv(tmp_path)
    with pytest.raises(DataError, match="unsupported scheme"):
        load_ohlcv("https://example.com/SPY.csv")
    with pytest.raises(DataError, match="expected s3://bucket/key"):
        load_ohlcv("s3://bucket-only")


def test_resolve_source_and_bundled_files(tmp_path: Path) -> None:
    assert bundled_symbols() == ["QQQ", "SPY"]
    assert resolve_source("SPY", None) == str(bundled_path("SPY"))
    assert Path(resolve_source("QQQ", None)).is_file()
    assert resolve_source("SPY", "s3://market/SPY.csv") == "s3://market/SPY.csv"
    with pytest.raises(DataError, match="no bundled data for symbol 'AAPL': bundled symbols are QQQ, SPY"):
        resolve_source("AAPL", None)


@pytest.mark.parametrize("symbol", ["../x", "SPY;rm -rf /", "", "A" * 200, "spy", "SPY/../../etc"])
def test_symbols_are_validated_before_any_path(symbol: str) -> None:
    with pytest.raises(DataError, match="invalid symbol"):
        resolve_source(symbol, None)
    with pytest.raises(DataError, match="invalid symbol"):
        bundled_path(symbol)
