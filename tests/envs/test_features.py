"""compute_features: causal (no look-ahead), warm-up rows dropped, neutral sentiment / SL confidence
when the columns are absent, real values when present, clipping to [-5, 5], and a few values by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from trainer.data.features import CLIP, FEATURE_WARMUP_BARS, WINDOW_FEATURES, compute_features
from support.bars import perturb_after
from trainer.data.loaders import bundled_path, load_ohlcv

N_BARS = 300


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return load_ohlcv(bundled_path("SPY")).iloc[:N_BARS].copy()


@pytest.mark.parametrize("t", [FEATURE_WARMUP_BARS, 60, 120, 200, N_BARS - 2])
def test_no_look_ahead(frame, t):
    base = compute_features(frame)
    changed = compute_features(perturb_after(frame, t, seed=t))
    k = t - FEATURE_WARMUP_BARS + 1  # featurised rows at or before bar t
    np.testing.assert_array_equal(changed.window[:k], base.window[:k])
    np.testing.assert_array_equal(changed.close[:k], base.close[:k])
    np.testing.assert_array_equal(changed.trend_strength[:k], base.trend_strength[:k])
    # ... and the perturbation did reach the features after t (the test can see a change)
    assert not np.array_equal(changed.window[k:], base.window[k:])


def test_no_look_ahead_with_sentiment_columns(frame):
    df = frame.assign(sentiment=np.linspace(0.1, 0.9, len(frame)), sl_confidence=0.7)
    t = 150
    base = compute_features(df)
    changed = compute_features(perturb_after(df, t, seed=1))
    k = t - FEATURE_WARMUP_BARS + 1
    np.testing.assert_array_equal(changed.sentiment[:k], base.sentiment[:k])
    np.testing.assert_array_equal(changed.window[:k], base.window[:k])


def test_warm_up_rows_dropped(frame):
    ff = compute_features(frame)
    assert FEATURE_WARMUP_BARS == 34  # MACD: EMA26 + signal EMA9 - 1
    assert len(ff) == N_BARS - FEATURE_WARMUP_BARS
    assert ff.index.equals(frame.index[FEATURE_WARMUP_BARS:])
    np.testing.assert_array_equal(ff.close, frame["close"].to_numpy()[FEATURE_WARMUP_BARS:])
    assert ff.window.shape == (N_BARS - FEATURE_WARMUP_BARS, len(WINDOW_FEATURES)) == (266, 10)
    assert ff.window.dtype == np.float32
    assert np.isfinite(ff.window).all()


def test_hand_computed_values(frame):
    ff = compute_features(frame)
    close = frame["close"].to_numpy()
    for row in (0, 50, 200):
        bar = row + FEATURE_WARMUP_BARS
        sma20 = close[bar - 19 : bar + 1].mean()
        assert ff.trend_strength[row] == pytest.approx(close[bar] / sma20 - 1, rel=1e-9)
        expected = {
            "ret_1": 50 * math.log(close[bar] / close[bar - 1]),
            "ret_5": 20 * math.log(close[bar] / close[bar - 5]),
            "ret_20": 10 * math.log(close[bar] / close[bar - 20]),
            "trend_div": 20 * (close[bar] / sma20 - 1),
            "hl_range": 50 * (frame["high"].iloc[bar] - frame["low"].iloc[bar]) / close[bar],
        }
        for name, value in expected.items():
            assert ff.window[row, WINDOW_FEATURES.index(name)] == pytest.approx(
                float(np.clip(value, -CLIP, CLIP)), rel=1e-5, abs=1e-6
            ), name


def test_neutral_sentiment_and_confidence_when_absent(frame):
    assert "sentiment" not in frame.columns and "sl_confidence" not in frame.columns
    ff = compute_features(frame)
    assert not ff.has_sentiment and not ff.has_sl_confidence
    assert (ff.sentiment == 0.5).all() and (ff.sl_confidence == 0.5).all()
    custom = compute_features(frame, neutral_sentiment=0.3, neutral_sl_confidence=0.8)
    assert (custom.sentiment == 0.3).all() and (custom.sl_confidence == 0.8).all()
    assert len(custom.sentiment) == len(custom)


def test_real_sentiment_and_confidence_used_when_present(frame):
    rng = np.random.default_rng(0)
    sentiment = rng.uniform(0, 1, len(frame))
    confidence = rng.uniform(0, 1, len(frame))
    ff = compute_features(frame.assign(sentiment=sentiment, sl_confidence=confidence), 0.3, 0.8)
    assert ff.has_sentiment and ff.has_sl_confidence
    np.testing.assert_array_equal(ff.sentiment, sentiment[FEATURE_WARMUP_BARS:])
    np.testing.assert_array_equal(ff.sl_confidence, confidence[FEATURE_WARMUP_BARS:])
    only_sentiment = compute_features(frame.assign(sentiment=sentiment), 0.3, 0.8)
    assert only_sentiment.has_sentiment and not only_sentiment.has_sl_confidence
    assert (only_sentiment.sl_confidence == 0.8).all()


def test_values_clipped_to_plus_minus_five(frame):
    df = frame.copy()
    jump = 150
    for column in ("open", "high", "low", "close"):
        df.iloc[jump:, df.columns.get_loc(column)] *= 3.0  # a +110% log jump: ret_1 * 50 = 54.9
    ff = compute_features(df)
    assert ff.window.min() >= -CLIP and ff.window.max() <= CLIP
    row = jump - FEATURE_WARMUP_BARS
    assert 50 * math.log(3.0) > CLIP
    assert ff.window[row, WINDOW_FEATURES.index("ret_1")] == pytest.approx(CLIP)
    crash = frame.copy()
    for column in ("open", "high", "low", "close"):
        crash.iloc[jump:, crash.columns.get_loc(column)] /= 3.0
    assert compute_features(crash).window[row, WINDOW_FEATURES.index("ret_1")] == pytest.approx(-CLIP)
