"""TradingEnv: API checks, observation size, determinism, the reward and cost formula by hand,
the full pass, vectorised use, and the typed MarketState accessor."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from trainer.config import EnvironmentConfig, load_config
from trainer.data.features import FEATURE_WARMUP_BARS, compute_features
from trainer.data.loaders import bundled_path, load_ohlcv
from trainer.envs.layout import PORTFOLIO_FIELDS, ObservationLayout
from trainer.envs.trading_env import TradingEnv

REPO = Path(__file__).resolve().parents[2]
B1 = REPO / "configs" / "phase_b1_options.yaml"


@pytest.fixture(scope="module")
def spy():
    return load_ohlcv(bundled_path("SPY"))


@pytest.fixture(scope="module")
def features(spy):
    return compute_features(spy.iloc[:400])  # 366 featurised bars


@pytest.fixture(scope="module")
def small_features(spy):
    return compute_features(spy.iloc[:FEATURE_WARMUP_BARS + 40])  # 40 featurised bars


def env_cfg(**overrides) -> EnvironmentConfig:
    base = {"window_size": 10, "episode_length": 50}
    base.update(overrides)
    return EnvironmentConfig(**base)


def test_gymnasium_and_sb3_check_env_pass(features):
    gym_check_env(TradingEnv(features, env_cfg()), skip_render_check=True)
    sb3_check_env(TradingEnv(features, env_cfg()), warn=True)


def test_observation_size_with_the_shipped_config(features):
    config = load_config(B1)
    env = TradingEnv(features, config.environment)
    assert env.observation_space.shape == (578,)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (578,) and obs.dtype == np.float32
    assert env.observation_space.contains(obs)
    assert env.action_space.shape == (1,)
    assert ObservationLayout(57).size == 578 == config.options.state_dim


def test_same_seed_same_episode(features):
    actions = np.random.default_rng(0).uniform(-1, 1, size=(30, 1)).astype(np.float32)

    def rollout(seed):
        env = TradingEnv(features, env_cfg())
        obs, info = env.reset(seed=seed)
        observations, rewards = [obs], []
        for a in actions:
            obs, r, term, trunc, info = env.step(a)
            observations.append(obs)
            rewards.append(r)
        return np.array(observations), np.array(rewards), info["bar"]

    o1, r1, b1 = rollout(123)
    o2, r2, b2 = rollout(123)
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(r1, r2)
    assert b1 == b2
    o3, _, b3 = rollout(124)
    assert b3 != b1 or not np.array_equal(o1, o3)  # another seed, another start bar


def test_reward_and_cost_by_hand(features):
    cfg = env_cfg(transaction_cost_bps=3.0, slippage_bps=2.0, reward_scaling=100.0)
    env = TradingEnv(features, cfg)
    _, info = env.reset(seed=5)
    t = info["bar"]
    close = features.close
    cost_rate = (3.0 + 2.0) / 1e4

    # step 1: flat -> +0.5 (traded 0.5)
    _, reward, terminated, truncated, info = env.step(np.array([0.5], dtype=np.float32))
    r1 = close[t + 1] / close[t] - 1
    expected = 100.0 * math.log(1 + 0.5 * r1 - 0.5 * cost_rate)
    assert reward == pytest.approx(expected, rel=1e-9)
    assert info["cost"] == pytest.approx(0.5 * cost_rate)
    assert info["traded"] == pytest.approx(0.5)
    assert not terminated and not truncated

    # step 2: +0.5 -> -0.25 (traded 0.75)
    _, reward, *_ , info = env.step(np.array([-0.25], dtype=np.float32))
    r2 = close[t + 2] / close[t + 1] - 1
    assert reward == pytest.approx(100.0 * math.log(1 - 0.25 * r2 - 0.75 * cost_rate), rel=1e-9)
    assert info["cost"] == pytest.approx(0.75 * cost_rate)

    # step 3: hold -0.25: no trade, no cost
    _, reward, *_ , info = env.step(np.array([-0.25], dtype=np.float32))
    r3 = close[t + 3] / close[t + 2] - 1
    assert info["cost"] == 0.0
    assert reward == pytest.approx(100.0 * math.log(1 - 0.25 * r3), rel=1e-9)

    # equity compounds the three net returns; episode_return is its log
    equity = (1 + 0.5 * r1 - 0.5 * cost_rate) * (1 - 0.25 * r2 - 0.75 * cost_rate) * (1 - 0.25 * r3)
    assert info["equity"] == pytest.approx(equity, rel=1e-12)


def test_action_is_clipped_and_scaled_by_max_position(features):
    env = TradingEnv(features, env_cfg(max_position=0.5, transaction_cost_bps=0.0, slippage_bps=0.0))
    _, info = env.reset(seed=1)
    t = info["bar"]
    _, reward, *_, info = env.step(np.array([3.0], dtype=np.float32))
    assert info["position"] == pytest.approx(0.5)
    r = features.close[t + 1] / features.close[t] - 1
    assert reward == pytest.approx(100 * math.log(1 + 0.5 * r), rel=1e-9)


def test_non_finite_action_is_refused(features):
    env = TradingEnv(features, env_cfg())
    env.reset(seed=0)
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.array([np.nan], dtype=np.float32))


def test_training_episode_has_episode_length_steps(features):
    env = TradingEnv(features, env_cfg(episode_length=50))
    env.reset(seed=3)
    steps, truncated = 0, False
    while not truncated:
        *_, terminated, truncated, _ = env.step(np.zeros(1, dtype=np.float32))
        assert not terminated
        steps += 1
    assert steps == 50


def test_full_pass_walks_the_whole_split_once(small_features):
    cfg = env_cfg(window_size=10)
    env = TradingEnv(small_features, cfg, full_pass=True)
    for seed in (0, 99):  # the seed does not move the start
        _, info = env.reset(seed=seed)
        bars = [info["bar"]]
        truncated = False
        while not truncated:
            _, _, terminated, truncated, info = env.step(np.array([0.1], dtype=np.float32))
            bars.append(info["bar"])
        assert bars == list(range(cfg.window_size - 1, len(small_features)))
        assert len(bars) - 1 == len(small_features) - cfg.window_size  # 31 steps over 40 bars


def test_too_short_split_is_refused(small_features):
    with pytest.raises(ValueError, match="window_size"):
        TradingEnv(small_features, env_cfg(window_size=40))


@pytest.mark.parametrize("vec_env", ["dummy", "subproc"])
def test_works_under_vec_envs(features, vec_env):
    cfg = env_cfg(episode_length=20)

    def factory(rank):
        def build():
            env = TradingEnv(features, cfg)
            env.reset(seed=11 + rank)
            return env

        return build

    fns = [factory(rank) for rank in range(2)]
    # fork: the children need nothing re-imported, which keeps this test at a fraction of a second
    venv = DummyVecEnv(fns) if vec_env == "dummy" else SubprocVecEnv(fns, start_method="fork")
    try:
        venv.seed(11)
        obs = venv.reset()
        assert obs.shape == (2, 108)
        episodes = 0
        for _ in range(25):  # past one episode end: auto-reset
            obs, rewards, dones, infos = venv.step(np.array([[0.3], [-0.3]], dtype=np.float32))
            assert obs.shape == (2, 108) and rewards.shape == (2,)
            assert np.all(np.isfinite(obs)) and np.all(np.isfinite(rewards))
            episodes += int(dones.sum())
            for i, done in enumerate(dones):
                if done:
                    assert infos[i]["terminal_observation"].shape == (108,)
                    assert infos[i]["TimeLimit.truncated"] is True
                else:
                    # the position each env asked for is what it holds
                    assert infos[i]["position"] == pytest.approx(0.3 if i == 0 else -0.3)
        assert episodes == 2  # both envs truncated at 20 steps
    finally:
        venv.close()


def test_market_state_matches_the_internal_position(features):
    env = TradingEnv(features, env_cfg())
    _, info = env.reset(seed=2)
    t0 = info["bar"]
    env.step(np.array([0.4], dtype=np.float32))
    _, _, _, _, info = env.step(np.array([0.7], dtype=np.float32))
    state = env.market_state()
    assert state.position[0] == pytest.approx(info["position"], abs=1e-7)
    assert state.position[0] == pytest.approx(0.7, abs=1e-7)
    assert state.trend_strength[0] == pytest.approx(features.trend_strength[t0 + 2], abs=1e-6)
    assert state.sentiment[0] == pytest.approx(0.5) and state.sl_confidence[0] == pytest.approx(0.5)
    # entry averaged over the two buys: 0.4 at close[t0], 0.3 more at close[t0+1]
    entry = (features.close[t0] * 0.4 + features.close[t0 + 1] * 0.3) / 0.7
    assert state.unrealised_pnl[0] == pytest.approx(features.close[t0 + 2] / entry - 1, abs=1e-6)
    # the accessor decodes the observation's portfolio tail
    obs = env._get_obs()
    layout = ObservationLayout(10)
    assert obs[layout.field_index("position")] == pytest.approx(0.7, abs=1e-7)
    assert len(PORTFOLIO_FIELDS) == 8
