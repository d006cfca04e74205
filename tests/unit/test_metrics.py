"""Backtest metrics against values worked out by hand on a five-bar example."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainer.evaluation.metrics import (
    backtest_metrics,
    calmar_ratio,
    drawdown_curve,
    equity_curve,
    option_usage,
    option_usage_metrics,
    persistence_metrics,
    sharpe_ratio,
    sortino_ratio,
)

# Five bars. Equity: 1.1, 1.045, 1.0659, 0.95931, 1.0072755 (peak 1.1 after bar 0).
RETURNS = [0.10, -0.05, 0.02, -0.10, 0.05]
POSITIONS = [1.0, 1.0, 0.5, -1.0, 0.0]


def test_equity_and_drawdown_curves_by_hand():
    np.testing.assert_allclose(equity_curve(RETURNS), [1.1, 1.045, 1.0659, 0.95931, 1.0072755], rtol=1e-12)
    expected_dd = [0.0, 0.05, 1 - 1.0659 / 1.1, 1 - 0.95931 / 1.1, 1 - 1.0072755 / 1.1]
    np.testing.assert_allclose(drawdown_curve(RETURNS), expected_dd, rtol=1e-12, atol=1e-15)


def test_first_bar_loss_is_a_drawdown_from_starting_capital():
    np.testing.assert_allclose(drawdown_curve([-0.2, 0.1]), [0.2, 1 - 0.88], rtol=1e-12)


def test_backtest_metrics_by_hand():
    m = backtest_metrics(RETURNS, POSITIONS, periods_per_year=252)
    assert set(m) == {
        "sharpe", "total_return", "cagr", "max_drawdown", "calmar", "sortino", "turnover", "hit_rate", "exposure"
    }
    # mean 0.004; squared deviations sum 0.02532 -> var(ddof=1) 0.00633
    assert m["sharpe"] == pytest.approx(0.004 / math.sqrt(0.00633) * math.sqrt(252), rel=1e-12)
    assert m["sharpe"] == pytest.approx(0.79811, abs=1e-5)
    assert m["total_return"] == pytest.approx(0.0072755, rel=1e-10)
    assert m["cagr"] == pytest.approx(1.0072755 ** (252 / 5) - 1, rel=1e-10)
    assert m["max_drawdown"] == pytest.approx(1 - 0.95931 / 1.1, rel=1e-12)  # 0.12790
    assert m["calmar"] == pytest.approx(m["cagr"] / (1 - 0.95931 / 1.1), rel=1e-12)
    # downside deviation sqrt((0.05^2 + 0.10^2) / 5) = 0.05
    assert m["sortino"] == pytest.approx(0.004 / 0.05 * math.sqrt(252), rel=1e-12)
    # |1-0| + |1-1| + |0.5-1| + |-1-0.5| + |0+1| = 4.0 over 5 bars
    assert m["turnover"] == pytest.approx(0.8)
    # invested on bars 0..3: returns +, -, +, - -> 2 of 4
    assert m["hit_rate"] == pytest.approx(0.5)
    assert m["exposure"] == pytest.approx(0.7)


def test_sharpe_zero_variance_cases():
    assert sharpe_ratio([0.0] * 10, 252) == 0.0
    with pytest.raises(ValueError, match="constant"):
        sharpe_ratio([0.001] * 10, 252)


def test_flat_strategy_metrics_are_zero_never_nan():
    m = backtest_metrics([0.0] * 20, [0.0] * 20, periods_per_year=252)
    assert all(not math.isnan(v) for v in m.values())
    assert m == {
        "sharpe": 0.0, "total_return": 0.0, "cagr": 0.0, "max_drawdown": 0.0, "calmar": 0.0,
        "sortino": 0.0, "turnover": 0.0, "hit_rate": 0.0, "exposure": 0.0,
    }


def test_unbounded_ratios_without_downside():
    assert sortino_ratio([0.01, 0.0, 0.02], 252) == math.inf
    assert calmar_ratio(0.1, 0.0) == math.inf
    assert calmar_ratio(0.0, 0.0) == 0.0


def test_total_loss_gives_cagr_minus_one():
    m = backtest_metrics([0.5, -1.0, 0.0], [1.0, 1.0, 0.0], periods_per_year=252)
    assert m["cagr"] == -1.0
    assert m["max_drawdown"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "returns, positions, match",
    [
        ([0.1, float("nan")], [1.0, 1.0], "non-finite"),
        ([0.1, 0.2], [1.0], "differ in length"),
        ([0.1], [1.0], "at least 2"),
    ],
)
def test_bad_inputs_are_refused(returns, positions, match):
    with pytest.raises(ValueError, match=match):
        backtest_metrics(returns, positions, periods_per_year=252)


def test_option_usage_runs_by_hand():
    # runs: a x3, b x2, a x1, c x4; d never
    usage = option_usage([0, 0, 0, 1, 1, 0, 2, 2, 2, 2], ["a", "b", "c", "d"])
    assert usage["usage_pct"] == {"a": 0.4, "b": 0.2, "c": 0.4, "d": 0.0}
    assert usage["avg_duration"] == {"a": 2.0, "b": 2.0, "c": 4.0, "d": 0.0}
    assert usage["selections"] == {"a": 2.0, "b": 1.0, "c": 1.0, "d": 0.0}
    assert usage["selection_share"] == {"a": 0.5, "b": 0.25, "c": 0.25, "d": 0.0}

    flat = option_usage_metrics(usage, used_option_min_pct=0.05)
    assert flat["options.usage_pct.c"] == 0.4
    assert flat["options.selection_share.a"] == 0.5
    assert flat["options.min_selections"] == 0.0
    assert flat["options.min_selection_share"] == 0.0
    assert flat["options.max_selection_share"] == 0.5
    assert flat["options.min_usage_pct"] == 0.0
    assert flat["options.max_usage_pct"] == 0.4
    assert flat["options.min_avg_duration"] == 0.0
    assert flat["options.num_used_options"] == 3.0


def test_selection_shares_differ_from_step_shares():
    """Three options chosen equally often, one of them for 1 bar per use: 1/3 of the selections,
    1/9 of the bars. Diversity gates read the first, step shares are reported beside."""
    usage = option_usage([0, 0, 0, 0, 1, 2, 2, 2, 2] * 2, ["long", "close", "wait"])
    assert usage["selection_share"] == pytest.approx({"long": 1 / 3, "close": 1 / 3, "wait": 1 / 3})
    assert usage["usage_pct"] == pytest.approx({"long": 4 / 9, "close": 1 / 9, "wait": 4 / 9})
    # a usage without selection shares (cumulative training totals) gets them from the counts
    flat = option_usage_metrics({k: v for k, v in usage.items() if k != "selection_share"}, prefix="x")
    assert flat["x.min_selection_share"] == pytest.approx(1 / 3)
    assert flat["x.min_usage_pct"] == pytest.approx(1 / 9)


def test_option_steps_count_a_reselection_of_the_same_option():
    # `a` runs 3 bars, ends, and is chosen again for 2 bars; then `b` for 2 bars
    options = [0, 0, 0, 0, 0, 1, 1]
    steps = [0, 1, 2, 0, 1, 0, 1]
    with_steps = option_usage(options, ["a", "b"], option_steps=steps)
    assert with_steps["selections"] == {"a": 2.0, "b": 1.0}
    assert with_steps["avg_duration"] == {"a": 2.5, "b": 2.0}
    assert with_steps["selection_share"] == pytest.approx({"a": 2 / 3, "b": 1 / 3})
    # from option changes alone the two uses of `a` are one
    changes = option_usage(options, ["a", "b"])
    assert changes["selections"] == {"a": 1.0, "b": 1.0}
    assert changes["avg_duration"] == {"a": 5.0, "b": 2.0}
    with pytest.raises(ValueError, match="differ in length"):
        option_usage(options, ["a", "b"], option_steps=steps[:-1])


def test_persistence_metrics_by_hand():
    usage = {
        "usage_pct": {"long": 0.5, "close": 0.1, "wait": 0.4},
        "avg_duration": {"long": 6.0, "close": 3.3, "wait": 12.0},
        "selections": {"long": 10.0, "close": 4.0, "wait": 4.0},
    }
    flat = persistence_metrics(usage, {"long": 5, "close": 3, "wait": 5}, prefix="p")
    assert flat["p.min_duration_margin"] == pytest.approx(0.3)  # close: 3.3 - 3
    assert flat["p.step_weighted_duration"] == pytest.approx(0.5 * 6 + 0.1 * 3.3 + 0.4 * 12)  # 8.13
    assert flat["p.selection_weighted_duration"] == pytest.approx((60 + 13.2 + 48) / 18)
    # an option that ends before its own min_duration
    short = persistence_metrics(usage, {"long": 5, "close": 4, "wait": 5})
    assert short["options.min_duration_margin"] == pytest.approx(-0.7)
    empty = {"usage_pct": {"a": 0.0}, "avg_duration": {"a": 0.0}, "selections": {"a": 0.0}}
    assert persistence_metrics(empty, {"a": 2}) == {
        "options.min_duration_margin": -2.0, "options.step_weighted_duration": 0.0,
        "options.selection_weighted_duration": 0.0,
    }
    with pytest.raises(ValueError, match="no entry"):
        persistence_metrics(usage, {"long": 5})


def test_option_usage_refuses_out_of_range_index():
    with pytest.raises(ValueError, match="0..1"):
        option_usage([0, 2], ["a", "b"])
