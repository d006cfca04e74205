"""A single-asset trading environment over one featurised split.

Action: one value in [-1, 1], the TARGET exposure (fraction of equity, negative = short), times
`max_position`. Moving from the current exposure to the target costs
(transaction_cost_bps + slippage_bps) / 1e4 per unit of exposure traded.
Reward: reward_scaling * log(1 + net portfolio return of the bar), so an episode's rewards sum to
reward_scaling * log(final equity).
Training episodes start at a random bar of the split (episode_length bars); `full_pass=True` walks
the whole split once from its first decision bar, deterministically (evaluation and backtests).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from trainer.config import EnvironmentConfig
from trainer.data.features import FeatureFrame
from trainer.envs.layout import PORTFOLIO_FIELDS, TIME_SCALE, MarketState, ObservationLayout

OBS_BOUND = 10.0


class TradingEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, features: FeatureFrame, config: EnvironmentConfig, full_pass: bool = False):
        super().__init__()
        self.features = features
        self.config = config
        self.full_pass = full_pass
        self.layout = ObservationLayout(config.window_size)
        self._cost_rate = (config.transaction_cost_bps + config.slippage_bps) / 1e4
        first_decision = config.window_size - 1
        if len(features) - first_decision < 2:
            raise ValueError(
                f"split has {len(features)} featurised bars; window_size {config.window_size} needs at least "
                f"{config.window_size + 1}"
            )
        self._first_decision = first_decision
        self.observation_space = gym.spaces.Box(-OBS_BOUND, OBS_BOUND, shape=(self.layout.size,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self._t = first_decision
        self._end = len(features) - 1
        self._reset_portfolio()

    # ------------------------------------------------------------------ gymnasium API

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        last_bar = len(self.features) - 1
        if self.full_pass:
            self._t, self._end = self._first_decision, last_bar
        else:
            length = min(self.config.episode_length, last_bar - self._first_decision)
            latest_start = last_bar - length
            self._t = int(self.np_random.integers(self._first_decision, latest_start + 1))
            self._end = self._t + length
        self._reset_portfolio()
        return self._get_obs(), self._get_info()

    def step(self, action):
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(action)):
            raise ValueError(f"non-finite action {action.tolist()} at bar {self._t}")
        target = float(np.clip(action[0], -1.0, 1.0)) * self.config.max_position
        traded = abs(target - self._position)
        cost = traded * self._cost_rate
        self._update_entry(target)
        self._position = target

        price_now = self.features.close[self._t]
        price_next = self.features.close[self._t + 1]
        bar_return = price_next / price_now - 1.0
        portfolio_return = self._position * bar_return - cost
        self._equity *= 1.0 + portfolio_return
        self._peak = max(self._peak, self._equity)
        self._t += 1
        self._time_in_position = self._time_in_position + 1 if abs(self._position) > 1e-6 else 0
        self._last = {"portfolio_return": portfolio_return, "cost": cost, "traded": traded, "bar_return": bar_return}

        reward = self.config.reward_scaling * float(np.log1p(portfolio_return))
        truncated = self._t >= self._end
        return self._get_obs(), reward, False, truncated, self._get_info()

    # ------------------------------------------------------------------ state

    def _reset_portfolio(self) -> None:
        self._position = 0.0
        self._entry_price = 0.0
        self._time_in_position = 0
        self._equity = 1.0
        self._peak = 1.0
        self._last = {"portfolio_return": 0.0, "cost": 0.0, "traded": 0.0, "bar_return": 0.0}

    def _update_entry(self, target: float) -> None:
        """Average entry price while adding in the same direction; a new entry on open or flip."""
        price = self.features.close[self._t]
        old = self._position
        if abs(target) < 1e-6:
            self._entry_price = 0.0
        elif abs(old) < 1e-6 or np.sign(old) != np.sign(target):
            self._entry_price = price
            self._time_in_position = 0
        elif abs(target) > abs(old):
            added = abs(target) - abs(old)
            self._entry_price = (self._entry_price * abs(old) + price * added) / abs(target)

    def get_state(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue this episode where it stopped: the bar, the
        episode's end, the portfolio and `np_random` (so the next episode starts at the same bar)."""
        return {
            "t": self._t,
            "end": self._end,
            "position": self._position,
            "entry_price": self._entry_price,
            "time_in_position": self._time_in_position,
            "equity": self._equity,
            "peak": self._peak,
            "last": dict(self._last),
            "np_random": self.np_random.bit_generator.state,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Put back what `get_state` returned (checkpoint resume)."""
        self._t, self._end = int(state["t"]), int(state["end"])
        self._position, self._entry_price = float(state["position"]), float(state["entry_price"])
        self._time_in_position = int(state["time_in_position"])
        self._equity, self._peak = float(state["equity"]), float(state["peak"])
        self._last = dict(state["last"])
        self.np_random.bit_generator.state = state["np_random"]

    def market_state(self) -> MarketState:
        """Typed view of the current state (the same numbers the observation carries)."""
        return self.layout.market_state(self._get_obs())

    def _portfolio_values(self) -> dict[str, float]:
        price = self.features.close[self._t]
        unrealised = 0.0
        if abs(self._position) > 1e-6 and self._entry_price > 0:
            unrealised = float(np.sign(self._position) * (price / self._entry_price - 1.0))
        return {
            "position": self._position,
            "unrealised_pnl": unrealised,
            "time_in_position": self._time_in_position / TIME_SCALE,
            "drawdown": 1.0 - self._equity / self._peak,
            "episode_return": float(np.log(self._equity)),
            "trend_strength": float(self.features.trend_strength[self._t]),
            "sentiment": float(self.features.sentiment[self._t]),
            "sl_confidence": float(self.features.sl_confidence[self._t]),
        }

    def _get_obs(self) -> np.ndarray:
        start = self._t - self.config.window_size + 1
        window = self.features.window[start : self._t + 1].reshape(-1)
        values = self._portfolio_values()
        portfolio = np.array([values[name] for name in PORTFOLIO_FIELDS], dtype=np.float32)
        obs = np.concatenate([window, portfolio]).astype(np.float32)
        return np.clip(obs, -OBS_BOUND, OBS_BOUND)

    def _get_info(self) -> dict[str, Any]:
        return {
            "bar": self._t,
            "timestamp": str(self.features.index[self._t]),
            "equity": self._equity,
            "position": self._position,
            **self._last,
        }
