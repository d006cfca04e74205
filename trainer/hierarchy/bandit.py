"""The controller alone on a six-armed bandit: a diagnostic for its update rule.

Each round plays like one controller update of the production profile: `per_update` option
transitions (16 envs x train_freq 8 steps / ~8-step options) are chosen by the learner's
behaviour policy on fresh random states, each option's reward is its arm's mean plus unit
Gaussian noise, every transition lasts one step and ends its episode (so the SMDP return is the
reward), and then the learner takes one update. With identical arms any lasting preference is an
artefact of the update; with one better arm the controller should tilt towards it without
collapsing. Used by tests/unit/test_controller_bandit.py and benchmarks/controller_bandit.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from trainer.config import OptionsConfig
from trainer.hierarchy.controller import OptionsLearner
from trainer.hierarchy.option_buffer import OptionReplayBuffer


@dataclass
class BanditResult:
    entropy: float  # mean policy entropy at the current temperature, on held-out states
    shares: np.ndarray  # mean probability of each arm on held-out states
    last_stats: object  # the learner's ControllerStats of the last update


def run_bandit(cfg: OptionsConfig, arm_means: Sequence[float], updates: int = 1500, per_update: int = 16,
               seed: int = 0) -> BanditResult:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the training default (sac.torch_threads): results do not depend on the caller
    try:
        return _run(cfg, arm_means, updates, per_update, seed)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: OptionsConfig, arm_means: Sequence[float], updates: int, per_update: int, seed: int) -> BanditResult:
    learner = OptionsLearner(cfg, seed=seed)
    buffer = OptionReplayBuffer(cfg.option_buffer_size, cfg.state_dim, cfg.num_options)
    rng = np.random.default_rng([seed, 7])
    means = np.asarray(arm_means, dtype=np.float64)
    masks = np.ones((per_update, cfg.num_options), dtype=bool)
    for _ in range(updates):
        states = rng.normal(size=(per_update, cfg.state_dim)).astype(np.float32)
        options, log_probs = learner.choose(states, masks)
        rewards = means[options] + rng.normal(size=per_update)
        for i in range(per_update):
            buffer.add(states[i], options[i], masks[i], rewards[i], 1, states[i], True,
                       behaviour_log_prob=log_probs[i], temperature=learner.effective_temperature,
                       selected_at=learner.num_updates)
        if len(buffer) >= cfg.batch_size:
            learner.train_options_controller(learner.sample_batch(buffer))
    held_out = torch.as_tensor(rng.normal(size=(512, cfg.state_dim)), dtype=torch.float32)
    with torch.no_grad():
        learner.controller.eval()
        logits, _ = learner.controller(held_out)
        probs = torch.softmax(logits / learner.effective_temperature, dim=-1)
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean().item()
    return BanditResult(entropy, probs.mean(0).numpy(), learner.last_stats)
