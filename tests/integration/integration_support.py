"""Helpers of the integration suite: the stack's handles, the step environment, the CLI runner.

Steps run as subprocesses of the real console script, each in its own process group, with the
environment a pod would get (S3 identity and endpoint, MLflow server URI, a state directory).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.mlflow_server import MlflowServer
from support.postgres import PostgresServer
from support.seaweedfs import S3Server

REPO_ROOT = Path(__file__).resolve().parents[2]
MLFLOW_DB = "mlflow"
MLFLOW_AUTH_DB = "mlflow_auth"  # the basic-auth app's users and permissions
TRAINER_USER, TRAINER_PASSWORD = "trainer", "integration-trainer-password"
DATA_BUCKET = "market-data"
RUNS_BUCKET = "runs"
ARTIFACT_BUCKET = "mlflow-artifacts"
SPY_URI = f"s3://{DATA_BUCKET}/SPY.csv"
INTEGRATION_GATES = Path(__file__).with_name("gates_integration.yaml")

# `trainer train` of the smoke stage on bundled SPY (the fault and retention tests add output and steps).
SMOKE_TRAIN = ["train", "--config", "configs/phase_b1_options.yaml", "--symbol", "SPY", "--profile", "demo", "--stage", "smoke"]

# Tiny training (the brief's step counts): a few hundred steps, small nets, checkpoints every 100.
TINY_TRAIN = [
    "--n-envs", "1",
    "--set", "sac.net_arch=[32,32]",
    "--set", "options.hidden_dim=32",
    "--set", "options.warmup_steps=100",
    "--set", "options.batch_size=16",
    "--set", "sac.learning_starts=100",
    "--set", "sac.buffer_size=2000",
    "--set", "checkpoints.freq=100",
    "--set", "options.monitor.window_steps=100",
]

# Variables from the developer's shell that would point a step somewhere else.
_SCRUBBED_PREFIXES = ("AWS_", "MLFLOW_", "TRAINER_")


def upload_market_data(s3: S3Server) -> None:
    """Buckets for data, runs and MLflow artifacts; the bundled SPY.csv as s3://market-data/SPY.csv."""
    from trainer.data.loaders import bundled_path

    client = s3.client()
    existing = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
    for bucket in (DATA_BUCKET, RUNS_BUCKET, ARTIFACT_BUCKET):
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)
    client.upload_file(str(bundled_path("SPY")), DATA_BUCKET, "SPY.csv")


def create_mlflow_user(tracking_uri: str, auth: Any, username: str, password: str) -> None:
    """Create a user through the auth app's REST API as the admin (what the chart's NOTES tell an operator)."""
    import base64
    import urllib.request

    token = base64.b64encode(f"{auth.admin_username}:{auth.admin_password}".encode()).decode()
    request = urllib.request.Request(
        f"{tracking_uri}/api/2.0/mlflow/users/create",
        data=json.dumps({"username": username, "password": password}).encode(),
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200, response.read()


@contextlib.contextmanager
def as_step(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """Run this test process with a step's environment (the developer's MLFLOW_/TRAINER_/AWS_ gone)."""
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith(_SCRUBBED_PREFIXES)]:
            mp.delenv(key)
        for key, value in env.items():
            mp.setenv(key, value)
        yield env


def step_env(s3: S3Server, tracking_uri: str, state_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment a pipeline step gets: the S3 identity and endpoint, the MLflow server, a state dir."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(_SCRUBBED_PREFIXES)}
    env.update(s3.env_vars())
    env.update(
        MLFLOW_TRACKING_URI=tracking_uri,
        MLFLOW_S3_ENDPOINT_URL=s3.endpoint_url,
        TRAINER_STATE_DIR=str(state_dir),
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


@dataclass
class Stack:
    s3: S3Server
    postgres: PostgresServer
    mlflow: MlflowServer
    tmp: Path
    credentials: tuple[str, str] | None = None  # the trainer's MLflow user when the server has auth on
    database: str = MLFLOW_DB  # the MLflow backend database (also the promotion lock's)
    _dirs: int = field(default=0)

    def env(self, state_dir: Path | None = None, **overrides: str) -> dict[str, str]:
        """A step's environment; promotions lock on the MLflow backend database (trainer.locks)."""
        if state_dir is None:
            self._dirs += 1
            state_dir = self.tmp / f"state-{self._dirs}"
        overrides.setdefault("TRAINER_LOCK_DATABASE_URL", self.lock_database_url)
        if self.credentials:
            overrides.setdefault("MLFLOW_TRACKING_USERNAME", self.credentials[0])
            overrides.setdefault("MLFLOW_TRACKING_PASSWORD", self.credentials[1])
        return step_env(self.s3, self.mlflow.tracking_uri, state_dir, **overrides)

    @property
    def lock_database_url(self) -> str:
        return self.postgres.sqlalchemy_uri(self.database)

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        """Read the MLflow tables directly (runs, model_versions, registered_model_aliases, ...)."""
        return self.postgres.query(self.database, query, params)

    def aliases(self, model_name: str) -> dict[str, int]:
        rows = self.sql("SELECT alias, version FROM registered_model_aliases WHERE name = %s", (model_name,))
        return {alias: int(version) for alias, version in rows}

    def model_tags(self, model_name: str) -> dict[str, str]:
        return dict(self.sql("SELECT key, value FROM registered_model_tags WHERE name = %s", (model_name,)))

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        client = self.s3.client()
        keys: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys

    def read_json(self, bucket: str, key: str) -> Any:
        return json.loads(self.s3.client().get_object(Bucket=bucket, Key=key)["Body"].read())


@dataclass
class TrainerRun:
    argv: list[str]
    code: int
    stdout: str
    stderr: str
    result: dict[str, Any]
    elapsed: float

    @property
    def error_line(self) -> str:
        """The last non-empty stderr line: where the CLI prints `trainer <step>: error: ...`."""
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def explain(self) -> str:
        return (f"`{' '.join(self.argv)}` exited {self.code} after {self.elapsed:.1f} s\n"
                f"--- stdout (tail)\n{self.stdout[-3000:]}\n--- stderr (tail)\n{self.stderr[-4000:]}")


def trainer_executable() -> str:
    beside = Path(sys.executable).parent / "trainer"
    return str(beside) if beside.exists() else "trainer"


def start_trainer(args: list[str], env: dict[str, str], result_json: Path | None = None) -> subprocess.Popen:
    """Start `trainer [--result-json R] ARGS...` in its own process group (see `finish_trainer`)."""
    argv = [trainer_executable(), *(["--result-json", str(result_json)] if result_json else []), *args]
    return subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def finish_trainer(proc: subprocess.Popen, started: float, timeout: float, result_json: Path | None) -> TrainerRun:
    """Wait for a started step; past `timeout` its whole process group is killed and the test fails."""
    try:
        stdout, stderr = proc.communicate(timeout=max(1.0, timeout - (time.monotonic() - started)))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"`{' '.join(map(str, proc.args))}` still running after {timeout:.0f} s (killed)\n"
                    f"--- stderr (tail)\n{stderr[-4000:]}")
    finally:
        if proc.poll() is None:  # an exception other than the timeout: never leave it behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    result = {}
    if result_json is not None and result_json.exists():
        result = json.loads(result_json.read_text())
    return TrainerRun(list(map(str, proc.args)), proc.returncode, stdout, stderr, result, time.monotonic() - started)
