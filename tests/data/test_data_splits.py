"""Chronological splits: disjoint, ordered, complete; and the row count they need."""

from __future__ import annotations

import pandas as pd
import pytest

from trainer.config import SplitConfig
from trainer.data.features import FEATURE_WARMUP_BARS
from trainer.data.loaders import bundled_path, load_ohlcv
from trainer.data.splits import chronological_splits, required_rows, split_sizes
from trainer.errors import DataError

CONFIGS = [SplitConfig(), SplitConfig(train=0.8, eval=0.1, test=0.1), SplitConfig(train=0.5, eval=0.3, test=0.2)]


@pytest.fixture(scope="module")
def spy() -> pd.DataFrame:
    return load_ohlcv(bundled_path("SPY"))


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.train}/{c.eval}/{c.test}")
@pytest.mark.parametrize("rows", [5031, 700, 101])
def test_splits_are_disjoint_ordered_and_complete(spy: pd.DataFrame, cfg: SplitConfig, rows: int) -> None:
    df = spy.iloc[:rows]
    splits = chronological_splits(df, cfg)
    train, eval_, test = splits.train, splits.eval, splits.test
    assert sum(splits.sizes()) == rows
    assert train.index[-1] < eval_.index[0] and eval_.index[-1] < test.index[0]
    assert not (set(train.index) & set(eval_.index)) and not (set(eval_.index) & set(test.index))
    assert not (set(train.index) & set(test.index))
    pd.testing.assert_frame_equal(pd.concat([train, eval_, test]), df)
    assert len(train) == int(rows * cfg.train + 1e-9)


def test_default_shares_of_the_bundled_file(spy: pd.DataFrame) -> None:
    assert chronological_splits(spy, SplitConfig()).sizes() == (3521, 754, 756)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.train}/{c.eval}/{c.test}")
@pytest.mark.parametrize("window", [2, 20, 57])
def test_required_rows_is_the_minimum(cfg: SplitConfig, window: int) -> None:
    need = window + FEATURE_WARMUP_BARS + 2
    n = required_rows(window, cfg)
    assert all(min(split_sizes(rows, cfg)) >= need for rows in range(n, n + 500))  # n or more rows: enough
    assert min(split_sizes(n - 1, cfg)) < need


def test_required_rows_of_the_shipped_config() -> None:
    # 57 + 34 + 2 = 93 bars in the smallest (15%) split: 620 rows give 434/93/93.
    assert required_rows(57, SplitConfig()) == 620
    assert split_sizes(620, SplitConfig()) == (434, 93, 93)


def test_unordered_or_too_small_data_is_refused(spy: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="not strictly increasing"):
        chronological_splits(spy.iloc[::-1], SplitConfig())
    with pytest.raises(DataError, match="not strictly increasing"):
        chronological_splits(pd.concat([spy.iloc[:50], spy.iloc[49:100]]), SplitConfig())
    with pytest.raises(DataError, match="a split would be empty"):
        chronological_splits(spy.iloc[:5], SplitConfig())
