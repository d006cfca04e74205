"""Causal market features: the value at bar t uses bars <= t only (tests/envs/test_features.py
changes every bar after t and checks nothing at t moves).

Each split is featurised on its own bars, so an evaluation observation never contains a bar
that training saw; the first FEATURE_WARMUP_BARS bars of every split only warm the indicators up.

compute_features reads the option signals from the bars' `sentiment` / `sl_confidence` columns
(neutral when absent); trainer/data/signals.py decides each signal's source (column, a signals
file, derived from these features, neutral) and replaces the arrays accordingly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from trainer.errors import DataError

# Longest look-back of any feature (MACD: EMA 26 + signal EMA 9, minus one).
FEATURE_WARMUP_BARS = 34

# The window features, in observation order. Each is scaled to roughly unit size and clipped
# to [-CLIP, CLIP] so one outlier bar cannot dominate the network's input.
WINDOW_FEATURES: tuple[str, ...] = (
    "ret_1",  # log return over 1 bar, x 50
    "ret_5",  # log return over 5 bars, x 20
    "ret_20",  # log return over 20 bars, x 10
    "vol_20",  # rolling std of 1-bar log returns over 20 bars, x 50
    "rsi_14",  # (RSI(14) - 50) / 50, in [-1, 1]
    "macd",  # (EMA12 - EMA26) / close, x 50
    "macd_signal",  # EMA9 of macd, x 50
    "trend_div",  # close / SMA20 - 1, x 20 (the options' trend strength, unscaled, is kept apart)
    "volume_z",  # (volume - mean20) / std20; 0 when volume is constant (index data with no volume)
    "hl_range",  # (high - low) / close, x 50
)
CLIP = 5.0


@dataclass(frozen=True)
class FeatureFrame:
    """Featurised bars of one split, aligned on the same index (warm-up rows dropped)."""

    window: np.ndarray  # (n_bars, len(WINDOW_FEATURES)) float32, scaled and clipped
    close: np.ndarray  # (n_bars,) float64 close prices, for portfolio accounting
    trend_strength: np.ndarray  # (n_bars,) close / SMA20 - 1, unscaled (TrendFollow, Wait)
    sentiment: np.ndarray  # (n_bars,) 0..1: the data's column, else neutral (trainer/data/signals.py may replace it)
    sl_confidence: np.ndarray  # (n_bars,) 0..1: the data's column, else neutral (trainer/data/signals.py may replace it)
    index: pd.DatetimeIndex
    has_sentiment: bool  # a live signal, not the neutral constant
    has_sl_confidence: bool

    def __len__(self) -> int:
        return len(self.close)


def _rsi(close: pd.Series, period: int = 14) -> pd.Series:
    delta = close.diff()
    gain = delta.clip(lower=0).ewm(alpha=1 / period, adjust=False, min_periods=period).mean()
    loss = (-delta.clip(upper=0)).ewm(alpha=1 / period, adjust=False, min_periods=period).mean()
    rs = gain / loss.replace(0.0, np.nan)
    rsi = 100 - 100 / (1 + rs)
    # No losses in the window: RSI is 100 by definition (rs infinite).
    return rsi.where(loss > 0, 100.0).where(gain.notna())


def compute_features(
    df: pd.DataFrame, neutral_sentiment: float = 0.5, neutral_sl_confidence: float = 0.5
) -> FeatureFrame:
    """Featurise one split of a load_ohlcv() frame. Every rolling/EWM operation looks backwards only."""
    close = df["close"].astype(float)
    log_close = np.log(close)
    ret_1 = log_close.diff()
    sma20 = close.rolling(20).mean()
    ema12 = close.ewm(span=12, adjust=False, min_periods=12).mean()
    ema26 = close.ewm(span=26, adjust=False, min_periods=26).mean()
    macd = (ema12 - ema26) / close
    macd_signal = macd.ewm(span=9, adjust=False, min_periods=9).mean()
    volume = df["volume"].astype(float)
    vol_mean = volume.rolling(20).mean()
    vol_std = volume.rolling(20).std()
    volume_z = ((volume - vol_mean) / vol_std.replace(0.0, np.nan)).fillna(0.0).where(vol_mean.notna())
    trend = close / sma20 - 1

    raw = pd.DataFrame(
        {
            "ret_1": ret_1 * 50,
            "ret_5": log_close.diff(5) * 20,
            "ret_20": log_close.diff(20) * 10,
            "vol_20": ret_1.rolling(20).std() * 50,
            "rsi_14": (_rsi(close) - 50) / 50,
            "macd": macd * 50,
            "macd_signal": macd_signal * 50,
            "trend_div": trend * 20,
            "volume_z": volume_z,
            "hl_range": (df["high"] - df["low"]) / close * 50,
        },
        index=df.index,
    )[list(WINDOW_FEATURES)]
    keep = slice(FEATURE_WARMUP_BARS, None)
    window = raw.iloc[keep]
    if len(window) and window.isna().any().any():
        bad = window.columns[window.isna().any()].tolist()
        raise DataError(
            f"features {bad} are undefined after the warm-up (NaN or missing prices in the data); "
            "run `trainer validate` on it"
        )

    has_sentiment = "sentiment" in df.columns
    has_sl = "sl_confidence" in df.columns
    sentiment = df["sentiment"].astype(float) if has_sentiment else pd.Series(neutral_sentiment, index=df.index)
    sl_conf = df["sl_confidence"].astype(float) if has_sl else pd.Series(neutral_sl_confidence, index=df.index)
    return FeatureFrame(
        window=np.clip(window.to_numpy(dtype=np.float32), -CLIP, CLIP),
        close=close.iloc[keep].to_numpy(dtype=np.float64),
        trend_strength=trend.iloc[keep].to_numpy(dtype=np.float64),
        sentiment=sentiment.iloc[keep].to_numpy(dtype=np.float64),
        sl_confidence=sl_conf.iloc[keep].to_numpy(dtype=np.float64),
        index=pd.DatetimeIndex(df.index[keep]),
        has_sentiment=has_sentiment,
        has_sl_confidence=has_sl,
    )
