"""The run directory's one owner (trainer/run_dir.py): layout, the metrics merge, the judged model."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from trainer.errors import TrainerError
from trainer.run_dir import (
    BACKTEST_FILE,
    CONFIG_FILE,
    EVALUATION_FILE,
    SUMMARY_FILE,
    RunDir,
)


def write(path, payload) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))


def test_layout_names_every_file_once(tmp_path):
    run = RunDir(str(tmp_path))
    assert run.path == tmp_path
    assert run.summary_path == tmp_path / SUMMARY_FILE == tmp_path / "summary.json"
    assert run.evaluation_path == tmp_path / EVALUATION_FILE == tmp_path / "evaluation.json"
    assert run.backtest_path == tmp_path / BACKTEST_FILE == tmp_path / "backtest.csv"
    assert run.config_path == tmp_path / CONFIG_FILE == tmp_path / "config.resolved.yaml"
    assert (run.model_dir, run.best_model_dir, run.report_dir) == (
        tmp_path / "model", tmp_path / "best_model", tmp_path / "report"
    )
    assert run.gate_path("full") == tmp_path / "gate_full.json"
    assert run.gate_path("smoke") == tmp_path / "gate_smoke.json"


def test_metrics_merge_evaluation_over_summary(tmp_path):
    run = RunDir(tmp_path)
    write(run.summary_path, {"status": "completed", "metrics": {"test.sharpe": -0.5, "train.losses_finite": 1.0}})
    assert run.metrics() == {"test.sharpe": -0.5, "train.losses_finite": 1.0}
    assert run.read_evaluation() is None
    run.write_evaluation({"metrics": {"test.sharpe": 0.8, "champion.present": 0.0}})
    assert run.metrics() == {"test.sharpe": 0.8, "train.losses_finite": 1.0, "champion.present": 0.0}


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda run: None, r"summary.json not found \(is this a run directory written by `trainer train`\?\)"),
        (lambda run: write(run.summary_path, "{oops"), "summary.json is not valid JSON"),
        (lambda run: write(run.summary_path, {"status": "completed"}), 'summary.json has no "metrics" object'),
        (
            lambda run: (write(run.summary_path, {"metrics": {}}), write(run.evaluation_path, {"bars": 3})),
            'evaluation.json has no "metrics" object',
        ),
    ],
)
def test_readers_name_the_file_and_the_problem(tmp_path, setup, message):
    run = RunDir(tmp_path)
    setup(run)
    with pytest.raises(TrainerError, match=message):
        run.metrics()


def test_a_required_evaluation_must_exist(tmp_path):
    with pytest.raises(TrainerError, match=r"evaluation.json not found \(run `trainer evaluate` first\)"):
        RunDir(tmp_path).read_evaluation(required=True)


def test_gate_verdict_round_trip_and_stage_check(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(TrainerError, match=r"gate_full.json not found \(run `trainer gate --stage full` first\)"):
        run.read_gate_verdict("full")
    path = run.write_gate_verdict("full", {"stage": "full", "passed": True, "results": []})
    assert path == run.gate_path("full")
    assert run.read_gate_verdict("full")["passed"] is True
    write(run.gate_path("full"), {"verdict": {"stage": "full", "passed": False}})  # older nested layout
    assert run.read_gate_verdict("full")["passed"] is False
    write(run.gate_path("full"), {"stage": "smoke", "passed": True})
    with pytest.raises(TrainerError, match="stage is 'smoke', expected 'full'"):
        run.read_gate_verdict("full")


def test_judged_model_dir_follows_evaluation_json(tmp_path):
    run = RunDir(tmp_path)
    write(run.model_dir / "meta.json", {})
    assert run.judged_model_dir() == run.model_dir  # no best model
    (run.best_model_dir).mkdir()
    assert run.judged_model_dir() == run.model_dir  # best_model/ without meta.json is not a model
    write(run.best_model_dir / "meta.json", {})
    assert run.judged_model_dir() == run.best_model_dir
    run.write_evaluation({"metrics": {}, "model": "model"})
    assert run.judged_model_dir() == run.model_dir
    run.write_evaluation({"metrics": {}, "model": "../elsewhere"})
    with pytest.raises(TrainerError, match="not a model directory of the run"):
        run.judged_model_dir()


def test_backtest_round_trip(tmp_path):
    run = RunDir(tmp_path)
    assert run.read_backtest() is None
    frame = pd.DataFrame({
        "timestamp": pd.date_range("2020-01-01", periods=3, freq="D"),
        "candidate_return": [0.01, -0.02, 0.0],
        "champion_return": [0.0, 0.01, 0.02],
    })
    assert run.write_backtest(frame) == run.backtest_path
    back = run.read_backtest()
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    assert pd.api.types.is_datetime64_any_dtype(back["timestamp"])
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files behind
