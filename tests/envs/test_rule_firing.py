"""Which termination rule ended each option: OptionVecEnv counts them (options.terminations.<option>.<rule>),
the training summary reports them, and on bundled SPY the signal-driven rules fire with the derived
signals while with the neutral 0.5 they never can (the state before trainer/data/signals.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv

from trainer.config import OPTION_NAMES, load_config
from trainer.envs.factory import load_market_data
from trainer.envs.layout import ObservationLayout
from trainer.envs.trading_env import TradingEnv
from trainer.hierarchy.controller import OptionsLearner
from trainer.hierarchy.option_env import OptionVecEnv
from trainer.options import termination_rules

REPO = Path(__file__).resolve().parents[2]
B1 = REPO / "configs" / "phase_b1_options.yaml"
SMALL = {
    "environment.window_size": 10,
    "options.state_dim": 108,
    "options.hidden_dim": 32,
    "options.batch_size": 16,
    "options.warmup_steps": 100,
}
SIGNAL_RULES = [("open_short", "sentiment_exit"), ("wait", "sentiment_extreme"), ("wait", "sl_confidence_exit")]


def run_random(config, steps: int, n_envs: int = 4, seed: int = 0) -> OptionVecEnv:
    """The options layer with an untrained controller and random SAC actions on the train split."""
    features = load_market_data(config).features["train"]
    venv = DummyVecEnv([lambda: TradingEnv(features, config.environment) for _ in range(n_envs)])
    venv.seed(seed)
    env = OptionVecEnv(venv, OptionsLearner(config.options, seed=seed), config.options,
                       ObservationLayout(config.environment.window_size), None, seed=seed)
    env.reset()
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        env.step(rng.uniform(-1, 1, (n_envs, 1)).astype(np.float32))
    return env


@pytest.fixture(scope="module")
def derived_env():
    return run_random(load_config(B1, SMALL), 2500)


def test_every_option_ended_by_a_rule_is_counted_once(derived_env):
    counts = derived_env.terminations
    assert list(counts) == list(OPTION_NAMES)
    assert {name: tuple(rules) for name, rules in counts.items()} == termination_rules()
    # options cut by the episode end are neither in the durations nor in the rule counts
    assert sum(sum(c.values()) for c in counts.values()) == len(derived_env.totals.durations)
    for index, name in enumerate(OPTION_NAMES):
        ended = sum(1 for option, _ in derived_env.totals.durations if option == index)
        assert sum(counts[name].values()) == ended, name


def test_signal_rules_fire_with_derived_signals(derived_env):
    for option, rule in SIGNAL_RULES:
        assert derived_env.terminations[option][rule] > 0, f"{option}.{rule}"


def test_signal_rules_never_fire_with_the_neutral_signals():
    neutral = load_config(B1, {**SMALL, "data.sentiment_source": "neutral", "data.sl_confidence_source": "neutral"})
    env = run_random(neutral, 2500)
    for option, rule in SIGNAL_RULES:
        assert env.terminations[option][rule] == 0, f"{option}.{rule}"
    assert sum(sum(c.values()) for c in env.terminations.values()) > 100  # options did end, by other rules


@pytest.mark.slow
def test_training_summary_reports_every_rule(tmp_path):
    from trainer.training.session import TrainingSession

    config = load_config(B1, {**SMALL, "sac.net_arch": [32, 32], "sac.batch_size": 32, "sac.buffer_size": 2000,
                              "sac.learning_starts": 100, "training.n_envs": 2, "training.eval_freq": 100000,
                              "checkpoints.freq": 100000, "options.monitor.window_steps": 200})
    session = TrainingSession(config, load_market_data(config), tmp_path, seed=0)
    session.train(600)
    metrics = session.run_metrics()
    names = {f"options.terminations.{o}.{r}" for o, rules in termination_rules().items() for r in rules}
    assert names <= set(metrics)
    counted = sum(metrics[n] for n in names)
    assert counted == sum(sum(c.values()) for c in session.hierarchy.option_env.terminations.values()) > 0
    assert session.data.describe()["signals"]["sl_confidence"]["source"] == "derived"
