"""Backtest metrics from per-bar arrays, and option usage from the per-bar active-option sequence.

Conventions (shared by `trainer evaluate`, the gates and the report):
- `returns[t]` is the simple portfolio return of bar t, net of costs (0.01 = +1%).
- `positions[t]` is the exposure held *during* bar t (fraction of equity, -1..1), i.e. the
  position that earned `returns[t]`. The book starts flat: the trade into `positions[0]` counts
  as turnover.
- Ratios are annualised with `periods_per_year` (252 for daily bars; see trainer.data.bars).
- No metric is ever NaN. Zero-denominator cases are defined below, next to each metric.

The key names of `backtest_metrics` are the `test.<metric>` names of docs/contracts.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

ZERO_TOLERANCE = 1e-12
"""|value| at or below this counts as zero (a per-bar return of 1e-12 is far below one basis point)."""


def _as_finite_1d(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        bad = int(np.flatnonzero(~np.isfinite(array))[0])
        raise ValueError(f"{name} has a non-finite value at index {bad}: {array[bad]}")
    return array


# --------------------------------------------------------------------------------------------
# Curves
# --------------------------------------------------------------------------------------------


def equity_curve(returns: Sequence[float] | np.ndarray) -> np.ndarray:
    """Equity after each bar, starting from 1.0: E_t = prod_{s<=t} (1 + r_s)."""
    r = _as_finite_1d(returns, "returns")
    return np.cumprod(1.0 + r)


def drawdown_curve(returns: Sequence[float] | np.ndarray) -> np.ndarray:
    """Drawdown after each bar as a positive fraction: D_t = 1 - E_t / max(1, max_{s<=t} E_s).

    The starting capital (1.0) counts as a peak, so a loss on the first bar is a drawdown.
    """
    equity = equity_curve(returns)
    peaks = np.maximum.accumulate(np.maximum(equity, 1.0))
    return 1.0 - equity / peaks


# --------------------------------------------------------------------------------------------
# Scalar metrics
# --------------------------------------------------------------------------------------------


def sharpe_ratio(returns: Sequence[float] | np.ndarray, periods_per_year: float) -> float:
    """Annualised Sharpe ratio: mean(r) / std(r, ddof=1) * sqrt(periods_per_year) (risk-free = 0).

    Zero variance: 0.0 when every return is ~0 (a strategy that never trades). A constant
    *non-zero* return has no defined Sharpe (it would be +-inf, and the Sharpe statistics need a
    variance); that only arises from a broken backtest (e.g. a fee charged every bar), so it
    raises ValueError instead of returning a number that passes or fails a gate by accident.
    """
    r = _as_finite_1d(returns, "returns")
    if r.size < 2:
        raise ValueError(f"Sharpe ratio needs at least 2 returns, got {r.size}")
    std = float(np.std(r, ddof=1))
    if std <= ZERO_TOLERANCE:
        if float(np.max(np.abs(r))) <= ZERO_TOLERANCE:
            return 0.0
        raise ValueError(
            f"returns are constant ({r[0]:.6g} every bar): the Sharpe ratio is undefined for zero variance"
        )
    return float(np.mean(r) / std * math.sqrt(periods_per_year))


def total_return(returns: Sequence[float] | np.ndarray) -> float:
    """Compounded simple return: prod(1 + r) - 1."""
    return float(equity_curve(returns)[-1] - 1.0) if len(returns) else 0.0


def cagr(returns: Sequence[float] | np.ndarray, periods_per_year: float) -> float:
    """Compound annual growth rate: (1 + total_return) ** (periods_per_year / n_bars) - 1.

    -1.0 when the equity reached zero or below (a total loss).
    """
    r = _as_finite_1d(returns, "returns")
    if r.size == 0:
        raise ValueError("CAGR needs at least 1 return")
    final = float(np.prod(1.0 + r))
    if final <= 0.0:
        return -1.0
    return float(final ** (periods_per_year / r.size) - 1.0)


def max_drawdown(returns: Sequence[float] | np.ndarray) -> float:
    """Largest peak-to-trough loss as a positive fraction (0.25 = -25%); 0.0 if equity never fell."""
    curve = drawdown_curve(returns)
    return float(np.max(curve)) if curve.size else 0.0


def calmar_ratio(cagr_value: float, max_drawdown_value: float) -> float:
    """Calmar ratio: CAGR / max drawdown.

    With no drawdown the ratio is unbounded: +inf when CAGR > 0, 0.0 when CAGR is ~0 (CAGR < 0
    always comes with a drawdown). Never NaN.
    """
    if max_drawdown_value <= ZERO_TOLERANCE:
        return math.inf if cagr_value > ZERO_TOLERANCE else 0.0
    return float(cagr_value / max_drawdown_value)


def sortino_ratio(returns: Sequence[float] | np.ndarray, periods_per_year: float) -> float:
    """Annualised Sortino ratio with a 0 target (Sortino & Price 1994):

        mean(r) / DD * sqrt(periods_per_year),   DD = sqrt( (1/n) * sum_t min(r_t, 0)^2 )

    (downside deviation over all n bars, not only the losing ones). With no losing bar the ratio
    is unbounded: +inf when mean > 0, 0.0 when every return is ~0. Never NaN.
    """
    r = _as_finite_1d(returns, "returns")
    if r.size == 0:
        raise ValueError("Sortino ratio needs at least 1 return")
    downside = float(np.sqrt(np.mean(np.minimum(r, 0.0) ** 2)))
    mean = float(np.mean(r))
    if downside <= ZERO_TOLERANCE:
        return math.inf if mean > ZERO_TOLERANCE else 0.0
    return float(mean / downside * math.sqrt(periods_per_year))


def turnover(positions: Sequence[float] | np.ndarray) -> float:
    """Mean traded exposure per bar: (1/n) * sum_t |p_t - p_{t-1}|, with p_{-1} = 0 (start flat).

    Per bar, not annualised (multiply by periods_per_year for a yearly figure). A round trip
    flat -> 1 -> flat trades 2.0 of exposure.
    """
    p = _as_finite_1d(positions, "positions")
    if p.size == 0:
        return 0.0
    return float(np.mean(np.abs(np.diff(p, prepend=0.0))))


def hit_rate(returns: Sequence[float] | np.ndarray, positions: Sequence[float] | np.ndarray) -> float:
    """Share of bars with a non-zero position whose return is > 0; 0.0 when never in the market."""
    r = _as_finite_1d(returns, "returns")
    p = _as_finite_1d(positions, "positions")
    invested = np.abs(p) > ZERO_TOLERANCE
    if not np.any(invested):
        return 0.0
    return float(np.mean(r[invested] > 0.0))


def exposure(positions: Sequence[float] | np.ndarray) -> float:
    """Mean absolute exposure per bar: (1/n) * sum_t |p_t| (1.0 = fully invested every bar)."""
    p = _as_finite_1d(positions, "positions")
    return float(np.mean(np.abs(p))) if p.size else 0.0


def backtest_metrics(
    returns: Sequence[float] | np.ndarray,
    positions: Sequence[float] | np.ndarray,
    periods_per_year: float,
) -> dict[str, float]:
    """All backtest metrics of one run, keyed by the docs/contracts.md names (without `test.`).

    :param returns: simple per-bar portfolio returns, net of costs.
    :param positions: exposure held during each bar (-1..1), same length as `returns`.
    :param periods_per_year: bars per year (252 for daily bars).
    """
    r = _as_finite_1d(returns, "returns")
    p = _as_finite_1d(positions, "positions")
    if r.shape != p.shape:
        raise ValueError(f"returns ({r.size} bars) and positions ({p.size} bars) differ in length")
    if r.size < 2:
        raise ValueError(f"a backtest needs at least 2 bars, got {r.size}")
    if not periods_per_year > 0:
        raise ValueError(f"periods_per_year must be > 0, got {periods_per_year}")
    growth = cagr(r, periods_per_year)
    drawdown = max_drawdown(r)
    return {
        "sharpe": sharpe_ratio(r, periods_per_year),
        "total_return": total_return(r),
        "cagr": growth,
        "max_drawdown": drawdown,
        "calmar": calmar_ratio(growth, drawdown),
        "sortino": sortino_ratio(r, periods_per_year),
        "turnover": turnover(p),
        "hit_rate": hit_rate(r, p),
        "exposure": exposure(p),
    }


# --------------------------------------------------------------------------------------------
# Option usage
# --------------------------------------------------------------------------------------------


def option_usage(
    option_indices: Sequence[int] | np.ndarray,
    option_names: Sequence[str],
    option_steps: Sequence[int] | np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """Usage of each option over a backtest's per-bar active-option sequence.

    A selection is a bar where an option starts: the first bar, a bar whose option differs from
    the previous bar's, and, when `option_steps` is given (the step within the active option on
    each bar, 0 on the bar where it was chosen), a bar with option_steps == 0, so a re-selection
    of the option that just ended counts as a new selection. Without `option_steps` re-selecting
    the option that just terminated is indistinguishable from continuing it in a per-bar
    sequence, so it counts as one longer use (fewer selections of that option, longer durations).

    Returns `{"usage_pct": {name: share of bars}, "avg_duration": {name: mean use length in
    bars}, "selections": {name: number of uses}, "selection_share": {name: share of all
    selections}}`; an option never used has 0 for all four. The last use may be cut short by the
    end of the bars; it counts with the length it had.
    """
    idx = np.asarray(option_indices)
    names = list(option_names)
    if idx.ndim != 1:
        raise ValueError(f"option_indices must be one-dimensional, got shape {idx.shape}")
    if idx.size and (not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0 or idx.max() >= len(names)):
        raise ValueError(f"option_indices must be integers in 0..{len(names) - 1}")
    starts = np.diff(idx, prepend=-1) != 0 if idx.size else np.zeros(0, dtype=bool)
    if option_steps is not None:
        steps = np.asarray(option_steps)
        if steps.shape != idx.shape:
            raise ValueError(f"option_steps ({steps.size} bars) and option_indices ({idx.size} bars) differ in length")
        starts = starts | (steps == 0)
    run_starts = np.flatnonzero(starts)
    run_lengths = np.diff(np.append(run_starts, idx.size))
    run_options = idx[run_starts]
    usage: dict[str, dict[str, float]] = {"usage_pct": {}, "avg_duration": {}, "selections": {}, "selection_share": {}}
    for k, name in enumerate(names):
        lengths = run_lengths[run_options == k]
        usage["usage_pct"][name] = float(lengths.sum() / idx.size) if idx.size else 0.0
        usage["avg_duration"][name] = float(lengths.mean()) if lengths.size else 0.0
        usage["selections"][name] = float(lengths.size)
        usage["selection_share"][name] = float(lengths.size / run_starts.size) if run_starts.size else 0.0
    return usage


def selection_shares(selections: dict[str, float]) -> dict[str, float]:
    """Each option's share of all selections (0.0 for every option when nothing was selected)."""
    total = float(sum(selections.values()))
    return {name: (float(count) / total if total > 0 else 0.0) for name, count in selections.items()}


def option_usage_metrics(
    usage: dict[str, dict[str, float]], used_option_min_pct: float = 0.05, prefix: str = "options"
) -> dict[str, float]:
    """Flatten `option_usage(...)` into the docs/contracts.md `options.*` names, with the aggregates
    `min_selections`, `min_usage_pct`, `max_usage_pct` (step shares), `min_selection_share`,
    `max_selection_share` (shares of the controller's selections), `min_avg_duration` and
    `num_used_options` (options whose step share is > `used_option_min_pct`, as in the seed's
    monitor). `selection_share` is derived from `selections` when the usage does not hold it.
    """
    usage = {**usage}
    usage.setdefault("selection_share", selection_shares(usage["selections"]))
    flat: dict[str, float] = {}
    for field in ("selections", "selection_share", "usage_pct", "avg_duration"):
        for name, value in usage[field].items():
            flat[f"{prefix}.{field}.{name}"] = float(value)
    shares = list(usage["usage_pct"].values())
    flat[f"{prefix}.min_selections"] = float(min(usage["selections"].values()))
    flat[f"{prefix}.min_selection_share"] = float(min(usage["selection_share"].values()))
    flat[f"{prefix}.max_selection_share"] = float(max(usage["selection_share"].values()))
    flat[f"{prefix}.min_usage_pct"] = float(min(shares))
    flat[f"{prefix}.max_usage_pct"] = float(max(shares))
    flat[f"{prefix}.min_avg_duration"] = float(min(usage["avg_duration"].values()))
    flat[f"{prefix}.num_used_options"] = float(sum(share > used_option_min_pct for share in shares))
    return flat


def persistence_metrics(
    usage: dict[str, dict[str, float]], min_durations: dict[str, float], prefix: str = "options"
) -> dict[str, float]:
    """Option persistence of an `option_usage(...)`-shaped usage (configs/gates.yaml, persistence):

    - `<prefix>.min_duration_margin` = min over options of (avg_duration - min_duration), in
      steps: >= 0 when every option averages at least its own min_duration. An option with no
      completed use has avg_duration 0, so a negative margin (it does not persist at all);
    - `<prefix>.step_weighted_duration` = sum_k usage_pct_k * avg_duration_k / sum_k usage_pct_k:
      the options' mean durations, each weighted by the option's share of the steps (the length
      of the option an average step runs in); 0.0 with no steps;
    - `<prefix>.selection_weighted_duration` = sum_k selections_k * avg_duration_k / sum_k
      selections_k: the mean length of one use, whatever the option (reported beside it; an
      option a controller picks often and drops fast weighs more here); 0.0 with no selection.

    :param min_durations: each option's configured min_duration (options.<name>.min_duration).
    """
    names = list(usage["avg_duration"])
    missing = [name for name in names if name not in min_durations]
    if missing:
        raise ValueError(f"min_durations has no entry for {missing}")
    durations, shares, selections = usage["avg_duration"], usage["usage_pct"], usage["selections"]

    def weighted(weights: dict[str, float]) -> float:
        total = float(sum(weights[n] for n in names))
        return float(sum(weights[n] * durations[n] for n in names) / total) if total > 0 else 0.0

    return {
        f"{prefix}.min_duration_margin": float(min(durations[n] - float(min_durations[n]) for n in names)),
        f"{prefix}.step_weighted_duration": weighted(shares),
        f"{prefix}.selection_weighted_duration": weighted(selections),
    }
