"""The review report's figures, one function per plot; each returns PNG bytes or None.

None means the input is not there (no backtest yet, a Phase A run without options) and the report
says "not available" instead. Matplotlib runs headless (Agg), imported only when a plot is drawn.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd

from trainer.config import OPTION_NAMES

_FIGSIZE = (9, 3.6)
_DPI = 100


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _to_png(fig) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=_DPI)
    plt.close(fig)
    return buffer.getvalue()


def _equity(returns: pd.Series) -> pd.Series:
    return (1.0 + returns.fillna(0.0)).cumprod()


# One colour per strategy, the same in every figure of the report.
_COLOURS = {"candidate": "tab:blue", "champion": "tab:red", "Phase A baseline": "tab:green", "buy and hold": "tab:gray"}


def _usable(series: dict[str, pd.Series] | None) -> dict[str, pd.Series]:
    return {label: r for label, r in (series or {}).items() if r is not None and r.notna().any()}


def equity_curve(series: dict[str, pd.Series] | None) -> bytes | None:
    """Growth of 1 over the test bars, one line per strategy (candidate, champion, Phase A, buy and hold).

    :param series: label -> per-bar returns on the same (timestamp) index; None or empty: no plot
    """
    usable = _usable(series)
    if not usable:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=_FIGSIZE)
    for label, returns in usable.items():
        ax.plot(returns.index, _equity(returns), label=label, color=_COLOURS.get(label))
    ax.set_title("Equity curve (test split, same bars)")
    ax.set_ylabel("growth of 1")
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    return _to_png(fig)


def drawdown(series: dict[str, pd.Series] | None) -> bytes | None:
    """Fraction below the running peak, one line per strategy (same input as `equity_curve`)."""
    usable = _usable(series)
    if not usable:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=_FIGSIZE)
    for label, returns in usable.items():
        equity = _equity(returns)
        ax.plot(returns.index, equity / equity.cummax() - 1.0, label=label, color=_COLOURS.get(label))
    ax.set_title("Drawdown (test split, same bars)")
    ax.set_ylabel("fraction below peak")
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    return _to_png(fig)


def _series(windows: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray] | None:
    points = [(w.get("timesteps"), w.get(key)) for w in windows]
    points = [(t, v) for t, v in points if t is not None and isinstance(v, (int, float))]
    if not points:
        return None
    steps, values = zip(*points)
    return np.asarray(steps, dtype=float), np.asarray(values, dtype=float)


def option_usage(windows: list[dict[str, Any]] | None) -> bytes | None:
    """Per-option usage share and mean duration per monitor window over training."""
    if not windows:
        return None
    usage = {name: _series(windows, f"options/usage_pct/{name}") for name in OPTION_NAMES}
    duration = {name: _series(windows, f"options/avg_duration/{name}") for name in OPTION_NAMES}
    if not any(usage.values()) and not any(duration.values()):
        return None
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(_FIGSIZE[0], _FIGSIZE[1] * 1.1))
    for name in OPTION_NAMES:
        if usage[name]:
            left.plot(*usage[name], label=name)
        if duration[name]:
            right.plot(*duration[name], label=name)
    left.set_title("Option usage per window")
    left.set_xlabel("timesteps")
    left.set_ylabel("share of steps")
    right.set_title("Mean option duration per window")
    right.set_xlabel("timesteps")
    right.set_ylabel("steps")
    left.legend(loc="best", fontsize="small")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return _to_png(fig)


def temperature_entropy(windows: list[dict[str, Any]] | None) -> bytes | None:
    """The controller's softmax temperature (annealed) and its option-selection entropy."""
    if not windows:
        return None
    temperature = _series(windows, "options/temperature")
    entropy = _series(windows, "options/entropy")
    if temperature is None and entropy is None:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=_FIGSIZE)
    if temperature is not None:
        ax.plot(*temperature, color="tab:red", label="temperature")
    ax.set_xlabel("timesteps")
    ax.set_ylabel("temperature")
    if entropy is not None:
        twin = ax.twinx()
        twin.plot(*entropy, color="tab:blue", label="entropy")
        twin.set_ylabel("entropy (nats)")
        twin.legend(loc="upper right")
    ax.legend(loc="upper left")
    ax.set_title("Controller temperature and entropy over training")
    ax.grid(alpha=0.3)
    return _to_png(fig)


def option_timeline(backtest: pd.DataFrame | None) -> bytes | None:
    """Which option ran at each bar of the backtest, with the position it held."""
    if backtest is None or "candidate_option" not in backtest:
        return None
    options = backtest["candidate_option"].fillna("").astype(str)
    if not (options != "").any():
        return None
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(_FIGSIZE[0], _FIGSIZE[1] * 1.4), sharex=True,
                                      gridspec_kw={"height_ratios": [2, 1]})
    index = {name: i for i, name in enumerate(OPTION_NAMES)}
    for name in OPTION_NAMES:
        mask = (options == name).to_numpy()
        if mask.any():
            top.scatter(backtest.index[mask], np.full(mask.sum(), index[name]), s=6, label=name)
    top.set_yticks(range(len(OPTION_NAMES)), OPTION_NAMES)
    top.set_title("Active option over the backtest")
    if "candidate_position" in backtest:
        bottom.plot(backtest.index, backtest["candidate_position"], color="black", linewidth=0.8)
    bottom.set_ylabel("position")
    bottom.grid(alpha=0.3)
    return _to_png(fig)
