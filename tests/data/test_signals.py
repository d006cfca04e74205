"""The option signals (trainer/data/signals.py) through load_market_data on real SPY bars: causal
(changing bars after t never changes a signal at t), the classifier fitted on train rows only
(recorded at the fit), walk-forward values inside the train split, the as-of join of a signals
file, the GX signals suite, provenance, neutral selectable, and save/load of the fitted model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import trainer.data.signals as signals_mod
from support.bars import perturb_after
from trainer.config import ConfigError, load_config
from trainer.data.features import compute_features
from trainer.data.loaders import bundled_path, load_ohlcv
from trainer.data.signals import (
    MIN_HISTORY_BARS,
    REFIT_EVERY_BARS,
    DirectionClassifier,
    SignalModel,
    join_signals,
    resolve_sources,
)
from trainer.data.splits import chronological_splits
from trainer.envs.factory import SPLITS, load_market_data
from trainer.errors import DataError

REPO = Path(__file__).resolve().parents[2]
B1 = REPO / "configs" / "phase_b1_options.yaml"
N_BARS = 2000  # train 1400 / eval 300 / test 300 rows: five walk-forward refits, fast


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return load_ohlcv(bundled_path("SPY")).iloc[:N_BARS].copy()


def write(frame: pd.DataFrame, path: Path) -> Path:
    out = frame.reset_index()
    if path.suffix == ".parquet":
        out.to_parquet(path, index=False)
    else:
        out.to_csv(path, index=False)
    return path


def load(tmp_path: Path, frame: pd.DataFrame, name: str = "bars.csv", **overrides):
    source = write(frame, tmp_path / name)
    return load_market_data(load_config(B1, {"data.source": str(source), **overrides}))


@pytest.fixture(scope="module")
def base(frame, tmp_path_factory):
    return load(tmp_path_factory.mktemp("base"), frame)


def _values_up_to(md, when: pd.Timestamp) -> dict[str, np.ndarray]:
    out = {}
    for split in SPLITS:
        ff = md.features[split]
        keep = ff.index <= when
        out[f"{split}.sentiment"] = ff.sentiment[keep]
        out[f"{split}.sl_confidence"] = ff.sl_confidence[keep]
    return out


# --------------------------------------------------------------------------------------------
# No look-ahead
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [350, 900, 1500, 1850])  # train (two walk-forward blocks), eval, test
def test_changing_bars_after_t_never_changes_a_signal_at_t(frame, base, tmp_path, t):
    when = frame.index[t]
    changed = load(tmp_path, perturb_after(frame, t, seed=t))
    before, after = _values_up_to(base, when), _values_up_to(changed, when)
    assert sum(len(v) for v in before.values()) > 0
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    # ... and the perturbation reached the signals after t (the test can see a change)
    later = [
        not np.array_equal(getattr(changed.features[s], n)[changed.features[s].index > when],
                           getattr(base.features[s], n)[base.features[s].index > when])
        for s in SPLITS for n in ("sentiment", "sl_confidence")
    ]
    assert any(later)


def test_every_derived_value_is_a_pointwise_function_of_the_bar(base):
    """transform on a subset of rows gives the same values as on the whole split (no rolling state)."""
    model = base.signals
    test = base.features["test"]
    rows = np.arange(10, len(test), 7)
    full = model.fitted["sl_confidence"].transform(test.window)
    np.testing.assert_array_equal(model.fitted["sl_confidence"].transform(test.window[rows]), full[rows])
    np.testing.assert_array_equal(model.fitted["sentiment"].transform(test.window[rows]),
                                  model.fitted["sentiment"].transform(test.window)[rows])


# --------------------------------------------------------------------------------------------
# Fitted on the train split only
# --------------------------------------------------------------------------------------------


def test_the_classifier_only_ever_fits_on_train_rows(frame, tmp_path, monkeypatch):
    received: list[tuple[np.ndarray, np.ndarray]] = []
    original = signals_mod._fit_classifier

    def recording(x, y):
        received.append((np.array(x), np.array(y)))
        return original(x, y)

    sklearn_fits = []
    from sklearn.linear_model import LogisticRegression

    original_fit = LogisticRegression.fit
    monkeypatch.setattr(LogisticRegression, "fit", lambda self, *a, **k: sklearn_fits.append(1) or original_fit(self, *a, **k))
    monkeypatch.setattr(signals_mod, "_fit_classifier", recording)
    md = load(tmp_path, frame)

    train, eval_, test = (md.features[s] for s in SPLITS)
    assert len(received) == len(sklearn_fits) == md.signals.walk_forward["refits"] + 1  # walk-forward + final
    lengths = []
    for x, y in received:
        n = len(x)
        lengths.append(n)
        assert n <= len(train) - 1  # the last train bar only as a label, never an eval bar
        np.testing.assert_array_equal(x, train.window[:n].astype(np.float64))  # a prefix of the train rows
        np.testing.assert_array_equal(y, (train.close[1 : n + 1] > train.close[:n]).astype(int))
    assert max(lengths) == len(train) - 1
    assert lengths == sorted(lengths)  # expanding window, then the final fit on the whole split
    eval_rows = {row.tobytes() for row in np.concatenate([eval_.window, test.window]).astype(np.float64)}
    assert not any(row.tobytes() in eval_rows for x, _ in received for row in x)


def test_eval_and_test_bars_do_not_move_the_fitted_model(frame, base, tmp_path):
    first_eval = len(chronological_splits(frame, load_config(B1).data.splits).train)
    changed = load(tmp_path, perturb_after(frame, first_eval - 1, seed=3))
    assert changed.signals.to_dict()["fitted"] == base.signals.to_dict()["fitted"]
    assert not np.array_equal(changed.features["test"].sl_confidence, base.features["test"].sl_confidence)


def test_train_values_come_from_walk_forward_models_that_never_saw_the_bar(base):
    train = base.features["train"]
    model = base.signals
    assert model.walk_forward["refits"] == -(-(len(train) - MIN_HISTORY_BARS) // REFIT_EVERY_BARS)
    # the first min_history bars have no model yet: neutral
    assert (train.sl_confidence[:MIN_HISTORY_BARS] == 0.5).all() and (train.sentiment[:MIN_HISTORY_BARS] == 0.5).all()
    # the second block's values come from a model fitted on the bars before it
    start, end = MIN_HISTORY_BARS + REFIT_EVERY_BARS, MIN_HISTORY_BARS + 2 * REFIT_EVERY_BARS
    block = DirectionClassifier.fit(train.window[:start], train.close[:start])
    np.testing.assert_array_equal(train.sl_confidence[start:end], block.transform(train.window[start:end]))
    # ... which is not what the final (in-sample) model would have said
    in_sample = model.fitted["sl_confidence"].transform(train.window[start:end])
    assert not np.allclose(train.sl_confidence[start:end], in_sample)


# --------------------------------------------------------------------------------------------
# What the numbers are
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("symbol", ["SPY", "QQQ"])
def test_derived_signals_reach_every_option_threshold(symbol):
    bundled = load_market_data(load_config(B1, {"data.symbol": symbol}))
    for split in SPLITS:
        ff = bundled.features[split]
        assert ((ff.sentiment >= 0) & (ff.sentiment <= 1)).all()
        assert ((ff.sl_confidence >= 0) & (ff.sl_confidence <= 1)).all()
        assert (ff.sentiment > 0.60).any() and (ff.sentiment > 0.75).any() and (ff.sentiment < 0.30).any()
        assert (ff.sl_confidence > 0.75).any() and (ff.sl_confidence < 0.25).any()  # Wait's strong view, both ways
        assert (ff.sl_confidence >= 0.5).any() and (ff.sl_confidence < 0.5).any()  # OpenLong / OpenShort availability


def test_sl_confidence_is_the_percentile_of_the_classifier_p_up(base):
    clf = base.signals.fitted["sl_confidence"]
    train = base.features["train"]
    in_sample = clf.transform(train.window[: clf.fitted_rows])
    # on its own fitting rows the percentile map is (about) uniform: median 0.5, quartiles 0.25 / 0.75
    assert np.quantile(in_sample, [0.25, 0.5, 0.75]) == pytest.approx([0.25, 0.5, 0.75], abs=0.02)
    p_up = clf.p_up(base.features["test"].window)
    order = np.argsort(p_up)
    assert np.all(np.diff(clf.transform(base.features["test"].window)[order]) >= 0)  # monotone in P(up)


# --------------------------------------------------------------------------------------------
# External signals file
# --------------------------------------------------------------------------------------------


def _signals_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Sentiment from bar 500 on: stamped exactly at bars 500..999, then 12 hours AFTER bars 1000..,
    which the join must hand to the next bar, not to the bar of the same date."""
    rng = np.random.default_rng(7)
    exact = frame.index[500:1000]
    late = frame.index[1000:] + pd.Timedelta(hours=12)
    stamps = exact.append(late)
    return pd.DataFrame({"timestamp": stamps, "sentiment": rng.uniform(0, 1, len(stamps))})


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_signals_file_is_joined_as_of_each_bar_never_earlier(frame, tmp_path, suffix):
    table = _signals_table(frame)
    path = tmp_path / f"signals{suffix}"
    table.to_parquet(path, index=False) if suffix == ".parquet" else table.to_csv(path, index=False)
    md = load(tmp_path, frame, **{"data.signals": str(path)})

    expected = pd.merge_asof(
        pd.DataFrame({"timestamp": frame.index}), table, on="timestamp", direction="backward"
    ).set_index("timestamp")["sentiment"].fillna(0.5)
    for split in SPLITS:
        ff = md.features[split]
        np.testing.assert_allclose(ff.sentiment, expected.loc[ff.index].to_numpy(), rtol=0, atol=1e-12)
    # a value stamped 12h after bar 1200's timestamp is first used at bar 1201
    stamp_1200 = table["sentiment"].iloc[1200 - 500]
    assert expected.loc[frame.index[1201]] == stamp_1200 != expected.loc[frame.index[1200]]
    described = md.describe()["signals"]
    assert described["sentiment"]["source"] == "file" and described["sl_confidence"]["source"] == "derived"
    join = described["file"]["join"]
    assert (join["neutral_bars"], join["exact_bars"], join["carried_bars"]) == (500, 500, N_BARS - 1000)
    assert described["file"]["uri"] == str(path) and len(described["file"]["digest"]) == 64


def test_join_signals_by_hand():
    bars = pd.DatetimeIndex(["2020-01-01", "2020-01-02", "2020-01-03", "2020-01-06"])
    table = pd.DataFrame(
        {"sl_confidence": [0.9, 0.2, 0.7]},
        index=pd.DatetimeIndex(["2020-01-02", "2020-01-02 15:00", "2020-01-07"], name="timestamp"),
    )
    joined, stats = join_signals(bars, table, ["sl_confidence"], {"sl_confidence": 0.5})
    # 01-01: nothing known yet; 01-02: the 00:00 stamp; 01-03 and 01-06: the 15:00 one; never the 01-07 one
    assert joined["sl_confidence"].tolist() == [0.5, 0.9, 0.2, 0.2]
    assert (stats["neutral_bars"], stats["exact_bars"], stats["carried_bars"]) == (1, 1, 2)


@pytest.mark.parametrize(
    "column, values, check",
    [
        ("sentiment", lambda n: np.r_[np.full(n - 1, 0.5), 1.2], "sentiment in [0, 1]"),
        ("sl_confidence", lambda n: np.r_[-0.1, np.full(n - 1, 0.5)], "sl_confidence in [0, 1]"),
        ("sentiment", lambda n: np.r_[np.nan, np.full(n - 1, 0.5)], "no missing sentiment values"),
    ],
)
def test_the_gx_suite_rejects_bad_signals(frame, tmp_path, column, values, check):
    table = pd.DataFrame({"timestamp": frame.index, column: values(len(frame))})
    path = tmp_path / "signals.csv"
    table.to_csv(path, index=False)
    with pytest.raises(DataError, match="signals_v1") as err:
        load(tmp_path, frame, **{"data.signals": str(path)})
    assert check in str(err.value)


def test_the_gx_suite_rejects_duplicate_and_unordered_timestamps(frame, tmp_path):
    stamps = list(frame.index[:50]) + [frame.index[10]]
    path = tmp_path / "signals.csv"
    pd.DataFrame({"timestamp": stamps, "sentiment": 0.4}).to_csv(path, index=False)
    with pytest.raises(DataError) as err:
        load(tmp_path, frame, **{"data.signals": str(path)})
    assert "timestamps are unique" in str(err.value) and "timestamps strictly increase" in str(err.value)


def test_a_signals_file_without_signal_columns_is_refused(frame, tmp_path):
    path = tmp_path / "signals.csv"
    pd.DataFrame({"timestamp": frame.index[:5], "mood": 0.4}).to_csv(path, index=False)
    with pytest.raises(DataError, match="needs a sentiment and/or sl_confidence column"):
        load(tmp_path, frame, **{"data.signals": str(path)})


# --------------------------------------------------------------------------------------------
# Sources and provenance
# --------------------------------------------------------------------------------------------


def test_bundled_data_derives_both_and_records_it(base):
    described = base.describe()
    json.dumps(described)  # lands in summary.json as it is
    assert described["sentiment_column"] is False and described["sl_confidence_column"] is False
    signals = described["signals"]
    for name in ("sentiment", "sl_confidence"):
        assert signals[name]["source"] == "derived" and signals[name]["requested"] == "auto"
        assert signals[name]["method"]
        assert set(signals[name]["test"]) >= {"mean", "share_above_0.75"}
    assert signals["walk_forward"]["refits"] == base.signals.walk_forward["refits"]
    assert base.has_sentiment and base.has_sl_confidence


def test_neutral_stays_selectable(frame, tmp_path):
    md = load(tmp_path, frame, **{"data.sentiment_source": "neutral", "data.sl_confidence_source": "neutral",
                                  "environment.neutral_sl_confidence": 0.6})
    for split in SPLITS:
        assert (md.features[split].sentiment == 0.5).all() and (md.features[split].sl_confidence == 0.6).all()
    assert not md.has_sentiment and not md.has_sl_confidence
    assert md.describe()["signals"]["sl_confidence"] == {**md.describe()["signals"]["sl_confidence"], "source": "neutral", "value": 0.6}
    assert md.signals.fitted == {}


def test_a_data_column_is_used_by_auto_and_overridden_on_request(frame, tmp_path):
    rng = np.random.default_rng(1)
    with_column = frame.assign(sl_confidence=rng.uniform(0, 1, len(frame)))
    md = load(tmp_path, with_column)
    signals = md.describe()["signals"]
    assert signals["sl_confidence"]["source"] == "column" and signals["sentiment"]["source"] == "derived"
    test = md.features["test"]
    np.testing.assert_array_equal(test.sl_confidence, with_column["sl_confidence"].loc[test.index].to_numpy())
    derived = load(tmp_path, with_column, **{"data.sl_confidence_source": "derived"})
    assert derived.describe()["signals"]["sl_confidence"]["source"] == "derived"
    assert not np.array_equal(derived.features["test"].sl_confidence, test.sl_confidence)


def test_requested_sources_that_are_not_there_are_refused(frame, tmp_path):
    with pytest.raises(DataError, match="has no 'sentiment' column"):
        load(tmp_path, frame, **{"data.sentiment_source": "column"})
    with pytest.raises(ConfigError, match="data.signals names no file"):
        load_config(B1, {"data.sl_confidence_source": "file"})
    with pytest.raises(DataError, match="table has no 'sl_confidence' column"):
        resolve_sources({"sentiment": "auto", "sl_confidence": "file"}, [], ["sentiment"])
    assert resolve_sources({"sentiment": "auto", "sl_confidence": "auto"}, ["sentiment"], ["sentiment"]) == {
        "sentiment": "file", "sl_confidence": "derived"
    }


# --------------------------------------------------------------------------------------------
# Reproducible from the saved model
# --------------------------------------------------------------------------------------------


def test_saved_model_reproduces_the_signals_of_new_bars(frame, base, tmp_path):
    path = base.signals.save(tmp_path)
    assert path.name == "signals.json"
    tree = json.loads(path.read_text())
    assert tree["sources"] == {"sentiment": "derived", "sl_confidence": "derived"}
    assert len(tree["fitted"]["sl_confidence"]["coef"]) == 10
    loaded = SignalModel.load(tmp_path)
    # a served model sees only the bars: featurise them and transform
    test_bars = chronological_splits(frame, load_config(B1).data.splits).test
    served = loaded.transform(compute_features(test_bars))
    np.testing.assert_array_equal(served.sentiment, base.features["test"].sentiment)
    np.testing.assert_array_equal(served.sl_confidence, base.features["test"].sl_confidence)


def test_loading_refuses_another_format(tmp_path, base):
    tree = base.signals.to_dict()
    (tmp_path / "signals.json").write_text(json.dumps({**tree, "features": ["ret_1"]}))
    with pytest.raises(DataError, match="fitted on features"):
        SignalModel.load(tmp_path)
    with pytest.raises(DataError, match="no signals model"):
        SignalModel.load(tmp_path / "missing")


def test_transform_needs_the_column_a_column_source_reads(base):
    model = SignalModel({"sentiment": "column", "sl_confidence": "neutral"}, {"sentiment": 0.5, "sl_confidence": 0.5})
    bars_without = compute_features(load_ohlcv(bundled_path("SPY")).iloc[:200])
    with pytest.raises(DataError, match="no 'sentiment' column"):
        model.transform(bars_without)
