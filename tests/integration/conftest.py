"""The integration stack on real services: PostgreSQL, SeaweedFS S3 and an MLflow server.

Session fixtures, all on free loopback ports and always torn down (own process groups, finalizers
that kill even when a test fails):
- `s3_server` (tests/conftest.py): SeaweedFS with one identity, so wrong keys are refused;
- `postgres`: a throwaway cluster (Debian's binaries, initdb in a temp dir);
- `stack`: the MLflow server with the PostgreSQL backend store and s3://mlflow-artifacts/, the
  buckets, and the bundled SPY.csv uploaded to s3://market-data/SPY.csv.

`trainer_cli` runs the real console script (`.venv/bin/trainer`) as a subprocess with the
stack's environment, so every step talks to the services exactly as a pod would.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from integration_support import (
    ARTIFACT_BUCKET,
    MLFLOW_AUTH_DB,
    MLFLOW_DB,
    TRAINER_PASSWORD,
    TRAINER_USER,
    Stack,
    TrainerRun,
    create_mlflow_user,
    finish_trainer,
    start_trainer,
    upload_market_data,
)
from support.mlflow_server import BasicAuth, mlflow_server
from support.postgres import PostgresServer, postgres_bin_dir, postgres_server
from support.seaweedfs import S3Server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    if postgres_bin_dir() is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed")
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def stack(s3_server: S3Server, postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    upload_market_data(s3_server)
    postgres.create_database(MLFLOW_DB)
    server_env = {**s3_server.env_vars(), "MLFLOW_S3_ENDPOINT_URL": s3_server.endpoint_url}
    # Authentication is on in its own server (`auth_stack`): the basic-auth app hashes the password
    # on every request (~0.1 s of CPU each), which would double the whole suite's time on 2 cores.
    with mlflow_server(
        tmp_path_factory.mktemp("mlflow-server"),
        backend_store_uri=postgres.sqlalchemy_uri(MLFLOW_DB),
        artifacts_destination=f"s3://{ARTIFACT_BUCKET}/",
        env=server_env,
    ) as server:
        yield Stack(s3_server, postgres, server, tmp_path_factory.mktemp("steps"))


@pytest.fixture(scope="session")
def auth_stack(s3_server: S3Server, postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The same stack with MLflow's basic-auth app on, as the chart deploys it; steps sign in as the
    trainer user, created through the auth API by the admin."""
    postgres.create_database(MLFLOW_DB + "_authed")
    postgres.create_database(MLFLOW_AUTH_DB)
    auth = BasicAuth(database_uri=postgres.sqlalchemy_uri(MLFLOW_AUTH_DB))
    server_env = {**s3_server.env_vars(), "MLFLOW_S3_ENDPOINT_URL": s3_server.endpoint_url}
    with mlflow_server(
        tmp_path_factory.mktemp("mlflow-auth-server"),
        backend_store_uri=postgres.sqlalchemy_uri(MLFLOW_DB + "_authed"),
        artifacts_destination=f"s3://{ARTIFACT_BUCKET}/authed/",
        env=server_env,
        auth=auth,
    ) as server:
        create_mlflow_user(server.tracking_uri, auth, TRAINER_USER, TRAINER_PASSWORD)
        yield Stack(s3_server, postgres, server, tmp_path_factory.mktemp("auth-steps"),
                    credentials=(TRAINER_USER, TRAINER_PASSWORD), database=MLFLOW_DB + "_authed")


@pytest.fixture(scope="session")
def trainer_cli(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., TrainerRun]:
    """run(args, env, timeout=...) -> TrainerRun: one pipeline step as a subprocess of the real CLI."""
    results = tmp_path_factory.mktemp("results")
    counter = iter(range(1_000_000))

    def run(args: list[str], env: dict[str, str], timeout: float = 180.0) -> TrainerRun:
        result_json = results / f"result-{next(counter)}.json"
        started = time.monotonic()
        return finish_trainer(start_trainer(args, env, result_json), started, timeout, result_json)

    return run
