"""Chronological train / eval / test splits: contiguous, disjoint, in time order, no shuffling."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from trainer.config import SplitConfig
from trainer.data.features import FEATURE_WARMUP_BARS
from trainer.errors import DataError

# Bars a split needs beyond window + warmup: one to step from and one to earn a return on.
_STEP_BARS = 2


@dataclass(frozen=True)
class Splits:
    """Three consecutive slices of one frame: train, then eval, then test."""

    train: pd.DataFrame
    eval: pd.DataFrame
    test: pd.DataFrame

    def sizes(self) -> tuple[int, int, int]:
        return len(self.train), len(self.eval), len(self.test)


def split_sizes(n_rows: int, split_cfg: SplitConfig) -> tuple[int, int, int]:
    """(train, eval, test) row counts: floor of each share, the remainder to test."""
    # The epsilon keeps 0.7 * 100 at 70 despite binary floats.
    n_train = math.floor(n_rows * split_cfg.train + 1e-9)
    n_eval = math.floor(n_rows * split_cfg.eval + 1e-9)
    return n_train, n_eval, n_rows - n_train - n_eval


def required_rows(window_size: int, split_cfg: SplitConfig) -> int:
    """Fewest total rows N such that N or more rows give every split at least
    window_size + FEATURE_WARMUP_BARS + 2 bars."""
    per_split = window_size + FEATURE_WARMUP_BARS + _STEP_BARS
    smallest_share = min(split_cfg.train, split_cfg.eval, split_cfg.test)
    # Every split holds at least floor(N * share) >= N * share - 1 rows, so from this N on all
    # sizes are large enough; walk down while one row fewer still works. (The floors make the
    # sizes non-monotonic in N, so the first N that works is not always safe for N + 1.)
    n_rows = math.ceil((per_split + 1) / smallest_share)
    while min(split_sizes(n_rows - 1, split_cfg)) >= per_split:
        n_rows -= 1
    return n_rows


def chronological_splits(df: pd.DataFrame, split_cfg: SplitConfig) -> Splits:
    """Cut `df` (strictly increasing index) into train, eval and test, in that order."""
    index = df.index
    if not (index.is_monotonic_increasing and index.is_unique):
        raise DataError(
            "cannot split: the timestamps are not strictly increasing (duplicates or out of order); "
            "run `trainer validate` on the data"
        )
    n_train, n_eval, n_test = split_sizes(len(df), split_cfg)
    if min(n_train, n_eval, n_test) < 1:
        raise DataError(
            f"cannot split {len(df)} rows into train/eval/test = {split_cfg.train}/{split_cfg.eval}/"
            f"{split_cfg.test}: a split would be empty ({n_train}/{n_eval}/{n_test} rows)"
        )
    return Splits(
        train=df.iloc[:n_train],
        eval=df.iloc[n_train : n_train + n_eval],
        test=df.iloc[n_train + n_eval :],
    )
