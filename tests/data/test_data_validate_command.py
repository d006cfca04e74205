"""`trainer validate` on the real bundled data and on a corpus of corrupted copies of it.

Each corrupted file is made in tmp_path from the first 1000 bundled SPY rows (enough for the
620 rows the shipped config needs), so every case is one cheap GX run in this process.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from trainer.data.validation import SUITE_VERSION

ROWS = 1000
Table = pd.DataFrame


def _scale(table: Table, row: int, column: str, factor: float) -> Table:
    table.loc[row, column] = f"{float(table.loc[row, column]) * factor:.6f}"
    return table


def _set(row: int, column: str, value: str) -> Callable[[Table], Table]:
    def mutate(table: Table) -> Table:
        table.loc[row, column] = value
        return table

    return mutate


def _swap_high_low(table: Table) -> Table:
    table.loc[300, ["High", "Low"]] = table.loc[300, ["Low", "High"]].to_numpy()
    return table


def _swap_rows(table: Table) -> Table:
    return table.iloc[[*range(600), 601, 600, *range(602, len(table))]]


def _spike(table: Table) -> Table:
    for column in ("Open", "High", "Low", "Close", "Adj Close"):
        _scale(table, 800, column, 50.0)
    return table


def _zero_prices(table: Table) -> Table:
    table.loc[900, ["Open", "High", "Low", "Close", "Adj Close"]] = "0"
    return table


# name -> (mutation of the text table, the check the output must name)
CORRUPTIONS: dict[str, tuple[Callable[[Table], Table], str]] = {
    "nan_close": (_set(100, "Close", ""), "no missing close values"),
    "negative_price": (_set(200, "Open", "-5.0"), "open > 0"),
    "high_below_low": (_swap_high_low, "high >= low"),
    "close_above_high": (lambda t: _set(400, "Close", f"{float(t.loc[400, 'High']) * 1.01:.6f}")(t), "high >= max(open, close)"),
    "duplicate_dates": (lambda t: _set(501, "Date", t.loc[500, "Date"])(t), "timestamps are unique"),
    "unsorted_dates": (_swap_rows, "timestamps strictly increase"),
    "missing_column": (lambda t: t.drop(columns=["Volume"]), "column volume is present"),
    "text_in_numeric": (_set(700, "High", "twelve"), "high values are numbers"),
    "months_long_gap": (lambda t: t.drop(index=range(300, 400)), "no calendar gap over 10 days"),
    "price_spike_50x": (_spike, "|log return| <= 0.25"),
    "too_few_rows": (lambda t: t.head(600), "at least 620 rows"),
    "negative_volume": (_set(850, "Volume", "-100"), "volume >= 0"),
    "zero_prices": (_zero_prices, "close > 0"),
    "infinity": (_set(950, "High", "inf"), "no infinite high values"),
    "unparsable_date": (_set(960, "Date", "2001-13-45"), "timestamps parse as dates"),
    "nan_timestamp": (_set(970, "Date", ""), "no missing timestamps"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corrupted_data_fails_with_the_expectation_named(name, spy_table, tmp_path, run_validate) -> None:
    mutate, check = CORRUPTIONS[name]
    path = tmp_path / f"{name}.csv"
    mutate(spy_table.head(ROWS).copy()).to_csv(path, index=False)

    run = run_validate("--symbol", "SPY", "--data", str(path))

    assert run.code == 1, run.output
    assert "FAILED" in run.stdout and check in run.stdout, run.stdout
    assert run.result["passed"] is False
    failed = {f["check"]: f for f in run.result["failures"]}
    assert check in failed, failed.keys()
    assert failed[check]["expectation"] in run.stdout
    if failed[check]["unexpected_count"] is not None:  # row-level rules say how many rows failed
        assert failed[check]["unexpected_count"] >= 1 and failed[check]["examples"]


def test_text_cells_are_counted_and_shown(spy_table, tmp_path, run_validate) -> None:
    table = spy_table.head(ROWS).copy()
    table.loc[[10, 20, 30], "Close"] = ["abc", "1.2.3", "twelve"]
    table.loc[40, "Close"] = ""
    path = tmp_path / "text.csv"
    table.to_csv(path, index=False)
    failures = {f["check"]: f for f in run_validate("--data", str(path)).result["failures"]}
    assert failures["close values are numbers"]["unexpected_count"] == 3
    assert failures["close values are numbers"]["examples"] == ["abc", "1.2.3", "twelve"]
    assert failures["close values are numbers"]["rows"] == [10, 20, 30]
    assert failures["no missing close values"]["unexpected_count"] == 1  # text is not counted twice
    assert failures["no missing close values"]["rows"] == [40]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"Date,Open,High,Low,Close,Adj Close,Volume\n", "no data rows"),
        (bytes(range(256)) * 16, "binary content"),
        (b"", "the file is empty"),
    ],
    ids=["header_only", "binary_garbage", "empty_file"],
)
def test_unreadable_files_exit_2_with_a_message(content, message, tmp_path, run_validate) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    run = run_validate("--symbol", "SPY", "--data", str(path))
    assert run.code == 2
    assert message in run.stderr and str(path) in run.stderr
    assert "Traceback" not in run.output
    assert message in run.result["error"]


@pytest.mark.parametrize("symbol", ["SPY", "QQQ"])
def test_bundled_data_passes_with_the_full_result(symbol, tmp_path, run_validate) -> None:
    run = run_validate("--symbol", symbol, "--config", "configs/phase_b1_options.yaml", "--report-dir", str(tmp_path / "r"))
    assert run.code == 0, run.output
    assert run.stdout.startswith("PASSED")
    result = run.result
    assert result["passed"] is True and result["failures"] == [] and result["exit_code"] == 0
    assert result["symbol"] == symbol and result["source"].endswith(f"bundled/{symbol}.csv")
    assert result["rows"] == 5031 and result["first"] == "1999-01-04T00:00:00" and result["last"] == "2018-12-31T00:00:00"
    assert result["bar_interval"] == "1 days 00:00:00"
    assert len(result["data_digest"]) == 64 and result["suite_version"] == SUITE_VERSION
    assert result["report_dir"] == str(tmp_path / "r")
    assert (tmp_path / "r" / "data_docs" / "index.html").is_file()


def test_parquet_source_has_the_same_digest_as_the_csv(spy_table, tmp_path, run_validate) -> None:
    from trainer.data.loaders import bundled_path, load_ohlcv

    path = tmp_path / "spy.parquet"
    load_ohlcv(bundled_path("SPY")).to_parquet(path)
    csv_digest = run_validate("--symbol", "SPY").result["data_digest"]
    run = run_validate("--symbol", "SPY", "--data", str(path))
    assert run.code == 0 and run.result["data_digest"] == csv_digest


def test_freshness_uses_the_as_of_date(tmp_path, run_validate) -> None:
    config = tmp_path / "fresh.yaml"
    text = Path("configs/phase_b1_options.yaml").read_text().replace("max_staleness_days: null", "max_staleness_days: 4")
    assert "max_staleness_days: 4" in text
    config.write_text(text)
    assert run_validate("--config", str(config), "--as-of", "2019-01-03").code == 0
    stale = run_validate("--config", str(config), "--as-of", "2019-03-01")
    assert stale.code == 1 and "last bar within 4 days of 2019-03-01" in stale.stdout
    missing = run_validate("--config", str(config))
    assert missing.code == 2 and "--as-of" in missing.stderr


def test_optional_signal_columns_are_checked(spy_table, tmp_path, run_validate) -> None:
    table = spy_table.head(ROWS).assign(sentiment="0.5")
    table.loc[5, "sentiment"] = "1.5"
    path = tmp_path / "signals.csv"
    table.to_csv(path, index=False)
    run = run_validate("--data", str(path))
    assert run.code == 1 and [f["check"] for f in run.result["failures"]] == ["sentiment in [0, 1]"]


@pytest.mark.parametrize("symbol", ["../x", "SPY;rm -rf /", "", "A" * 200])
def test_bad_symbols_are_refused_with_exit_2(symbol, run_validate) -> None:
    run = run_validate("--symbol", symbol)
    assert run.code == 2
    assert "--symbol: invalid symbol" in run.stderr
    assert "Traceback" not in run.output


def test_console_script_refuses_a_bad_symbol_quickly() -> None:
    trainer = Path(sys.executable).parent / "trainer"
    proc = subprocess.run([str(trainer), "validate", "--symbol", "../etc/passwd"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "invalid symbol '../etc/passwd'" in proc.stderr and "Traceback" not in proc.stderr
