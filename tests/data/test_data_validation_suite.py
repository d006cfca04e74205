"""The expectation suite through its Python API: verdicts, failure records, written reports."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from trainer.config import ValidationConfig
from trainer.data.loaders import bundled_path, load_ohlcv, read_raw_table
from trainer.data.validation import SUITE_NAME, SUITE_VERSION, build_suite, validate_market_data, write_reports
from trainer.errors import TrainerError


@pytest.fixture(scope="module")
def spy_raw() -> pd.DataFrame:
    return read_raw_table(bundled_path("SPY")).head(1000)


def test_suite_name_carries_the_version() -> None:
    assert SUITE_NAME == f"market_data_v{SUITE_VERSION}"
    suite = build_suite(ValidationConfig(), 620, ["timestamp", "open", "high", "low", "close", "volume"])
    types = {e.expectation_type for e in suite.expectations}
    assert {"expect_table_row_count_to_be_between", "expect_column_values_to_be_unique",
            "expect_column_pair_values_a_to_be_greater_than_b", "expect_column_values_to_be_increasing"} <= types
    # No freshness rule unless configured; configured without as_of is refused.
    assert "expect_column_max_to_be_between" not in types
    with pytest.raises(TrainerError, match="explicit as-of date"):
        build_suite(ValidationConfig(max_staleness_days=3), 620, ["timestamp"])


def test_loaded_frame_and_raw_table_get_the_same_verdict(spy_raw: pd.DataFrame) -> None:
    raw_report = validate_market_data(spy_raw, ValidationConfig(), 620)
    frame_report = validate_market_data(load_ohlcv(bundled_path("SPY")).head(1000), ValidationConfig(), 620)
    assert raw_report.success and frame_report.success
    assert raw_report.rows == 1000 and raw_report.evaluated == frame_report.evaluated


def test_bounds_come_from_the_config(spy_raw: pd.DataFrame) -> None:
    # SPY 1999-2002 has daily moves of ~5% and the 7-day closure after 2001-09-11.
    strict = ValidationConfig(max_gap_days=5, max_abs_log_return=0.03)
    report = validate_market_data(spy_raw, strict, 620)
    checks = {f["check"]: f for f in report.failures}
    assert set(checks) == {"no calendar gap over 5 days", "|log return| <= 0.03"}
    assert checks["no calendar gap over 5 days"]["examples"] == [7.0]
    assert checks["no calendar gap over 5 days"]["rows"] == [spy_raw.index[spy_raw["timestamp"] == "2001-09-17"][0]]
    assert not validate_market_data(spy_raw, ValidationConfig(), 1001).success


def test_missing_column_is_reported_once(spy_raw: pd.DataFrame) -> None:
    report = validate_market_data(spy_raw.drop(columns=["low"]), ValidationConfig(), 620)
    assert [(f["expectation"], f["column"]) for f in report.failures] == [("expect_column_to_exist", "low")]


def test_reports_are_written(spy_raw: pd.DataFrame, tmp_path) -> None:
    bad = spy_raw.copy()
    bad.loc[3, "close"] = "oops"
    report = validate_market_data(bad, ValidationConfig(), 620)
    paths = write_reports(report, tmp_path / "reports")
    summary = json.loads(paths["summary"].read_text())
    assert summary == json.loads(report.to_json())
    assert summary["success"] is False and summary["suite_name"] == SUITE_NAME
    assert summary["failures"][0]["examples"] == ["oops"]
    gx_result = json.loads(paths["gx_result"].read_text())
    assert gx_result["success"] is False and len(gx_result["results"]) == report.evaluated
    html = paths["data_docs"].read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and SUITE_NAME in html and "close__not_a_number" in html
    assert not [p for p in tmp_path.rglob("*.tmp")]  # atomic writes leave no temp files
