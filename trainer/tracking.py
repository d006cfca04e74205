"""Where MLflow lives: the one place that reads MLFLOW_* and TRAINER_STATE_DIR.

Embedded default (no server): a sqlite store and local artifacts under $TRAINER_STATE_DIR/mlflow
(default ./state/mlflow). Remote: set MLFLOW_TRACKING_URI=http://host:port (the registry follows
it unless MLFLOW_REGISTRY_URI says otherwise); artifacts then go wherever the server says.
"""

from __future__ import annotations

import os
from pathlib import Path

EXPERIMENT_NAME = "hierarchical-options"


def state_dir() -> Path:
    """Root of local state (runs, MLflow store, Airflow home); $TRAINER_STATE_DIR or ./state."""
    return Path(os.environ.get("TRAINER_STATE_DIR", "state")).resolve()


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    store = state_dir() / "mlflow"
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def registry_uri() -> str:
    return os.environ.get("MLFLOW_REGISTRY_URI") or tracking_uri()


def is_local_store(uri: str) -> bool:
    return uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri


def _client_defaults() -> None:
    """Defaults for MLflow's client unless the operator set them.

    MLflow retries an unreachable server 7 times with 2^n backoff and a 120 s timeout (minutes);
    fail within ~20 s instead, so the step errors clearly and Airflow's retry takes over. Its
    artifact progress bars are noise in task logs.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def configure_mlflow(experiment: str = EXPERIMENT_NAME) -> str:
    """Point mlflow at the tracking/registry URIs and make sure the experiment exists.

    With the local sqlite store the experiment's artifact root is set explicitly, so artifacts
    never land in ./mlruns of whatever directory the process happened to start in.
    Returns the experiment id.
    """
    _client_defaults()
    uri = tracking_uri()
    if not is_local_store(uri):
        return _configure(uri, experiment)
    # Two steps starting at once (two symbols in one DAG run) would both create and migrate a new
    # sqlite store and collide ("duplicate column name"); the first one in does it alone.
    import fcntl

    lock_path = _init_lock_path(uri)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _configure(uri, experiment)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _init_lock_path(uri: str) -> Path:
    """Next to the sqlite file (so every process using that store agrees), else in the state dir."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):]).resolve()
        return db.with_name(f".{db.name}.init.lock")
    return state_dir() / "mlflow" / ".init.lock"


def _point_mlflow_at(tracking: str, registry: str) -> None:
    """Set mlflow's process-wide URIs without the side effect of writing them into os.environ.

    mlflow.set_tracking_uri / set_registry_uri also export MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI;
    left there, the first store a process touched would pin every later step in it (registry_uri()
    reads the variable first), e.g. in an Airflow worker or a test session.
    """
    import mlflow

    saved = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _configure(uri: str, experiment: str) -> str:
    import mlflow

    _point_mlflow_at(uri, registry_uri())
    existing = mlflow.get_experiment_by_name(experiment)
    if existing is not None:
        mlflow.set_experiment(experiment_id=existing.experiment_id)
        return existing.experiment_id
    artifact_location = None
    if is_local_store(uri):
        artifact_location = (state_dir() / "mlflow" / "artifacts").as_uri()
    try:
        experiment_id = mlflow.create_experiment(experiment, artifact_location=artifact_location)
    except mlflow.exceptions.MlflowException:
        # Another process created it between our lookup and create.
        experiment_id = mlflow.get_experiment_by_name(experiment).experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id
