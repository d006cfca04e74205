"""From a config to ready environments: load and split the data, featurise each split, build envs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd
from stable_baselines3.common.monitor import Monitor
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecEnvWrapper

from trainer.config import TrainerConfig, check_state_dim
from trainer.data.bars import periods_per_year
from trainer.data.features import FeatureFrame, compute_features
from trainer.data.loaders import data_digest, load_ohlcv, resolve_source
from trainer.data.splits import chronological_splits
from trainer.envs.layout import ObservationLayout
from trainer.envs.trading_env import TradingEnv
from trainer.errors import NonFiniteError

SPLITS = ("train", "eval", "test")


@dataclass(frozen=True)
class MarketData:
    """One symbol's data, split and featurised (each split on its own bars only)."""

    symbol: str
    source: str
    frame: pd.DataFrame
    digest: str
    periods_per_year: float
    features: dict[str, FeatureFrame]

    @property
    def has_sentiment(self) -> bool:
        return self.features["train"].has_sentiment

    @property
    def has_sl_confidence(self) -> bool:
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
            "sentiment_column": self.has_sentiment,
            "sl_confidence_column": self.has_sl_confidence,
            **{f"{name}_bars": len(self.features[name]) for name in SPLITS},
            **{f"{name}_first": str(self.features[name].index[0]) for name in SPLITS},
            **{f"{name}_last": str(self.features[name].index[-1]) for name in SPLITS},
        }


def load_market_data(config: TrainerConfig, source: str | None = None) -> MarketData:
    symbol = config.data.symbol
    resolved = resolve_source(symbol, source or config.data.source)
    frame = load_ohlcv(resolved)
    splits = chronological_splits(frame, config.data.splits)
    env = config.environment
    features = {
        name: compute_features(getattr(splits, name), env.neutral_sentiment, env.neutral_sl_confidence)
        for name in SPLITS
    }
    return MarketData(symbol, resolved, frame, data_digest(frame), periods_per_year(frame.index), features)


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
