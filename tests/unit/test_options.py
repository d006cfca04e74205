"""The six options against the seed's Part 2: termination rules, the min_duration safety layer,
availability and the target exposure each option makes of the (already scaled) SAC action.

States are built by hand as MarketState values with 1-element arrays; the expected numbers are the
seed's rules computed here (time-based parts with the seed's sigmoid formula written out again).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainer.config import OPTION_NAMES, OptionsConfig
from trainer.envs.layout import MarketState
from trainer.options import (
    ClosePositionOption,
    OpenLongOption,
    OpenShortOption,
    ScalpOption,
    TrendFollowOption,
    WaitOption,
    availability_mask,
    build_options,
)

CFG = OptionsConfig()


def state(position=0.0, pnl=0.0, time_in_position=0.0, drawdown=0.0, trend=0.0, sentiment=0.5, sl=0.5) -> MarketState:
    arr = lambda v: np.array([v], dtype=np.float64)  # noqa: E731
    return MarketState(
        position=arr(position),
        unrealised_pnl=arr(pnl),
        time_in_position=arr(time_in_position),
        drawdown=arr(drawdown),
        trend_strength=arr(trend),
        sentiment=arr(sentiment),
        sl_confidence=arr(sl),
    )


def sig(step, min_duration, max_steps, steepness=0.5):
    if step >= max_steps:
        return 1.0
    progress = (step - min_duration) / max(1, max_steps - min_duration)
    return 0.8 / (1.0 + math.exp(-steepness * 10 * (progress - 0.5)))


OPTIONS = dict(zip(OPTION_NAMES, build_options(CFG)))


def test_build_options_order_and_config():
    options = build_options(CFG)
    assert [type(o) for o in options] == [
        OpenLongOption, OpenShortOption, ClosePositionOption, TrendFollowOption, ScalpOption, WaitOption
    ]
    assert [o.action_scale for o in options] == [0.8, 0.8, 1.0, 0.6, 1.0, 0.0]
    assert [o.min_duration for o in options] == [5, 5, 3, 10, 5, 5]


# --------------------------------------------------------------------------------------------
# Termination rules (seed Part 2)
# --------------------------------------------------------------------------------------------


class TestOpenLong:
    opt = OPTIONS["open_long"]

    def test_success_at_ninety_percent_of_target(self):
        memory = {"target": 0.5}
        assert self.opt.termination_probability(5, state(position=0.45), memory) == 1.0
        assert self.opt.termination_probability(7, state(position=0.6), memory) == 1.0

    def test_below_ninety_percent_uses_the_time_curve(self):
        memory = {"target": 0.5}
        assert self.opt.termination_probability(5, state(position=0.44), memory) == pytest.approx(sig(5, 5, 20))
        assert self.opt.termination_probability(17, state(position=0.1), memory) == pytest.approx(sig(17, 5, 20))
        assert sig(17, 5, 20) == pytest.approx(0.6540596, abs=1e-6)

    def test_forced_at_max_steps(self):
        assert self.opt.termination_probability(20, state(position=0.0), {"target": 0.5}) == 1.0

    def test_a_short_position_is_no_success(self):
        assert self.opt.termination_probability(5, state(position=-0.6), {"target": 0.5}) == pytest.approx(sig(5, 5, 20))


class TestOpenShort:
    opt = OPTIONS["open_short"]

    def test_success_at_ninety_percent_of_short_target(self):
        memory = {"target": -0.5}
        assert self.opt.termination_probability(5, state(position=-0.45), memory) == 1.0
        assert self.opt.termination_probability(5, state(position=0.45), memory) == pytest.approx(sig(5, 5, 20))

    def test_sentiment_exit_when_bullish(self):
        memory = {"target": -0.5}
        assert self.opt.termination_probability(5, state(position=-0.1, sentiment=0.61), memory) == pytest.approx(0.8)
        assert self.opt.termination_probability(5, state(position=-0.1, sentiment=0.60), memory) == pytest.approx(
            sig(5, 5, 20)
        )
        # late in the option the time curve can exceed the sentiment exit: the larger wins
        assert self.opt.termination_probability(19, state(position=-0.1, sentiment=0.9), memory) == pytest.approx(
            max(0.8, sig(19, 5, 20))
        )


class TestClosePosition:
    opt = OPTIONS["close_position"]

    def test_flat_is_done(self):
        assert self.opt.termination_probability(3, state(position=0.0), {}) == 1.0
        assert self.opt.termination_probability(4, state(position=0.009), {}) == 1.0
        assert self.opt.termination_probability(4, state(position=-0.009), {}) == 1.0

    def test_still_open_is_two_percent(self):
        assert self.opt.termination_probability(3, state(position=0.5), {}) == pytest.approx(0.02)
        assert self.opt.termination_probability(10, state(position=-0.3), {}) == pytest.approx(0.02)
        assert self.opt.termination_probability(10, state(position=0.01), {}) == pytest.approx(0.02)


class TestTrendFollow:
    opt = OPTIONS["trend_follow"]  # momentum_threshold 0.015, min_duration 10, max_steps 60

    @pytest.mark.parametrize("trend", [0.0074, -0.0074, 0.0])
    def test_exhausted_trend_ends_it(self, trend):
        assert self.opt.termination_probability(10, state(trend=trend), {}) == pytest.approx(0.85)

    @pytest.mark.parametrize("trend", [0.0076, -0.02, 0.05])
    def test_live_trend_time_based_capped_at_fifteen_percent(self, trend):
        # step 10: sigmoid 0.0607 (below the cap); steps 40 and 59: sigmoid > 0.15, capped
        assert self.opt.termination_probability(10, state(trend=trend), {}) == pytest.approx(sig(10, 10, 60))
        assert sig(40, 10, 60) > 0.15
        assert self.opt.termination_probability(40, state(trend=trend), {}) == pytest.approx(0.15)
        assert self.opt.termination_probability(59, state(trend=trend), {}) == pytest.approx(0.15)


class TestScalp:
    opt = OPTIONS["scalp"]  # min_duration 5, max_steps 15, steepness 0.6

    def test_done_once_a_trade_opened_and_closed(self):
        assert self.opt.termination_probability(5, state(position=0.0), {"opened": True, "closed": True}) == 1.0
        assert self.opt.termination_probability(6, state(position=0.0), {"opened": True}) == 1.0

    def test_otherwise_the_steeper_time_curve(self):
        never_opened = self.opt.termination_probability(5, state(position=0.0), {})
        assert never_opened == pytest.approx(sig(5, 5, 15, 0.6))
        assert never_opened == pytest.approx(0.0379407, abs=1e-6)
        still_open = self.opt.termination_probability(12, state(position=0.4), {"opened": True})
        assert still_open == pytest.approx(sig(12, 5, 15, 0.6))
        assert self.opt.termination_probability(15, state(position=0.4), {"opened": True}) == 1.0

    def test_trade_lifecycle_through_target_exposure(self):
        memory: dict = {}
        assert self.opt.target_exposure(0.5, state(position=0.0), memory) == pytest.approx(0.5)
        # opened; profit target 0.008 reached -> close
        assert self.opt.target_exposure(0.5, state(position=0.5, pnl=0.009), memory) == 0.0
        assert memory == {"opened": True, "closed": True}
        # one trade per scalp: stays flat whatever SAC says
        assert self.opt.target_exposure(0.9, state(position=0.0), memory) == 0.0
        assert self.opt.termination_probability(5, state(position=0.0), memory) == 1.0


class TestWait:
    opt = OPTIONS["wait"]  # min_duration 5, max_wait_steps 30

    @pytest.mark.parametrize("sentiment", [0.29, 0.0, 0.76, 1.0])
    def test_sentiment_extremes(self, sentiment):
        assert self.opt.termination_probability(5, state(sentiment=sentiment), {}) == pytest.approx(0.85)

    @pytest.mark.parametrize("trend", [0.031, -0.031])
    def test_strong_trend(self, trend):
        assert self.opt.termination_probability(5, state(trend=trend), {}) == pytest.approx(0.75)

    def test_strong_sl_confidence(self):
        assert self.opt.termination_probability(5, state(sl=0.76), {}) == pytest.approx(0.65)

    def test_strong_bearish_sl_confidence_too(self):
        # a strong view either way: max(sl, 1 - sl) > 0.75
        assert self.opt.termination_probability(5, state(sl=0.24), {}) == pytest.approx(0.65)
        assert self.opt.termination_probability(5, state(sl=0.25), {}) == pytest.approx(sig(5, 5, 30))

    def test_the_strongest_signal_wins(self):
        assert self.opt.termination_probability(5, state(sentiment=0.9, trend=0.05, sl=0.9), {}) == pytest.approx(0.85)
        assert self.opt.termination_probability(5, state(trend=0.05, sl=0.9), {}) == pytest.approx(0.75)

    def test_no_signal_at_the_boundaries(self):
        quiet = sig(5, 5, 30)
        for s in (state(sentiment=0.30), state(sentiment=0.75), state(trend=0.03), state(sl=0.75)):
            assert self.opt.termination_probability(5, s, {}) == pytest.approx(quiet)

    def test_time_based_capped_at_one_half(self):
        assert sig(25, 5, 30) > 0.5
        assert self.opt.termination_probability(25, state(), {}) == pytest.approx(0.5)
        assert self.opt.termination_probability(29, state(), {}) == pytest.approx(0.5)
        assert self.opt.termination_probability(30, state(), {}) == 1.0


# --------------------------------------------------------------------------------------------
# The safety layer: nothing terminates below min_duration, whatever the state
# --------------------------------------------------------------------------------------------

TRIGGERING_STATES = [
    (state(position=0.0, trend=0.0, sentiment=0.9, sl=0.9), {"target": 0.0, "opened": True, "closed": True}),
    (state(position=0.9, trend=0.05, sentiment=0.1, sl=0.9), {"target": 0.5, "opened": True}),
    (state(position=-0.9, trend=-0.05, sentiment=0.99, sl=0.99), {"target": -0.5}),
]


@pytest.mark.parametrize("name", OPTION_NAMES)
@pytest.mark.parametrize("case", range(len(TRIGGERING_STATES)))
def test_zero_below_min_duration_whatever_the_state(name, case):
    opt = OPTIONS[name]
    market, memory = TRIGGERING_STATES[case]
    assert opt.min_duration > 0
    for step in range(opt.min_duration):
        assert opt.termination_probability(step, market, dict(memory)) == 0.0


@pytest.mark.parametrize("name", OPTION_NAMES)
def test_safety_layer_follows_configured_min_duration(name):
    cfg = OptionsConfig(**{name: {**getattr(CFG, name).model_dump(), "min_duration": 8}})
    opt = dict(zip(OPTION_NAMES, build_options(cfg)))[name]
    flat_done = state(position=0.0, trend=0.0, sentiment=0.95, sl=0.95)
    memory = {"target": 0.0, "opened": True}
    for step in range(8):
        assert opt.termination_probability(step, flat_done, dict(memory)) == 0.0


def test_the_triggering_states_do_trigger_at_min_duration():
    market, memory = TRIGGERING_STATES[0]
    assert OPTIONS["close_position"].termination_probability(3, market, dict(memory)) == 1.0
    assert OPTIONS["scalp"].termination_probability(5, market, dict(memory)) == 1.0
    assert OPTIONS["trend_follow"].termination_probability(10, market, dict(memory)) == pytest.approx(0.85)
    assert OPTIONS["wait"].termination_probability(5, market, dict(memory)) == pytest.approx(0.85)
    assert OPTIONS["open_short"].termination_probability(5, market, dict(memory)) >= 0.8


# --------------------------------------------------------------------------------------------
# Availability
# --------------------------------------------------------------------------------------------


def test_close_position_needs_a_position():
    opt = OPTIONS["close_position"]
    assert opt.available(state(position=0.5))
    assert opt.available(state(position=-0.5))
    assert opt.available(state(position=0.01))
    assert not opt.available(state(position=0.0))
    assert not opt.available(state(position=0.005))


def test_trend_follow_needs_trend_at_threshold():
    opt = OPTIONS["trend_follow"]
    assert opt.available(state(trend=0.015))
    assert opt.available(state(trend=-0.02))
    assert not opt.available(state(trend=0.0149))
    assert not opt.available(state(trend=-0.0149))


def test_open_long_needs_confidence():
    opt = OPTIONS["open_long"]
    assert opt.available(state(sl=0.5))
    assert not opt.available(state(sl=0.49))


def test_open_short_needs_the_mirrored_confidence():
    # sl_confidence is directional (0 = down .. 1 = up): a short needs 1 - sl >= min_confidence 0.5
    opt = OPTIONS["open_short"]
    assert opt.available(state(sl=0.5)) and opt.available(state(sl=0.1))
    assert not opt.available(state(sl=0.51))
    cfg = OptionsConfig(open_short={**CFG.open_short.model_dump(), "min_confidence": 0.7})
    strict = dict(zip(OPTION_NAMES, build_options(cfg)))["open_short"]
    assert strict.available(state(sl=0.3)) and not strict.available(state(sl=0.31))


@pytest.mark.parametrize("sl", [0.0, 0.25, 0.5, 0.75, 1.0, 0.3, 0.62])
def test_at_most_one_open_option_has_a_view_and_both_at_neutral(sl):
    long_ok = OPTIONS["open_long"].available(state(sl=sl))
    short_ok = OPTIONS["open_short"].available(state(sl=sl))
    assert long_ok or short_ok
    assert (long_ok and short_ok) == (sl == 0.5)


@pytest.mark.parametrize(
    "market",
    [state(), state(position=1.0, trend=0.5, sentiment=0.0, sl=0.0), state(position=-1.0, trend=-0.5, sentiment=1.0, sl=1.0)],
)
def test_scalp_and_wait_always_available(market):
    assert OPTIONS["scalp"].available(market)
    assert OPTIONS["wait"].available(market)


def test_availability_mask_rows():
    options = build_options(CFG)
    batch = MarketState(
        position=np.array([0.0, 0.5]),
        unrealised_pnl=np.zeros(2),
        time_in_position=np.zeros(2),
        drawdown=np.zeros(2),
        trend_strength=np.array([0.0, 0.02]),
        sentiment=np.array([0.5, 0.5]),
        sl_confidence=np.array([0.4, 0.6]),
    )
    mask = availability_mask(options, batch)
    assert mask.shape == (2, 6) and mask.dtype == bool
    # env 0: flat, no trend, sl 0.4 (a bearish view: 1 - 0.4 >= 0.5) -> open_short, scalp, wait
    assert mask[0].tolist() == [False, True, False, False, True, True]
    # env 1: long 0.5 (< 0.72), trend 0.02, sl 0.6 (bullish: no open_short) -> the other five
    assert mask[1].tolist() == [True, False, True, True, True, True]


# --------------------------------------------------------------------------------------------
# Target exposure (the scaled SAC action -> env action)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("position", [0.0, 0.37, -0.42, 1.0])
@pytest.mark.parametrize("scaled_action", [0.0, 1.0, -1.0])
def test_wait_holds_the_position(position, scaled_action):
    assert OPTIONS["wait"].target_exposure(scaled_action, state(position=position), {}) == pytest.approx(position)


def test_open_long_steps_toward_target_at_most_max_exposure_pct():
    opt = OPTIONS["open_long"]  # max_exposure_pct 0.15
    position, memory = 0.0, {}
    path = []
    for _ in range(8):
        target = opt.target_exposure(-0.8, state(position=position), memory)  # sign of s ignored: builds long
        assert target >= 0.0
        assert abs(target - position) <= 0.15 + 1e-12
        position = target
        path.append(round(target, 10))
    assert path == [0.15, 0.3, 0.45, 0.6, 0.75, 0.8, 0.8, 0.8]
    assert memory["target"] == pytest.approx(0.8)


@pytest.mark.parametrize("position", [-0.05, -0.5, -1.0])
def test_open_long_never_goes_short(position):
    assert OPTIONS["open_long"].target_exposure(0.8, state(position=position), {}) >= 0.0


def test_open_short_mirrors_open_long():
    opt = OPTIONS["open_short"]
    assert opt.target_exposure(0.8, state(position=0.0), {}) == pytest.approx(-0.15)
    assert opt.target_exposure(0.8, state(position=-0.7), {}) == pytest.approx(-0.8)
    assert opt.target_exposure(0.8, state(position=0.5), {}) <= 0.0


@pytest.mark.parametrize(
    "trend, scaled_action, expected",
    [
        (0.02, 0.6, 0.15),  # capped at max_position_size
        (0.02, -0.6, 0.15),  # direction from the trend, not from SAC
        (-0.02, 0.6, -0.15),
        (0.02, 0.1, 0.1),  # below the cap: the action's size
        (-0.03, -0.05, -0.05),
    ],
)
def test_trend_follow_capped_in_the_trend_direction(trend, scaled_action, expected):
    assert OPTIONS["trend_follow"].target_exposure(scaled_action, state(trend=trend), {}) == pytest.approx(expected)


def test_close_position_reduces_and_exits_at_targets():
    opt = OPTIONS["close_position"]
    assert opt.target_exposure(0.5, state(position=0.6), {}) == pytest.approx(0.3)
    assert opt.target_exposure(1.0, state(position=-0.6), {}) == 0.0
    assert opt.target_exposure(0.1, state(position=0.6, pnl=0.021), {}) == 0.0  # profit target 0.02
    assert opt.target_exposure(0.1, state(position=0.6, pnl=-0.011), {}) == 0.0  # stop loss -0.01


# --------------------------------------------------------------------------------------------
# Which rule ended the option: termination() -> (probability, rule)
# --------------------------------------------------------------------------------------------

RULE_CASES = [
    # (option, step, state, memory, probability, rule)
    ("open_long", 5, state(position=0.45), {"target": 0.5}, 1.0, "target_reached"),
    ("open_long", 7, state(position=0.1), {"target": 0.5}, sig(7, 5, 20), "time_sigmoid"),
    ("open_long", 20, state(position=0.1), {"target": 0.5}, 1.0, "max_steps"),
    ("open_long", 20, state(position=0.45), {"target": 0.5}, 1.0, "target_reached"),  # tie: the earlier rule
    ("open_short", 5, state(position=-0.1, sentiment=0.61), {"target": -0.5}, 0.8, "sentiment_exit"),
    ("open_short", 5, state(position=-0.45, sentiment=0.61), {"target": -0.5}, 1.0, "target_reached"),
    ("open_short", 19, state(position=-0.1, sentiment=0.9), {"target": -0.5}, 0.8, "sentiment_exit"),  # sig 0.72
    ("open_short", 20, state(position=-0.1, sentiment=0.9), {"target": -0.5}, 1.0, "max_steps"),
    ("open_short", 6, state(position=-0.1, sentiment=0.6), {"target": -0.5}, sig(6, 5, 20), "time_sigmoid"),
    ("close_position", 3, state(position=0.0), {}, 1.0, "position_closed"),
    ("close_position", 4, state(position=0.4), {}, 0.02, "still_open"),
    ("close_position", 20, state(position=0.4), {}, 1.0, "max_steps"),
    ("trend_follow", 10, state(trend=0.001), {}, 0.85, "trend_exhausted"),
    ("trend_follow", 40, state(trend=0.02), {}, 0.15, "time_sigmoid"),
    ("trend_follow", 60, state(trend=0.001), {}, 1.0, "max_steps"),
    ("scalp", 5, state(position=0.0), {"opened": True}, 1.0, "trade_closed"),
    ("scalp", 6, state(position=0.3), {"opened": True}, sig(6, 5, 15, 0.6), "time_sigmoid"),
    ("scalp", 15, state(position=0.3), {"opened": True}, 1.0, "max_steps"),
    ("wait", 5, state(sentiment=0.2, trend=0.05, sl=0.9), {}, 0.85, "sentiment_extreme"),
    ("wait", 5, state(trend=-0.05, sl=0.9), {}, 0.75, "strong_trend"),
    ("wait", 5, state(sl=0.1), {}, 0.65, "sl_confidence_exit"),
    ("wait", 26, state(), {}, 0.5, "time_sigmoid"),
    ("wait", 30, state(sentiment=0.1), {}, 1.0, "max_steps"),
]


@pytest.mark.parametrize("name, step, market, memory, probability, rule", RULE_CASES)
def test_termination_reports_the_rule_that_gives_the_probability(name, step, market, memory, probability, rule):
    opt = OPTIONS[name]
    p, fired = opt.termination(step, market, dict(memory))
    assert fired == rule and fired in opt.rules
    assert p == pytest.approx(probability)
    assert opt.termination_probability(step, market, dict(memory)) == p


def test_every_rule_of_every_option_is_reachable():
    reached = {(name, rule) for name, *_, rule in RULE_CASES}
    for name, opt in OPTIONS.items():
        assert {(name, r) for r in opt.rules} <= reached, name
    from trainer.options import termination_rules

    assert termination_rules() == {name: OPTIONS[name].rules for name in OPTION_NAMES}


@pytest.mark.parametrize("name", OPTION_NAMES)
def test_below_min_duration_no_rule_fires(name):
    market, memory = TRIGGERING_STATES[0]
    assert OPTIONS[name].termination(0, market, dict(memory)) == (0.0, "none")


@pytest.mark.parametrize("name", OPTION_NAMES)
def test_termination_probability_is_termination_on_random_states(name):
    rng = np.random.default_rng(OPTION_NAMES.index(name))
    opt = OPTIONS[name]
    for _ in range(300):
        market = state(position=rng.uniform(-1, 1) * (rng.random() > 0.3), pnl=rng.normal(0, 0.02),
                       trend=rng.normal(0, 0.03), sentiment=rng.random(), sl=rng.random())
        memory = {"target": rng.uniform(-1, 1), "opened": bool(rng.random() > 0.5)}
        step = int(rng.integers(0, 70))
        p, rule = opt.termination(step, market, dict(memory))
        assert 0.0 <= p <= 1.0 and (rule in opt.rules or (p == 0.0 and rule == "none"))
        assert opt.termination_probability(step, market, dict(memory)) == p
