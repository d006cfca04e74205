"""The seed's termination curve (Part 2, sigmoid_termination_prob), verbatim in behaviour."""

from __future__ import annotations

import math


def sigmoid_termination_prob(step: int, min_duration: int, max_steps: int, steepness: float = 0.5) -> float:
    """Probability that an option ends after `step` steps.

    0 before min_duration (forced continuation), 1 from max_steps on (forced termination), and
    between them a sigmoid of the progress through [min_duration, max_steps], capped at 0.8 so
    termination stays a stochastic choice: 0.8 / (1 + exp(-steepness * 10 * (progress - 0.5))).
    At 50% progress that is 0.4.
    """
    if step < min_duration:
        return 0.0
    if step >= max_steps:
        return 1.0
    progress = (step - min_duration) / max(1, max_steps - min_duration)
    x = progress - 0.5
    sigmoid = 1.0 / (1.0 + math.exp(-steepness * 10 * x))
    return sigmoid * 0.8
