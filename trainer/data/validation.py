"""The market data expectation suite (Great Expectations 1.x) and its report.

The suite is built in code (`build_suite`), not read from a JSON file, because its bounds come
from the run config (ValidationConfig, the minimum row count, the `as_of` date). SUITE_VERSION
names the version of the *rules*; bump it whenever an expectation is added, removed or changed,
and the suite name (`market_data_v<N>`) changes with it, so a stored report says which rules ran.

The input is the raw table (`trainer.data.loaders.read_raw_table`, CSV cells still text) or an
already loaded frame. Before validation `prepare_frame` coerces it and adds helper columns, so
that every rule is a built-in GX expectation with row counts and examples:
- `<col>__not_a_number`, `timestamp__not_a_date`: the original cell where it did not parse;
- `max_open_close`, `min_open_close`: for high >= max(open, close) and low <= min(open, close);
- `days_since_previous_bar`: calendar gap to the previous row (file order);
- `log_return`: log(close / previous close), only where both prices are positive.
The freshness rule compares the last timestamp with an explicit `as_of` passed in (never now()).

A second, smaller suite (`signals_v<N>`, `validate_signals`) checks a `data.signals` table
(trainer/data/signals.py): timestamps parse, are present, unique and strictly increasing; each
signal column present (sentiment, sl_confidence) holds numbers, none missing or infinite, in [0, 1].

`write_reports` writes `validation_summary.json` (ours), `gx_validation_result.json` (GX's
result) and `data_docs/index.html`: the GX Data Docs validation page, rendered with GX's own
ValidationResultsPageRenderer + DefaultJinjaPageView (the ephemeral context keeps no results
store to build a site from). The page loads its CSS/JS from CDNs, so offline it shows unstyled.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainer.config import ValidationConfig
from trainer.data.loaders import (
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    SIGNAL_COLUMNS,
    TIME_COLUMN,
    coerce_columns,
)
from trainer.errors import TrainerError
from trainer.io import write_json_atomic, write_text_atomic

SUITE_VERSION = 1
SUITE_NAME = f"market_data_v{SUITE_VERSION}"
SIGNALS_SUITE_VERSION = 1
SIGNALS_SUITE_NAME = f"signals_v{SIGNALS_SUITE_VERSION}"
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
_EXAMPLES = 5


@dataclass
class ValidationReport:
    """The verdict of one suite run; `gx_result` is GX's own result object (for the reports)."""

    success: bool
    failures: list[dict[str, Any]]
    suite_name: str
    suite_version: int
    rows: int
    evaluated: int
    gx_result: Any = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "suite_name": self.suite_name,
            "suite_version": self.suite_version,
            "rows": self.rows,
            "evaluated_expectations": self.evaluated,
            "failures": self.failures,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=_json_value)


# --------------------------------------------------------------------------------------------
# Helper columns
# --------------------------------------------------------------------------------------------


def prepare_frame(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """(frame GX validates, required columns the data lacks); see the module docstring."""
    if isinstance(df.index, pd.DatetimeIndex):
        df = df.reset_index().rename(columns={df.index.name or "index": TIME_COLUMN})
    coerced = coerce_columns(df.reset_index(drop=True))
    frame = coerced.frame.copy()
    for column, cells in coerced.unparsed.items():
        suffix = "not_a_date" if column == TIME_COLUMN else "not_a_number"
        frame[f"{column}__{suffix}"] = cells
    nan = pd.Series(np.nan, index=frame.index)
    # Derived columns always exist (all NaN when an input is missing): GX skips nulls in these
    # checks, and the missing input is reported once, by its own ExpectColumnToExist. Infinite
    # inputs become NaN here for the same reason (the infinity rule reports them).
    open_ = _finite(frame.get("open", nan))
    close = _finite(frame.get("close", nan))
    frame["max_open_close"] = np.fmax(open_, close) if {"open", "close"} <= set(frame) else nan
    frame["min_open_close"] = np.fmin(open_, close) if {"open", "close"} <= set(frame) else nan
    if TIME_COLUMN in frame:
        frame["days_since_previous_bar"] = frame[TIME_COLUMN].diff() / pd.Timedelta(days=1)
    else:
        frame["days_since_previous_bar"] = nan
    previous = close.shift(1)
    positive = (close > 0) & (previous > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        frame["log_return"] = np.log(close / previous).where(positive)
    return frame, coerced.missing


def _finite(values: pd.Series) -> pd.Series:
    return values.where(np.isfinite(values))


# --------------------------------------------------------------------------------------------
# The suite
# --------------------------------------------------------------------------------------------


def _numeric_rules(column: str, check: Callable[[str], dict[str, str]]) -> list[Any]:
    """A numeric column: every value parses as a number, none is missing, none is infinite
    (`<column>__not_a_number` is the helper column prepare_frame adds)."""
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectColumnValuesToBeNull(column=f"{column}__not_a_number", meta=check(f"{column} values are numbers")),
        gxe.ExpectColumnValuesToNotBeNull(
            column=column,
            row_condition=f"{column}__not_a_number.isnull()",
            condition_parser="pandas",
            meta=check(f"no missing {column} values"),
        ),
        gxe.ExpectColumnValuesToNotBeInSet(
            column=column, value_set=[math.inf, -math.inf], meta=check(f"no infinite {column} values")
        ),
    ]


def build_suite(
    validation_cfg: ValidationConfig,
    min_rows: int,
    columns: list[str],
    as_of: pd.Timestamp | None = None,
) -> Any:
    """The versioned suite. `columns` (of the prepared frame) decides which optional columns
    are checked; every required rule is always present."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    def check(text: str) -> dict[str, str]:
        return {"check": text}  # the human name shown in the CLI table and the summary JSON

    rules: list[Any] = [gxe.ExpectTableRowCountToBeBetween(min_value=min_rows, meta=check(f"at least {min_rows} rows"))]
    for column in (TIME_COLUMN, *REQUIRED_COLUMNS):
        rules.append(gxe.ExpectColumnToExist(column=column, meta=check(f"column {column} is present")))

    # Timestamps: parseable, present, unique, strictly increasing, no long gap.
    rules += [
        gxe.ExpectColumnValuesToBeNull(column="timestamp__not_a_date", meta=check("timestamps parse as dates")),
        gxe.ExpectColumnValuesToNotBeNull(
            column=TIME_COLUMN,
            row_condition="timestamp__not_a_date.isnull()",  # unparsable cells are counted above
            condition_parser="pandas",
            meta=check("no missing timestamps"),
        ),
        gxe.ExpectColumnValuesToBeUnique(column=TIME_COLUMN, meta=check("timestamps are unique")),
        gxe.ExpectColumnValuesToBeIncreasing(
            column=TIME_COLUMN, strictly=True, meta=check("timestamps strictly increase")
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="days_since_previous_bar",
            max_value=validation_cfg.max_gap_days,
            meta=check(f"no calendar gap over {validation_cfg.max_gap_days:g} days"),
        ),
    ]
    numeric = [*REQUIRED_COLUMNS, *(c for c in OPTIONAL_COLUMNS if c in columns)]
    for column in numeric:
        rules += _numeric_rules(column, check)
    for column in (*PRICE_COLUMNS, *(["adj_close"] if "adj_close" in columns else [])):
        rules.append(
            gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0, strict_min=True, meta=check(f"{column} > 0"))
        )
    rules.append(gxe.ExpectColumnValuesToBeBetween(column="volume", min_value=0, meta=check("volume >= 0")))
    for column in ("sentiment", "sl_confidence"):
        if column in columns:
            rules.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=column, min_value=0, max_value=1, meta=check(f"{column} in [0, 1]")
                )
            )

    # Bar consistency; rows with a missing side are skipped (already counted as missing values).
    pair = dict(or_equal=True, ignore_row_if="either_value_is_missing")
    rules += [
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="high", column_B="low", **pair, meta=check("high >= low")),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="high", column_B="max_open_close", **pair, meta=check("high >= max(open, close)")
        ),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="min_open_close", column_B="low", **pair, meta=check("low <= min(open, close)")
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="log_return",
            min_value=-validation_cfg.max_abs_log_return,
            max_value=validation_cfg.max_abs_log_return,
            meta=check(f"|log return| <= {validation_cfg.max_abs_log_return:g}"),
        ),
    ]

    if validation_cfg.max_staleness_days is not None:
        if as_of is None:
            raise TrainerError(
                "data.validation.max_staleness_days is set, so the freshness check needs an explicit "
                "as-of date (trainer validate --as-of YYYY-MM-DD); it never uses the current time"
            )
        oldest_ok = as_of - pd.Timedelta(days=validation_cfg.max_staleness_days)
        rules.append(
            gxe.ExpectColumnMaxToBeBetween(
                column=TIME_COLUMN,
                min_value=oldest_ok,
                meta=check(f"last bar within {validation_cfg.max_staleness_days:g} days of {as_of.date()}"),
            )
        )

    return gx.ExpectationSuite(name=SUITE_NAME, expectations=rules, meta={"suite_version": SUITE_VERSION})


def _run_suite(frame: pd.DataFrame, suite: Any) -> tuple[Any, dict[str, int]]:
    """Run `suite` on `frame` in a fresh ephemeral context (creating one costs milliseconds);
    return GX's result and {expectation id: position in the suite}."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # After the import: GX sets some module loggers to INFO itself (data_context.types.base
    # announces a temporary docs folder on every context); the parent level does not cover them.
    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("market_data")
        .add_dataframe_asset("bars")
        .add_batch_definition_whole_dataframe("whole_frame")
    )
    suite = context.suites.add(suite)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{suite.name}_run", data=batch, suite=suite)
    )
    result = definition.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY")
    return result, {rule.id: i for i, rule in enumerate(suite.expectations)}


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def validate_market_data(
    df_raw: pd.DataFrame,
    validation_cfg: ValidationConfig,
    min_rows: int,
    as_of: pd.Timestamp | date | str | None = None,
) -> ValidationReport:
    """Run the suite on a raw table (or a loaded frame) and summarise the failed expectations."""
    as_of_ts = None if as_of is None else pd.Timestamp(as_of)
    frame, missing = prepare_frame(df_raw)
    suite = build_suite(validation_cfg, min_rows, list(frame.columns), as_of_ts)
    return _report(frame, suite, missing, SUITE_NAME, SUITE_VERSION)


def _report(frame: pd.DataFrame, suite: Any, missing: list[str], name: str, version: int) -> ValidationReport:
    """Run `suite` on `frame` and summarise the failed expectations (a missing column is reported once)."""
    result, order = _run_suite(frame, suite)
    failed = [r for r in result.results if not r.success and not _about_missing_column(r, missing)]
    # GX returns results in its own order; report them in the order the suite lists the rules.
    failed.sort(key=lambda r: order.get(r.expectation_config.id, len(order)))
    failures = [_failure(r) for r in failed]
    return ValidationReport(
        success=not failures,
        failures=failures,
        suite_name=name,
        suite_version=version,
        rows=len(frame),
        evaluated=len(result.results),
        gx_result=result,
    )


def build_signals_suite(columns: list[str]) -> Any:
    """The signals suite; `columns` (of the prepared frame) says which signal columns are checked."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    def check(text: str) -> dict[str, str]:
        return {"check": text}

    rules: list[Any] = [
        gxe.ExpectTableRowCountToBeBetween(min_value=1, meta=check("at least 1 row")),
        gxe.ExpectColumnToExist(column=TIME_COLUMN, meta=check(f"column {TIME_COLUMN} is present")),
        gxe.ExpectColumnValuesToBeNull(column="timestamp__not_a_date", meta=check("timestamps parse as dates")),
        gxe.ExpectColumnValuesToNotBeNull(
            column=TIME_COLUMN,
            row_condition="timestamp__not_a_date.isnull()",
            condition_parser="pandas",
            meta=check("no missing timestamps"),
        ),
        gxe.ExpectColumnValuesToBeUnique(column=TIME_COLUMN, meta=check("timestamps are unique")),
        gxe.ExpectColumnValuesToBeIncreasing(
            column=TIME_COLUMN, strictly=True, meta=check("timestamps strictly increase")
        ),
    ]
    for column in SIGNAL_COLUMNS:
        if column not in columns:
            continue
        rules += [
            *_numeric_rules(column, check),
            gxe.ExpectColumnValuesToBeBetween(
                column=column, min_value=0, max_value=1, meta=check(f"{column} in [0, 1]")
            ),
        ]
    return gx.ExpectationSuite(
        name=SIGNALS_SUITE_NAME, expectations=rules, meta={"suite_version": SIGNALS_SUITE_VERSION}
    )


def prepare_signals_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """The signals table coerced, with `<col>__not_a_number` / `timestamp__not_a_date` helpers."""
    if isinstance(raw.index, pd.DatetimeIndex):
        raw = raw.reset_index().rename(columns={raw.index.name or "index": TIME_COLUMN})
    coerced = coerce_columns(raw.reset_index(drop=True))
    frame = coerced.frame.copy()
    for column, cells in coerced.unparsed.items():
        suffix = "not_a_date" if column == TIME_COLUMN else "not_a_number"
        frame[f"{column}__{suffix}"] = cells
    if "timestamp__not_a_date" not in frame:
        frame["timestamp__not_a_date"] = pd.Series(None, index=frame.index, dtype=object)
    return frame


def validate_signals(raw: pd.DataFrame) -> ValidationReport:
    """Run the signals suite on a signals table (read_signals_table) or frame."""
    frame = prepare_signals_frame(raw)
    suite = build_signals_suite(list(frame.columns))
    missing = [] if TIME_COLUMN in frame.columns else [TIME_COLUMN]
    return _report(frame, suite, missing, SIGNALS_SUITE_NAME, SIGNALS_SUITE_VERSION)


def describe_failures(report: ValidationReport, limit: int = 5) -> str:
    """One line per failed expectation: check, column, failed rows and a few examples."""
    lines = []
    for failure in report.failures[:limit]:
        examples = ", ".join(f"row {r}: {v}" for r, v in zip(failure["rows"], failure["examples"]))
        count = failure["unexpected_count"]
        lines.append(
            f"{failure['check']}" + (f" ({count} row(s) fail" + (f": {examples})" if examples else ")") if count else "")
        )
    more = len(report.failures) - limit
    return "; ".join(lines) + (f"; and {more} more" if more > 0 else "")


def _about_missing_column(result: Any, missing: list[str]) -> bool:
    """Rules on a column the data lacks could not run; ExpectColumnToExist already reports it."""
    config = result.expectation_config
    if config.type == "expect_column_to_exist":
        return False
    kwargs = config.kwargs
    used = {kwargs.get("column"), kwargs.get("column_A"), kwargs.get("column_B")}
    # A missing column also has no `<column>__not_a_number` / `timestamp__not_a_date` helper.
    unavailable = set(missing) | {f"{c}__not_a_number" for c in missing}
    if TIME_COLUMN in missing:
        unavailable.add("timestamp__not_a_date")
    return bool(used & unavailable)


def _failure(result: Any) -> dict[str, Any]:
    config = result.expectation_config
    kwargs = config.kwargs
    column = kwargs.get("column") or (
        f"{kwargs['column_A']} vs {kwargs['column_B']}" if "column_A" in kwargs else None
    )
    details = result.result or {}
    examples = details.get("partial_unexpected_list")
    if examples is None and "observed_value" in details:
        examples = [details["observed_value"]]
    return {
        "expectation": config.type,
        "check": (config.meta or {}).get("check", config.type),
        "column": column,
        "unexpected_count": details.get("unexpected_count"),
        "examples": [_json_value(v) for v in (examples or [])[:_EXAMPLES]],
        "rows": [int(i) for i in (details.get("partial_unexpected_index_list") or [])[:_EXAMPLES]],
    }


def _json_value(value: Any) -> Any:
    """Examples as JSON: timestamps as ISO text, non-finite floats as text, pairs as lists."""
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, (pd.Timestamp, datetime, date)):
        return value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------


def write_reports(report: ValidationReport, report_dir: str | Path) -> dict[str, Path]:
    """Write the summary JSON, GX's result JSON and the Data Docs page (each atomically)."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    report_dir = Path(report_dir)
    paths = {
        "summary": report_dir / "validation_summary.json",
        "gx_result": report_dir / "gx_validation_result.json",
        "data_docs": report_dir / "data_docs" / "index.html",
    }
    write_text_atomic(paths["summary"], report.to_json() + "\n")
    if report.gx_result is None:
        raise TrainerError("write_reports needs a report from validate_market_data (it has no GX result)")
    write_json_atomic(paths["gx_result"], _json_safe(report.gx_result.to_json_dict()))
    html = DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(report.gx_result))
    write_text_atomic(paths["data_docs"], html)
    return paths


def _json_safe(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {str(k): _json_safe(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_json_safe(v) for v in tree]
    return _json_value(tree)
