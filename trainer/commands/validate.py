"""`trainer validate`: run the market data expectation suite on one symbol's data.

Exit 0 when every expectation holds, 1 when some fail (a table of them is printed), 2 when the
source cannot be read at all or the arguments are bad (DataError / TrainerError).
"""

from __future__ import annotations

import argparse
from datetime import date
from typing import Any

from trainer.errors import EXIT_FAILED, EXIT_OK, TrainerError
from trainer.symbols import InvalidSymbolError, validate_symbol


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="validate market data with the Great Expectations suite",
        description=(
            "Load a symbol's OHLCV data (bundled CSV, local CSV/Parquet or s3://bucket/key) and run the "
            "versioned expectation suite. Exit 0 valid, 1 invalid (failed expectations listed), 2 unreadable."
        ),
    )
    parser.add_argument("--symbol", help="ticker, e.g. SPY (default: the config's data.symbol)")
    parser.add_argument("--data", metavar="PATH_OR_URI", help="CSV/Parquet path or s3://bucket/key (default: config, else bundled)")
    parser.add_argument(
        "--config",
        metavar="YAML",
        help="run config for data.splits, data.validation and environment.window_size "
        "(default: built-in defaults, the same as configs/phase_b1_options.yaml)",
    )
    parser.add_argument("--report-dir", metavar="DIR", help="write the summary JSON, GX result JSON and Data Docs page here")
    parser.add_argument(
        "--as-of",
        metavar="YYYY-MM-DD",
        type=_parse_date,
        help="reference date of the freshness check (needed when data.validation.max_staleness_days is set)",
    )
    parser.set_defaults(handler=run)


def _parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    # The symbol is checked before anything reads it (and before the heavy imports).
    if args.symbol is not None:
        try:
            validate_symbol(args.symbol)
        except InvalidSymbolError as exc:
            raise TrainerError(f"--symbol: {exc}") from None
    from trainer.config import DataConfig, EnvironmentConfig, load_config

    if args.config:
        config = load_config(args.config)
        data_cfg, env_cfg = config.data, config.environment
    else:
        data_cfg, env_cfg = DataConfig(), EnvironmentConfig()
    symbol = args.symbol if args.symbol is not None else data_cfg.symbol  # the config validated its own
    args.result = {"passed": False, "symbol": symbol}

    import pandas as pd

    from trainer.data.bars import detect_bar_interval
    from trainer.data.loaders import coerce_columns, coerce_ohlcv, data_digest, read_raw_table, resolve_source
    from trainer.data.splits import required_rows
    from trainer.data.validation import SUITE_VERSION, validate_market_data, write_reports
    from trainer.errors import DataError

    # The config's source belongs to the config's symbol; another --symbol means its own data.
    config_source = data_cfg.source if symbol == data_cfg.symbol else None
    source = resolve_source(symbol, args.data or config_source)
    args.result["source"] = source
    raw = read_raw_table(source)

    min_rows = required_rows(env_cfg.window_size, data_cfg.splits)
    as_of = pd.Timestamp(args.as_of) if args.as_of else None
    report = validate_market_data(raw, data_cfg.validation, min_rows, as_of=as_of)

    # Facts about the data; each may be unavailable (None) when the content is broken.
    coerced = coerce_columns(raw).frame
    times = pd.DatetimeIndex(coerced["timestamp"] if "timestamp" in coerced else []).dropna()
    try:
        digest = data_digest(coerce_ohlcv(raw, source))
    except DataError:
        digest = None
    try:
        interval = str(detect_bar_interval(times))
    except DataError:
        interval = None

    report_dir = None
    if args.report_dir:
        report_dir = str(args.report_dir)
        write_reports(report, report_dir)

    args.result.update(
        passed=report.success,
        rows=len(raw),
        first=times.min().isoformat() if len(times) else None,
        last=times.max().isoformat() if len(times) else None,
        bar_interval=interval,
        data_digest=digest,
        suite_version=SUITE_VERSION,
        failures=report.failures,
        report_dir=report_dir,
    )
    _print_verdict(args.result, min_rows)
    return EXIT_OK if report.success else EXIT_FAILED


def _print_verdict(result: dict[str, Any], min_rows: int) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    # A fixed width when piped (tests, Airflow logs): rich would otherwise squeeze to 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 160, highlight=False)
    head = (
        f"{result['symbol']} from {result['source']}: {result['rows']} rows "
        f"({result['first']} .. {result['last']}, bar {result['bar_interval']}), "
        f"suite v{result['suite_version']}, at least {min_rows} rows required"
    )
    if result["passed"]:
        console.print(f"PASSED: {head}", soft_wrap=True)
        return
    console.print(f"FAILED: {head}; {len(result['failures'])} expectation(s) failed", soft_wrap=True)
    console.print("Rows are 0-based data rows in file order (CSV line = row + 2).")
    table = Table(show_lines=False)
    table.add_column("expectation", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("column", no_wrap=True)
    table.add_column("failed rows", justify="right")
    table.add_column("examples (row: value)")
    for failure in result["failures"]:
        count = failure["unexpected_count"]
        examples = failure["examples"]
        if failure["rows"]:
            shown = ", ".join(f"{row}: {value}" for row, value in zip(failure["rows"], examples))
        else:
            shown = ", ".join(map(str, examples))
        table.add_row(
            failure["expectation"],
            failure["check"],
            str(failure["column"] or ""),
            "-" if count is None else str(count),
            shown,
        )
    console.print(table)
