"""The observation's named parts, and the typed accessor the options read (never `info` dicts).

Observation = [window of bars x WINDOW_FEATURES, flattened bar-major] + [PORTFOLIO_FIELDS].
The shipped config: 57 bars x 10 features + 8 portfolio values = 578.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.data.features import WINDOW_FEATURES

PORTFOLIO_FIELDS: tuple[str, ...] = (
    "position",  # exposure, fraction of equity in [-1, 1] (negative = short)
    "unrealised_pnl",  # return of the open position since its (average) entry, e.g. 0.02 = +2%
    "time_in_position",  # bars since the position was opened, / 100
    "drawdown",  # 1 - equity / peak equity of the episode, in [0, 1]
    "episode_return",  # log(equity) since the episode started
    "trend_strength",  # close / SMA20 - 1 at the current bar (unscaled)
    "sentiment",  # 0 bearish .. 1 bullish (neutral value when the data has none)
    "sl_confidence",  # confidence of an external supervised signal, 0..1 (neutral when absent)
)
TIME_SCALE = 100.0


@dataclass(frozen=True)
class MarketState:
    """What the options need, decoded from observations; each field is an array over envs."""

    position: np.ndarray
    unrealised_pnl: np.ndarray
    time_in_position: np.ndarray  # in bars
    drawdown: np.ndarray
    trend_strength: np.ndarray
    sentiment: np.ndarray
    sl_confidence: np.ndarray

    @property
    def position_size(self) -> np.ndarray:
        return np.abs(self.position)


@dataclass(frozen=True)
class ObservationLayout:
    window_size: int

    @property
    def n_window_features(self) -> int:
        return len(WINDOW_FEATURES)

    @property
    def window_length(self) -> int:
        return self.window_size * self.n_window_features

    @property
    def size(self) -> int:
        return self.window_length + len(PORTFOLIO_FIELDS)

    def field_index(self, name: str) -> int:
        return self.window_length + PORTFOLIO_FIELDS.index(name)

    def describe(self) -> str:
        return (
            f"{self.window_size} bars x {self.n_window_features} features ({', '.join(WINDOW_FEATURES)}) "
            f"+ {len(PORTFOLIO_FIELDS)} portfolio values ({', '.join(PORTFOLIO_FIELDS)}) = {self.size}"
        )

    def market_state(self, observations: np.ndarray) -> MarketState:
        """Decode a batch (n, size) or a single (size,) observation."""
        obs = np.atleast_2d(np.asarray(observations))[:, : self.size]
        if obs.shape[1] != self.size:
            raise ValueError(f"observation has {obs.shape[1]} values, layout expects {self.size}")
        tail = obs[:, self.window_length :].astype(np.float64)
        col = {name: tail[:, i] for i, name in enumerate(PORTFOLIO_FIELDS)}
        return MarketState(
            position=col["position"],
            unrealised_pnl=col["unrealised_pnl"],
            time_in_position=col["time_in_position"] * TIME_SCALE,
            drawdown=col["drawdown"],
            trend_strength=col["trend_strength"],
            sentiment=col["sentiment"],
            sl_confidence=col["sl_confidence"],
        )
