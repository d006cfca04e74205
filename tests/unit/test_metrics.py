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

    flat = option_usage_metrics(usage, used_option_min_pct=0.05)
    assert flat["options.usage_pct.c"] == 0.4
    assert flat["options.min_selections"] == 0.0
    assert flat["options.min_usage_pct"] == 0.0
    assert flat["options.max_usage_pct"] == 0.4
    assert flat["options.min_avg_duration"] == 0.0
    assert flat["options.num_used_options"] == 3.0


def test_option_usage_refuses_out_of_range_index():
    with pytest.raises(ValueError, match="0..1"):
        option_usage([0, 2], ["a", "b"])
