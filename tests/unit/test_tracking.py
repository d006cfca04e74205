"""The embedded MLflow store: where it lives, and that concurrent first use does not corrupt it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

INIT = "from trainer.tracking import configure_mlflow; print(configure_mlflow())"


def test_default_store_lives_under_the_state_dir(tmp_path, monkeypatch):
    from trainer.tracking import configure_mlflow, tracking_uri

    monkeypatch.setenv("TRAINER_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow' / 'mlflow.db'}"
    experiment_id = configure_mlflow()
    import mlflow

    artifact_root = mlflow.get_experiment(experiment_id).artifact_location
    assert artifact_root == (tmp_path.resolve() / "mlflow" / "artifacts").as_uri()


def test_two_processes_creating_a_new_store_at_once_both_succeed(tmp_path):
    """Two symbols' first steps start together on a fresh state dir (the demo, airflow standalone)."""
    env = {**os.environ, "TRAINER_STATE_DIR": str(tmp_path)}
    env.pop("MLFLOW_TRACKING_URI", None)
    procs = [subprocess.Popen([sys.executable, "-c", INIT], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-1500:] for _, err in results]
    assert len({out.strip() for out, _ in results}) == 1  # one experiment, the same id for all


def test_configuring_mlflow_leaves_the_environment_as_it_found_it(tmp_path, monkeypatch):
    """mlflow.set_tracking_uri / set_registry_uri also write MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI
    into os.environ; left there, the first store a process used would pin every later step in it
    (an Airflow worker, a test session) and `registry_uri()` would ignore a changed tracking server."""
    import mlflow

    from trainer.tracking import configure_mlflow, registry_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv("TRAINER_STATE_DIR", str(tmp_path / "first"))
    configure_mlflow()
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_REGISTRY_URI" not in os.environ

    second = f"sqlite:///{tmp_path.resolve() / 'second.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", second)
    assert registry_uri() == second
    configure_mlflow()
    assert mlflow.get_tracking_uri() == second and mlflow.get_registry_uri() == second
    assert "MLFLOW_REGISTRY_URI" not in os.environ
