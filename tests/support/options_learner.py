"""Small options learners for the controller tests: a config, choices stored as the rollout stores
them, and a bit-for-bit comparison of two learners' state."""

from __future__ import annotations

import numpy as np
import torch

from trainer.config import OptionsConfig
from trainer.hierarchy.controller import OptionsLearner
from trainer.hierarchy.option_buffer import OptionReplayBuffer

STATE_DIM = 12


def cfg(**overrides) -> OptionsConfig:
    base = {"state_dim": STATE_DIM, "hidden_dim": 16, "dropout": 0.2, "batch_size": 8, "behaviour_refresh_updates": 3}
    base.update(overrides)
    return OptionsConfig(**base)


def add_choices(learner: OptionsLearner, buffer: OptionReplayBuffer, rng: np.random.Generator, n: int = 16) -> np.ndarray:
    """Choose options for n random states (as the rollout does) and store them as transitions."""
    states = rng.normal(size=(n, STATE_DIM)).astype(np.float32)
    masks = np.ones((n, 6), dtype=bool)
    masks[::4, 3] = False
    options, log_probs = learner.choose(states, masks)
    for i in range(n):
        buffer.add(states[i], options[i], masks[i], rng.normal(), int(rng.integers(1, 9)), states[(i + 1) % n],
                   bool(rng.random() < 0.2), log_probs[i], learner.effective_temperature, learner.num_updates)
    return options


def assert_same_learner_state(left: dict, right: dict) -> None:
    for key in ("controller", "behaviour"):
        assert all(torch.equal(left[key][name], right[key][name]) for name in right[key])
    assert torch.equal(left["dropout_rng"], right["dropout_rng"])
    moments = [(s["step"], s["exp_avg"], s["exp_avg_sq"]) for s in left["optimizer"]["state"].values()]
    expected = [(s["step"], s["exp_avg"], s["exp_avg_sq"]) for s in right["optimizer"]["state"].values()]
    assert len(moments) == len(expected) > 0
    assert all(torch.equal(a, b) for pair in zip(moments, expected) for a, b in zip(*pair))
