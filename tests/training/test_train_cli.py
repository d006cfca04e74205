"""`trainer train` / `trainer evaluate` end to end on the bundled SPY data with tiny networks:
outputs, MLflow logging, kill-and-resume, preemption, NaN handling, Phase A, evaluation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
TRAINER = str(Path(sys.executable).parent / "trainer")
B1 = str(ROOT / "configs" / "phase_b1_options.yaml")
PHASE_A = str(ROOT / "configs" / "phase_a_baseline.yaml")

# Small and fast, same code paths: a 10-bar window (10 * 10 + 8 = 108 observation values).
COMMON = ["environment.window_size=10", "sac.net_arch=[32,32]", "sac.batch_size=32", "sac.buffer_size=5000",
          "sac.learning_starts=100", "checkpoints.freq=100"]
OPTIONS = ["options.state_dim=108", "options.hidden_dim=32", "options.warmup_steps=100", "options.batch_size=16",
           "options.monitor.window_steps=100"]
TINY = [arg for pair in COMMON + OPTIONS for arg in ("--set", pair)]
TINY_A = [arg for pair in COMMON for arg in ("--set", pair)]

pytestmark = pytest.mark.slow


@pytest.fixture()
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def trainer(*args, env=None, check=True, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([TRAINER, *args], cwd=ROOT, env=env or os.environ.copy(), capture_output=True,
                          text=True, timeout=600, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"trainer {' '.join(args)} exited {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc


def train_args(out: Path, steps: int = 300, config: str = B1, extra: list[str] | None = None) -> list[str]:
    tiny = TINY if config == B1 else TINY_A
    return ["train", "--config", config, "--symbol", "SPY", "--total-timesteps", str(steps), "--n-envs", "2",
            "--eval-freq", "200", "--output-dir", str(out), *tiny, *(extra or [])]


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """One 300-step hierarchical run logged to MLflow, for the tests that read or evaluate it
    (run directory, and the environment that points at its state and MLflow store)."""
    root = tmp_path_factory.mktemp("shared-run")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["TRAINER_STATE_DIR"] = str(root / "state")
    trainer("--result-json", str(root / "result.json"), *train_args(root / "run"), env=env)
    return root / "run", env


def test_hierarchical_run_writes_every_output_and_logs_to_mlflow(shared_run):
    out, env = shared_run
    result = out.parent / "result.json"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["total_timesteps"] == 300
    assert summary["algorithm"] == "hierarchical_sac" and summary["symbol"] == "SPY"
    assert len(summary["data_digest"]) == 64 and summary["config_hash"]
    metrics = summary["metrics"]
    assert metrics["options.min_selections"] >= 1
    assert metrics["train.losses_finite"] == 1.0
    assert metrics["options.temperature"] == pytest.approx(max(0.1, 0.9995 ** metrics["train.option_updates"]))
    for name in ("sac.zip", "controller.pt", "meta.json", "config.resolved.yaml"):
        assert (out / "model" / name).exists()
        assert (out / "best_model" / name).exists()
    records = json.loads((out / "monitor_metrics.json").read_text())
    assert [r["timesteps"] for r in records] == [100, 200, 300]
    assert json.loads((out / "eval_history.json").read_text())[0]["timesteps"] == 200
    assert json.loads(result.read_text())["mlflow_run_id"] == summary["mlflow_run_id"]

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{Path(env['TRAINER_STATE_DIR']) / 'mlflow' / 'mlflow.db'}")
    run = mlflow.get_run(summary["mlflow_run_id"])
    assert run.data.params["options.entropy_bonus"] == "0.01"
    assert run.data.tags["data_digest"] == summary["data_digest"]
    assert "options/usage_pct/wait" in run.data.metrics and "eval/sharpe" in run.data.metrics
    assert run.inputs.dataset_inputs[0].dataset.name == "SPY"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"summary.json", "monitor_metrics.json", "model", "best_model"} <= artifacts


def test_resume_of_a_completed_run_reuses_it(shared_run):
    out, env = shared_run
    before = (out / "summary.json").read_text()
    started = time.monotonic()
    proc = trainer(*train_args(out), "--resume", env=env)
    assert "already completed" in proc.stderr
    assert (out / "summary.json").read_text() == before
    assert time.monotonic() - started < 60


def test_sigkill_then_resume_finishes_with_the_same_step_count(state):
    out = state / "run"
    proc = subprocess.Popen([TRAINER, *train_args(out, steps=600), "--no-mlflow"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ckpt_root = out / "checkpoints"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any(ckpt_root.glob("ckpt-*/COMPLETE")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists()
    # A half-written checkpoint left by a crash is skipped, not loaded.
    (ckpt_root / "ckpt-9999999999").mkdir()
    resumed = trainer(*train_args(out, steps=600), "--no-mlflow", "--resume")
    assert "skipping incomplete checkpoint" in resumed.stderr
    assert "resumed from" in resumed.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["total_timesteps"] == 600


def test_sigterm_writes_a_checkpoint_and_exits_retryable(state):
    out = state / "run"
    proc = subprocess.Popen([TRAINER, *train_args(out, steps=3000), "--no-mlflow"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any((out / "checkpoints").glob("ckpt-*/COMPLETE")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 75, stderr[-2000:]
    assert "preempted" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr
    newest = sorted((out / "checkpoints").glob("ckpt-*/COMPLETE"))[-1].parent
    assert json.loads((newest / "state.json").read_text())["num_timesteps"] > 100


def test_nan_in_the_data_stops_with_a_named_error_and_saves_no_model(state):
    frame = pd.read_csv(ROOT / "trainer" / "data" / "bundled" / "SPY.csv")
    frame["sentiment"] = 0.5
    frame.loc[200:, "sentiment"] = np.nan  # inside the train split, after the warm-up
    data = state / "spy_nan.csv"
    frame.to_csv(data, index=False)
    out = state / "run"
    proc = trainer(*train_args(out), "--data", str(data), "--no-mlflow", check=False)
    assert proc.returncode == 2
    assert "non-finite observation value" in proc.stderr and "portfolio/context value" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "model").exists()
    assert json.loads((out / "summary.json").read_text())["status"].startswith("failed: ")


def test_phase_a_runs_through_the_same_command(state):
    out = state / "phase_a"
    trainer(*train_args(out, config=PHASE_A), "--no-mlflow")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algorithm"] == "sac" and summary["status"] == "completed"
    assert not (out / "model" / "controller.pt").exists()
    assert summary["metrics"]["eval.sharpe"] is not None


def test_bad_config_and_symbol_are_refused_without_traceback(state):
    proc = trainer(*train_args(state / "r"), "--set", "options.scalp.min_duration=-1", check=False)
    assert proc.returncode == 2
    assert "options.scalp.min_duration: must be >= 0" in proc.stderr and "Traceback" not in proc.stderr
    proc = trainer("train", "--config", B1, "--symbol", "SPY;rm -rf /", check=False)
    assert proc.returncode == 2 and "invalid symbol" in proc.stderr
    proc = trainer(*train_args(state / "r"), "--set", "environment.window_size=12", check=False)
    assert proc.returncode == 2 and "options.state_dim is 108" in proc.stderr and "128" in proc.stderr


def test_evaluate_backtests_against_buy_and_hold_and_a_registered_phase_a(shared_run):
    out, env = shared_run
    trainer("evaluate", "--run", str(out), env=env)
    evaluation = json.loads((out / "evaluation.json").read_text())
    metrics = evaluation["metrics"]
    assert evaluation["baseline"]["source"] == "trained"
    for key in ("test.sharpe", "test.max_drawdown", "buy_and_hold.sharpe", "baseline.sharpe", "stats.psr_zero",
                "stats.dsr", "test.options.min_selections"):
        assert key in metrics and metrics[key] is not None, key
    # The paired test needs both books to move; a 300-step candidate may never trade.
    assert (metrics["stats.sharpe_diff_pvalue"] is None) == (metrics["test.exposure"] == 0.0)
    backtest = pd.read_csv(out / "backtest.csv")
    assert len(backtest) == evaluation["bars"]
    # buy-and-hold's total return is the asset's own compounded return over the same bars
    assert metrics["buy_and_hold.total_return"] == pytest.approx(np.prod(1 + backtest["buy_and_hold_return"]) - 1)
    assert "not distinguishable" in evaluation["interpretation"] or "distinguishable" in evaluation["interpretation"]
    # a second evaluation reuses the registered baseline instead of training another
    trainer("evaluate", "--run", str(out), env=env)
    assert json.loads((out / "evaluation.json").read_text())["baseline"]["source"] == "registry"


def test_collapse_aborts_the_run_and_fails_the_smoke_gate(state):
    """A deliberately collapsed run: any option above 20% of a window counts as collapse, so the
    early stop fires after warmup and the smoke gate refuses the run."""
    out = state / "collapsed"
    proc = trainer(*train_args(out, steps=1500), "--no-mlflow",
                   "--set", "options.monitor.collapse_threshold=0.2", "--set", "options.monitor.collapse_patience=2",
                   check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "OPTION COLLAPSE DETECTED" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "aborted: option collapse"
    assert "consecutive windows" in summary["reason"]
    assert summary["total_timesteps"] < 1500  # stopped early instead of burning the budget
    assert summary["metrics"]["monitor.collapse_warnings"] >= 2
    gate = trainer("gate", "--run", str(out), "--stage", "smoke", check=False)
    assert gate.returncode == 1
    verdict = json.loads((out / "gate_smoke.json").read_text())
    assert not verdict["passed"]
    failed = {r["id"] for r in verdict["results"] if r["status"] != "pass"}
    assert "smoke_no_collapse_warning" in failed


def test_seed_smoke_expectations_on_a_shorter_run(state):
    """The seed's first-5k-steps expectations with the shipped networks and 4 envs, on 2,500 steps
    (the full 10k-step run is benchmarks/smoke_run.py, its output in the README): every option
    selected, average durations > 3, no collapse warning, temperature decayed by the formula."""
    out = state / "smoke"
    trainer("train", "--config", B1, "--symbol", "SPY", "--total-timesteps", "2500", "--n-envs", "4",
            "--eval-freq", "2500", "--output-dir", str(out), "--no-mlflow",
            "--set", "options.warmup_steps=1000", "--set", "options.monitor.window_steps=500",
            "--set", "sac.learning_starts=500", "--set", "sac.buffer_size=10000")
    records = json.loads((out / "monitor_metrics.json").read_text())
    names = ("open_long", "open_short", "close_position", "trend_follow", "scalp", "wait")
    for name in names:
        assert sum(r[f"options/selections/{name}"] for r in records) >= 1, name
    for name in names:  # window means weighted by selections: the option's average over the run
        pairs = [(r[f"options/avg_duration/{name}"], r[f"options/selections/{name}"]) for r in records
                 if r[f"options/avg_duration/{name}"] is not None]
        assert sum(d * n for d, n in pairs) / sum(n for _, n in pairs) > 3, name
    assert not any(r["collapse_warning"] for r in records)
    last = records[-1]
    assert last["options/num_updates"] > 0
    assert last["options/temperature"] == pytest.approx(max(0.1, 0.9995 ** last["options/num_updates"]), rel=1e-9)


def test_two_runs_with_one_seed_give_identical_metrics(state):
    """Same seed, same machine, two processes: every metric, eval record and option window equal."""
    outputs = []
    for name in ("a", "b"):
        out = state / name
        trainer(*train_args(out, steps=600), "--set", "options.behaviour_refresh_updates=4",
                "--set", "options.max_sample_age_updates=4")
        summary = json.loads((out / "summary.json").read_text())
        outputs.append((summary["metrics"], json.loads((out / "eval_history.json").read_text()),
                        json.loads((out / "monitor_metrics.json").read_text())))
    (metrics_a, evals_a, windows_a), (metrics_b, evals_b, windows_b) = outputs
    assert metrics_a["train.option_updates"] > 8  # the behaviour policy was refreshed: the controller learned
    assert metrics_a == metrics_b
    assert evals_a == evals_b
    assert windows_a == windows_b
