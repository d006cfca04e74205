"""Training health on hand-made monitor windows: growing, flat, noisy-flat, exploding, NaN; and
the late stretch of training (option selections, step shares, durations, value loss)."""

from __future__ import annotations

import math

import pytest

from trainer.evaluation.training_health import (
    late_training_metrics,
    late_windows,
    losses_finite,
    policy_loss_converged,
    training_health_metrics,
    windows_option_usage,
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
def test_policy_loss_converged_seed_loss(losses, expected):
    """The seed's -(log pi A): unbounded, judged against its own level."""
    assert policy_loss_converged(windows(losses, warmup_windows=2), last_windows=5, loss="seed") is expected


@pytest.mark.parametrize(
    "losses, clip_range, expected",
    [
        # on-policy the surrogate is ~ -mean(A) = 0: noise around 0 converged, although 0.03 is
        # 15x the earlier median (the seed-loss test calls that an explosion, see below)
        ([0.002, -0.001, 0.003, 0.001, -0.002, 0.002, 0.03], 0.2, True),
        # noisy, inside the bound 1 + eps = 1.2
        ([0.2, -0.1, 0.3, -0.2, 0.25, -0.15, 0.3], 0.2, True),
        # near the bound and flat
        ([1.1] * 6, 0.2, True),
        # the same level is beyond a tighter clip's bound 1.05
        ([1.1] * 6, 0.05, False),
        # one window beyond the bound: ratios of negative-advantage samples ran away
        ([0.05, 0.1, 0.05, 1.5, 0.1, 0.05], 0.2, False),
        # trending up inside the bound: rise 0.8 over 5 windows > 0.25 x 1.2, perfect fit
        ([0.1, 0.1, 0.3, 0.5, 0.7, 0.9], 0.2, False),
        # rising with noise that hides the slope: rise 0.48 > 0.3 but t = 0.79 <= 2
        ([0.1, 0.1, 0.9, 0.1, 1.1, 0.6], 0.2, True),
        # NaN anywhere
        ([0.1, math.nan, 0.1, 0.1, 0.1, 0.1], 0.2, False),
    ],
)
def test_policy_loss_converged_clipped_loss(losses, clip_range, expected):
    records = windows(losses, warmup_windows=2)
    assert policy_loss_converged(records, last_windows=5, clip_range=clip_range) is expected
    assert policy_loss_converged(records, last_windows=5, loss="clipped", clip_range=clip_range) is expected


def test_the_seed_definition_misjudges_a_clipped_loss_near_zero():
    """Why the clipped loss needs its own definition: the seed's level-relative tests fire on noise."""
    records = windows([0.002, -0.001, 0.003, 0.001, -0.002, 0.002, 0.03])
    assert policy_loss_converged(records, loss="clipped") is True
    assert policy_loss_converged(records, loss="seed") is False


def test_clipped_bound_follows_the_raw_advantage_scale_when_not_normalised():
    records = windows([3.0] * 5)
    for record, std in zip(records, [5.0] * 5):
        record["options/advantage_std"] = std
    assert policy_loss_converged(records, normalized_advantages=False) is True  # |L| 3 <= 1.2 x 5
    assert policy_loss_converged(records, normalized_advantages=True) is False  # |L| 3 > 1.2
    del records[-1]["options/advantage_std"]
    assert policy_loss_converged(records, normalized_advantages=False) is None  # scale not recorded
    with pytest.raises(ValueError, match="loss must be"):
        policy_loss_converged(records, loss="ppo")


def test_too_few_windows_with_a_loss_is_none():
    for loss in ("clipped", "seed"):
        assert policy_loss_converged(windows([1.0, 1.0, 1.0, 1.0], warmup_windows=5), last_windows=5, loss=loss) is None
        assert policy_loss_converged([], last_windows=5, loss=loss) is None


def test_losses_finite_checks_every_loss_key():
    assert losses_finite(windows([1.0, 0.5], value_losses=[3.0, 2.0]))
    assert not losses_finite(windows([1.0, 0.5], value_losses=[3.0, math.nan]))
    assert not losses_finite([{"timesteps": 10, "train/critic_loss": math.inf}])
    assert not losses_finite([{"timesteps": 10, "options/value_loss": "nan"}])
    # absent or None: not measured, not a failure; a non-loss NaN is not a loss
    assert losses_finite([{"timesteps": 10, "options/policy_loss": None, "options/entropy": math.nan}])


def test_training_health_metrics():
    records = windows([0.3, 0.2, 0.25, 0.2, 0.22], value_losses=[90.0, 70.0, 60.0, 55.0, 42.5], warmup_windows=1)
    assert training_health_metrics(records, loss="seed") == {
        "train.losses_finite": 1.0,
        "train.policy_loss_converged": 1.0,
        "train.policy_loss_final": 0.22,
        "train.value_loss_final": 42.5,
        "train.option_updates": 500.0,
    }
    short = training_health_metrics(windows([0.3]))
    assert short["train.policy_loss_converged"] is None
    clipped = training_health_metrics(windows([0.3, 0.2, 2.0, 0.2, 0.22]), loss="clipped", clip_range=0.2)
    assert clipped["train.policy_loss_converged"] == 0.0  # |L| 2.0 > 1.2


# ------------------------------------------------------------------ the late stretch of training

NAMES = ("a", "b", "c")
MIN_DURATIONS = {"a": 5, "b": 3, "c": 10}


def option_window(timesteps, selections, usage, durations=None, value_loss=None, completions=None):
    """One monitor record with per-option counters (names a, b, c)."""
    record = {"timesteps": timesteps, "options/value_loss": value_loss}
    for i, name in enumerate(NAMES):
        record[f"options/selections/{name}"] = selections[i]
        record[f"options/usage_pct/{name}"] = usage[i]
        record[f"options/avg_duration/{name}"] = None if durations is None else durations[i]
        if completions is not None:
            record[f"options/completions/{name}"] = completions[i]
    return record


def test_late_windows_are_the_last_20_percent_of_the_steps():
    records = [{"timesteps": 1000 * (i + 1)} for i in range(10)]
    assert [r["timesteps"] for r in late_windows(records)] == [9000, 10000]  # start >= 8000
    assert [r["timesteps"] for r in late_windows(records, fraction=0.5)] == [6000, 7000, 8000, 9000, 10000]
    # the run went on past the last closed window: cut 0.8 x 12000 = 9600, no window starts after
    # it, so the windows that end after it
    assert [r["timesteps"] for r in late_windows(records, total_timesteps=12_000)] == [10000]
    assert late_windows(records, total_timesteps=50_000) == []  # the monitor stopped early
    assert late_windows([]) == []
    with pytest.raises(ValueError, match="fraction"):
        late_windows(records, fraction=0.0)


def test_late_stretch_sees_a_collapse_that_cumulative_totals_hide():
    """8 near-uniform windows (warmup and early learning), then 2 windows collapsed onto `a`."""
    early = [option_window(1000 * (i + 1), [30, 30, 30], [0.3, 0.3, 0.4], [6.0, 4.0, 12.0], 300.0) for i in range(8)]
    late = [option_window(1000 * (i + 9), [90, 5, 5], [0.8, 0.05, 0.15], [7.0, 3.0, 11.0], 50.0 + 10 * i) for i in range(2)]
    metrics = late_training_metrics(early + late, NAMES, MIN_DURATIONS, used_option_min_pct=0.05)
    assert metrics["options.late.windows"] == 2.0
    assert metrics["options.late.from_timesteps"] == 8000.0
    assert metrics["options.late.selections.a"] == 180.0
    assert metrics["options.late.selection_share.a"] == pytest.approx(0.9)
    assert metrics["options.late.min_selection_share"] == pytest.approx(0.05)
    assert metrics["options.late.max_selection_share"] == pytest.approx(0.9)
    # step shares beside: (0.8 + 0.8) x 1000 of 2000 steps
    assert metrics["options.late.usage_pct.a"] == pytest.approx(0.8)
    assert metrics["options.late.min_usage_pct"] == pytest.approx(0.05)
    # cumulative over all windows the selections of `a` are (240 + 180) / (720 + 200) = 0.46: the
    # late share of 0.9 is what the trained controller does
    # value loss: mean of the late windows only (50, 60), not the warmup's 300s
    assert metrics["train.value_loss_late_mean"] == pytest.approx(55.0)


def test_late_stretch_durations_and_persistence_by_hand():
    records = [
        option_window(1000, [10, 10, 10], [0.3, 0.3, 0.4], [5.0, 3.0, 10.0]),
        # late: durations weighted by selections (no completion counts recorded)
        option_window(2000, [20, 40, 10], [0.4, 0.2, 0.4], [6.0, 3.0, 12.0], 80.0),
        option_window(3000, [20, 10, 10], [0.4, 0.2, 0.4], [8.0, 4.0, None], 60.0),
    ]
    usage = windows_option_usage(records, records[1:], NAMES)
    assert usage["selections"] == {"a": 40.0, "b": 50.0, "c": 20.0}
    assert usage["selection_share"] == pytest.approx({"a": 40 / 110, "b": 50 / 110, "c": 20 / 110})
    assert usage["usage_pct"] == pytest.approx({"a": 0.4, "b": 0.2, "c": 0.4})
    # a: (20 x 6 + 20 x 8) / 40 = 7; b: (40 x 3 + 10 x 4) / 50 = 3.2; c: only the window with a duration
    assert usage["avg_duration"] == pytest.approx({"a": 7.0, "b": 3.2, "c": 12.0})

    metrics = late_training_metrics(records, NAMES, MIN_DURATIONS, total_timesteps=3000, fraction=0.7)
    assert metrics["options.late.windows"] == 2.0
    assert metrics["options.late.from_timesteps"] == 1000.0
    # margins: a 7 - 5 = 2, b 3.2 - 3 = 0.2, c 12 - 10 = 2
    assert metrics["options.late.min_duration_margin"] == pytest.approx(0.2)
    # step-weighted: 0.4 x 7 + 0.2 x 3.2 + 0.4 x 12 = 8.24; selection-weighted: (40 x 7 + 50 x 3.2 + 20 x 12) / 110
    assert metrics["options.late.step_weighted_duration"] == pytest.approx(8.24)
    assert metrics["options.late.selection_weighted_duration"] == pytest.approx(680 / 110)
    assert metrics["train.value_loss_late_mean"] == pytest.approx(70.0)


def test_completion_counts_weigh_durations_when_recorded():
    records = [
        option_window(1000, [10, 0, 10], [0.5, 0.3, 0.2], [6.0, 4.0, 10.0], completions=[1, 3, 1]),
        option_window(2000, [10, 10, 10], [0.5, 0.3, 0.2], [8.0, 3.0, 10.0], completions=[3, 1, 0]),
    ]
    usage = windows_option_usage(records, records, NAMES)
    # a: (1 x 6 + 3 x 8) / 4 = 7.5; b: (3 x 4 + 1 x 3) / 4 = 3.75; c: (1 x 10 + 0 x 10) / 1 = 10
    assert usage["avg_duration"] == pytest.approx({"a": 7.5, "b": 3.75, "c": 10.0})
    # without completion counts: selections, and 1 where a duration came with no selection
    for record in records:
        for name in NAMES:
            del record[f"options/completions/{name}"]
    usage = windows_option_usage(records, records, NAMES)
    assert usage["avg_duration"]["b"] == pytest.approx((1 * 4 + 10 * 3) / 11)


def test_an_option_unused_late_fails_persistence_too():
    records = [option_window(1000 * (i + 1), [20, 20, 0], [0.5, 0.5, 0.0], [6.0, 4.0, None], 10.0) for i in range(5)]
    metrics = late_training_metrics(records, NAMES, MIN_DURATIONS)
    assert metrics["options.late.min_selection_share"] == 0.0
    assert metrics["options.late.avg_duration.c"] == 0.0
    assert metrics["options.late.min_duration_margin"] == -10.0


def test_late_metrics_are_none_without_windows_or_selections():
    assert late_training_metrics([], NAMES, MIN_DURATIONS) == {
        "options.late.windows": 0.0, "options.late.from_timesteps": None, "train.value_loss_late_mean": None,
    }
    idle = [option_window(1000, [0, 0, 0], [0.0, 0.0, 0.0])]
    metrics = late_training_metrics(idle, NAMES, MIN_DURATIONS)
    assert metrics["options.late.windows"] == 1.0
    assert "options.late.min_selection_share" not in metrics  # missing, so its gate is `missing`
    assert metrics["train.value_loss_late_mean"] is None
