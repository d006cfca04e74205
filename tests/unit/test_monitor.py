"""OptionsMonitorCallback: usage and average duration per window, the seed's two warnings, and the
collapse early stop (only after warmup, only after collapse_patience consecutive collapsed windows).

Most tests drive the public `on_step()` with crafted window counters and a stand-in model that
carries `num_timesteps` and an SB3 logger; one test runs real SB3 SAC for a few hundred steps.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv

from trainer.config import OPTION_NAMES, load_config
from trainer.hierarchy.monitor import COLLAPSE_STATUS, OptionsMonitorCallback, average_durations, window_usage
from trainer.hierarchy.option_env import OptionUsage

REPO = Path(__file__).resolve().parents[2]
B1 = REPO / "configs" / "phase_b1_options.yaml"
WINDOW = 100


def options_cfg(**monitor):
    overrides = {
        "options.warmup_steps": 300,
        "options.monitor.window_steps": WINDOW,
        "options.monitor.collapse_threshold": 0.6,
        "options.monitor.collapse_patience": 2,
    }
    overrides.update({f"options.monitor.{k}": v for k, v in monitor.items()})
    return load_config(B1, overrides).options


def make_callback(cfg):
    option_env = SimpleNamespace(window=OptionUsage(6))
    learner = SimpleNamespace(current_temperature=0.9, num_updates=7, policy_held_updates=0, last_stats=None)
    cb = OptionsMonitorCallback(option_env, learner, cfg)
    cb.model = SimpleNamespace(num_timesteps=0, logger=configure(None, [""]))
    return cb


def run_window(cb, steps, durations=()):
    """Fill one window's counters and advance the model clock by one window; returns on_step()."""
    cb.option_env.window.steps[:] = steps
    cb.option_env.window.durations.extend(durations)
    cb.model.num_timesteps += WINDOW
    return cb.on_step()


BALANCED = [20, 20, 20, 20, 10, 10]
COLLAPSED = [70, 10, 10, 10, 0, 0]  # open_long 70% > 60%


# --------------------------------------------------------------------------------------------
# Window statistics
# --------------------------------------------------------------------------------------------


def test_helpers_by_hand():
    np.testing.assert_allclose(window_usage(np.array([10, 20, 30, 40, 0, 0])), [0.1, 0.2, 0.3, 0.4, 0, 0])
    np.testing.assert_array_equal(window_usage(np.zeros(6, dtype=np.int64)), np.zeros(6))
    avg = average_durations([(0, 5), (0, 7), (1, 10), (5, 6)], 6)
    np.testing.assert_allclose(avg[[0, 1, 5]], [6.0, 10.0, 6.0])
    assert np.isnan(avg[[2, 3, 4]]).all()


def test_usage_and_average_duration_in_the_record():
    cb = make_callback(options_cfg())
    assert run_window(cb, [10, 20, 30, 40, 0, 0], [(0, 5), (0, 7), (1, 10), (3, 12), (3, 15)]) is True
    record = cb.records[-1]
    assert record["timesteps"] == WINDOW
    expected_usage = dict(zip(OPTION_NAMES, [0.1, 0.2, 0.3, 0.4, 0.0, 0.0]))
    for name, pct in expected_usage.items():
        assert record[f"options/usage_pct/{name}"] == pytest.approx(pct)
    assert record["options/avg_duration/open_long"] == pytest.approx(6.0)
    assert record["options/avg_duration/open_short"] == pytest.approx(10.0)
    assert record["options/avg_duration/trend_follow"] == pytest.approx(13.5)
    assert record["options/avg_duration/scalp"] is None  # none completed
    assert record["options/num_used_options"] == 4  # usage above 5%
    assert record["options/max_usage_pct"] == pytest.approx(0.4)
    assert record["options/temperature"] == 0.9
    assert record["collapse_warning"] is False
    # the window's counters are reset for the next one
    assert cb.option_env.window.steps.sum() == 0 and cb.option_env.window.durations == []


def test_no_record_until_a_window_is_full():
    cb = make_callback(options_cfg())
    cb.option_env.window.steps[:] = BALANCED
    cb.model.num_timesteps = WINDOW - 1
    assert cb.on_step() is True
    assert cb.records == []
    cb.model.num_timesteps = WINDOW
    assert cb.on_step() is True
    assert len(cb.records) == 1


# --------------------------------------------------------------------------------------------
# The seed's warnings
# --------------------------------------------------------------------------------------------


def test_collapse_warning(caplog):
    cb = make_callback(options_cfg())
    with caplog.at_level(logging.WARNING, logger="trainer.hierarchy.monitor"):
        run_window(cb, COLLAPSED)
    messages = [r.getMessage() for r in caplog.records if "OPTION COLLAPSE DETECTED" in r.getMessage()]
    assert len(messages) == 1
    assert "70.0% usage" in messages[0]
    assert "threshold: 60.0%" in messages[0]
    assert "Only 4/6 options being used" in messages[0]
    assert cb.collapse_warnings == 1 and cb.records[-1]["collapse_warning"] is True


def test_no_collapse_warning_at_the_threshold(caplog):
    cb = make_callback(options_cfg())
    with caplog.at_level(logging.WARNING, logger="trainer.hierarchy.monitor"):
        run_window(cb, [60, 20, 20, 0, 0, 0])  # exactly 60%: not above
    assert not any("OPTION COLLAPSE" in r.getMessage() for r in caplog.records)
    assert cb.collapse_warnings == 0


def test_short_duration_warning(caplog):
    cb = make_callback(options_cfg())
    durations = [
        (4, 2),  # scalp avg 2.0 < 5 * 0.5: warned
        (5, 2), (5, 3),  # wait avg 2.5: not below 2.5, no warning
        (2, 1),  # close_position avg 1.0 < 3 * 0.5 = 1.5: warned
        (3, 6),  # trend_follow avg 6 > 5: fine
    ]
    with caplog.at_level(logging.WARNING, logger="trainer.hierarchy.monitor"):
        run_window(cb, BALANCED, durations)
    short = [r.getMessage() for r in caplog.records if "terminating too early" in r.getMessage()]
    assert len(short) == 2
    assert any("Option 4 (scalp) has avg duration 2.0 (min_duration: 5)" in m for m in short)
    assert any("Option 2 (close_position) has avg duration 1.0 (min_duration: 3)" in m for m in short)
    assert cb.records[-1]["short_duration_options"] == ["close_position", "scalp"]
    assert cb.short_duration_warnings == 2


# --------------------------------------------------------------------------------------------
# Collapse early stop
# --------------------------------------------------------------------------------------------


def test_collapse_before_warmup_never_stops():
    cb = make_callback(options_cfg(collapse_patience=1))
    # windows end at 100 and 200, both < warmup 300
    assert run_window(cb, COLLAPSED) is True
    assert run_window(cb, COLLAPSED) is True
    assert cb.consecutive_collapsed == 0
    assert cb.collapse_warnings == 2  # still warned
    # at 300 (not < warmup) patience 1 is reached
    assert run_window(cb, COLLAPSED) is False
    assert cb.aborted_reason is not None


def test_stops_after_patience_consecutive_collapsed_windows():
    cb = make_callback(options_cfg(collapse_patience=2))
    assert [run_window(cb, BALANCED) for _ in range(3)] == [True, True, True]  # to t=300
    assert run_window(cb, COLLAPSED) is True  # 400: 1 of 2
    assert cb.consecutive_collapsed == 1
    assert run_window(cb, COLLAPSED) is False  # 500: 2 of 2 -> stop
    assert "'open_long'" in cb.aborted_reason
    assert "70%" in cb.aborted_reason
    assert "2 consecutive windows" in cb.aborted_reason


def test_a_healthy_window_resets_the_count():
    cb = make_callback(options_cfg(collapse_patience=2))
    for _ in range(3):
        run_window(cb, BALANCED)
    assert run_window(cb, COLLAPSED) is True
    assert run_window(cb, BALANCED) is True
    assert cb.consecutive_collapsed == 0
    wait_collapse = [0, 0, 0, 0, 5, 95]
    assert run_window(cb, wait_collapse) is True
    assert run_window(cb, wait_collapse) is False
    assert "'wait'" in cb.aborted_reason


def test_early_stop_can_be_switched_off():
    cb = make_callback(options_cfg(collapse_patience=1, early_stop_on_collapse=False))
    assert all(run_window(cb, COLLAPSED) for _ in range(8))
    assert cb.aborted_reason is None
    assert cb.collapse_warnings == 8


def test_collapse_status_text():
    assert COLLAPSE_STATUS == "aborted: option collapse"


# --------------------------------------------------------------------------------------------
# A real, tiny SB3 run
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_hierarchical_sac_run_fills_monitor_windows():
    from trainer.data.features import compute_features
    from trainer.data.loaders import bundled_path, load_ohlcv
    from trainer.envs.trading_env import TradingEnv
    from trainer.hierarchy.hierarchical_sac import HierarchicalSAC

    config = load_config(
        B1,
        {
            "sac.net_arch": [32, 32],
            "sac.learning_starts": 50,
            "sac.buffer_size": 2000,
            "sac.batch_size": 32,
            "options.hidden_dim": 32,
            "options.warmup_steps": 50,
            "options.batch_size": 8,
            "options.train_freq": 4,
            "options.monitor.window_steps": 50,
            "options.monitor.collapse_patience": 100,
            "environment.window_size": 10,
            "environment.episode_length": 60,
            "options.state_dim": 108,
            "training.device": "cpu",
        },
    )
    features = compute_features(load_ohlcv(bundled_path("SPY")).iloc[:300])
    venv = DummyVecEnv([lambda: TradingEnv(features, config.environment) for _ in range(2)])
    wrapper = HierarchicalSAC(config, venv, seed=0)
    wrapper.learn(200)

    records = wrapper.monitor.records
    assert [r["timesteps"] for r in records] == [50, 100, 150, 200]
    for record in records:
        usage = [record[f"options/usage_pct/{name}"] for name in OPTION_NAMES]
        assert sum(usage) == pytest.approx(1.0)
        for name in OPTION_NAMES:
            avg = record[f"options/avg_duration/{name}"]
            if avg is not None:
                min_duration = config.options.option_block(OPTION_NAMES.index(name)).min_duration
                assert avg >= min_duration
    totals = wrapper.option_env.totals
    assert totals.steps.sum() == 200
    assert wrapper.learner.num_updates > 0  # controller trained after warmup
    assert records[-1]["options/num_updates"] == wrapper.learner.num_updates
    assert records[-1]["options/temperature"] == pytest.approx(0.9995 ** wrapper.learner.num_updates, rel=1e-9)
    assert np.isfinite(records[-1]["options/policy_loss"])
