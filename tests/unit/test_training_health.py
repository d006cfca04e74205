"""Training health on hand-made monitor windows: growing, flat, noisy-flat, exploding, NaN."""

from __future__ import annotations

import math

import pytest

from trainer.evaluation.training_health import (
    losses_finite,
    policy_loss_converged,
    training_health_metrics,
)


def windows(policy_losses, value_losses=None, warmup_windows=0):
    """Monitor records; the first `warmup_windows` have no losses (None), as before warmup ends."""
    records = [{"timesteps": 1000 * (i + 1), "options/policy_loss": None} for i in range(warmup_windows)]
    for i, loss in enumerate(policy_losses):
        record = {"timesteps": 1000 * (warmup_windows + i + 1), "options/policy_loss": loss,
                  "options/num_updates": 100 * (i + 1)}
        if value_losses is not None:
            record["options/value_loss"] = value_losses[i]
        records.append(record)
    return records


@pytest.mark.parametrize(
    "losses, expected",
    [
        # growing: tail 2..6 has slope 1, relative growth 4 / 4 = 1.0 > 0.25, perfect fit (t = inf)
        ([1, 1, 1, 1, 2, 3, 4, 5, 6], False),
        # growing in magnitude with a negative sign
        ([-1.0, -2.0, -3.0, -4.0, -5.0], False),
        # flat
        ([0.5] * 8, True),
        # falling from a large start
        ([10, 8, 6, 4, 3, 2.5, 2.2], True),
        # noisy-flat, small drift: tail slope 0.03, relative growth 0.12 / 1.05 = 0.11 <= 0.25
        ([1.0, 0.9, 1.1, 0.85, 1.15, 0.95, 1.2], True),
        # noisy-flat, large noise: tail slope 0.11, relative growth 0.42 > 0.25 but t = 0.11 / 0.172 = 0.64 <= 2
        ([1.0, 1.0, 0.5, 1.5, 0.6, 1.6, 1.0], True),
        # exploding: last |loss| 50 > 10 x median(earlier) = 10
        ([1, 1, 1, 1, 1, 1, 50], False),
        # NaN anywhere
        ([1.0, math.nan, 1.0, 1.0, 1.0, 1.0], False),
        # infinity
        ([1.0, 1.0, 1.0, 1.0, math.inf], False),
    ],
)
def test_policy_loss_converged(losses, expected):
    assert policy_loss_converged(windows(losses, warmup_windows=2), last_windows=5) is expected


def test_too_few_windows_with_a_loss_is_none():
    assert policy_loss_converged(windows([1.0, 1.0, 1.0, 1.0], warmup_windows=5), last_windows=5) is None
    assert policy_loss_converged([], last_windows=5) is None


def test_losses_finite_checks_every_loss_key():
    assert losses_finite(windows([1.0, 0.5], value_losses=[3.0, 2.0]))
    assert not losses_finite(windows([1.0, 0.5], value_losses=[3.0, math.nan]))
    assert not losses_finite([{"timesteps": 10, "train/critic_loss": math.inf}])
    assert not losses_finite([{"timesteps": 10, "options/value_loss": "nan"}])
    # absent or None: not measured, not a failure; a non-loss NaN is not a loss
    assert losses_finite([{"timesteps": 10, "options/policy_loss": None, "options/entropy": math.nan}])


def test_training_health_metrics():
    records = windows([0.3, 0.2, 0.25, 0.2, 0.22], value_losses=[90.0, 70.0, 60.0, 55.0, 42.5], warmup_windows=1)
    assert training_health_metrics(records) == {
        "train.losses_finite": 1.0,
        "train.policy_loss_converged": 1.0,
        "train.policy_loss_final": 0.22,
        "train.value_loss_final": 42.5,
        "train.option_updates": 500.0,
    }
    short = training_health_metrics(windows([0.3]))
    assert short["train.policy_loss_converged"] is None
