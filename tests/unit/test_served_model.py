"""The model that is served is the model that was gated (issue 9, part 4).

A tiny Phase B.1 agent is trained for real on bundled SPY (TrainingSession, derived signals),
registered in a real local MLflow store (sqlite + local artifacts) from a gated run directory and
promoted to champion. `mlflow.pyfunc.load_model("models:/...@champion").predict(test bars)` must
give, bar for bar, the positions, options and option steps of the deterministic backtest that
`trainer evaluate` runs on the test split (what the gates judge). No mocks.

The trained controller is then moved by a seeded perturbation of all its weights: 300 training
steps leave it near its uniform start (argmax almost always Wait), and a policy whose preferred
option changes with the observation is the one that exercises what serving must get right:
option switches, min_duration, the termination rules and option memory.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from trainer.config import OPTION_NAMES, load_config
from trainer.errors import DataError, TrainerError

REPO = Path(__file__).resolve().parents[2]
B1 = REPO / "configs" / "phase_b1_options.yaml"
PHASE_A = REPO / "configs" / "phase_a_baseline.yaml"
WINDOW = 10
SMALL = {
    "environment.window_size": WINDOW,
    "sac.net_arch": [32, 32],
    "sac.batch_size": 32,
    "sac.buffer_size": 2000,
    "sac.learning_starts": 100,
    "training.n_envs": 2,
    "training.eval_freq": 100000,
    "checkpoints.freq": 100000,
}
B1_SMALL = {
    **SMALL,
    "options.state_dim": WINDOW * 10 + 8,
    "options.hidden_dim": 32,
    "options.batch_size": 16,
    "options.warmup_steps": 100,
    "options.train_freq": 4,
    "options.monitor.window_steps": 200,
}
FIRST_DECISION = 34 + WINDOW - 1  # FEATURE_WARMUP_BARS + window_size - 1


def split_bars(data, config) -> pd.DataFrame:
    """The raw bars of the test split, as a consumer would send them (timestamp column + OHLCV)."""
    from trainer.data.splits import chronological_splits

    test = chronological_splits(data.frame, config.data.splits).test
    return test[["open", "high", "low", "close", "volume"]].reset_index()


def train_tiny(config, data, out: Path, steps: int):
    import torch

    from trainer.training.session import TrainingSession

    torch.set_num_threads(1)
    session = TrainingSession(config, data, out, seed=0)
    assert session.train(steps) == "completed"
    return session


@pytest.fixture(scope="module")
def hierarchical(tmp_path_factory):
    """A real, tiny Phase B.1 run directory: model/ as trained, best_model/ the perturbed
    controller, and evaluation.json saying best_model is the one the gates judged."""
    import torch

    from trainer.envs.factory import load_market_data

    config = load_config(B1, B1_SMALL)
    data = load_market_data(config)
    root = tmp_path_factory.mktemp("b1")
    session = train_tiny(config, data, root / "session", 300)
    agent = session.agent
    run_dir = root / "run"
    agent.save(run_dir / "model")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in agent.learner.controller.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.3)
    agent.save(run_dir / "best_model")
    return SimpleNamespace(config=config, data=data, run_dir=run_dir, test_bars=split_bars(data, config))


def gated_run(run_dir: Path, symbol: str, algorithm: str, judged: str) -> Path:
    """Complete `run_dir` into a gated, evaluated run whose MLflow run holds the metrics its verdict
    comes from (the registry recomputes it; tests/support/gates_registry.yaml)."""
    from support.registry_runs import GATES
    from trainer.registry import load_policy, registry_client
    from trainer.tracking import configure_mlflow

    client = registry_client()
    run_id = client.create_run(configure_mlflow()).info.run_id
    metrics = {"test.sharpe": 0.5, "champion.present": 0.0, "champion.version": 0.0}
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    client.set_terminated(run_id)
    (run_dir / "summary.json").write_text(json.dumps({
        "status": "completed", "symbol": symbol, "algorithm": algorithm, "profile": "demo",
        "config_hash": "cfg", "data_digest": "digest", "data_end": "2018-12-31", "code_version": "abc",
        "mlflow_run_id": run_id, "metrics": {},
    }))
    (run_dir / "gate_full.json").write_text(json.dumps(load_policy(GATES).judge(metrics).to_dict()))
    (run_dir / "evaluation.json").write_text(json.dumps({"metrics": metrics, "model": judged}))
    return run_dir


@pytest.fixture(scope="module")
def champion(local_store, hierarchical):
    """The registered, promoted version, loaded through its alias as a consumer loads it."""
    import mlflow

    from support.registry_runs import GATES
    from trainer.registry import load_policy, promote, register_run

    version = register_run(gated_run(hierarchical.run_dir, "SPY", "hierarchical_sac", judged="best_model"), gates=GATES)
    promote("SPY", version.version, actor="test", reason="gated", policy=load_policy(GATES), profile="demo")
    uri = f"models:/{version.model_name}@champion"
    return SimpleNamespace(uri=uri, model=mlflow.pyfunc.load_model(uri))


@pytest.fixture(scope="module")
def gated_backtest(hierarchical):
    """What `trainer evaluate` computes and the gates judge: the judged model directory's
    deterministic backtest of the test split as load_market_data featurised it."""
    from trainer.agent import load_agent

    seed = hierarchical.config.training.seed  # as `trainer evaluate` calls it
    return load_agent(hierarchical.run_dir / "best_model").backtest(hierarchical.data.features["test"], seed=seed)


# ------------------------------------------------------------------------------------------
# The champion serves the gated backtest
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_champion_serves_the_gated_backtest_bar_for_bar(champion, hierarchical, gated_backtest):
    bars = hierarchical.test_bars
    served = champion.model.predict(bars)
    bt = gated_backtest
    assert list(served.columns) == ["timestamp", "exposure", "option", "option_index", "option_step"]
    assert len(served) == len(bars)
    assert (served["timestamp"].to_numpy() == bars["timestamp"].to_numpy()).all()

    # Before warm-up + window: no decision.
    head = served.iloc[:FIRST_DECISION]
    assert head["exposure"].isna().all() and (head["option"] == "").all()
    assert (head["option_index"] == -1).all() and (head["option_step"] == -1).all()

    # Every later row but the last is a backtest row: decided at bar t, stamped t + 1 there.
    decided = served.iloc[FIRST_DECISION:-1]
    assert len(decided) == len(bt.positions) > 600
    assert np.array_equal(decided["exposure"].to_numpy(), bt.positions)
    assert np.array_equal(decided["option_index"].to_numpy(), bt.options)
    assert np.array_equal(decided["option_step"].to_numpy(), bt.option_steps)
    assert list(decided["option"]) == [OPTION_NAMES[i] for i in bt.options]
    assert (served["timestamp"].iloc[FIRST_DECISION + 1 :].to_numpy() == pd.to_datetime(bt.timestamps).to_numpy()).all()

    # The last bar's decision (what a live consumer acts on) exists although no later bar does.
    last = served.iloc[-1]
    assert np.isfinite(last["exposure"]) and last["option"] in OPTION_NAMES and last["option_step"] >= 0

    # The comparison means something: the policy trades and uses most options.
    assert len(set(bt.options.tolist())) >= 4 and np.abs(bt.positions).max() > 0.05


@pytest.mark.slow
def test_the_version_serves_the_judged_model_directory_not_the_final_one(champion, hierarchical, gated_backtest):
    from trainer.agent import load_agent

    final = load_agent(hierarchical.run_dir / "model").backtest(hierarchical.data.features["test"])
    served = champion.model.predict(hierarchical.test_bars).iloc[FIRST_DECISION:-1]
    assert not np.array_equal(final.options, gated_backtest.options)
    assert np.array_equal(served["option_index"].to_numpy(), gated_backtest.options)


def test_gated_model_dir_follows_evaluation_json(tmp_path):
    from trainer.run_dir import RunDir

    def gated_model_dir(path):
        return RunDir(path).judged_model_dir()

    for folder in ("model", "best_model"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "meta.json").write_text("{}")
    assert gated_model_dir(tmp_path) == tmp_path / "best_model"  # no evaluation.json: evaluate's rule
    (tmp_path / "evaluation.json").write_text(json.dumps({"model": "model"}))
    assert gated_model_dir(tmp_path) == tmp_path / "model"
    (tmp_path / "evaluation.json").write_text(json.dumps({"model": "../elsewhere"}))
    with pytest.raises(TrainerError, match="not a model directory of the run"):
        gated_model_dir(tmp_path)


@pytest.mark.slow
def test_served_options_persist_where_the_stateless_choice_switches(hierarchical, gated_backtest):
    """The served walk keeps an option at least its min_duration; the old `Agent.predict` (argmax
    of the controller on each bar alone, no option memory, no min_duration) switches inside them."""
    from trainer.agent import load_agent
    from trainer.envs.factory import make_vec_env
    from trainer.hierarchy.option_env import OptionVecEnv
    from trainer.options import availability_mask, build_options

    agent = load_agent(hierarchical.run_dir / "best_model")
    min_duration = [agent.config.options.option_block(i).min_duration for i in range(len(OPTION_NAMES))]
    options, steps = gated_backtest.options, gated_backtest.option_steps
    starts = np.flatnonzero(steps == 0)
    lengths = np.diff(np.append(starts, len(steps)))
    for start, length in zip(starts[:-1], lengths[:-1]):  # the last selection is cut by the split's end
        assert (options[start : start + length] == options[start]).all()
        assert np.array_equal(steps[start : start + length], np.arange(length))
        assert length >= min_duration[options[start]], (start, OPTION_NAMES[options[start]], length)
    assert (lengths[:-1] > np.array([min_duration[o] for o in options[starts[:-1]]])).any()

    # The stateless choice on the same observations (the ones the backtest's walk saw).
    venv = OptionVecEnv(make_vec_env(hierarchical.data.features["test"], agent.config, 1, 0, full_pass=True),
                        agent.learner, agent.config.options, agent.layout, None, deterministic=True)
    obs, seen = venv.reset(), []
    while True:
        seen.append(obs[0, : agent.observation_size].copy())  # the env's observation, without the one-hot
        action, _ = agent.sac.predict(obs, deterministic=True)
        obs, _, dones, _ = venv.step(action)
        if dones[0]:
            break
    seen = np.asarray(seen)
    masks = availability_mask(build_options(agent.config.options), agent.layout.market_state(seen))
    stateless = agent.learner.select_options(seen, masks, deterministic=True)
    forced = steps < np.array([min_duration[o] for o in options])  # bars min_duration holds the option
    assert ((stateless != options) & forced).sum() > 20


# ------------------------------------------------------------------------------------------
# One featurisation: served signals are the run's
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_signals_are_saved_with_the_model_and_served_features_equal_training_features(hierarchical):
    from trainer.agent import check_bars, load_agent

    agent = load_agent(hierarchical.run_dir / "best_model")
    assert (hierarchical.run_dir / "best_model" / "signals.json").is_file()
    assert agent.signals.to_dict() == hierarchical.data.signals.to_dict()
    assert agent.signals.sources == {"sentiment": "derived", "sl_confidence": "derived"}
    served = agent.featurise(check_bars(hierarchical.test_bars))
    trained = hierarchical.data.features["test"]
    for name in ("window", "close", "trend_strength", "sentiment", "sl_confidence"):
        assert np.array_equal(getattr(served, name), getattr(trained, name)), name
    assert served.index.equals(trained.index)


@pytest.mark.slow
def test_signal_columns_a_derived_model_does_not_read_change_nothing(champion, hierarchical):
    bars = hierarchical.test_bars
    plain = champion.model.predict(bars)
    noisy = champion.model.predict(bars.assign(sentiment=0.99, sl_confidence=0.01))
    pd.testing.assert_frame_equal(plain, noisy)


# ------------------------------------------------------------------------------------------
# Signature and input example
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_signature_and_input_example(champion):
    import mlflow

    info = mlflow.models.get_model_info(champion.uri)
    inputs = {spec.name: (spec.type.name, spec.required) for spec in info.signature.inputs.inputs}
    assert inputs == {
        "timestamp": ("datetime", True), "open": ("double", True), "high": ("double", True),
        "low": ("double", True), "close": ("double", True), "volume": ("double", True),
        "sentiment": ("double", False), "sl_confidence": ("double", False),
    }
    assert info.signature.outputs.input_names() == ["timestamp", "exposure", "option", "option_index", "option_step"]
    example = mlflow.models.Model.load(champion.uri).load_input_example(mlflow.artifacts.download_artifacts(champion.uri))
    assert list(example.columns) == ["timestamp", "open", "high", "low", "close", "volume"]
    served = champion.model.predict(example)
    assert served["exposure"].notna().sum() == 10 and served["exposure"].isna().sum() == FIRST_DECISION


# ------------------------------------------------------------------------------------------
# Input validation: errors name what is wrong
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b.drop(columns=["close"]), r"missing column\(s\) close"),
        (lambda b: b.drop(columns=["timestamp"]), r"missing column\(s\) timestamp"),
        (lambda b: b.iloc[:FIRST_DECISION], rf"{FIRST_DECISION} rows, this model needs at least {FIRST_DECISION + 1}"),
        (lambda b: b.iloc[::-1], r"strictly increasing .* row 1 \(.*\) is earlier than row 0"),
        (lambda b: pd.concat([b.iloc[:50], b.iloc[49:]]), r"strictly increasing .* row 50 \(.*\) repeats row 49"),
        (lambda b: b.assign(timestamp=["not a date"] + list(b["timestamp"].iloc[1:])), r"not a date, first at row 0"),
        (lambda b: b.assign(close=b["close"].where(b.index != 60, np.nan)), r"column close must be a finite price > 0.*row 60"),
        (lambda b: b.assign(volume=-1.0), r"column volume must be a finite number >= 0"),
        (lambda b: b["close"], r"expected a pandas DataFrame of bars, got Series"),
    ],
)
def test_replay_refuses_bad_bars_naming_what_is_wrong(hierarchical, change, message):
    from trainer.agent import load_agent

    agent = load_agent(hierarchical.run_dir / "best_model")
    with pytest.raises(DataError, match=message):
        agent.replay(change(hierarchical.test_bars))


@pytest.mark.slow
def test_the_served_model_refuses_bad_bars_too(champion, hierarchical):
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match=r"missing inputs \['close'\]"):  # the signature, before our code
        champion.model.predict(hierarchical.test_bars.drop(columns=["close"]))
    with pytest.raises(DataError, match="strictly increasing"):
        champion.model.predict(hierarchical.test_bars.iloc[::-1].reset_index(drop=True))
    with pytest.raises(DataError, match="needs at least"):
        champion.model.predict(hierarchical.test_bars.iloc[:20])


@pytest.mark.slow
def test_a_signal_read_from_the_data_is_required_and_checked(hierarchical):
    from trainer.agent import load_agent
    from trainer.data.signals import SignalModel

    agent = load_agent(hierarchical.run_dir / "best_model")
    agent.signals = SignalModel({"sentiment": "column", "sl_confidence": "neutral"}, agent.signals.neutral)
    bars = hierarchical.test_bars
    with pytest.raises(DataError, match=r"missing column\(s\) sentiment .*reads from the data"):
        agent.replay(bars)
    with pytest.raises(DataError, match=r"column sentiment must be a number in \[0, 1\]"):
        agent.replay(bars.assign(sentiment=1.5))
    replay = agent.replay(bars.assign(sentiment=0.9))
    assert np.isfinite(replay.exposure[FIRST_DECISION:]).all()


# ------------------------------------------------------------------------------------------
# Phase A: exposure only
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_phase_a_serves_its_backtest_exposure(local_store, tmp_path):
    import mlflow

    from trainer.agent import load_agent
    from trainer.envs.factory import load_market_data
    from trainer.pyfunc_model import log_agent_model
    from trainer.registry import registry_client
    from trainer.tracking import configure_mlflow

    config = load_config(PHASE_A, SMALL)
    data = load_market_data(config)
    session = train_tiny(config, data, tmp_path / "session", 200)
    session.agent.save(tmp_path / "model")
    client = registry_client()
    run_id = client.create_run(configure_mlflow()).info.run_id
    info = log_agent_model(tmp_path / "model", run_id)

    served = mlflow.pyfunc.load_model(info.model_uri).predict(split_bars(data, config))
    bt = load_agent(tmp_path / "model").backtest(data.features["test"])
    assert list(served.columns) == ["timestamp", "exposure"]
    assert bt.options is None and bt.option_steps is None
    assert served["exposure"].iloc[:FIRST_DECISION].isna().all()
    assert np.array_equal(served["exposure"].iloc[FIRST_DECISION:-1].to_numpy(), bt.positions)
    assert np.isfinite(served["exposure"].iloc[-1])


@pytest.mark.slow
def test_backtest_reports_the_step_within_the_option_per_bar(hierarchical, gated_backtest):
    assert gated_backtest.option_steps.dtype == np.int64
    assert len(gated_backtest.option_steps) == len(gated_backtest.options) == len(gated_backtest.positions)
    assert gated_backtest.option_steps[0] == 0


@pytest.mark.slow
def test_a_model_directory_missing_its_signal_model_is_refused(hierarchical, tmp_path):
    from trainer.agent import load_agent

    copy = tmp_path / "copy"
    shutil.copytree(hierarchical.run_dir / "best_model", copy)
    (copy / "signals.json").unlink()
    with pytest.raises(TrainerError, match="signals.json is missing"):
        load_agent(copy)


@pytest.mark.slow
def test_the_inference_dag_writes_the_champions_decision_on_the_latest_bars(champion, tmp_path):
    """dags/champion_inference.py's task body against the real registered champion: the exposure
    it writes is the champion's decision on the last of the latest bars of the bundled data."""
    from trainer.data.loaders import load_ohlcv, resolve_source
    from trainer.orchestration.pipeline import INFERENCE_BARS, write_target_exposure

    name = champion.uri.split("/", 1)[1].split("@")[0]
    result = write_target_exposure("SPY", name, {"run_id": "asset_triggered__1", "dag": None}, out_dir=str(tmp_path))
    written = json.loads((tmp_path / "SPY" / "target_exposure.json").read_text())
    assert written == {k: v for k, v in result.items() if k != "path"}

    bars = load_ohlcv(resolve_source("SPY", None)).tail(INFERENCE_BARS).reset_index()
    expected = champion.model.predict(bars).dropna(subset=["exposure"]).iloc[-1]
    assert written["exposure"] == pytest.approx(float(expected["exposure"]))
    assert written["option"] == expected["option"] and written["as_of"] == str(expected["timestamp"])
    assert written["model_uri"] == champion.uri and written["model_version"] >= 1
    assert written["as_of"] == str(bars["timestamp"].iloc[-1])  # today's decision, on the newest bar
