"""sigmoid_termination_prob against the seed's Part 2 formula, value by value."""

from __future__ import annotations

import math

import pytest

from trainer.options import sigmoid_termination_prob


def seed_formula(step: int, min_duration: int, max_steps: int, steepness: float = 0.5) -> float:
    """The seed's curve between the two forced regions, written out again here."""
    progress = (step - min_duration) / max(1, max_steps - min_duration)
    return 0.8 / (1.0 + math.exp(-steepness * 10 * (progress - 0.5)))


@pytest.mark.parametrize("min_duration, max_steps", [(5, 20), (10, 60), (3, 20), (5, 15), (5, 30)])
def test_zero_before_min_duration(min_duration, max_steps):
    for step in range(min_duration):
        assert sigmoid_termination_prob(step, min_duration, max_steps) == 0.0


@pytest.mark.parametrize("min_duration, max_steps", [(5, 20), (10, 60), (0, 1), (5, 5)])
def test_one_at_and_after_max_steps(min_duration, max_steps):
    for step in (max_steps, max_steps + 1, max_steps + 100):
        assert sigmoid_termination_prob(step, min_duration, max_steps) == 1.0


def test_forty_percent_at_half_progress():
    # (5, 25): step 15 is exactly half way; sigmoid(0) = 0.5, times the 0.8 cap
    assert sigmoid_termination_prob(15, 5, 25) == pytest.approx(0.4, abs=1e-15)
    assert sigmoid_termination_prob(35, 10, 60) == pytest.approx(0.4, abs=1e-15)
    assert sigmoid_termination_prob(35, 10, 60, steepness=0.6) == pytest.approx(0.4, abs=1e-15)


@pytest.mark.parametrize(
    "step, min_duration, max_steps, steepness, expected",
    [
        # progress 0: 0.8 / (1 + e^2.5) = 0.8 / 13.182494 = 0.0606866
        (5, 5, 20, 0.5, 0.0606866),
        # progress 0.8: 0.8 / (1 + e^-1.5) = 0.8 / 1.2231302 = 0.6540596
        (17, 5, 20, 0.5, 0.6540596),
        # progress 0.25: 0.8 / (1 + e^1.25) = 0.8 / 4.4903430 = 0.1781602
        (20, 10, 50, 0.5, 0.1781602),
        # scalp's steeper curve, progress 0: 0.8 / (1 + e^3) = 0.8 / 21.085537 = 0.0379406
        (5, 5, 15, 0.6, 0.0379406),
        # progress 0.9: 0.8 / (1 + e^-2.4) = 0.8 / 1.0907180 = 0.7334618
        (14, 5, 15, 0.6, 0.7334618),
    ],
)
def test_hand_computed_points(step, min_duration, max_steps, steepness, expected):
    value = sigmoid_termination_prob(step, min_duration, max_steps, steepness)
    assert value == pytest.approx(expected, abs=1e-6)
    assert value == pytest.approx(seed_formula(step, min_duration, max_steps, steepness), rel=1e-12)


@pytest.mark.parametrize("min_duration, max_steps, steepness", [(5, 20, 0.5), (10, 60, 0.5), (5, 15, 0.6), (0, 8, 0.5)])
def test_monotone_and_capped_below_point_eight(min_duration, max_steps, steepness):
    values = [sigmoid_termination_prob(s, min_duration, max_steps, steepness) for s in range(min_duration, max_steps)]
    assert all(b > a for a, b in zip(values, values[1:]))
    assert all(0.0 < v < 0.8 for v in values)
    for s, v in zip(range(min_duration, max_steps), values):
        assert v == pytest.approx(seed_formula(s, min_duration, max_steps, steepness), rel=1e-12)


def test_steepness_point_six_is_steeper():
    # Below the midpoint the steeper curve is lower, above it higher, the midpoint is shared.
    lower_half = [7, 10, 12]  # progress < 0.5 for (5, 25)
    upper_half = [18, 20, 24]
    for step in lower_half:
        assert sigmoid_termination_prob(step, 5, 25, 0.6) < sigmoid_termination_prob(step, 5, 25, 0.5)
    for step in upper_half:
        assert sigmoid_termination_prob(step, 5, 25, 0.6) > sigmoid_termination_prob(step, 5, 25, 0.5)
    span = lambda k: sigmoid_termination_prob(24, 5, 25, k) - sigmoid_termination_prob(5, 5, 25, k)  # noqa: E731
    assert span(0.6) > span(0.5)


def test_degenerate_span_does_not_divide_by_zero():
    # max_steps == min_duration + 1: the one step in between has progress 0
    assert sigmoid_termination_prob(5, 5, 6) == pytest.approx(0.8 / (1 + math.exp(2.5)), rel=1e-12)
