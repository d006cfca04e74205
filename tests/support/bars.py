"""Bar perturbations shared by the look-ahead tests of features and signals."""

from __future__ import annotations

import numpy as np
import pandas as pd


def perturb_after(df: pd.DataFrame, t: int, seed: int) -> pd.DataFrame:
    """Every bar after row t gets new prices and volume (each multiplied by its own random factor),
    and a new sentiment where the frame has one."""
    out = df.copy()
    rng = np.random.default_rng(seed)
    n = len(df) - t - 1
    for column in ("open", "high", "low", "close", "volume"):
        out.iloc[t + 1 :, out.columns.get_loc(column)] = df[column].to_numpy()[t + 1 :] * rng.uniform(0.5, 1.5, n)
    if "sentiment" in out:
        out.iloc[t + 1 :, out.columns.get_loc("sentiment")] = rng.uniform(0, 1, n)
    return out
