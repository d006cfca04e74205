"""A fixed-seed OptionVecEnv run gives the option sequence it gave before the options layer was
vectorised (issue 12): every env's option at every step, the target exposures sent to the envs,
which rule ended each option and the SMDP transitions stored, stochastic and deterministic.

The golden file was recorded with the per-env implementation (one Python call per env and rule),
so a vectorised rule that differs from it in any env, on any step, fails here. Everything numpy
computes is compared bit for bit. The behaviour log-probabilities come from the controller's
matmuls, whose last bits depend on the kernel MKL picks for the CPU it runs on (a hash of them
recorded on one VM failed on the next with identical code), so they are compared to 1e-5.
Regenerate the file only for a deliberate behaviour change:

    .venv/bin/python tests/unit/test_option_sequence.py --record
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv

from trainer.config import load_config
from trainer.data.features import compute_features
from trainer.data.loaders import bundled_path, load_ohlcv
from trainer.envs.layout import ObservationLayout
from trainer.envs.trading_env import TradingEnv
from trainer.hierarchy.controller import OptionsLearner
from trainer.hierarchy.option_buffer import OptionReplayBuffer
from trainer.hierarchy.option_env import OptionVecEnv

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("option_sequence_golden.json")
OVERRIDES = {
    "environment.window_size": 10,
    "environment.episode_length": 60,
    "options.state_dim": 108,
    "options.hidden_dim": 32,
}
N_ENVS, STEPS = 8, 600


def fingerprint(deterministic: bool) -> dict:
    """Random SAC actions (some beyond the action bounds) through 8 envs for 600 steps."""
    config = load_config(REPO / "configs" / "phase_b1_options.yaml", OVERRIDES)
    features = compute_features(load_ohlcv(bundled_path("SPY")).iloc[:700])
    venv = DummyVecEnv([lambda: TradingEnv(features, config.environment) for _ in range(N_ENVS)])
    venv.seed(11)
    cfg = config.options
    learner = OptionsLearner(cfg, seed=11)  # seeds its own weights and streams
    buffer = OptionReplayBuffer(10_000, cfg.state_dim, cfg.num_options)
    layout = ObservationLayout(config.environment.window_size)
    env = OptionVecEnv(venv, learner, cfg, layout, buffer, deterministic=deterministic, seed=11)
    rng = np.random.default_rng(3)
    env.reset()
    options, exposures = [env.active_options().tolist()], []
    for _ in range(STEPS):
        env.step(rng.uniform(-1.2, 1.2, size=(N_ENVS, 1)).astype(np.float32))
        options.append(env.active_options().tolist())
        exposures.append(env._actions[:, 0].tolist())
    digest = hashlib.sha256(np.asarray(exposures, dtype=np.float32).tobytes())
    stored = buffer._batch(np.arange(len(buffer)))  # every transition, in the order it was stored
    for key in buffer._ARRAYS:
        if key != "behaviour_log_probs":
            digest.update(np.ascontiguousarray(getattr(stored, key)).tobytes())
    return {
        "options": ["".join(str(o) for o in row) for row in options],
        "terminations": env.terminations,
        "transitions": len(buffer),
        "exposures_and_transitions_sha256": digest.hexdigest(),
        "behaviour_log_probs": stored.behaviour_log_probs.tolist(),
    }


@pytest.mark.parametrize("deterministic", [False, True], ids=["stochastic", "deterministic"])
def test_fixed_seed_run_matches_the_recorded_option_sequence(deterministic):
    golden = json.loads(GOLDEN.read_text())["deterministic" if deterministic else "stochastic"]
    run = fingerprint(deterministic)
    first_difference = next((t for t, (a, b) in enumerate(zip(run["options"], golden["options"])) if a != b), None)
    assert first_difference is None, f"options differ from step {first_difference}: {run['options'][first_difference]} vs {golden['options'][first_difference]}"
    assert run["terminations"] == golden["terminations"]
    assert run["transitions"] == golden["transitions"]
    assert run["exposures_and_transitions_sha256"] == golden["exposures_and_transitions_sha256"]
    np.testing.assert_allclose(run["behaviour_log_probs"], golden["behaviour_log_probs"], rtol=0, atol=1e-5)


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: test_option_sequence.py --record   (rewrites the golden file)")
    GOLDEN.write_text(json.dumps({"stochastic": fingerprint(False), "deterministic": fingerprint(True)}, indent=1) + "\n")
    print(f"wrote {GOLDEN}")
