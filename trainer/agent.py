"""A trained agent as one object: save/load a model directory, backtest a split, replay new bars.

Model directory (docs/contracts.md): meta.json, config.resolved.yaml, sac.zip, for Phase B.1
controller.pt, and, when the run had them, signals.json (the fitted SignalModel that computed the
option signals) and example_bars.csv (bars a served model accepts; the MLflow input example).

One code path acts: `Agent.backtest` walks a featurised split deterministically with option
persistence (the OptionVecEnv of training, deterministic: argmax options among the available ones,
min_duration enforced, an option ends when its termination probability is >= 0.5, option memory
kept), and `Agent.replay` (what the MLflow pyfunc serves) featurises a frame of raw bars the way
training featurised each split (compute_features, then the run's SignalModel) and runs that same
backtest over it. So the exposure, option and option step served for a bar are the ones the
gated backtest holds there.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from trainer.config import OPTION_NAMES, TrainerConfig
from trainer.data.features import FEATURE_WARMUP_BARS, FeatureFrame, compute_features
from trainer.data.signals import SIGNALS, SIGNALS_FILE, SignalModel
from trainer.envs.layout import ObservationLayout
from trainer.errors import DataError, NonFiniteError, TrainerError
from trainer.io import replace_dir, write_json_atomic, write_text_atomic

MODEL_FILES = ("meta.json", "config.resolved.yaml", "sac.zip")
EXAMPLE_FILE = "example_bars.csv"
TIME_COLUMN = "timestamp"
BAR_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
EXAMPLE_DECISIONS = 10  # decided bars in the saved input example


@dataclass
class BacktestResult:
    timestamps: list[str]  # the bar each row's return is realised at (the bar after the decision)
    returns: np.ndarray  # simple portfolio return per bar, net of costs
    positions: np.ndarray  # exposure held over each bar (decided at the close of the bar before)
    options: np.ndarray | None  # option index per bar (Phase B.1)
    bar_returns: np.ndarray  # the asset's own return per bar (buy-and-hold)
    # Steps already spent in the active option when the bar's decision was made (Phase B.1):
    # 0 on a bar where the option was chosen, so a re-selection of the option that just ended
    # shows as a 0 after a run of the same option.
    option_steps: np.ndarray | None = None


@dataclass
class Replay:
    """The agent's decisions on a frame of bars, one entry per input row, in input order.

    Row i is decided at the close of bar i and held over the next bar. Rows before
    `first_decision_row` (FEATURE_WARMUP_BARS + window_size - 1) have no decision: exposure NaN,
    option index -1, option step -1. Phase A has no options (`option_index` / `option_step` None).
    """

    timestamps: pd.DatetimeIndex
    exposure: np.ndarray  # float64 target exposure (fraction of equity, negative = short)
    option_index: np.ndarray | None  # int64, controller index order (OPTION_NAMES)
    option_step: np.ndarray | None  # int64, steps already spent in the option (0 = chosen here)
    first_decision_row: int

    @property
    def option_names(self) -> list[str] | None:
        if self.option_index is None:
            return None
        return [OPTION_NAMES[i] if i >= 0 else "" for i in self.option_index]


class Agent:
    """:param config: the run's resolved config; :param sac: the SB3 SAC model; :param learner: the
    OptionsLearner (Phase B.1) or None (Phase A); :param signals: the run's fitted SignalModel
    (None for a model directory written before signals existed: then the bars' own signal
    columns, else the neutral values, as its training did); :param example_bars: raw bars saved
    as the served model's input example."""

    def __init__(self, config: TrainerConfig, sac, learner=None, signals: SignalModel | None = None,
                 example_bars: pd.DataFrame | None = None):
        self.config = config
        self.sac = sac
        self.learner = learner
        self.signals = signals
        self.example_bars = example_bars
        self.layout = ObservationLayout(config.environment.window_size)

    @property
    def hierarchical(self) -> bool:
        return self.learner is not None

    @property
    def observation_size(self) -> int:
        return self.layout.size

    # ---------------------------------------------------------------- acting

    def backtest(self, features: FeatureFrame, seed: int = 0) -> BacktestResult:
        """One deterministic pass over a featurised split."""
        from trainer.envs.factory import make_vec_env

        venv = make_vec_env(features, self.config, n_envs=1, seed=seed, full_pass=True)
        option_env = None
        if self.hierarchical:
            from trainer.hierarchy.option_env import OptionVecEnv

            option_env = OptionVecEnv(
                venv, self.learner, self.config.options, self.layout, buffer=None, deterministic=True, seed=seed
            )
            venv = option_env
        obs = venv.reset()
        timestamps, returns, positions, bar_returns, options, option_steps = [], [], [], [], [], []
        while True:
            if option_env is not None:  # the option SAC acts under at this bar, and its age
                options.append(int(option_env.env_states[0].active_option))
                option_steps.append(int(option_env.env_states[0].option_step_count))
            action, _ = self.sac.predict(obs, deterministic=True)
            obs, _, dones, infos = venv.step(action)
            info = infos[0]
            timestamps.append(info["timestamp"])  # DummyVecEnv keeps the step's info on auto-reset
            returns.append(info["portfolio_return"])
            positions.append(info["position"])
            bar_returns.append(info["bar_return"])
            if dones[0]:
                break
        venv.close()
        result = BacktestResult(
            timestamps=timestamps,
            returns=np.asarray(returns),
            positions=np.asarray(positions),
            options=np.asarray(options, dtype=np.int64) if option_env is not None else None,
            bar_returns=np.asarray(bar_returns),
            option_steps=np.asarray(option_steps, dtype=np.int64) if option_env is not None else None,
        )
        if not np.all(np.isfinite(result.returns)):
            raise NonFiniteError("backtest produced non-finite portfolio returns")
        return result

    # ---------------------------------------------------------------- serving: raw bars in

    @property
    def first_decision_row(self) -> int:
        """The first input row a replay decides on: the feature warm-up plus a full window."""
        return FEATURE_WARMUP_BARS + self.config.environment.window_size - 1

    @property
    def min_bars(self) -> int:
        """Fewest input bars a replay accepts (one decision)."""
        return self.first_decision_row + 1

    @property
    def signal_columns(self) -> tuple[list[str], list[str]]:
        """(required, read) signal columns of the input bars: required where the run took the
        signal from the data's column or a signals file (the served bars carry it, as of each bar);
        read also includes the columns a model without a SignalModel uses when present."""
        if self.signals is None:
            return [], list(SIGNALS)
        required = [n for n in SIGNALS if self.signals.sources[n] in ("column", "file")]
        return required, required

    def featurise(self, bars: pd.DataFrame) -> FeatureFrame:
        """Raw bars (a checked frame: DatetimeIndex, float columns) -> the FeatureFrame training
        would have built from them as one split: compute_features, then the run's SignalModel.
        Signal columns the run did not read are dropped first, as load_market_data drops them."""
        env = self.config.environment
        _, read = self.signal_columns
        bars = bars.drop(columns=[c for c in SIGNALS if c in bars.columns and c not in read])
        features = compute_features(bars, env.neutral_sentiment, env.neutral_sl_confidence)
        return self.signals.transform(features) if self.signals is not None else features

    def replay(self, bars: pd.DataFrame) -> Replay:
        """The agent's deterministic decisions on `bars` (see `Replay`), by the backtest's own loop.

        `bars`: a DataFrame with a `timestamp` column (or a DatetimeIndex), `open, high, low, close,
        volume`, and `sentiment` / `sl_confidence` where the run read them from the data
        (`signal_columns`). The walk starts flat at `first_decision_row`, so a decision depends on
        the frame's first bar (indicator warm-up, position, option memory): the same frame gives
        the same decisions as a backtest of it. DataError names what is wrong with the input.
        """
        required, read = self.signal_columns
        frame = check_bars(bars, required_signals=required, read_signals=read, min_bars=self.min_bars)
        features = self.featurise(frame)
        # The backtest needs the bar after a decision to earn its return; the last input bar's
        # decision is made all the same, so one placeholder bar (a copy of the last, no price
        # change) follows it. No decision sees the placeholder: the last one is taken on the last
        # input bar's observation, before the step that reaches it.
        result = self.backtest(_with_placeholder_bar(features))
        first, n = self.first_decision_row, len(frame)
        if len(result.positions) != n - first:  # the backtest's walk and this row mapping disagree
            raise TrainerError(f"replay: {len(result.positions)} decisions for {n - first} decidable bars")
        exposure = np.full(n, np.nan)
        exposure[first:] = result.positions
        option_index = option_step = None
        if result.options is not None:
            option_index = np.full(n, -1, dtype=np.int64)
            option_step = np.full(n, -1, dtype=np.int64)
            option_index[first:] = result.options
            option_step[first:] = result.option_steps
        return Replay(pd.DatetimeIndex(frame.index), exposure, option_index, option_step, first)

    # ---------------------------------------------------------------- persistence

    def save(self, model_dir: str | Path, extra_meta: dict | None = None) -> None:
        """Write the model directory atomically; refuses to save non-finite weights."""
        self._check_finite_weights()
        model_dir = Path(model_dir)
        model_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=model_dir.parent, prefix=f".{model_dir.name}."))
        self.sac.save(staging / "sac.zip", exclude=["replay_buffer"])
        if self.hierarchical:
            torch.save({"controller": self.learner.controller.state_dict(),
                        "current_temperature": self.learner.current_temperature}, staging / "controller.pt")
        if self.signals is not None:
            self.signals.save(staging)
        if self.example_bars is not None:
            write_text_atomic(staging / EXAMPLE_FILE, self.example_bars.to_csv(index=False))
        (staging / "config.resolved.yaml").write_text(yaml.safe_dump(self.config.model_dump(mode="json"), sort_keys=False))
        required, _ = self.signal_columns
        meta = {
            "algorithm": self.config.algorithm,
            "observation_size": self.observation_size,
            "option_names": list(OPTION_NAMES) if self.hierarchical else [],
            "symbol": self.config.data.symbol,
            "config_hash": self.config.config_hash(),
            # what a replay of raw bars needs (trainer.pyfunc_model serves it)
            "first_decision_row": self.first_decision_row,
            "signal_sources": dict(self.signals.sources) if self.signals is not None else None,
            "required_signal_columns": required,
            **(extra_meta or {}),
        }
        write_json_atomic(staging / "meta.json", meta)
        replace_dir(staging, model_dir)

    def _check_finite_weights(self) -> None:
        modules = [("SAC policy", self.sac.policy)]
        if self.hierarchical:
            modules.append(("options controller", self.learner.controller))
        for label, module in modules:
            for name, param in module.state_dict().items():
                if torch.is_tensor(param) and param.is_floating_point() and not torch.isfinite(param).all():
                    raise NonFiniteError(f"{label} parameter {name} is not finite; the model is not saved")


def _with_placeholder_bar(features: FeatureFrame) -> FeatureFrame:
    """`features` plus one bar after the last: the same row again (no price change)."""

    def extended(values: np.ndarray) -> np.ndarray:
        return np.concatenate([values, values[-1:]])

    index = features.index
    return replace(
        features,
        window=extended(features.window),
        close=extended(features.close),
        trend_strength=extended(features.trend_strength),
        sentiment=extended(features.sentiment),
        sl_confidence=extended(features.sl_confidence),
        index=index.append(pd.DatetimeIndex([index[-1] + pd.Timedelta(1, "ns")])),
    )


# ---------------------------------------------------------------- input bars


def check_bars(bars, required_signals=(), read_signals=(), min_bars: int = 1) -> pd.DataFrame:
    """The load_ohlcv contract frame (DatetimeIndex `timestamp`, float64 columns) from served
    bars, or a DataError that names what is wrong: not a DataFrame, missing columns, too few bars,
    timestamps missing / unparsable / not strictly increasing, prices not finite and > 0, volume not
    finite and >= 0, a signal outside [0, 1]."""
    if not isinstance(bars, pd.DataFrame):
        raise DataError(f"bars: expected a pandas DataFrame of bars, got {type(bars).__name__}")
    if TIME_COLUMN in bars.columns:
        raw_times = bars[TIME_COLUMN]
    elif isinstance(bars.index, pd.DatetimeIndex):
        raw_times = bars.index.to_series()
    else:
        raw_times = None
    missing = ([TIME_COLUMN] if raw_times is None else []) + [
        c for c in (*BAR_COLUMNS, *required_signals) if c not in bars.columns
    ]
    if missing:
        raise DataError(
            f"bars: missing column(s) {', '.join(missing)} (needs {TIME_COLUMN}, {', '.join(BAR_COLUMNS)}"
            + (f", and {', '.join(required_signals)}, which this model reads from the data" if required_signals else "")
            + f"; got {', '.join(map(str, bars.columns)) or 'no columns'})"
        )
    if len(bars) < min_bars:
        raise DataError(
            f"bars: {len(bars)} rows, this model needs at least {min_bars} "
            f"({FEATURE_WARMUP_BARS} bars of indicator warm-up + window_size {min_bars - FEATURE_WARMUP_BARS})"
        )
    raw_times = pd.Series(raw_times).reset_index(drop=True)
    try:
        # Text is parsed element by element ("mixed"); an unparsable one becomes NaT, reported below.
        parse = {"format": "mixed"} if raw_times.dtype == object or pd.api.types.is_string_dtype(raw_times) else {}
        times = pd.DatetimeIndex(pd.to_datetime(raw_times, errors="coerce", **parse))
    except (TypeError, ValueError) as exc:  # e.g. time zones mixed with naive times
        raise DataError(f"bars: the {TIME_COLUMN} column cannot be read as dates ({exc})") from None
    if times.isna().any():
        row = int(np.argmax(times.isna()))
        raise DataError(
            f"bars: {int(times.isna().sum())} {TIME_COLUMN}(s) missing or not a date, first at row {row} "
            f"({raw_times.iloc[row]!r})"
        )
    steps = np.diff(times.asi8)
    if (steps <= 0).any():
        row = int(np.argmax(steps <= 0)) + 1
        kind = "repeats" if steps[row - 1] == 0 else "is earlier than"
        raise DataError(
            f"bars: timestamps must be strictly increasing (sort the bars, drop duplicates); row {row} "
            f"({times[row]}) {kind} row {row - 1} ({times[row - 1]})"
        )
    out = pd.DataFrame(index=times.rename(TIME_COLUMN))
    signals = [c for c in SIGNALS if c in bars.columns and c in (*required_signals, *read_signals)]
    for column in (*BAR_COLUMNS, *signals):
        values = pd.to_numeric(bars[column], errors="coerce").to_numpy(dtype=np.float64)
        if column == "volume":
            ok, rule = np.isfinite(values) & (values >= 0), "a finite number >= 0"
        elif column in SIGNALS:
            ok, rule = np.isfinite(values) & (values >= 0) & (values <= 1), "a number in [0, 1]"
        else:
            ok, rule = np.isfinite(values) & (values > 0), "a finite price > 0"
        if not ok.all():
            row = int(np.argmax(~ok))
            raise DataError(
                f"bars: column {column} must be {rule} on every row; {int((~ok).sum())} row(s) are not, "
                f"first at row {row} ({times[row]}: {bars[column].iloc[row]!r})"
            )
        out[column] = values
    return out


def example_bars(data, window_size: int, decisions: int = EXAMPLE_DECISIONS) -> pd.DataFrame:
    """The last bars of `data` (a trainer.envs.factory.MarketData) as served bars: timestamp,
    OHLCV and the signal columns the run read from the data (for a signals file, its values as
    joined to each bar, from the test split's features), enough for `decisions` decisions."""
    n = FEATURE_WARMUP_BARS + window_size - 1 + decisions
    frame = data.frame.iloc[-n:]
    out = pd.DataFrame({TIME_COLUMN: frame.index, **{c: frame[c].to_numpy(dtype=np.float64) for c in BAR_COLUMNS}})
    sources = data.signals.sources if data.signals is not None else {}
    test = data.features["test"]
    for name in SIGNALS:
        if sources.get(name) == "column":
            out[name] = frame[name].to_numpy(dtype=np.float64)
        elif sources.get(name) == "file":
            # The joined values are in the features; the warm-up rows they lack are never read.
            joined = pd.Series(getattr(test, name), index=test.index).reindex(frame.index)
            out[name] = joined.fillna(data.signals.neutral[name]).to_numpy(dtype=np.float64)
    return out


def load_agent(model_dir: str | Path) -> Agent:
    """Load a model directory written by Agent.save."""
    from stable_baselines3 import SAC

    model_dir = Path(model_dir)
    missing = [name for name in MODEL_FILES if not (model_dir / name).exists()]
    if missing:
        raise TrainerError(f"{model_dir} is not a model directory: missing {', '.join(missing)}")
    config = TrainerConfig.model_validate(yaml.safe_load((model_dir / "config.resolved.yaml").read_text()))
    meta = json.loads((model_dir / "meta.json").read_text())
    sac = SAC.load(model_dir / "sac.zip", device="cpu")
    learner = None
    if meta["algorithm"] == "hierarchical_sac":
        from trainer.hierarchy.controller import OptionsLearner

        learner = OptionsLearner(config.options, device="cpu")
        state = torch.load(model_dir / "controller.pt", map_location="cpu", weights_only=False)
        learner.controller.load_state_dict(state["controller"])
        learner.current_temperature = float(state["current_temperature"])
        learner.controller.eval()
    signals = SignalModel.load(model_dir) if (model_dir / SIGNALS_FILE).exists() else None
    if meta.get("signal_sources") and signals is None:
        raise TrainerError(f"{model_dir}: meta.json names signal sources but {SIGNALS_FILE} is missing")
    example = None
    if (model_dir / EXAMPLE_FILE).exists():
        example = pd.read_csv(model_dir / EXAMPLE_FILE, parse_dates=[TIME_COLUMN])
    return Agent(config, sac, learner, signals, example)
