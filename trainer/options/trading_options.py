"""The six trading options: availability, intra-option behaviour and termination (seed, Part 2).

Every option receives the SAC action already multiplied by its action_scale (the wrapper does
that, seed Fix 1) and turns it into the environment's action, a TARGET exposure in [-1, 1]:

| option         | available when                                   | target exposure from the scaled action s        |
|----------------|--------------------------------------------------|-------------------------------------------------|
| OpenLong       | sl_confidence >= min_confidence, not yet long 90% of action_scale | toward +|s|, at most max_exposure_pct per step, never short (a short is covered at once) |
| OpenShort      | 1 - sl_confidence >= min_confidence, not yet short 90% | toward -|s|, at most max_exposure_pct per step, never long  |
| ClosePosition  | a position is open (|exposure| >= 0.01)          | exposure * (1 - |s|); all of it at profit_target / stop_loss |
| TrendFollow    | |trend strength| >= momentum_threshold            | sign(trend) * min(|s|, max_position_size)        |
| Scalp          | always                                           | s, closed to 0 at profit_target / stop_loss      |
| Wait           | always                                           | the current exposure: no trade (action_scale 0)  |

Termination (after min_duration, which every option also enforces itself as a safety layer, seed
Fix 2): 1.0 at the option's step cap; otherwise the larger of a success/signal probability and a
time-based sigmoid_termination_prob (capped for TrendFollow at 0.15 and Wait at 0.5).
`memory` is the option's per-environment scratch dict, cleared when the option starts.

Every termination probability is the largest of a few named rules, and `termination()` returns
(probability, rule) so the run can count which rule ended each option
(`options.terminations.<option>.<rule>`). Each option lists its rules in `rules`, in priority order
(on a tie the earlier rule is reported). The rule names:

| option         | rules (seed Part 2)                                              | step cap     |
|----------------|------------------------------------------------------------------|--------------|
| open_long      | target_reached (1.0), time_sigmoid                               | max_steps    |
| open_short     | target_reached (1.0), sentiment_exit (0.8), time_sigmoid         | max_steps    |
| close_position | position_closed (1.0), still_open (0.02)                         | max_steps    |
| trend_follow   | trend_exhausted (0.85), time_sigmoid (<= 0.15)                   | max_steps    |
| scalp          | trade_closed (1.0), time_sigmoid (steepness 0.6)                 | max_steps    |
| wait           | sentiment_extreme (0.85), strong_trend (0.75), sl_confidence_exit (0.65), time_sigmoid (<= 0.5) | max_wait_steps, reported as max_steps |

The signals (trainer/data/signals.py): `sentiment` is 0 bearish .. 1 bullish; `sl_confidence` is
the supervised signal's DIRECTIONAL conviction, 0 = surely down .. 0.5 = no view .. 1 = surely up
(the derived one is the percentile of a next-bar direction classifier's P(up)). So OpenLong needs
sl_confidence >= min_confidence, OpenShort, mirrored, needs 1 - sl_confidence >= min_confidence, and
Wait's "strong SL confidence (> 0.75)" is a strong view either way: max(sl, 1 - sl) > 0.75.
At the neutral 0.5 both open options are available and Wait's rule never fires, as before.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from trainer.config import OPTION_NAMES, OptionsConfig
from trainer.envs.layout import MarketState
from trainer.options.termination import sigmoid_termination_prob

FLAT = 0.01  # |exposure| below this counts as no position
NO_RULE = "none"  # reported with probability 0 (below min_duration): nothing can end the option
MAX_STEPS = "max_steps"
TIME_SIGMOID = "time_sigmoid"


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

    rules: tuple[str, ...]  # the rule names termination() can report, in priority order

    @abstractmethod
    def _candidates(self, step: int, state: MarketState, memory: dict) -> list[tuple[float, str]]:
        """(probability, rule) of every rule that applies now, once min_duration is reached."""

    def _min_steps(self) -> int:
        return self.min_duration

    def termination(self, step: int, state: MarketState, memory: dict) -> tuple[float, str]:
        """(probability of ending after `step` steps, the rule that gives it): the largest of the
        applicable rules (the earlier one in `rules` on a tie); (0, "none") below min_duration."""
        if step < self._min_steps():
            return 0.0, NO_RULE
        candidates = self._candidates(step, state, memory)
        if not candidates:
            return 0.0, NO_RULE
        probability, rule = max(candidates, key=lambda c: c[0])  # max keeps the first of equals
        return float(min(1.0, max(0.0, probability))), rule

    def termination_probability(self, step: int, state: MarketState, memory: dict) -> float:
        """Probability of ending after `step` steps; 0 below min_duration (safety layer)."""
        return self.termination(step, state, memory)[0]


def _clamp(value: float, low: float, high: float) -> float:
    """np.clip for one float, without numpy's per-call cost (called per env per step)."""
    return min(max(value, low), high)


def _toward(current: float, desired: float, max_step: float) -> float:
    return current + _clamp(desired - current, -max_step, max_step)


def _time_rule(step: int, probability: float, max_steps: int) -> tuple[float, str]:
    """The time-based rule: the seed's sigmoid, which is 1.0 (the step cap) from max_steps on."""
    return probability, MAX_STEPS if step >= max_steps else TIME_SIGMOID


class OpenLongOption(TradingOption):
    """Builds a long position over several steps (seed: success when >= 90% of target)."""

    name = "open_long"
    direction = 1.0
    rules = ("target_reached", TIME_SIGMOID, MAX_STEPS)

    def confidence(self, state: MarketState) -> float:
        """The SL signal's conviction in this option's direction: sl_confidence for a long,
        1 - sl_confidence for a short (sl_confidence is 0 = down .. 1 = up)."""
        sl = float(state.sl_confidence[0])
        return sl if self.direction > 0 else 1.0 - sl

    def available(self, state: MarketState) -> bool:
        building = self.direction * state.position[0] < 0.9 * self.action_scale
        return bool(self.confidence(state) >= self.cfg.min_confidence and building)

    def target_exposure(self, scaled_action: float, state: MarketState, memory: dict) -> float:
        desired = self.direction * abs(scaled_action)
        memory["target"] = desired
        target = _toward(float(state.position[0]), desired, self.cfg.max_exposure_pct)
        return _clamp(target, 0.0, 1.0) if self.direction > 0 else _clamp(target, -1.0, 0.0)

    def _success(self, state: MarketState, memory: dict) -> float:
        target = abs(memory.get("target", self.action_scale))
        reached = self.direction * state.position[0] >= 0.9 * target - 1e-9  # 0.9 * 0.8 is 0.72000...01
        return 1.0 if reached else 0.0

    def _signal_rules(self, state: MarketState) -> list[tuple[float, str]]:
        return []

    def _candidates(self, step: int, state: MarketState, memory: dict) -> list[tuple[float, str]]:
        rules = [(1.0, "target_reached")] if self._success(state, memory) else []
        rules += self._signal_rules(state)
        time_based = sigmoid_termination_prob(step, self.min_duration, self.cfg.max_steps)
        return rules + [_time_rule(step, time_based, self.cfg.max_steps)]


class OpenShortOption(OpenLongOption):
    """Builds a short position; also exits (0.8) when sentiment turns bullish (> 0.60)."""

    name = "open_short"
    direction = -1.0
    bullish_sentiment = 0.60
    rules = ("target_reached", "sentiment_exit", TIME_SIGMOID, MAX_STEPS)

    def _signal_rules(self, state: MarketState) -> list[tuple[float, str]]:
        return [(0.8, "sentiment_exit")] if state.sentiment[0] > self.bullish_sentiment else []


class ClosePositionOption(TradingOption):
    """Exit management: done when flat; a very low (0.02) chance of giving up while still open."""

    name = "close_position"
    still_open_prob = 0.02
    rules = ("position_closed", MAX_STEPS, "still_open")

    def available(self, state: MarketState) -> bool:
        return bool(state.position_size[0] >= FLAT)

    def target_exposure(self, scaled_action: float, state: MarketState, memory: dict) -> float:
        position = float(state.position[0])
        pnl = float(state.unrealised_pnl[0])
        if pnl >= self.cfg.profit_target or pnl <= self.cfg.stop_loss:
            return 0.0
        target = position * (1.0 - min(1.0, abs(scaled_action)))
        return 0.0 if abs(target) < FLAT else target

    def _candidates(self, step: int, state: MarketState, memory: dict) -> list[tuple[float, str]]:
        if state.position_size[0] < FLAT:
            return [(1.0, "position_closed")]
        if step >= self.cfg.max_steps:
            return [(1.0, MAX_STEPS)]
        return [(self.still_open_prob, "still_open")]


class TrendFollowOption(TradingOption):
    """Rides a trend; trend exhaustion (< half the threshold) ends it, time only weakly (<= 0.15)."""

    name = "trend_follow"
    exhausted_prob = 0.85
    time_cap = 0.15
    rules = (MAX_STEPS, "trend_exhausted", TIME_SIGMOID)

    def available(self, state: MarketState) -> bool:
        return bool(abs(state.trend_strength[0]) >= self.cfg.momentum_threshold)

    def target_exposure(self, scaled_action: float, state: MarketState, memory: dict) -> float:
        direction = float(np.sign(state.trend_strength[0]))
        return direction * min(abs(scaled_action), self.cfg.max_position_size)

    def _candidates(self, step: int, state: MarketState, memory: dict) -> list[tuple[float, str]]:
        if step >= self.cfg.max_steps:
            return [(1.0, MAX_STEPS)]
        exhausted = abs(state.trend_strength[0]) < 0.5 * self.cfg.momentum_threshold
        rules = [(self.exhausted_prob, "trend_exhausted")] if exhausted else []
        time_based = min(self.time_cap, sigmoid_termination_prob(step, self.min_duration, self.cfg.max_steps))
        return rules + [(time_based, TIME_SIGMOID)]


class ScalpOption(TradingOption):
    """A quick trade: opens with the SAC action, closes at its profit target / stop loss; done when closed."""

    name = "scalp"
    steepness = 0.6
    rules = ("trade_closed", TIME_SIGMOID, MAX_STEPS)

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

    def _candidates(self, step: int, state: MarketState, memory: dict) -> list[tuple[float, str]]:
        closed = memory.get("opened", False) and state.position_size[0] < FLAT
        rules = [(1.0, "trade_closed")] if closed else []
        time_based = sigmoid_termination_prob(step, self.min_duration, self.cfg.max_steps, self.steepness)
        return rules + [_time_rule(step, time_based, self.cfg.max_steps)]


class WaitOption(TradingOption):
    """Observe without trading; leave on strong signals (sentiment extremes, trend, SL confidence)."""

    name = "wait"
    time_cap = 0.5
    rules = (MAX_STEPS, "sentiment_extreme", "strong_trend", "sl_confidence_exit", TIME_SIGMOID)

    def target_exposure(self, scaled_action: float, state: MarketState, memory: dict) -> float:
        return float(state.position[0])  # action_scale 0: hold, no trade

    def _min_steps(self) -> int:
        return max(self.min_duration, self.cfg.min_wait_steps)

    def _candidates(self, step: int, state: MarketState, memory: dict) -> list[tuple[float, str]]:
        if step >= self.cfg.max_wait_steps:
            return [(1.0, MAX_STEPS)]
        rules = []
        sentiment = state.sentiment[0]
        if sentiment < 0.30 or sentiment > 0.75:
            rules.append((0.85, "sentiment_extreme"))
        if abs(state.trend_strength[0]) > 0.03:
            rules.append((0.75, "strong_trend"))
        sl = float(state.sl_confidence[0])
        if max(sl, 1.0 - sl) > 0.75:  # a strong directional view either way (0.5 = no view)
            rules.append((0.65, "sl_confidence_exit"))
        time_based = min(self.time_cap, sigmoid_termination_prob(step, self.min_duration, self.cfg.max_wait_steps))
        return rules + [(time_based, TIME_SIGMOID)]


OPTION_CLASSES: dict[str, type[TradingOption]] = {
    "open_long": OpenLongOption,
    "open_short": OpenShortOption,
    "close_position": ClosePositionOption,
    "trend_follow": TrendFollowOption,
    "scalp": ScalpOption,
    "wait": WaitOption,
}


def termination_rules() -> dict[str, tuple[str, ...]]:
    """{option name: its rule names}, in OPTION_NAMES order (the metric names' vocabulary)."""
    return {name: OPTION_CLASSES[name].rules for name in OPTION_NAMES}


def build_options(cfg: OptionsConfig) -> list[TradingOption]:
    """The six options in controller index order (OPTION_NAMES)."""
    return [OPTION_CLASSES[name](getattr(cfg, name)) for name in OPTION_NAMES]


def availability_mask(options: list[TradingOption], states: MarketState) -> np.ndarray:
    """(n_envs, n_options) bool; Scalp and Wait are always available, so no row is empty."""
    n = len(states.position)
    return np.array([[opt.available(states.at(i)) for opt in options] for i in range(n)], dtype=bool)
