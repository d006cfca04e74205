"""From a config to ready environments: load and split the data, featurise each split, resolve the
option signals (trainer/data/signals.py: column / file / derived / neutral), build envs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd
from stable_baselines3.common.monitor import Monitor
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecEnvWrapper

from trainer.config import TrainerConfig, check_state_dim
from trainer.data.bars import periods_per_year
from trainer.data.features import FeatureFrame, compute_features
from trainer.data.loaders import data_digest, load_ohlcv, resolve_source
from trainer.data.signals import SIGNALS, SignalModel, join_signals, load_signals, resolve_sources, signal_summary
from trainer.data.splits import chronological_splits
from trainer.envs.layout import ObservationLayout
from trainer.envs.trading_env import TradingEnv
from trainer.errors import NonFiniteError

LOGGER = logging.getLogger(__name__)

SPLITS = ("train", "eval", "test")


@dataclass(frozen=True)
class MarketData:
    """One symbol's data, split and featurised (each split on its own bars only), with its option
    signals resolved. `digest` covers the market data as loaded (a signals file has its own digest
    in `signal_provenance`); `signals` is the fitted SignalModel a served model needs."""

    symbol: str
    source: str
    frame: pd.DataFrame
    digest: str
    periods_per_year: float
    features: dict[str, FeatureFrame]
    signals: SignalModel | None = None
    signal_provenance: dict = field(default_factory=dict)

    @property
    def has_sentiment(self) -> bool:
        """A live sentiment signal (column, file or derived), not the neutral constant."""
        return self.features["train"].has_sentiment

    @property
    def has_sl_confidence(self) -> bool:
        """A live sl_confidence signal (column, file or derived), not the neutral constant."""
        return self.features["train"].has_sl_confidence

    def describe(self) -> dict:
        return {
            "symbol": self.symbol,
            "source": self.source,
            "rows": len(self.frame),
            "first": str(self.frame.index[0]),
            "last": str(self.frame.index[-1]),
            "data_digest": self.digest,
            "periods_per_year": self.periods_per_year,
            "sentiment_column": "sentiment" in self.frame.columns,
            "sl_confidence_column": "sl_confidence" in self.frame.columns,
            "signals": self.signal_provenance,
            **{f"{name}_bars": len(self.features[name]) for name in SPLITS},
            **{f"{name}_first": str(self.features[name].index[0]) for name in SPLITS},
            **{f"{name}_last": str(self.features[name].index[-1]) for name in SPLITS},
        }


def load_market_data(config: TrainerConfig, source: str | None = None) -> MarketData:
    """Load, split and featurise one symbol's data and resolve its option signals.

    The signals (trainer/data/signals.py): a `data.signals` table is validated by the GX signals
    suite and joined as of each bar (a value stamped t is used from bar t on, never earlier);
    derived signals are fitted on the train split only (walk-forward inside it), so eval and
    test values come from a model that never saw those bars.
    """
    data_cfg, env = config.data, config.environment
    symbol = data_cfg.symbol
    resolved = resolve_source(symbol, source or data_cfg.source)
    frame = load_ohlcv(resolved)
    neutral = {"sentiment": env.neutral_sentiment, "sl_confidence": env.neutral_sl_confidence}
    requested = {"sentiment": data_cfg.sentiment_source, "sl_confidence": data_cfg.sl_confidence_source}
    table, file_info = load_signals(data_cfg.signals) if data_cfg.signals else (None, None)
    sources = resolve_sources(requested, [c for c in SIGNALS if c in frame.columns], [] if table is None else table.columns)

    # The bars compute_features reads: the data's own signal column only where it is the source,
    # the signals file's column (joined as of each bar) where that is.
    market = frame.drop(columns=[c for c in SIGNALS if c in frame.columns and sources[c] != "column"])
    from_file = [n for n in SIGNALS if sources[n] == "file"]
    if from_file:
        joined, join_stats = join_signals(frame.index, table, from_file, neutral)
        market = market.assign(**{n: joined[n] for n in from_file})
        file_info = {**file_info, "used_for": from_file, "join": join_stats}
    splits = chronological_splits(market, data_cfg.splits)
    raw = {name: compute_features(getattr(splits, name), env.neutral_sentiment, env.neutral_sl_confidence) for name in SPLITS}

    model = SignalModel(sources, neutral)
    features = {"train": model.fit_transform(raw["train"])}
    features.update({name: model.transform(raw[name]) for name in ("eval", "test")})
    provenance = _provenance(model, requested, features, file_info)
    LOGGER.info(
        "signals: %s",
        ", ".join(f"{n} {sources[n]}" + (f" (requested {requested[n]})" if requested[n] != sources[n] else "") for n in SIGNALS),
    )
    return MarketData(
        symbol, resolved, frame, data_digest(frame), periods_per_year(frame.index), features, model, provenance
    )


def _provenance(model: SignalModel, requested: dict, features: dict[str, FeatureFrame], file_info: dict | None) -> dict:
    described = model.describe()
    for name in SIGNALS:
        described[name]["requested"] = requested[name]
        for split in SPLITS:
            described[name][split] = signal_summary(getattr(features[split], name))
    if file_info is not None:
        described["file"] = file_info
    return described


def observation_size(config: TrainerConfig) -> int:
    return ObservationLayout(config.environment.window_size).size


def check_observation(config: TrainerConfig) -> None:
    """options.state_dim must equal the env's observation size (both numbers named otherwise)."""
    check_state_dim(config, observation_size(config))


def make_vec_env(
    features: FeatureFrame, config: TrainerConfig, n_envs: int, seed: int, full_pass: bool = False
) -> VecEnv:
    def factory(rank: int) -> Callable[[], Monitor]:
        def build() -> Monitor:
            env = TradingEnv(features, config.environment, full_pass=full_pass)
            env.reset(seed=seed + rank)
            return Monitor(env)

        return build

    vec_cls = SubprocVecEnv if (config.training.vec_env == "subproc" and n_envs > 1) else DummyVecEnv
    venv = vec_cls([factory(rank) for rank in range(n_envs)])
    venv.seed(seed)
    return VecFiniteCheck(venv, ObservationLayout(config.environment.window_size))


class VecFiniteCheck(VecEnvWrapper):
    """Stops at the first NaN or infinity in an observation or reward, naming the env, the value's
    position in the observation and the bar, instead of letting it reach SAC's losses."""

    def __init__(self, venv: VecEnv, layout: ObservationLayout):
        super().__init__(venv)
        self.layout = layout

    def reset(self):
        return self._check(self.venv.reset(), None, None)

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        return self._check(obs, rewards, infos), rewards, dones, infos

    def _check(self, obs: np.ndarray, rewards, infos) -> np.ndarray:
        if rewards is not None and not np.all(np.isfinite(rewards)):
            env = int(np.argwhere(~np.isfinite(rewards))[0][0])
            raise NonFiniteError(f"non-finite reward {rewards[env]} from env {env} at {infos[env].get('timestamp')}")
        if not np.all(np.isfinite(obs)):
            env, index = (int(v) for v in np.argwhere(~np.isfinite(obs))[0])
            part = "portfolio/context value" if index >= self.layout.window_length else "window feature"
            when = infos[env].get("timestamp") if infos else "reset"
            raise NonFiniteError(
                f"non-finite observation value {obs[env, index]} from env {env} at observation index {index} "
                f"({part}) at bar {when}; check the data's columns for NaN/inf (trainer validate)"
            )
        return obs
