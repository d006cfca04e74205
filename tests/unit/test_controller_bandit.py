"""The controller's update on six-armed bandits (trainer/hierarchy/bandit.py), 1,500 updates each.

- Six identical arms with noisy rewards: nothing is worth preferring, so the default (clipped)
  loss must keep the policy spread out, while the seed's loss collapses: replayed samples with a
  negative advantage keep pushing their option's probability down however small it already is.
- One arm better by half a noise sd: the default loss must tilt towards it (learning) without
  collapsing onto it. A loss that avoids collapse by not learning fails this one.

The network is the shipped one (578 inputs, 512 hidden, dropout 0.1): the drift these tests
measure depends on its size, so a smaller stand-in would test a different controller.
"""

from __future__ import annotations

import pytest

from trainer.config import OptionsConfig
from trainer.hierarchy.bandit import run_bandit

pytestmark = pytest.mark.slow

IDENTICAL = [0.0] * 6
ONE_BETTER = [0.5, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_identical_arms_keep_the_default_loss_spread_out():
    result = run_bandit(OptionsConfig(), IDENTICAL, updates=1500, seed=0)
    assert result.entropy >= 1.5, result
    assert result.shares.max() <= 0.3, result.shares


def test_identical_arms_collapse_the_seed_loss():
    result = run_bandit(OptionsConfig(policy_loss="seed"), IDENTICAL, updates=1500, seed=0)
    # Collapsed: a (near) deterministic choice in every state, and options dropped out altogether
    # (which one wins in a given state is the artefact; it may differ between states).
    assert result.entropy < 0.1, result
    assert (result.shares < 0.01).sum() >= 3, result.shares


def test_one_better_arm_is_learned_without_collapse():
    result = run_bandit(OptionsConfig(), ONE_BETTER, updates=1500, seed=0)
    assert result.shares[0] > 1 / 6 + 0.1, result.shares  # learned: clearly above uniform
    assert result.shares.argmax() == 0
    assert result.entropy >= 1.2, result
    assert 0.0 < result.last_stats.clip_fraction < 1.0  # the clip is doing work, not zeroing everything
