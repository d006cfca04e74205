"""Training health from the monitor windows (monitor_metrics.json, oldest first).

Each record is one OptionsMonitorCallback window: a dict with `timesteps` (env steps, all envs
together, when the window closed) and SB3-style keys such as `options/policy_loss`,
`options/value_loss`, `options/num_updates`, and per option `options/selections/<name>` (options
started in the window), `options/usage_pct/<name>` (share of the window's env steps spent in the
option) and `options/avg_duration/<name>` (mean length of the options completed in the window). A
key that is absent or None in a window was not measured there (e.g. before the controller's
warmup ends). Window w covers the env steps (timesteps of window w-1, timesteps of window w]; the
first window starts at 0.

The late stretch (`late_windows`) is what the gates judge the learned controller on: the windows
that lie wholly in the last `LATE_TRAINING_FRACTION` (20%) of the run's env steps, not cumulative
totals that include the warmup, where the controller is untrained and near uniform.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from trainer.evaluation.metrics import option_usage_metrics, persistence_metrics

POLICY_LOSS_KEY = "options/policy_loss"
VALUE_LOSS_KEY = "options/value_loss"
NUM_UPDATES_KEY = "options/num_updates"
ADVANTAGE_STD_KEY = "options/advantage_std"

LATE_TRAINING_FRACTION = 0.2
"""The late stretch is the last 20% of the run's env steps (see `late_windows`)."""

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
    loss: Literal["clipped", "seed"] = "clipped",
    clip_range: float = 0.2,
    normalized_advantages: bool = True,
) -> bool | None:
    """Has the options policy loss converged (seed: "policy loss converges, not exploding")?

    Both definitions look at the last k = `last_windows` windows that recorded a policy loss L
    (each window records the loss of the controller's last update before it closed), and both
    require every recorded policy loss of the run to be finite.

    `loss="clipped"` (the controller's default, L = -mean(min(rho A, clip(rho, 1-eps, 1+eps) A))
    with advantages A normalised to batch mean 0 / std 1):
    - the scale: while every ratio rho of a batch stays inside [1-eps, 1+eps], each term is at most
      (1+eps)|A| in size, so |L| <= (1+eps) mean|A| <= (1+eps) sqrt(mean A^2) <= 1+eps =: B
      (B = (1+eps) times the window's raw advantage std when advantages are not normalised). The
      clip does not bound a term with A < 0 and rho > 1+eps (min picks rho A), so |L| > B means
      the policy has run away from the behaviour policy on the samples it should push down:
      that is the explosion the seed guards against, in the loss's own units;
    - not exploding: |L| <= B in each of the last k windows;
    - converges: |L| is not trending up: with b the least-squares slope of |L| on the window
      index, the fitted rise over the k windows b (k - 1) is at most `growth_tolerance` * B, OR
      the slope is not distinguishable from noise (t statistic b / se(b), OLS with k - 2 degrees
      of freedom, at most `min_t_stat`).
      The rise is measured against B, not against the mean level: on-policy (rho ~ 1) the
      surrogate is ~ -mean(A) = 0, so any level-relative test would call noise around 0 a
      divergence, and "10 times the median" would call a loss of 0.03 after 0.002 an explosion.

    `loss="seed"` (the seed's -(log pi A), unbounded as pi -> 0), on y = |L|:
    1. not growing: the fitted rise relative to the mean level, b (k - 1) / mean(y), is at most
       `growth_tolerance`, OR the slope's t statistic is at most `min_t_stat`;
    2. not exploding: the last |L| is at most `outlier_factor` times the median |L| of all
       earlier windows.
    Absolute values are used because a policy-gradient loss with normalised advantages
    fluctuates around 0 and may grow in either sign. A falling loss counts as converged.

    :return: True / False, or None when fewer than k windows recorded a policy loss.
    """
    if last_windows < 3:
        raise ValueError(f"last_windows must be >= 3 (a slope and its error), got {last_windows}")
    if loss not in ("clipped", "seed"):
        raise ValueError(f"loss must be 'clipped' or 'seed', got {loss!r}")
    recorded = [record for record in records if record.get(key) is not None]
    values = [_as_float(record[key]) for record in recorded]
    if not all(math.isfinite(v) for v in values):
        return False
    if len(values) < last_windows:
        return None
    y = np.abs(np.asarray(values[-last_windows:]))
    slope, t_stat = _trend(y)

    if loss == "clipped":
        if normalized_advantages:
            scale = np.ones(last_windows)
        else:
            scale = np.asarray([_as_float(r.get(ADVANTAGE_STD_KEY)) for r in recorded[-last_windows:]])
            if not np.all(np.isfinite(scale)):
                return None  # the scale of the loss was not recorded: not measured
        bound = (1.0 + clip_range) * scale
        exploding = bool(np.any(y > bound))
        growing = slope * (last_windows - 1) > growth_tolerance * float(bound.mean()) and t_stat > min_t_stat
        return not growing and not exploding

    level = float(y.mean())
    relative_growth = slope * (last_windows - 1) / level if level > 0 else 0.0
    growing = relative_growth > growth_tolerance and t_stat > min_t_stat
    earlier_median = float(np.median(np.abs(values[:-1])))
    exploding = abs(values[-1]) > outlier_factor * max(earlier_median, 1e-8)
    return not growing and not exploding


def _trend(y: np.ndarray) -> tuple[float, float]:
    """(least-squares slope of y on its index, the slope's t statistic; inf for a perfect rising fit)."""
    k = y.size
    x = np.arange(k, dtype=np.float64) - (k - 1) / 2.0
    sxx = float(np.sum(x**2))
    slope = float(np.sum(x * (y - y.mean())) / sxx)
    residuals = y - (y.mean() + slope * x)
    slope_se = math.sqrt(float(np.sum(residuals**2)) / (k - 2) / sxx)
    t_stat = slope / slope_se if slope_se > 0 else (math.inf if slope > 0 else 0.0)
    return slope, t_stat


# --------------------------------------------------------------------------------------------
# The late stretch of training
# --------------------------------------------------------------------------------------------


def late_windows(
    records: Records, fraction: float = LATE_TRAINING_FRACTION, total_timesteps: int | None = None
) -> list[Mapping[str, Any]]:
    """The monitor windows of the last `fraction` of the run's env steps, oldest first.

    With T = `total_timesteps` (default: the last window's `timesteps`) and cut = (1 - fraction) T,
    a window belongs to the late stretch when it starts at or after the cut (it lies wholly in the
    last `fraction` of the steps). When no window does (a stretch shorter than one window), the
    windows that end after the cut; when none does either (the monitor stopped early), [].
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if not records:
        return []
    total = float(records[-1]["timesteps"] if total_timesteps is None else total_timesteps)
    cut = (1.0 - fraction) * total
    starts = [0.0] + [float(r["timesteps"]) for r in records[:-1]]
    inside = [r for start, r in zip(starts, records) if start >= cut]
    return inside or [r for r in records if float(r["timesteps"]) > cut]


def _window_steps(records: Records, chosen: Records) -> list[float]:
    """Env steps of each chosen window: its `timesteps` minus the previous window's (0 for the first)."""
    previous = {id(r): (float(records[i - 1]["timesteps"]) if i else 0.0) for i, r in enumerate(records)}
    return [float(r["timesteps"]) - previous[id(r)] for r in chosen]


def windows_option_usage(
    records: Records, chosen: Records, option_names: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Option usage over the `chosen` windows of `records`, in the shape of metrics.option_usage.

    - selections: options started in the windows (sum of `options/selections/<name>`);
    - selection_share: an option's share of those selections (the controller's choices);
    - usage_pct: its share of the windows' env steps (sum of usage_pct x window steps);
    - avg_duration: mean length of the options completed in the windows: the windows'
      `options/avg_duration/<name>` weighted by `options/completions/<name>` when recorded, else
      by the window's selections of the option (at least 1 where a completion was recorded);
      0.0 for an option with no completed use, as in metrics.option_usage.
    """
    steps = _window_steps(records, chosen)
    total_steps = sum(steps)
    usage: dict[str, dict[str, float]] = {"usage_pct": {}, "avg_duration": {}, "selections": {}, "selection_share": {}}
    for name in option_names:
        selections = sum(float(r.get(f"options/selections/{name}") or 0.0) for r in chosen)
        in_option = sum(float(r.get(f"options/usage_pct/{name}") or 0.0) * n for r, n in zip(chosen, steps))
        weighted = weights = 0.0
        for r in chosen:
            duration = r.get(f"options/avg_duration/{name}")
            if duration is None:
                continue
            completions = r.get(f"options/completions/{name}")
            weight = float(completions) if completions is not None else max(float(r.get(f"options/selections/{name}") or 0.0), 1.0)
            weighted += weight * float(duration)
            weights += weight
        usage["selections"][name] = selections
        usage["usage_pct"][name] = in_option / total_steps if total_steps > 0 else 0.0
        usage["avg_duration"][name] = weighted / weights if weights > 0 else 0.0
    total_selections = sum(usage["selections"].values())
    for name in option_names:
        usage["selection_share"][name] = usage["selections"][name] / total_selections if total_selections else 0.0
    return usage


def late_training_metrics(
    records: Records,
    option_names: Sequence[str],
    min_durations: Mapping[str, float],
    used_option_min_pct: float = 0.05,
    total_timesteps: int | None = None,
    fraction: float = LATE_TRAINING_FRACTION,
) -> dict[str, float | None]:
    """The `options.late.*` and `train.value_loss_late_mean` metrics (docs/contracts.md).

    Option usage of the late stretch (windows_option_usage over late_windows) flattened like
    the cumulative `options.*` (selection and step shares, durations, aggregates), plus
    persistence (metrics.persistence_metrics) and:
    - `options.late.windows`, `options.late.from_timesteps`: how many windows, from which step;
    - `train.value_loss_late_mean`: mean of `options/value_loss` over the late windows that
      recorded one (each is the loss of the last update before its window closed).
    Every metric is None when the late stretch has no window, or no option selection.
    """
    chosen = late_windows(records, fraction, total_timesteps)
    value_losses = recorded_series(chosen, VALUE_LOSS_KEY)
    metrics: dict[str, float | None] = {
        "options.late.windows": float(len(chosen)),
        "options.late.from_timesteps": None,
        "train.value_loss_late_mean": float(np.mean(value_losses)) if value_losses else None,
    }
    if not chosen:
        return metrics
    index = {id(r): i for i, r in enumerate(records)}
    first = index[id(chosen[0])]
    metrics["options.late.from_timesteps"] = float(records[first - 1]["timesteps"]) if first else 0.0
    usage = windows_option_usage(records, chosen, option_names)
    if sum(usage["selections"].values()) == 0:
        return metrics
    metrics.update(option_usage_metrics(usage, used_option_min_pct, prefix="options.late"))
    metrics.update(persistence_metrics(usage, min_durations, prefix="options.late"))
    return metrics


def _last(values: list[float]) -> float | None:
    return values[-1] if values else None


def training_health_metrics(
    records: Records,
    last_windows: int = 5,
    loss: Literal["clipped", "seed"] = "clipped",
    clip_range: float = 0.2,
    normalized_advantages: bool = True,
) -> dict[str, float | None]:
    """The `train.*` metrics of docs/contracts.md from the monitor windows (None = not measured)."""
    converged = policy_loss_converged(
        records, last_windows=last_windows, loss=loss, clip_range=clip_range, normalized_advantages=normalized_advantages
    )
    return {
        "train.losses_finite": 1.0 if losses_finite(records) else 0.0,
        "train.policy_loss_converged": None if converged is None else float(converged),
        "train.policy_loss_final": _last(recorded_series(records, POLICY_LOSS_KEY)),
        "train.value_loss_final": _last(recorded_series(records, VALUE_LOSS_KEY)),
        "train.option_updates": _last(recorded_series(records, NUM_UPDATES_KEY)),
    }
