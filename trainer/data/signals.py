"""The option signals `sentiment` and `sl_confidence`: where each comes from, and causal fallbacks.

The options read two signals from every observation (trainer/options/trading_options.py):

- `sentiment`, 0 bearish .. 0.5 neutral .. 1 bullish. OpenShort exits (0.8) when it is > 0.60;
  Wait exits (0.85) when it is < 0.30 or > 0.75.
- `sl_confidence`, the DIRECTIONAL conviction of a supervised (SL) model about the next bar:
  0 = surely down .. 0.5 = no view .. 1 = surely up. OpenLong is available when
  sl_confidence >= min_confidence, OpenShort (mirrored) when 1 - sl_confidence >= min_confidence,
  and Wait exits (0.65) on a strong view either way, max(sl, 1 - sl) > 0.75. A confidence without
  a direction could not tell OpenLong from OpenShort; with this one exactly one of them passes the
  seed's min_confidence 0.5 (both at exactly 0.5, the neutral value).

Where each comes from (`data.sentiment_source`, `data.sl_confidence_source`):

| source  | values |
|---------|--------|
| column  | the market data's own `sentiment` / `sl_confidence` column |
| file    | the `data.signals` table (CSV/Parquet, local or s3://): timestamp + signal columns |
| derived | computed here from the causal features (below), fitted on the train split only |
| neutral | the constant environment.neutral_sentiment / neutral_sl_confidence (0.5) |
| auto    | (the default) file if the signals table has the column, else column, else derived |

The signals file is joined as of each bar: bar t takes the newest signal stamped at or before t
(`t_signal <= t_bar`), never a later one. The convention: stamp a signal with the first bar at which
it was known; a bar's decision is made at its close (the observation at bar t already holds close_t),
so a signal stamped t is used at t and after. Bars before the first signal get the neutral value;
a signal is carried forward until the next one. The run records how many bars matched a stamp
exactly, were carried forward, or had none (`MarketData.describe()["signals"]`).

Derived signals, both pointwise functions of the bar's own causal features (WINDOW_FEATURES at t,
trainer/data/features.py), so a derived value at t never depends on a later bar:

- sentiment: a market-sentiment proxy, the logistic of a standardised composite of trailing
  momentum and RSI: z_k = (x_k - mean_k) / std_k for x = ret_20 (20-bar log return) and rsi_14;
  c = (z_ret_20 + z_rsi_14) / 2, standardised again, z = (c - mean_c) / std_c; sentiment =
  1 / (1 + exp(-z)). The means and stds are fitted. With z about standard normal, sentiment is
  > 0.60 on about a third of the bars, > 0.75 on about 14% and < 0.30 on about 20%.
- sl_confidence: a logistic regression (scikit-learn, L2, C = 1) of the next bar's direction
  (close_t+1 > close_t) on the 10 standardised features at t. Its P(up) on daily index data is
  calibrated but timid (about 0.45-0.60, most of it the up-day base rate), so the value is its
  percentile among the model's own predictions on the rows it was fitted on: sl_confidence =
  F(P(up)), F the empirical CDF (101 quantile knots, linear in between). 0.5 is the model's median
  call, > 0.75 its most bullish quarter, < 0.25 its most bearish quarter. The label of the last
  row of a frame would need the next frame's first bar, so that row is not fitted on.

No look-ahead, no in-sample optimism: the derived signals are FITTED ON THE TRAIN SPLIT ONLY.
Eval and test bars get values from the model fitted on the whole train split (`transform`), which
never saw them. Inside the train split a model would score its own fitting rows too well, so the
train split's values come from an expanding-window walk-forward (`fit_transform`): the first
`min_history` (252) bars get the neutral value, then every `refit_every` (252) bars a model is fitted
on all train bars before the block and gives the block's values. So a train bar's value comes
from a model fitted on earlier bars only (this is scikit-learn's TargetEncoder idea, cross fitting
in fit_transform, with time-ordered folds that only look back).

`SignalModel` is what a run keeps: the resolved sources, the neutral values and the fitted
parameters (plain JSON, `save(dir)` -> dir/signals.json, `load(dir)`), so a served model computes
the same signals for new bars: `SignalModel.load(model_dir).transform(compute_features(bars))`.
Applying the fitted model needs numpy only; scikit-learn is needed to fit.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainer.data.features import WINDOW_FEATURES, FeatureFrame
from trainer.errors import DataError

SIGNALS: tuple[str, ...] = ("sentiment", "sl_confidence")
SOURCES: tuple[str, ...] = ("column", "file", "derived", "neutral")
REQUESTS: tuple[str, ...] = ("auto", *SOURCES)
SIGNALS_FILE = "signals.json"
FORMAT_VERSION = 1

MIN_HISTORY_BARS = 252  # train bars before the first walk-forward fit (one year of daily bars)
REFIT_EVERY_BARS = 252  # walk-forward refit cadence inside the train split
MIN_FIT_ROWS = 30  # fewest labelled rows a classifier is fitted on
CLASSIFIER_C = 1.0  # inverse L2 strength of the logistic regression
N_KNOTS = 101  # quantile knots of the percentile map
SENTIMENT_INPUTS: tuple[str, ...] = ("ret_20", "rsi_14")

METHODS = {
    "sentiment": "logistic of the standardised mean of z(ret_20) and z(rsi_14), fitted on the train split",
    "sl_confidence": (
        "percentile of P(next close > close) of an L2 logistic regression on the 10 causal features at t, "
        "fitted on the train split; train bars by expanding-window walk-forward"
    ),
}


# --------------------------------------------------------------------------------------------
# Which source each signal uses
# --------------------------------------------------------------------------------------------


def resolve_sources(requested: dict[str, str], data_columns, file_columns) -> dict[str, str]:
    """{signal: column|file|derived|neutral} from the requested sources (auto allowed) and the
    signal columns the market data and the signals file actually have; DataError when a
    requested column or file column is not there."""
    data_columns, file_columns = set(data_columns), set(file_columns)
    resolved = {}
    for name in SIGNALS:
        wanted = requested.get(name, "auto")
        if wanted not in REQUESTS:
            raise DataError(f"data.{name}_source: unknown source {wanted!r} (one of {', '.join(REQUESTS)})")
        if wanted == "auto":
            wanted = "file" if name in file_columns else "column" if name in data_columns else "derived"
        elif wanted == "column" and name not in data_columns:
            raise DataError(
                f"data.{name}_source is 'column' but the market data has no {name!r} column; "
                "use auto, file (data.signals), derived or neutral"
            )
        elif wanted == "file" and name not in file_columns:
            raise DataError(f"data.{name}_source is 'file' but the data.signals table has no {name!r} column")
        resolved[name] = wanted
    return resolved


# --------------------------------------------------------------------------------------------
# The as-of join of a signals table
# --------------------------------------------------------------------------------------------


def join_signals(
    index: pd.DatetimeIndex, table: pd.DataFrame, columns, neutral: dict[str, float]
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Each bar of `index` gets the newest row of `table` stamped at or before it (never a later
    one); bars before the table's first stamp get the neutral value. `table` has a strictly
    increasing DatetimeIndex (the signals suite checks it). Returns (frame of `columns` on
    `index`, join statistics)."""
    stamps = pd.DatetimeIndex(table.index)
    bars = pd.DatetimeIndex(index)
    if not len(stamps):
        raise DataError("join_signals: the signals table has no rows")
    position = stamps.searchsorted(bars, side="right") - 1  # the newest stamp <= the bar
    known = position >= 0
    used = stamps[np.clip(position, 0, None)]
    exact = known & np.asarray(used == bars)
    out = pd.DataFrame(index=index)
    for name in columns:
        values = table[name].to_numpy(dtype=np.float64)[np.clip(position, 0, None)]
        out[name] = np.where(known, values, neutral[name])
    ages = (bars - used)[known]
    stats = {
        "rows": len(table),
        "first": str(stamps[0]),
        "last": str(stamps[-1]),
        "exact_bars": int(exact.sum()),
        "carried_bars": int((known & ~exact).sum()),
        "neutral_bars": int((~known).sum()),
        "max_age": str(ages.max()) if len(ages) else None,
    }
    return out, stats


# --------------------------------------------------------------------------------------------
# The two derivations (pointwise in the features, so causal)
# --------------------------------------------------------------------------------------------


def _safe_std(values: np.ndarray) -> np.ndarray:
    std = np.asarray(values.std(axis=0), dtype=np.float64)
    return np.where(std > 1e-12, std, 1.0)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50.0, 50.0)))


@dataclass(frozen=True)
class SentimentProxy:
    """sentiment = logistic(z), z the standardised mean of the standardised SENTIMENT_INPUTS."""

    input_mean: list[float]
    input_std: list[float]
    composite_mean: float
    composite_std: float

    @staticmethod
    def _inputs(window: np.ndarray) -> np.ndarray:
        return window[:, [WINDOW_FEATURES.index(n) for n in SENTIMENT_INPUTS]].astype(np.float64)

    @classmethod
    def fit(cls, window: np.ndarray, close: np.ndarray | None = None) -> "SentimentProxy":
        """Fit the standardisations on the rows of `window` (`close` is not needed)."""
        x = cls._inputs(window)
        mean, std = x.mean(axis=0), _safe_std(x)
        composite = ((x - mean) / std).mean(axis=1)
        return cls(mean.tolist(), std.tolist(), float(composite.mean()), float(_safe_std(composite)))

    def transform(self, window: np.ndarray) -> np.ndarray:
        x = self._inputs(window)
        composite = ((x - np.asarray(self.input_mean)) / np.asarray(self.input_std)).mean(axis=1)
        return _sigmoid((composite - self.composite_mean) / self.composite_std)


def next_bar_up(close: np.ndarray) -> np.ndarray:
    """Label of rows 0 .. n-2: 1 when the next close is higher (the last row has no label here)."""
    close = np.asarray(close, dtype=np.float64)
    return (close[1:] > close[:-1]).astype(np.int64)


def _fit_classifier(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(mean, scale, coefficients, intercept) of the L2 logistic regression of the labels `y` on the
    feature rows `x` (standardised here). The only place a classifier is fitted: the tests record
    the rows it receives."""
    from sklearn.linear_model import LogisticRegression

    mean, scale = x.mean(axis=0), _safe_std(x)
    model = LogisticRegression(C=CLASSIFIER_C, max_iter=1000)
    model.fit((x - mean) / scale, y)
    return mean, scale, model.coef_[0].astype(np.float64), float(model.intercept_[0])


@dataclass(frozen=True)
class DirectionClassifier:
    """P(up) = logistic(((x - mean) / scale) . coef + intercept); sl_confidence = its percentile
    among the predictions on the fitting rows (`knots` are their N_KNOTS quantiles)."""

    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    knots: list[float]
    fitted_rows: int
    up_share: float  # share of up labels among the fitted rows

    @classmethod
    def fit(cls, window: np.ndarray, close: np.ndarray) -> "DirectionClassifier":
        """Fit on rows 0 .. n-2 of one frame's bars (so every label stays inside the frame)."""
        y = next_bar_up(close)
        x = np.asarray(window[: len(y)], dtype=np.float64)
        if len(y) < MIN_FIT_ROWS or len(np.unique(y)) < 2:
            raise DataError(
                f"cannot fit the derived sl_confidence on {len(y)} labelled train bars "
                f"(needs {MIN_FIT_ROWS} and both up and down bars); "
                "set data.sl_confidence_source to neutral, column or file"
            )
        mean, scale, coef, intercept = _fit_classifier(x, y)
        fitted = cls(mean.tolist(), scale.tolist(), coef.tolist(), intercept, [], len(y), float(y.mean()))
        knots = np.quantile(fitted.p_up(x), np.linspace(0.0, 1.0, N_KNOTS))
        return replace(fitted, knots=knots.tolist())

    def p_up(self, window: np.ndarray) -> np.ndarray:
        x = np.asarray(window, dtype=np.float64)
        return _sigmoid(((x - np.asarray(self.mean)) / np.asarray(self.scale)) @ np.asarray(self.coef) + self.intercept)

    def transform(self, window: np.ndarray) -> np.ndarray:
        knots, first = np.unique(np.asarray(self.knots), return_index=True)
        if len(knots) < 2:  # a constant prediction carries no view
            return np.full(len(window), 0.5)
        levels = np.linspace(0.0, 1.0, N_KNOTS)[first]
        return np.interp(self.p_up(window), knots, levels)


# --------------------------------------------------------------------------------------------
# The model a run keeps
# --------------------------------------------------------------------------------------------

_DERIVATIONS = {"sentiment": SentimentProxy, "sl_confidence": DirectionClassifier}


def _fit_derivations(names, window: np.ndarray, close: np.ndarray) -> dict[str, Any]:
    """{signal: its derivation fitted on these rows} for the derived signals `names`."""
    return {name: _DERIVATIONS[name].fit(window, close) for name in names}


class SignalModel:
    """The signals of one run: each signal's source, the neutral values, and the derivations
    fitted on the train split. :param sources: {signal: column|file|derived|neutral} (resolved,
    see resolve_sources); :param neutral: {signal: value in [0, 1]}; :param min_history: train
    bars before the first walk-forward fit; :param refit_every: walk-forward block length."""

    def __init__(
        self,
        sources: dict[str, str],
        neutral: dict[str, float],
        min_history: int = MIN_HISTORY_BARS,
        refit_every: int = REFIT_EVERY_BARS,
    ):
        unknown = {n: s for n, s in sources.items() if s not in SOURCES}
        if unknown or set(sources) != set(SIGNALS):
            raise DataError(f"signal sources must name {', '.join(SIGNALS)} with one of {', '.join(SOURCES)}: {sources}")
        self.sources = dict(sources)
        self.neutral = {n: float(neutral[n]) for n in SIGNALS}
        self.min_history = int(min_history)
        self.refit_every = int(refit_every)
        self.fitted: dict[str, Any] = {}
        self.walk_forward: dict[str, Any] = {}

    @property
    def derived(self) -> list[str]:
        return [n for n in SIGNALS if self.sources[n] == "derived"]

    # ---------------------------------------------------------------- fit / transform

    def fit(self, train: FeatureFrame) -> "SignalModel":
        """Fit the derived signals on the train split's bars (all of them; the last bar only as a label)."""
        self.fitted = _fit_derivations(self.derived, train.window, train.close)
        return self

    def fit_transform(self, train: FeatureFrame) -> FeatureFrame:
        """fit(train), and the train split with signals from the expanding-window walk-forward:
        each block of refit_every bars from a model fitted on the train bars before it (the first
        min_history bars neutral), never from a model that saw the bar."""
        values = {n: np.full(len(train), self.neutral[n]) for n in self.derived}
        refits = []
        start = self.min_history
        while self.derived and start < len(train):
            end = min(start + self.refit_every, len(train))
            block = _fit_derivations(self.derived, train.window[:start], train.close[:start])
            for name, derivation in block.items():
                values[name][start:end] = derivation.transform(train.window[start:end])
            refits.append({"fitted_on": [str(train.index[0]), str(train.index[start - 1])],
                           "applied_to": [str(train.index[start]), str(train.index[end - 1])]})
            start = end
        self.walk_forward = {
            "min_history": self.min_history,
            "refit_every": self.refit_every,
            "refits": len(refits),
            "neutral_bars": min(self.min_history, len(train)) if self.derived else 0,
            "blocks": refits,
        }
        self.fit(train)
        return self._apply(train, values)

    def transform(self, features: FeatureFrame) -> FeatureFrame:
        """`features` with each signal from its source; derived ones from the model fitted on the
        whole train split (use it for bars the fit did not see: eval, test, new bars)."""
        missing = [n for n in self.derived if n not in self.fitted]
        if missing:
            raise DataError(f"SignalModel.transform before fit: no fitted derivation for {', '.join(missing)}")
        values = {n: self.fitted[n].transform(features.window) for n in self.derived}
        return self._apply(features, values)

    def _apply(self, features: FeatureFrame, derived_values: dict[str, np.ndarray]) -> FeatureFrame:
        arrays, present = {}, {}
        for name in SIGNALS:
            source = self.sources[name]
            if source == "neutral":
                arrays[name] = np.full(len(features), self.neutral[name])
            elif source == "derived":
                arrays[name] = np.asarray(derived_values[name], dtype=np.float64)
            else:  # column / file: the values compute_features read from the bars' column
                if not getattr(features, f"has_{name}"):
                    raise DataError(
                        f"{name} comes from the {source} ({'data.signals' if source == 'file' else 'market data'}), "
                        f"but these bars have no {name!r} column"
                    )
                arrays[name] = features.sentiment if name == "sentiment" else features.sl_confidence
            present[name] = source != "neutral"
        return replace(
            features,
            sentiment=arrays["sentiment"],
            sl_confidence=arrays["sl_confidence"],
            has_sentiment=present["sentiment"],
            has_sl_confidence=present["sl_confidence"],
        )

    # ---------------------------------------------------------------- persistence

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "features": list(WINDOW_FEATURES),
            "sources": self.sources,
            "neutral": self.neutral,
            "min_history": self.min_history,
            "refit_every": self.refit_every,
            "fitted": {n: asdict(d) for n, d in self.fitted.items()},
            "walk_forward": self.walk_forward,
        }

    @classmethod
    def from_dict(cls, tree: dict[str, Any], where: str = "signals") -> "SignalModel":
        if tree.get("format") != FORMAT_VERSION:
            raise DataError(f"{where}: signals format {tree.get('format')!r}, this code reads {FORMAT_VERSION}")
        if tree.get("features") != list(WINDOW_FEATURES):
            raise DataError(f"{where}: fitted on features {tree.get('features')}, this code computes {list(WINDOW_FEATURES)}")
        model = cls(tree["sources"], tree["neutral"], tree["min_history"], tree["refit_every"])
        model.fitted = {n: _DERIVATIONS[n](**params) for n, params in tree["fitted"].items()}
        model.walk_forward = tree.get("walk_forward", {})
        return model

    def save(self, directory: str | Path) -> Path:
        """Write `directory`/signals.json (atomically) and return its path."""
        from trainer.io import write_json_atomic

        path = Path(directory) / SIGNALS_FILE
        write_json_atomic(path, self.to_dict())
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "SignalModel":
        path = Path(directory) / SIGNALS_FILE
        try:
            tree = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(f"{path}: no signals model saved here") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: cannot read the signals model ({exc})") from None
        return cls.from_dict(tree, str(path))

    def describe(self) -> dict[str, Any]:
        """Provenance: per signal its source (and, when derived, the method and fit)."""
        out: dict[str, Any] = {}
        for name in SIGNALS:
            entry: dict[str, Any] = {"source": self.sources[name]}
            if self.sources[name] == "neutral":
                entry["value"] = self.neutral[name]
            if name in self.fitted:
                entry["method"] = METHODS[name]
                if name == "sl_confidence":
                    entry["fitted_rows"] = self.fitted[name].fitted_rows
            out[name] = entry
        if self.derived:
            out["walk_forward"] = {k: v for k, v in self.walk_forward.items() if k != "blocks"}
        return out


def signal_summary(values: np.ndarray) -> dict[str, float]:
    """mean / min / max and the shares beyond the options' thresholds, for provenance."""
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return {}
    finite = values[np.isfinite(values)]
    if not len(finite):
        return {"mean": math.nan}
    return {
        "mean": round(float(finite.mean()), 4),
        "min": round(float(finite.min()), 4),
        "max": round(float(finite.max()), 4),
        "share_above_0.60": round(float((finite > 0.60).mean()), 4),
        "share_above_0.75": round(float((finite > 0.75).mean()), 4),
        "share_below_0.25": round(float((finite < 0.25).mean()), 4),
        "share_below_0.30": round(float((finite < 0.30).mean()), 4),
    }


# --------------------------------------------------------------------------------------------
# Loading a signals file (data.signals)
# --------------------------------------------------------------------------------------------


def load_signals(source: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read, validate (the GX signals suite) and coerce a signals table; (frame, file facts).
    DataError when it cannot be read or fails the suite (the failed checks are named)."""
    from trainer.data.loaders import coerce_signals, read_signals_table, signals_digest
    from trainer.data.validation import describe_failures, validate_signals

    raw = read_signals_table(source)
    report = validate_signals(raw)
    if not report.success:
        raise DataError(
            f"{source}: the signals table fails the {report.suite_name} suite: {describe_failures(report)}"
        )
    frame = coerce_signals(raw, source)
    info = {
        "uri": source,
        "digest": signals_digest(frame),
        "columns": list(frame.columns),
        "suite": report.suite_name,
    }
    return frame, info
