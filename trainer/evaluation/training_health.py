"""Training health from the monitor windows (monitor_metrics.json, oldest first).

Each record is one OptionsMonitorCallback window: a dict with `timesteps` and SB3-style keys such
as `options/policy_loss`, `options/value_loss`, `options/num_updates`. A key that is absent or
None in a window was not measured there (e.g. before the controller's warmup ends).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

POLICY_LOSS_KEY = "options/policy_loss"
VALUE_LOSS_KEY = "options/value_loss"
NUM_UPDATES_KEY = "options/num_updates"

Records = Sequence[Mapping[str, Any]]


def _is_loss_key(key: str) -> bool:
    """`options/policy_loss`, `options/value_loss`, `train/actor_loss`, `train/critic_loss`, ..."""
    return key.rsplit("/", 1)[-1].endswith("loss")


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan  # a loss that is not a number is as bad as NaN


def recorded_series(records: Records, key: str) -> list[float]:
    """The recorded values of `key`, oldest first, skipping windows where it is absent or None."""
    return [_as_float(record[key]) for record in records if record.get(key) is not None]


def losses_finite(records: Records) -> bool:
    """True when every recorded loss (every key whose last path part ends in `loss`) is finite.

    Vacuously True when no window recorded a loss; `policy_loss_converged` returns None then.
    """
    return all(
        math.isfinite(_as_float(value))
        for record in records
        for key, value in record.items()
        if _is_loss_key(key) and value is not None
    )


def policy_loss_converged(
    records: Records,
    last_windows: int = 5,
    growth_tolerance: float = 0.25,
    min_t_stat: float = 2.0,
    outlier_factor: float = 10.0,
    key: str = POLICY_LOSS_KEY,
) -> bool | None:
    """Has the options policy loss converged (seed: "policy loss converges, not exploding")?

    Definition, on y = |policy loss| of the last k = `last_windows` windows that recorded it:
    1. every recorded policy loss is finite;
    2. not growing: with b the least-squares slope of y on the window index, the growth of the
       fitted line over the k windows relative to the mean level, b (k - 1) / mean(y), is at most
       `growth_tolerance`, OR the slope is not distinguishable from noise: its t statistic
       b / se(b) (OLS, k - 2 degrees of freedom) is at most `min_t_stat`;
    3. not exploding: the last |loss| is at most `outlier_factor` times the median |loss| of all
       earlier windows.
    Absolute values are used because a policy-gradient loss with normalised advantages
    fluctuates around 0 and may grow in either sign. A falling loss counts as converged.

    :return: True / False, or None when fewer than k windows recorded a policy loss.
    """
    if last_windows < 3:
        raise ValueError(f"last_windows must be >= 3 (a slope and its error), got {last_windows}")
    values = recorded_series(records, key)
    if not all(math.isfinite(v) for v in values):
        return False
    if len(values) < last_windows:
        return None
    y = np.abs(np.asarray(values[-last_windows:]))
    x = np.arange(last_windows, dtype=np.float64) - (last_windows - 1) / 2.0
    sxx = float(np.sum(x**2))
    slope = float(np.sum(x * (y - y.mean())) / sxx)
    level = float(y.mean())
    relative_growth = slope * (last_windows - 1) / level if level > 0 else 0.0
    residuals = y - (y.mean() + slope * x)
    slope_se = math.sqrt(float(np.sum(residuals**2)) / (last_windows - 2) / sxx)
    t_stat = slope / slope_se if slope_se > 0 else (math.inf if slope > 0 else 0.0)
    growing = relative_growth > growth_tolerance and t_stat > min_t_stat

    earlier_median = float(np.median(np.abs(values[:-1])))
    exploding = abs(values[-1]) > outlier_factor * max(earlier_median, 1e-8)
    return not growing and not exploding


def _last(values: list[float]) -> float | None:
    return values[-1] if values else None


def training_health_metrics(records: Records, last_windows: int = 5) -> dict[str, float | None]:
    """The `train.*` metrics of docs/contracts.md from the monitor windows (None = not measured)."""
    converged = policy_loss_converged(records, last_windows=last_windows)
    return {
        "train.losses_finite": 1.0 if losses_finite(records) else 0.0,
        "train.policy_loss_converged": None if converged is None else float(converged),
        "train.policy_loss_final": _last(recorded_series(records, POLICY_LOSS_KEY)),
        "train.value_loss_final": _last(recorded_series(records, VALUE_LOSS_KEY)),
        "train.option_updates": _last(recorded_series(records, NUM_UPDATES_KEY)),
    }
