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
`memory` is the options' per-environment scratch (`OptionMemory`, arrays over envs; a dict in the
one-env methods), cleared when an option starts.

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
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainer.config import OPTION_NAMES, OptionsConfig
from trainer.envs.layout import MarketState
from trainer.options.termination import sigmoid_termination_prob

FLAT = 0.01  # |exposure| below this counts as no position
NO_RULE = "none"  # reported with probability 0 (below min_duration): nothing can end the option
MAX_STEPS = "max_steps"
TIME_SIGMOID = "time_sigmoid"
NOT_APPLICABLE = -np.inf  # a rule that does not apply to an env: never the largest
ONE_ENV = np.zeros(1, dtype=np.int64)  # the rows of a one-env call


def _max(a, b):
    """Python's max(a, b) elementwise: on a tie the first argument, so -0.0 stays -0.0 (np.maximum may
    return either zero). The options' numbers are bit for bit those of the per-env code they replaced."""
    return np.where(b > a, b, a)


def _min(a, b):
    """Python's min(a, b) elementwise (ties: the first argument)."""
    return np.where(b < a, b, a)


def _clamp(value, low, high):
    return _min(_max(value, low), high)


def _toward(current, desired, max_step):
    return current + _clamp(desired - current, -max_step, max_step)


@dataclass
class OptionMemory:
    """The options' per-env scratch, as arrays over envs; an env's entries are cleared when its
    option starts. `target` (NaN = not set) is what OpenLong/OpenShort are building toward;
    `opened` / `closed` are Scalp's one trade."""

    target: np.ndarray
    opened: np.ndarray
    closed: np.ndarray

    @classmethod
    def empty(cls, n: int) -> "OptionMemory":
        return cls(np.full(n, np.nan), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool))

    def clear(self, rows) -> None:
        self.target[rows] = np.nan
        self.opened[rows] = False
        self.closed[rows] = False

    def to_dict(self, i: int) -> dict:
        """Env `i`'s memory as the keys an option has set (what checkpoints and readers see)."""
        memory: dict = {}
        if not np.isnan(self.target[i]):
            memory["target"] = float(self.target[i])
        if self.opened[i]:
            memory["opened"] = True
        if self.closed[i]:
            memory["closed"] = True
        return memory

    def load_dict(self, i: int, memory: dict) -> None:
        unknown = set(memory) - {"target", "opened", "closed"}
        if unknown:
            raise ValueError(f"option memory has unknown keys {sorted(unknown)} (known: target, opened, closed)")
        self.clear(i)
        self.target[i] = memory.get("target", np.nan)
        self.opened[i] = bool(memory.get("opened", False))
        self.closed[i] = bool(memory.get("closed", False))


class TradingOption(ABC):
    """One option, computed for all the envs running it at once.

    The vectorised methods take `states`, the MarketState of every env, `rows`, the envs to
    compute (indices into `states` and `memory`), and per-row inputs (`scaled`, `steps`); they
    read only the fields they need at those rows. The one-env methods (`available`,
    `target_exposure`, `termination`) wrap them for a single state and a memory dict.
    """

    name: str
    rules: tuple[str, ...]  # the rule names termination() can report, in priority order
    steepness = 0.5  # of the time-based sigmoid

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.action_scale = float(cfg.action_scale)
        self.min_duration = int(cfg.min_duration)
        self.time_curve = self._time_curve()

    # ---------------------------------------------------------------- vectorised (the wrapper's)

    def availability(self, states: MarketState) -> np.ndarray:
        """Whether the option may start, per env (bool array)."""
        return np.ones(len(states.position), dtype=bool)

    @abstractmethod
    def target_exposures(self, scaled: np.ndarray, states: MarketState, rows: np.ndarray, memory: OptionMemory) -> np.ndarray:
        """The env action of each env in `rows` this step, from its action_scale-scaled SAC action."""

    @abstractmethod
    def _rule_table(self, steps: np.ndarray, states: MarketState, rows: np.ndarray, memory: OptionMemory) -> np.ndarray:
        """(len(rules), len(rows)): each rule's probability per env, NOT_APPLICABLE where it does
        not apply; asked only for envs that have run the option's minimum number of steps."""

    def _min_steps(self) -> int:
        return self.min_duration

    def terminations(self, steps: np.ndarray, states: MarketState, rows: np.ndarray, memory: OptionMemory) -> tuple[np.ndarray, np.ndarray]:
        """(probability of ending after `steps` steps, index into `rules` of the rule that gives
        it, -1 for none) per env in `rows`: the largest applicable rule (the earlier one in `rules`
        on a tie), clamped to [0, 1]; (0, -1) below min_duration."""
        old_enough = steps >= self._min_steps()
        if old_enough.all():  # the wrapper asks only past min_duration: Wait's longer minimum aside, all
            table = self._rule_table(steps, states, rows, memory)
            return np.minimum(np.maximum(table.max(axis=0), 0.0), 1.0), table.argmax(axis=0)  # argmax: the first of equals
        probabilities = np.zeros(len(steps))
        fired = np.full(len(steps), -1, dtype=np.int64)
        if old_enough.any():
            probabilities[old_enough], fired[old_enough] = self.terminations(
                steps[old_enough], states, rows[old_enough], memory
            )
        return probabilities, fired

    def _step_cap(self) -> int:
        """The step count at which the time-based rule reaches 1.0."""
        return self.cfg.max_steps

    def _time_curve(self) -> np.ndarray:
        """sigmoid_termination_prob at every step count 0..max(step cap, min_duration), computed
        once (the curve depends on the step count alone); from the last entry on it is 1.0."""
        cap = self._step_cap()
        top = max(cap, self.min_duration)
        return np.array([sigmoid_termination_prob(k, self.min_duration, cap, self.steepness) for k in range(top + 1)])

    def _time_based(self, steps: np.ndarray) -> np.ndarray:
        return self.time_curve[np.minimum(steps, len(self.time_curve) - 1)]

    # ---------------------------------------------------------------- one env

    def available(self, state: MarketState) -> bool:
        return bool(self.availability(state)[0])

    def target_exposure(self, scaled_action: float, state: MarketState, memory: dict) -> float:
        """The env action for one env; `memory` is that env's dict, updated in place."""
        scratch = OptionMemory.empty(1)
        scratch.load_dict(0, memory)
        exposure = self.target_exposures(np.array([scaled_action], dtype=np.float64), state, ONE_ENV, scratch)
        memory.clear()
        memory.update(scratch.to_dict(0))
        return float(exposure[0])

    def termination(self, step: int, state: MarketState, memory: dict) -> tuple[float, str]:
        """(probability of ending after `step` steps, the rule that gives it) for one env;
        (0, "none") below min_duration."""
        scratch = OptionMemory.empty(1)
        scratch.load_dict(0, memory)
        probability, fired = self.terminations(np.array([step]), state, ONE_ENV, scratch)
        return float(probability[0]), (self.rules[fired[0]] if fired[0] >= 0 else NO_RULE)

    def termination_probability(self, step: int, state: MarketState, memory: dict) -> float:
        """Probability of ending after `step` steps; 0 below min_duration (safety layer)."""
        return self.termination(step, state, memory)[0]


def _rule(applies, probability) -> np.ndarray:
    return np.where(applies, probability, NOT_APPLICABLE)


class OpenLongOption(TradingOption):
    """Builds a long position over several steps (seed: success when >= 90% of target)."""

    name = "open_long"
    direction = 1.0
    rules = ("target_reached", TIME_SIGMOID, MAX_STEPS)

    def confidence(self, states: MarketState) -> np.ndarray:
        """The SL signal's conviction in this option's direction: sl_confidence for a long,
        1 - sl_confidence for a short (sl_confidence is 0 = down .. 1 = up)."""
        return states.sl_confidence if self.direction > 0 else 1.0 - states.sl_confidence

    def availability(self, states: MarketState) -> np.ndarray:
        building = self.direction * states.position < 0.9 * self.action_scale
        return (self.confidence(states) >= self.cfg.min_confidence) & building

    def target_exposures(self, scaled, states, rows, memory):
        desired = self.direction * np.abs(scaled)
        memory.target[rows] = desired
        target = _toward(states.position[rows], desired, self.cfg.max_exposure_pct)
        return _clamp(target, 0.0, 1.0) if self.direction > 0 else _clamp(target, -1.0, 0.0)

    def _signal_rules(self, states: MarketState, rows: np.ndarray) -> list[np.ndarray]:
        return []

    def _rule_table(self, steps, states, rows, memory):
        stored = memory.target[rows]
        target = np.abs(np.where(np.isnan(stored), self.action_scale, stored))
        reached = self.direction * states.position[rows] >= 0.9 * target - 1e-9  # 0.9 * 0.8 is 0.72000...01
        time_based = self._time_based(steps)
        capped = steps >= self.cfg.max_steps  # the time curve is 1.0 there, reported as the step cap
        return np.array(
            [_rule(reached, 1.0), *self._signal_rules(states, rows), _rule(~capped, time_based), _rule(capped, time_based)]
        )


class OpenShortOption(OpenLongOption):
    """Builds a short position; also exits (0.8) when sentiment turns bullish (> 0.60)."""

    name = "open_short"
    direction = -1.0
    bullish_sentiment = 0.60
    rules = ("target_reached", "sentiment_exit", TIME_SIGMOID, MAX_STEPS)

    def _signal_rules(self, states: MarketState, rows: np.ndarray) -> list[np.ndarray]:
        return [_rule(states.sentiment[rows] > self.bullish_sentiment, 0.8)]


class ClosePositionOption(TradingOption):
    """Exit management: done when flat; a very low (0.02) chance of giving up while still open."""

    name = "close_position"
    still_open_prob = 0.02
    rules = ("position_closed", MAX_STEPS, "still_open")

    def availability(self, states: MarketState) -> np.ndarray:
        return states.position_size >= FLAT

    def target_exposures(self, scaled, states, rows, memory):
        pnl = states.unrealised_pnl[rows]
        at_exit = (pnl >= self.cfg.profit_target) | (pnl <= self.cfg.stop_loss)
        target = states.position[rows] * (1.0 - _min(1.0, np.abs(scaled)))
        return np.where(at_exit | (np.abs(target) < FLAT), 0.0, target)

    def _rule_table(self, steps, states, rows, memory):
        flat = np.abs(states.position[rows]) < FLAT
        capped = steps >= self.cfg.max_steps
        return np.array(
            [_rule(flat, 1.0), _rule(~flat & capped, 1.0), _rule(~flat & ~capped, self.still_open_prob)]
        )


class TrendFollowOption(TradingOption):
    """Rides a trend; trend exhaustion (< half the threshold) ends it, time only weakly (<= 0.15)."""

    name = "trend_follow"
    exhausted_prob = 0.85
    time_cap = 0.15
    rules = (MAX_STEPS, "trend_exhausted", TIME_SIGMOID)

    def availability(self, states: MarketState) -> np.ndarray:
        return np.abs(states.trend_strength) >= self.cfg.momentum_threshold

    def target_exposures(self, scaled, states, rows, memory):
        return np.sign(states.trend_strength[rows]) * _min(np.abs(scaled), self.cfg.max_position_size)

    def _rule_table(self, steps, states, rows, memory):
        capped = steps >= self.cfg.max_steps
        exhausted = np.abs(states.trend_strength[rows]) < 0.5 * self.cfg.momentum_threshold
        time_based = _min(self.time_cap, self._time_based(steps))
        return np.array([_rule(capped, 1.0), _rule(~capped & exhausted, self.exhausted_prob), _rule(~capped, time_based)])


class ScalpOption(TradingOption):
    """A quick trade: opens with the SAC action, closes at its profit target / stop loss; done when closed."""

    name = "scalp"
    steepness = 0.6
    rules = ("trade_closed", TIME_SIGMOID, MAX_STEPS)

    def target_exposures(self, scaled, states, rows, memory):
        in_trade = np.abs(states.position[rows]) >= FLAT
        pnl = states.unrealised_pnl[rows]
        memory.opened[rows] |= in_trade
        memory.closed[rows] |= in_trade & ((pnl >= self.cfg.profit_target) | (pnl <= self.cfg.stop_loss))
        return np.where(memory.closed[rows], 0.0, scaled)  # one trade per scalp

    def _rule_table(self, steps, states, rows, memory):
        closed = memory.opened[rows] & (np.abs(states.position[rows]) < FLAT)
        time_based = self._time_based(steps)
        capped = steps >= self.cfg.max_steps
        return np.array([_rule(closed, 1.0), _rule(~capped, time_based), _rule(capped, time_based)])


class WaitOption(TradingOption):
    """Observe without trading; leave on strong signals (sentiment extremes, trend, SL confidence)."""

    name = "wait"
    time_cap = 0.5
    rules = (MAX_STEPS, "sentiment_extreme", "strong_trend", "sl_confidence_exit", TIME_SIGMOID)

    def _step_cap(self) -> int:
        return self.cfg.max_wait_steps

    def target_exposures(self, scaled, states, rows, memory):
        return states.position[rows]  # action_scale 0: hold, no trade

    def _min_steps(self) -> int:
        return max(self.min_duration, self.cfg.min_wait_steps)

    def _rule_table(self, steps, states, rows, memory):
        capped = steps >= self.cfg.max_wait_steps
        sentiment, sl = states.sentiment[rows], states.sl_confidence[rows]
        extreme = (sentiment < 0.30) | (sentiment > 0.75)
        strong_view = _max(sl, 1.0 - sl) > 0.75  # a strong directional view either way (0.5 = no view)
        time_based = _min(self.time_cap, self._time_based(steps))
        return np.array(
            [
                _rule(capped, 1.0),
                _rule(~capped & extreme, 0.85),
                _rule(~capped & (np.abs(states.trend_strength[rows]) > 0.03), 0.75),
                _rule(~capped & strong_view, 0.65),
                _rule(~capped, time_based),
            ]
        )


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
    return np.stack([option.availability(states) for option in options], axis=1)
