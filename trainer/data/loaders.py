"""Market data in: read a CSV / Parquet table from a local path or `s3://bucket/key` into the
market data frame of docs/contracts.md.

Loading is two steps, so that `trainer validate` can report bad *content* row by row:

1. `read_raw_table(source)` reads the table as it is (CSV cells stay text) and only normalises
   column names: lower case, spaces/dashes to `_` (`Adj Close` -> `adj_close`), and the time
   column (`date`, `timestamp`, `datetime`, any case) renamed to `timestamp`.
2. `coerce_columns(raw)` turns the text into datetimes and floats and keeps, per column, the
   cells that would not parse; `coerce_ohlcv` is the strict version `load_ohlcv` uses.

Where the line is drawn:
- DataError (exit 2, "cannot read a table at all"): the file or object is missing or unreadable,
  an S3 error (NoSuchKey, NoSuchBucket, bad credentials, endpoint unreachable), an empty file, a
  header with no data rows, binary content or text that does not parse as a table, or a table
  with none of the expected columns (time, open, high, low, close, volume).
- Validation failure (exit 1, `trainer.data.validation`): a table was read but its content is
  bad: a missing column, text in a numeric column, an unparsable date, NaN, bad prices, order...
  `load_ohlcv` refuses such content too (DataError naming the column and a few bad cells), because
  it promises float64 columns and a DatetimeIndex; run `trainer validate` for the full report.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from trainer.errors import DataError
from trainer.symbols import InvalidSymbolError, validate_symbol

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"

TIME_COLUMN = "timestamp"
REQUIRED_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
OPTIONAL_COLUMNS: tuple[str, ...] = ("adj_close", "sentiment", "sl_confidence")
NUMERIC_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
# Names people export the bar time under (compared after lower-casing).
TIME_ALIASES: tuple[str, ...] = ("timestamp", "date", "datetime")

_PARQUET_SUFFIXES = (".parquet", ".pq")
_SNIFF_BYTES = 8192
_EXAMPLES = 3


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


def bundled_symbols() -> list[str]:
    """Symbols with a bundled CSV, sorted."""
    return sorted(p.stem for p in BUNDLED_DIR.glob("*.csv"))


def bundled_path(symbol: str) -> Path:
    """Path of the bundled CSV for `symbol` (validated first; the file may not exist)."""
    return BUNDLED_DIR / f"{_checked_symbol(symbol)}.csv"


def resolve_source(symbol: str, source: str | Path | None) -> str:
    """The source to load: `source` as given, or the bundled file when it is None."""
    symbol = _checked_symbol(symbol)
    if source is not None and str(source).strip():
        return str(source)
    path = bundled_path(symbol)
    if not path.is_file():
        raise DataError(
            f"no bundled data for symbol {symbol!r}: bundled symbols are {', '.join(bundled_symbols())}; "
            "pass a CSV/Parquet path or s3://bucket/key as the data source"
        )
    return str(path)


def _checked_symbol(symbol: str) -> str:
    """validate_symbol, with its refusal turned into a DataError (exit 2, one message)."""
    try:
        return validate_symbol(symbol)
    except InvalidSymbolError as exc:
        raise DataError(str(exc)) from None


# --------------------------------------------------------------------------------------------
# Step 1: the raw table
# --------------------------------------------------------------------------------------------


def read_raw_table(source: str | Path) -> pd.DataFrame:
    """Read `source` as a table with normalised column names and the values as stored.

    CSV cells stay text (so validation can count cells that are not numbers); the time column is
    renamed `timestamp`. Raises DataError when there is no readable table (see module docstring).
    """
    source = str(source)
    raw = _normalise_columns(source, _read_table(source, "OHLCV bars"))
    if raw.empty:
        raise DataError(
            f"{source}: the table has a header ({', '.join(map(str, raw.columns))}) but no data rows"
        )
    return raw


def _read_table(source: str, what: str) -> pd.DataFrame:
    """The table at `source` (local or s3://), cells as stored; DataError when there is none."""
    name, data = _fetch(source)
    if not data.strip():
        raise DataError(f"{source}: the file is empty (0 bytes of data); expected a CSV or Parquet table of {what}")
    if name.lower().endswith(_PARQUET_SUFFIXES):
        return _parse_parquet(source, data)
    return _parse_csv(source, data)


def _fetch(source: str) -> tuple[str, bytes]:
    """(name used to pick the format, bytes) from a local path or s3://bucket/key."""
    if source.startswith("s3://"):
        return _fetch_s3(source)
    if "://" in source:
        raise DataError(f"{source}: unsupported scheme; use a local path or s3://bucket/key")
    path = Path(source)
    try:
        return path.name, path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{source}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{source}: is a directory, expected a CSV or Parquet file") from None
    except OSError as exc:
        raise DataError(f"{source}: cannot read the file ({exc.strerror or exc})") from None


def _fetch_s3(source: str) -> tuple[str, bytes]:
    """GET the object; boto3 reads AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL itself."""
    from trainer.s3 import parse_s3_uri, s3_client, s3_errors

    bucket, key = parse_s3_uri(source)
    if not key:
        raise DataError(f"{source}: expected s3://bucket/key")
    with s3_errors(source, DataError):
        body = s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return key, body


def _parse_csv(source: str, data: bytes) -> pd.DataFrame:
    # pandas happily reads binary junk as one odd column; a NUL byte never occurs in a text CSV.
    if b"\x00" in data[:_SNIFF_BYTES]:
        raise DataError(f"{source}: binary content, not a CSV text table (found NUL bytes)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{source}: not UTF-8 text (byte {exc.start}); expected a CSV table") from None
    try:
        # dtype=str: keep cells as text; coercion (and validation) decides what is a number.
        return pd.read_csv(io.StringIO(text), dtype=str, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{source}: no table found (no header line)") from None
    except (pd.errors.ParserError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{source}: cannot parse as CSV: {first_line}") from None


def _parse_parquet(source: str, data: bytes) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises many types (ArrowInvalid, OSError...) for a bad file
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{source}: cannot read as Parquet: {detail}") from None
    # A frame saved with its DatetimeIndex keeps it as the index: make it a column again.
    if isinstance(frame.index, pd.DatetimeIndex) or (frame.index.name or "").lower() in TIME_ALIASES:
        frame = frame.reset_index()
    return frame


def _normalise_name(name: object) -> str:
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


def _normalise_names(source: str, raw: pd.DataFrame) -> pd.DataFrame:
    """Lower-case / underscore names, the time column renamed `timestamp`, no duplicate names."""
    raw = raw.rename(columns=_normalise_name)
    time_columns = [c for c in raw.columns if c in TIME_ALIASES]
    if len(time_columns) > 1:
        raise DataError(f"{source}: more than one time column ({', '.join(time_columns)}); keep one of them")
    if time_columns:
        raw = raw.rename(columns={time_columns[0]: TIME_COLUMN})
    duplicated = sorted({c for c in raw.columns if list(raw.columns).count(c) > 1})
    if duplicated:
        raise DataError(f"{source}: duplicate column names after normalising case: {', '.join(duplicated)}")
    return raw


def _normalise_columns(source: str, raw: pd.DataFrame) -> pd.DataFrame:
    raw = _normalise_names(source, raw)
    known = {TIME_COLUMN, *REQUIRED_COLUMNS}
    if not known.intersection(raw.columns):
        shown = ", ".join(map(str, list(raw.columns)[:8]))
        raise DataError(
            f"{source}: not an OHLCV table: none of the columns date/timestamp, open, high, low, close, "
            f"volume were found (columns: {shown})"
        )
    return raw.reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Step 2: coercion
# --------------------------------------------------------------------------------------------


@dataclass
class Coerced:
    """The raw table with `timestamp` as datetime64[ns] and the numeric columns as float64.

    `unparsed[col]` holds, per row, the original cell where it was present but would not parse
    (None elsewhere); `missing` lists the required columns (time included) the table lacks.
    """

    frame: pd.DataFrame
    unparsed: dict[str, pd.Series] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


def coerce_columns(raw: pd.DataFrame) -> Coerced:
    """Convert what can be converted; never raises on bad cells (they are recorded instead)."""
    out = pd.DataFrame(index=raw.index)
    unparsed: dict[str, pd.Series] = {}
    if TIME_COLUMN in raw.columns:
        out[TIME_COLUMN], unparsed[TIME_COLUMN] = _to_datetime(raw[TIME_COLUMN])
    for column in NUMERIC_COLUMNS:
        if column in raw.columns:
            out[column], unparsed[column] = _to_float(raw[column])
    missing = [c for c in (TIME_COLUMN, *REQUIRED_COLUMNS) if c not in raw.columns]
    return Coerced(frame=out, unparsed=unparsed, missing=missing)


def _to_float(cells: pd.Series) -> tuple[pd.Series, pd.Series]:
    if pd.api.types.is_numeric_dtype(cells) and not pd.api.types.is_bool_dtype(cells):
        values = cells.astype("float64")
        return values, pd.Series(None, index=cells.index, dtype=object)
    values = pd.to_numeric(cells, errors="coerce").astype("float64")
    bad = values.isna() & cells.notna()
    return values, cells.astype(object).where(bad, None)


def _to_datetime(cells: pd.Series) -> tuple[pd.Series, pd.Series]:
    if isinstance(cells.dtype, pd.DatetimeTZDtype):
        values = cells.dt.tz_convert("UTC").dt.tz_localize(None)
    elif pd.api.types.is_datetime64_dtype(cells):
        values = cells
    else:
        # utc=True accepts offsets ("...Z", "+02:00") and leaves naive times as they are.
        values = pd.to_datetime(cells, errors="coerce", utc=True).dt.tz_localize(None)
    values = values.astype("datetime64[ns]")
    bad = values.isna() & cells.notna()
    return values, cells.astype(object).where(bad, None)


def coerce_ohlcv(raw: pd.DataFrame, source: str = "<frame>") -> pd.DataFrame:
    """The contract frame (DatetimeIndex `timestamp`, float64 columns); DataError on bad content."""
    coerced = coerce_columns(raw)
    if coerced.missing:
        raise DataError(
            f"{source}: missing required column(s) {', '.join(coerced.missing)} "
            f"(found: {', '.join(map(str, raw.columns))}); run `trainer validate` for a full report"
        )
    for column, cells in coerced.unparsed.items():
        bad = cells.dropna()
        if len(bad):
            kind = "dates" if column == TIME_COLUMN else "numbers"
            examples = ", ".join(f"row {i}: {v!r}" for i, v in bad.head(_EXAMPLES).items())
            raise DataError(
                f"{source}: column {column!r} has {len(bad)} cell(s) that are not {kind} ({examples}); "
                "run `trainer validate` for a full report"
            )
    frame = coerced.frame.set_index(TIME_COLUMN)
    frame.index.name = TIME_COLUMN
    return frame


def load_ohlcv(source: str | Path) -> pd.DataFrame:
    """Load market data per docs/contracts.md (local .csv / .parquet or s3://bucket/key)."""
    return coerce_ohlcv(read_raw_table(source), str(source))


# --------------------------------------------------------------------------------------------
# Signal tables (data.signals): timestamp + sentiment and/or sl_confidence
# --------------------------------------------------------------------------------------------

SIGNAL_COLUMNS: tuple[str, ...] = ("sentiment", "sl_confidence")


def read_signals_table(source: str | Path) -> pd.DataFrame:
    """Read a signals table (CSV / Parquet, local or s3://) with normalised names, cells as stored.

    DataError when there is no table, no time column or neither signal column; bad *content*
    (text, NaN, out of [0, 1], duplicate or unordered timestamps) is for the GX signals suite
    (trainer.data.validation.validate_signals), which load_signals runs.
    """
    source = str(source)
    raw = _normalise_names(source, _read_table(source, "signals (timestamp, sentiment, sl_confidence)"))
    if TIME_COLUMN not in raw.columns:
        raise DataError(
            f"{source}: a signals table needs a time column (date / timestamp / datetime); "
            f"found: {', '.join(map(str, list(raw.columns)[:8]))}"
        )
    present = [c for c in SIGNAL_COLUMNS if c in raw.columns]
    if not present:
        raise DataError(
            f"{source}: a signals table needs a sentiment and/or sl_confidence column; "
            f"found: {', '.join(map(str, list(raw.columns)[:8]))}"
        )
    if raw.empty:
        raise DataError(f"{source}: the signals table has a header but no data rows")
    return raw[[TIME_COLUMN, *present]].reset_index(drop=True)


def coerce_signals(raw: pd.DataFrame, source: str = "<signals>") -> pd.DataFrame:
    """A validated signals table as a frame: DatetimeIndex `timestamp`, float64 signal columns."""
    coerced = coerce_columns(raw)
    for column, cells in coerced.unparsed.items():
        bad = cells.dropna()
        if len(bad):
            raise DataError(f"{source}: column {column!r} has {len(bad)} cell(s) that do not parse; run the signals suite")
    frame = coerced.frame.set_index(TIME_COLUMN)[[c for c in SIGNAL_COLUMNS if c in coerced.frame.columns]]
    frame.index.name = TIME_COLUMN
    return frame


def signals_digest(frame: pd.DataFrame) -> str:
    """sha256 of a coerced signals frame (index + signal columns), like data_digest."""
    return data_digest(frame)


# --------------------------------------------------------------------------------------------
# Digest
# --------------------------------------------------------------------------------------------


def data_digest(df: pd.DataFrame) -> str:
    """sha256 (hex) of the normalised frame: same data from CSV, Parquet or S3 -> same digest.

    Covers the index (as int64 nanoseconds) and the known numeric columns present, in a fixed
    order, as little-endian float64 with one canonical NaN; other columns are ignored.
    """
    index = pd.DatetimeIndex(df.index)
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    columns = [c for c in NUMERIC_COLUMNS if c in df.columns]
    digest = hashlib.sha256()
    digest.update(json.dumps({"columns": columns, "rows": len(df)}).encode())
    digest.update(index.as_unit("ns").asi8.astype("<i8").tobytes())
    for column in columns:
        values = df[column].to_numpy(dtype="float64", na_value=np.nan)
        values = np.where(np.isnan(values), np.nan, values)  # one NaN bit pattern
        digest.update(values.astype("<f8").tobytes())
    return digest.hexdigest()
