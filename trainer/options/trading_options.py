"""The six trading options: availability, intra-option behaviour and termination (seed, Part 2).

Every option receives the SAC action already multiplied by its action_scale (the wrapper does
that, seed Fix 1) and turns it into the environment's action, a TARGET exposure in [-1, 1]:

| option         | available when                                   | target exposure from the scaled action s        |
|----------------|--------------------------------------------------|-------------------------------------------------|
| OpenLong       | sl_confidence >= min_confidence, not yet long 90% of action_scale | toward +|s|, at most max_exposure_pct per step, never short (a short is covered at once) |
| OpenShort      | same, mirrored                                   | toward -|s|, at most max_exposure_pct per step, never long  |
| ClosePosition  | a position is open (|exposure| >= 0.01)          | exposure * (1 - |s|); all of it at profit_target / stop_loss |
| TrendFollow    | |trend strength| >= momentum_threshold            | sign(trend) * min(|s|, max_position_size)        |
| Scalp          | always                                           | s, closed to 0 at profit_target / stop_loss      |
| Wait           | always                                           | the current exposure: no trade (action_scale 0)  |

Termination (after min_duration, which every option also enforces itself as a safety layer, seed
Fix 2): 1.0 at the option's step cap; otherwise the larger of a success/signal probability and a
time-based sigmoid_termination_prob (capped for TrendFollow at 0.15 and Wait at 0.5).
`memory` is the option's per-environment scratch dict, cleared when the option starts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from trainer.config import OPTION_NAMES, OptionsConfig
from trainer.envs.layout import MarketState
from trainer.options.termination import sigmoid_termination_prob

FLAT = 0.01  # |exposure| below this counts as no position


class TradingOption(ABC):
    """One option. `state` is a MarketState of one env (arrays of length 1)."""

    name: str

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.action_scale = float(cfg.action_scale)
        self.min_duration = int(cfg.min_duration)

    def available(self, state: MarketState) -> bool:
        return True

    @abstractmethod
    def target_exposure(self, scaled_action: float, state: MarketState, memory: dict) -> float:
        """The env action for this step, from the action_scale-scaled SAC action."""

    @abstractmethod
    def _termination(self, step: int, state: MarketState, memory: dict) -> float:
        """Termination probability once min_duration is reached."""

    def termination_probability(self, step: int, state: MarketState, memory: dict) -> float:
        """Probability of ending after `step` steps; 0 below min_duration (safety layer)."""
        if step < self.min_duration:
            return 0.0
        return float(min(1.0, max(0.0, self._termination(step, state, memory))))


def _toward(current: float, desired: float, max_step: float) -> float:
    return current + float(np.clip(desired - current, -max_step, max_step))


class OpenLongOption(TradingOption):
    """Builds a long position over several steps (seed: success when >= 90% of target)."""

    name = "open_long"
    direction = 1.0

    def available(self, state: MarketState) -> bool:
        building = self.direction * state.position[0] < 0.9 * self.action_scale
        return bool(state.sl_confidence[0] >= self.cfg.min_confidence and building)

    def target_exposure(self, scaled_action: float, state: MarketState, memory: dict) -> float:
        desired = self.direction * abs(scaled_action)
        memory["target"] = desired
        target = _toward(float(state.position[0]), desired, self.cfg.max_exposure_pct)
        return float(np.clip(target, 0.0, 1.0)) if self.direction > 0 else float(np.clip(target, -1.0, 0.0))

    def _success(self, state: MarketState, memory: dict) -> float:
        target = abs(memory.get("target", self.action_scale))
        reached = self.direction * state.position[0] >= 0.9 * target - 1e-9  # 0.9 * 0.8 is 0.72000...01
        return 1.0 if reached else 0.0

    def _termination(self, step: int, state: MarketState, memory: dict) -> float:
        time_based = sigmoid_termination_prob(step, self.min_duration, self.cfg.max_steps)
        return max(self._success(state, memory), time_based)


class OpenShortOption(OpenLongOption):
    """Builds a short position; also exits (0.8) when sentiment turns bullish (> 0.60)."""

    name = "open_short"
    direction = -1.0
    bullish_sentiment = 0.60

    def _termination(self, step: int, state: MarketState, memory: dict) -> float:
        sentiment_exit = 0.8 if state.sentiment[0] > self.bullish_sentiment else 0.0
        return max(super()._termination(step, state, memory), sentiment_exit)


class ClosePositionOption(TradingOption):
    """Exit management: done when flat; a very low (0.02) chance of giving up while still open."""

    name = "close_position"
    still_open_prob = 0.02

    def available(self, state: MarketState) -> bool:
        return bool(state.position_size[0] >= FLAT)

    def target_exposure(self, scaled_action: float, state: MarketState, memory: dict) -> float:
        position = float(state.position[0])
        pnl = float(state.unrealised_pnl[0])
        if pnl >= self.cfg.profit_target or pnl <= self.cfg.stop_loss:
            return 0.0
        target = position * (1.0 - min(1.0, abs(scaled_action)))
        return 0.0 if abs(target) < FLAT else target

    def _termination(self, step: int, state: MarketState, memory: dict) -> float:
        if step >= self.cfg.max_steps or state.position_size[0] < FLAT:
            return 1.0
        return self.still_open_prob


class TrendFollowOption(TradingOption):
    """Rides a trend; trend exhaustion (< half the threshold) ends it, time only weakly (<= 0.15)."""

    name = "trend_follow"
    exhausted_prob = 0.85
    time_cap = 0.15

    def available(self, state: MarketState) -> bool:
        return bool(abs(state.trend_strength[0]) >= self.cfg.momentum_threshold)

    def target_exposure(self, scaled_action: float, state: MarketState, memory: dict) -> float:
        direction = float(np.sign(state.trend_strength[0]))
        return direction * min(abs(scaled_action), self.cfg.max_position_size)

    def _termination(self, step: int, state: MarketState, memory: dict) -> float:
        if step >= self.cfg.max_steps:
            return 1.0
        exhausted = abs(state.trend_strength[0]) < 0.5 * self.cfg.momentum_threshold
        time_based = min(self.time_cap, sigmoid_termination_prob(step, self.min_duration, self.cfg.max_steps))
        return max(self.exhausted_prob if exhausted else 0.0, time_based)


class ScalpOption(TradingOption):
    """A quick trade: opens with the SAC action, closes at its profit target / stop loss; done when closed."""

    name = "scalp"
    steepness = 0.6

    def target_exposure(self, scaled_action: float, state: MarketState, memory: dict) -> float:
        position = float(state.position[0])
        if abs(position) >= FLAT:
            memory["opened"] = True
            pnl = float(state.unrealised_pnl[0])
            if pnl >= self.cfg.profit_target or pnl <= self.cfg.stop_loss:
                memory["closed"] = True
                return 0.0
        if memory.get("closed"):
            return 0.0  # one trade per scalp
        return float(scaled_action)

    def _termination(self, step: int, state: MarketState, memory: dict) -> float:
        closed = memory.get("opened", False) and state.position_size[0] < FLAT
        time_based = sigmoid_termination_prob(step, self.min_duration, self.cfg.max_steps, self.steepness)
        return max(1.0 if closed else 0.0, time_based)


class WaitOption(TradingOption):
    """Observe without trading; leave on strong signals (sentiment extremes, trend, SL confidence)."""

    name = "wait"
    time_cap = 0.5

    def target_exposure(self, scaled_action: float, state: MarketState, memory: dict) -> float:
        return float(state.position[0])  # action_scale 0: hold, no trade

    def termination_probability(self, step: int, state: MarketState, memory: dict) -> float:
        if step < max(self.min_duration, self.cfg.min_wait_steps):
            return 0.0
        return super().termination_probability(step, state, memory)

    def _termination(self, step: int, state: MarketState, memory: dict) -> float:
        if step >= self.cfg.max_wait_steps:
            return 1.0
        signals = [0.0]
        sentiment = state.sentiment[0]
        if sentiment < 0.30 or sentiment > 0.75:
            signals.append(0.85)
        if abs(state.trend_strength[0]) > 0.03:
            signals.append(0.75)
        if state.sl_confidence[0] > 0.75:
            signals.append(0.65)
        time_based = min(self.time_cap, sigmoid_termination_prob(step, self.min_duration, self.cfg.max_wait_steps))
        return max(max(signals), time_based)


OPTION_CLASSES: dict[str, type[TradingOption]] = {
    "open_long": OpenLongOption,
    "open_short": OpenShortOption,
    "close_position": ClosePositionOption,
    "trend_follow": TrendFollowOption,
    "scalp": ScalpOption,
    "wait": WaitOption,
}


def build_options(cfg: OptionsConfig) -> list[TradingOption]:
    """The six options in controller index order (OPTION_NAMES)."""
    return [OPTION_CLASSES[name](getattr(cfg, name)) for name in OPTION_NAMES]


def availability_mask(options: list[TradingOption], states: MarketState) -> np.ndarray:
    """(n_envs, n_options) bool; Scalp and Wait are always available, so no row is empty."""
    n = len(states.position)
    return np.array([[opt.available(states.at(i)) for opt in options] for i in range(n)], dtype=bool)
