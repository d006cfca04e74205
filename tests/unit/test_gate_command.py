"""`trainer gate` in-process on small hand-written run directories."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from trainer.cli import main

GATES = str(Path(__file__).resolve().parents[2] / "configs" / "gates.yaml")

TRAIN_METRICS = {
    "options.min_selections": 40.0,
    "options.min_avg_duration": 3.3,  # ClosePosition: not gated in the full stage any more
    "options.min_usage_pct": 0.05,
    "options.max_usage_pct": 0.22,
    "options.late.min_duration_margin": 0.3,
    "options.late.step_weighted_duration": 12.0,
    "options.late.min_selection_share": 0.12,
    "options.late.max_selection_share": 0.22,
    "options.late.min_usage_pct": 0.05,
    "monitor.collapse_warnings": 0.0,
    "train.losses_finite": 1.0,
    "train.policy_loss_converged": 1.0,
    "train.value_loss_final": 40.0,
    "train.value_loss_late_mean": 45.0,
    "train.option_updates": 3_900.0,
}
EVAL_METRICS = {
    "test.sharpe": 0.8,
    "test.exposure": 0.35,
    "test.turnover": 0.04,
    "test.options.min_selection_share": 0.11,
    "test.options.max_selection_share": 0.24,
    "test.total_return": 0.15,
    "test.max_drawdown": 0.12,
    "baseline.sharpe": 0.41,
    "stats.psr_zero": 0.97,
    "stats.sharpe_diff_pvalue": 0.03,
    "champion.present": 0.0,  # the first model of the symbol: judged on the absolute tiers
    "champion.version": 0.0,
}


def make_run(root: Path, metrics: dict, evaluation: dict | None = None, status: str = "completed") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    summary = {"status": status, "reason": "", "symbol": "SPY", "metrics": metrics}
    (root / "summary.json").write_text(json.dumps(summary))  # json writes NaN as NaN
    if evaluation is not None:
        (root / "evaluation.json").write_text(json.dumps({"metrics": evaluation}))
    return root


def gate(tmp_path, *args) -> tuple[int, dict]:
    result_json = tmp_path / "result.json"
    code = main(["--result-json", str(result_json), "gate", "--gates", GATES, *args])
    return code, json.loads(result_json.read_text())


def test_passing_full_run_merges_evaluation_metrics(tmp_path, capsys):
    run_dir = make_run(tmp_path / "run", TRAIN_METRICS, EVAL_METRICS)
    code, result = gate(tmp_path, "--run", str(run_dir), "--stage", "full")
    assert code == 0
    assert result["passed"] is True and result["tier_reached"] == "target"
    verdict = json.loads((run_dir / "gate_full.json").read_text())
    assert verdict["passed"] is True and verdict["run_status"] == "completed"
    sharpe = next(r for r in verdict["results"] if r["id"] == "target_sharpe_vs_baseline")
    assert sharpe["observed"] == 0.8 and sharpe["threshold_shown"] == "baseline.sharpe = 0.41"
    out = capsys.readouterr().out
    assert "PASSED" in out and "min_option_diversity_training" in out
    assert "min_sharpe_vs_champion: not_applicable: applies only when champion.present == 1" in out


def test_a_weaker_candidate_does_not_pass_against_the_champion(tmp_path, capsys):
    against = {**EVAL_METRICS, "champion.present": 1.0, "champion.version": 4.0, "champion.sharpe": 1.5,
               "test.sharpe": 0.01, "stats.vs_champion.sharpe_diff": -1.49, "stats.vs_champion.pvalue_worse": 0.02}
    run_dir = make_run(tmp_path / "run", TRAIN_METRICS, against)
    code, result = gate(tmp_path, "--run", str(run_dir), "--stage", "full")
    assert code == 1 and result["tier_reached"] == "none"
    minimum = {g for g in result["blocking_failed"] if g.startswith("min_")}
    assert minimum == {"min_sharpe_vs_champion", "min_not_worse_than_champion"}  # test Sharpe > 0 alone is not enough
    row = next(line for line in capsys.readouterr().out.splitlines() if "min_sharpe_vs_champion" in line)
    assert "test.sharpe 0.01, champion.sharpe 1.5" in row


def test_exposure_and_turnover_are_shown_beside_the_sharpe_gate(tmp_path, capsys):
    flat = {**EVAL_METRICS, "test.exposure": 0.019, "test.turnover": 0.0031}
    run_dir = make_run(tmp_path / "run", TRAIN_METRICS, flat)
    code, result = gate(tmp_path, "--run", str(run_dir), "--stage", "full")
    assert code == 1 and result["blocking_failed"] == ["min_test_exposure_floor"]
    verdict = json.loads((run_dir / "gate_full.json").read_text())
    sharpe = next(r for r in verdict["results"] if r["id"] == "min_test_sharpe_positive")
    assert sharpe["status"] == "pass" and sharpe["context"] == {"test.exposure": 0.019, "test.turnover": 0.0031}
    row = next(line for line in capsys.readouterr().out.splitlines() if "min_test_sharpe_positive" in line)
    assert "test.exposure 0.019" in row and "test.turnover 0.0031" in row


def test_evaluation_json_overrides_summary(tmp_path):
    run_dir = make_run(tmp_path / "run", {**TRAIN_METRICS, "test.sharpe": -0.5}, EVAL_METRICS)
    assert gate(tmp_path, "--run", str(run_dir), "--stage", "full")[0] == 0


def test_without_evaluation_the_test_metrics_are_missing(tmp_path):
    run_dir = make_run(tmp_path / "run", TRAIN_METRICS)
    code, result = gate(tmp_path, "--run", str(run_dir), "--stage", "full")
    assert code == 1
    assert "min_test_sharpe_positive" in result["missing"]


def test_failing_smoke_run(tmp_path, capsys):
    run_dir = make_run(tmp_path / "run", {**TRAIN_METRICS, "options.min_avg_duration": 2.0})
    code, result = gate(tmp_path, "--run", str(run_dir), "--stage", "smoke")
    assert code == 1
    assert result["passed"] is False and result["failed"] == ["smoke_avg_duration"]
    assert json.loads((run_dir / "gate_smoke.json").read_text())["passed"] is False
    assert "FAILED" in capsys.readouterr().out


def test_collapsed_run(tmp_path, capsys):
    collapsed = {**TRAIN_METRICS, "monitor.collapse_warnings": 5.0, "options.min_selections": 0.0,
                 "options.min_usage_pct": 0.0, "options.max_usage_pct": 0.93}
    run_dir = make_run(tmp_path / "run", collapsed, status="aborted: option collapse")
    code, result = gate(tmp_path, "--run", str(run_dir), "--stage", "smoke")
    assert code == 1
    assert set(result["failed"]) == {"smoke_all_options_selected", "smoke_no_collapse_warning"}
    assert "aborted: option collapse" in capsys.readouterr().out


def test_nan_metric_is_missing_and_fails(tmp_path):
    run_dir = make_run(tmp_path / "run", {**TRAIN_METRICS, "train.value_loss_late_mean": math.nan}, EVAL_METRICS)
    code, result = gate(tmp_path, "--run", str(run_dir), "--stage", "full")
    assert code == 1
    assert result["missing"] == ["min_value_loss_late"]
    assert result["tier_reached"] == "none"


def test_required_tier_target_and_out_path(tmp_path):
    run_dir = make_run(tmp_path / "run", {**TRAIN_METRICS, "options.late.step_weighted_duration": 7.0}, EVAL_METRICS)
    out = tmp_path / "verdicts" / "v.json"
    code, result = gate(tmp_path, "--run", str(run_dir), "--stage", "full", "--required-tier", "target", "--out", str(out))
    assert code == 1 and result["tier_reached"] == "minimum"
    assert json.loads(out.read_text())["required_tier"] == "target"
    assert result["verdict_path"] == str(out)


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: d.mkdir(), "summary.json not found"),
        (lambda d: None, "no such run directory"),
        (lambda d: (d.mkdir(), (d / "summary.json").write_text("{not json")), "summary.json is not valid JSON"),
        (lambda d: (d.mkdir(), (d / "summary.json").write_text('{"status": "completed"}')), 'no "metrics" object'),
    ],
)
def test_unreadable_runs_exit_2(tmp_path, capsys, setup, message):
    run_dir = tmp_path / "run"
    setup(run_dir)
    code, result = gate(tmp_path, "--run", str(run_dir), "--stage", "smoke")
    assert code == 2
    assert message in result["error"]
    assert message in capsys.readouterr().err


def test_bad_gates_file_exits_2(tmp_path):
    run_dir = make_run(tmp_path / "run", TRAIN_METRICS)
    bad = tmp_path / "gates.yaml"
    bad.write_text("gates:\n  - id: x\n    metric: m\n")
    result_json = tmp_path / "result.json"
    code = main(["--result-json", str(result_json), "gate", "--gates", str(bad), "--run", str(run_dir), "--stage", "smoke"])
    assert code == 2
    assert f"{bad}: gate 'x': description" in json.loads(result_json.read_text())["error"]


def test_mlflow_run_id(tmp_path, monkeypatch):
    """An MLflow run id downloads summary.json and evaluation.json from a real (sqlite) store."""
    import mlflow

    from trainer.tracking import configure_mlflow

    monkeypatch.setenv("TRAINER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    artifacts = make_run(tmp_path / "artifacts", TRAIN_METRICS, EVAL_METRICS)
    configure_mlflow()
    client = mlflow.MlflowClient()
    run_id = client.create_run(mlflow.get_experiment_by_name("hierarchical-options").experiment_id).info.run_id
    client.log_artifact(run_id, str(artifacts / "summary.json"))

    code, result = gate(tmp_path, "--run", run_id, "--stage", "full")
    assert code == 1 and "min_test_sharpe_positive" in result["missing"]  # not evaluated yet

    client.log_artifact(run_id, str(artifacts / "evaluation.json"))
    code, result = gate(tmp_path, "--run", run_id, "--stage", "full")
    assert code == 0 and result["tier_reached"] == "target"
    assert json.loads((tmp_path / "gate_full.json").read_text())["run"] == run_id

    empty_run = client.create_run(mlflow.get_experiment_by_name("hierarchical-options").experiment_id).info.run_id
    code, result = gate(tmp_path, "--run", empty_run, "--stage", "full")
    assert code == 2 and "cannot download summary.json" in result["error"]
