"""OptionVecEnv on real TradingEnvs (bundled SPY) with a real OptionsLearner: the augmented observation,
action_scale applied to SAC's action (seed Fix 1), min_duration enforced (seed Fix 2), and the SMDP
transitions that reach the option buffer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv

from trainer.config import OPTION_NAMES, load_config
from trainer.data.features import compute_features
from trainer.data.loaders import bundled_path, load_ohlcv
from trainer.envs.layout import ObservationLayout
from trainer.envs.trading_env import TradingEnv
from trainer.errors import NonFiniteError
from trainer.hierarchy.controller import OptionsLearner
from trainer.hierarchy.option_buffer import OptionReplayBuffer
from trainer.hierarchy.option_env import OptionVecEnv

REPO = Path(__file__).resolve().parents[2]
B1 = REPO / "configs" / "phase_b1_options.yaml"
OVERRIDES = {
    "environment.window_size": 10,
    "environment.episode_length": 60,
    "options.state_dim": 108,
    "options.hidden_dim": 32,
    "options.batch_size": 8,
    "options.warmup_steps": 50,
}
IDX = {name: i for i, name in enumerate(OPTION_NAMES)}


@pytest.fixture(scope="module")
def features():
    return compute_features(load_ohlcv(bundled_path("SPY")).iloc[:400])


@pytest.fixture(scope="module")
def config():
    return load_config(B1, OVERRIDES)


def build(features, config, seed=0, buffer=True):
    venv = DummyVecEnv([lambda: TradingEnv(features, config.environment) for _ in range(2)])
    venv.seed(seed)
    cfg = config.options
    learner = OptionsLearner(cfg, seed=seed)
    buf = OptionReplayBuffer(1000, cfg.state_dim, cfg.num_options) if buffer else None
    env = OptionVecEnv(venv, learner, cfg, ObservationLayout(config.environment.window_size), buf, seed=seed)
    return env, buf


def force(env: OptionVecEnv, i: int, name: str) -> None:
    state = env.env_states[i]
    state.active_option = IDX[name]
    state.option_step_count = 0
    state.memory = {}


def test_observation_is_env_observation_plus_one_hot(features, config):
    env, _ = build(features, config)
    obs = env.reset()
    assert env.observation_space.shape == (108 + 6,)
    assert obs.shape == (2, 114) and obs.dtype == np.float32
    rng = np.random.default_rng(0)
    for _ in range(20):
        for row, option in zip(obs, env.active_options()):
            one_hot = row[108:]
            assert set(np.unique(one_hot)) <= {0.0, 1.0} and one_hot.sum() == 1.0
            assert int(np.argmax(one_hot)) == option
            assert env.observation_space.contains(row)
        obs, *_ = env.step(rng.uniform(-1, 1, (2, 1)).astype(np.float32))


def test_select_actions_scales_by_action_scale(features, config):
    env, _ = build(features, config)
    env.reset()
    # flat at reset. The multiplication itself: Scalp (flat, no trade yet) passes the scaled action through
    force(env, 0, "scalp")
    force(env, 1, "scalp")
    env.env_states[1].action_scales[IDX["scalp"]] = 0.25
    actions = env.select_actions(np.array([[-0.4], [1.0]], dtype=np.float32))
    assert actions[0, 0] == pytest.approx(-0.4)
    assert actions[1, 0] == pytest.approx(0.25)
    env.env_states[1].action_scales[IDX["scalp"]] = 1.0

    # put both envs in a long 0.5 position through Scalp (action_scale 1.0: target = action)
    force(env, 0, "scalp")
    force(env, 1, "scalp")
    actions = env.select_actions(np.full((2, 1), 0.5, dtype=np.float32))
    np.testing.assert_allclose(actions, [[0.5], [0.5]])
    env.step(np.full((2, 1), 0.5, dtype=np.float32))  # scalp's min_duration 5: still active
    assert env.env_states[0].active_option == IDX["scalp"]
    state = env.layout.market_state(env._last_obs)
    np.testing.assert_allclose(state.position, [0.5, 0.5])

    ones = np.ones((2, 1), dtype=np.float32)

    # Wait (scale 0.0): holds the current position, whatever SAC says
    force(env, 0, "wait")
    # TrendFollow (scale 0.6): sign(trend) * min(0.6, max_position_size 0.15)
    force(env, 1, "trend_follow")
    actions = env.select_actions(ones)
    assert actions[0, 0] == pytest.approx(0.5)
    assert actions[1, 0] == pytest.approx(np.sign(state.trend_strength[1]) * 0.15)

    # OpenLong (scale 0.8): desired 0.8, at most +0.15 per step from 0.5 -> 0.65
    force(env, 0, "open_long")
    # ClosePosition (scale 1.0): position * (1 - 1.0) = 0
    force(env, 1, "close_position")
    actions = env.select_actions(ones)
    assert actions[0, 0] == pytest.approx(0.65)
    assert env.env_states[0].memory["target"] == pytest.approx(0.8)
    assert actions[1, 0] == pytest.approx(0.0)



def test_shipped_action_scales_reach_the_env_states(features, config):
    env, _ = build(features, config)
    assert env.env_states[0].action_scales == {0: 0.8, 1: 0.8, 2: 1.0, 3: 0.6, 4: 1.0, 5: 0.0}
    assert env.env_states[1].min_durations == {0: 5, 1: 5, 2: 3, 3: 10, 4: 5, 5: 5}


def test_non_finite_sac_action_is_refused(features, config):
    env, _ = build(features, config)
    env.reset()
    with pytest.raises(NonFiniteError):
        env.select_actions(np.array([[np.nan], [0.0]], dtype=np.float32))


def _rollout(env, buf, steps, seed):
    """Random SAC actions; returns the transitions expected in the buffer, computed independently."""
    gamma = env.cfg.gamma
    rng = np.random.default_rng(seed)
    obs = env.reset()
    starts = [obs[i, :108].copy() for i in range(2)]
    rewards_in_option: list[list[float]] = [[], []]
    options = list(env.active_options())
    expected = []
    for _ in range(steps):
        obs, rewards, dones, infos = env.step(rng.uniform(-1, 1, (2, 1)).astype(np.float32))
        for i in range(2):
            rewards_in_option[i].append(float(rewards[i]))
            ended = env.env_states[i].option_step_count == 0
            if ended:
                next_state = infos[i]["terminal_observation"][:108] if dones[i] else obs[i, :108]
                expected.append(
                    {
                        "option": options[i],
                        "duration": len(rewards_in_option[i]),
                        "reward": sum(gamma**k * r for k, r in enumerate(rewards_in_option[i])),
                        "start": starts[i],
                        "next": next_state.copy(),
                        "episode_end": bool(dones[i]),
                    }
                )
                rewards_in_option[i] = []
                starts[i] = obs[i, :108].copy()
                options[i] = env.env_states[i].active_option
            assert infos[i]["option"] == env.env_states[i].active_option
    return expected


def test_no_option_ends_before_its_min_duration(features, config):
    env, buf = build(features, config, seed=3)
    expected = _rollout(env, buf, steps=300, seed=3)
    durations = env.totals.durations
    assert len(durations) > 20
    for option, duration in durations:
        assert duration >= config.options.option_block(option).min_duration, (OPTION_NAMES[option], duration)
    # options cut by an episode end are the only transitions left out of the duration statistics
    cut = [e for e in expected if e["episode_end"]]
    assert len(cut) >= 2 * (300 // 60) - 2
    assert len(durations) == len(expected) - len(cut)
    assert sorted(durations) == sorted((e["option"], e["duration"]) for e in expected if not e["episode_end"])
    # every env step was spent in some option
    assert env.totals.steps.sum() == 2 * 300


def test_option_transitions_land_in_the_buffer(features, config):
    env, buf = build(features, config, seed=4)
    expected = _rollout(env, buf, steps=200, seed=4)
    assert len(buf) == len(expected) > 10
    # within one vectorised step envs end options in index order, which is the order _rollout records
    for k, e in enumerate(expected):
        assert buf.options[k] == e["option"]
        assert buf.durations[k] == e["duration"]
        assert buf.rewards[k] == pytest.approx(e["reward"], rel=1e-5, abs=1e-5)
        np.testing.assert_allclose(buf.states[k], e["start"], rtol=0, atol=0)
        np.testing.assert_allclose(buf.next_states[k], e["next"], rtol=0, atol=0)
        # TradingEnv episodes end by truncation (time limit), never by termination
        assert not buf.dones[k]
        assert buf.masks[k, IDX["scalp"]] and buf.masks[k, IDX["wait"]]
        assert buf.masks[k, buf.options[k]]  # the chosen option was available at its start


def test_discounting_inside_an_option_by_hand(features, config):
    """One forced Wait option: the buffer's reward is r0 + g r1 + g^2 r2 + ... of the env rewards seen."""
    env, buf = build(features, config, seed=5)
    env.reset()
    for i in range(2):  # open a 0.5 long through Scalp, so the waiting book earns non-zero rewards
        force(env, i, "scalp")
    env.step(np.full((2, 1), 0.5, dtype=np.float32))
    assert len(buf) == 0
    for i in range(2):
        force(env, i, "wait")
        env.env_states[i].accumulated_reward = 0.0
    seen = []
    while len(buf) == 0:
        _, rewards, dones, _ = env.step(np.zeros((2, 1), dtype=np.float32))
        assert not dones.any()
        seen.append(rewards.copy())
    # Wait can end only once 5 steps ran; the first env (by index) that ended wrote entry 0
    assert len(seen) >= 5
    assert buf.durations[0] == len(seen)
    assert buf.options[0] == IDX["wait"]
    i = min(k for k in range(2) if env.env_states[k].option_step_count == 0)
    g = config.options.gamma
    expected = sum(g**k * float(r[i]) for k, r in enumerate(seen))
    assert buf.rewards[0] == pytest.approx(expected, rel=1e-5, abs=1e-7)
    # Wait never trades: each reward is 100 * log(1 + 0.5 * bar return), with no cost
    assert all(r[i] != 0.0 for r in seen)


def test_env_states_are_live_views_of_the_wrappers_arrays(features, config):
    """env_states[i] reads and writes env i's entries of the arrays the vectorised step uses."""
    env, _ = build(features, config)
    env.reset()
    view = env.env_states[1]
    view.active_option = IDX["open_short"]
    view.option_step_count = 7
    view.memory = {"target": -0.5}
    view.min_durations[IDX["wait"]] = 9
    assert env.active[1] == IDX["open_short"] and env.step_counts[1] == 7
    assert env.memory.target[1] == -0.5 and np.isnan(env.memory.target[0])
    assert env.min_durations[1, IDX["wait"]] == 9 and env.min_durations[0, IDX["wait"]] == 5
    assert view.memory == {"target": -0.5} and env.env_states[0].memory == {}
    with pytest.raises(KeyError):
        view.action_scales[len(OPTION_NAMES)]
    with pytest.raises(ValueError, match="unknown keys"):
        view.memory = {"targte": 0.5}


def test_rollout_state_round_trips_through_plain_values(features, config):
    """A resumed wrapper holds exactly the option state that was saved, as plain Python values."""
    env, _ = build(features, config, seed=2)
    env.reset()
    rng = np.random.default_rng(4)
    for _ in range(12):
        env.step(rng.uniform(-1, 1, (2, 1)).astype(np.float32))
    saved = env.rollout_state()
    assert type(saved["env_states"][0]["accumulated_reward"]) is float
    assert type(saved["env_states"][0]["action_scales"]) is dict
    resumed, _ = build(features, config, seed=9)
    resumed.reset()
    resumed.load_rollout_state(saved)
    for mine, theirs in zip(resumed.rollout_state()["env_states"], saved["env_states"], strict=True):
        assert mine.keys() == theirs.keys()
        for key in mine:
            np.testing.assert_array_equal(mine[key], theirs[key], err_msg=key)
    np.testing.assert_array_equal(resumed.active_options(), env.active_options())
