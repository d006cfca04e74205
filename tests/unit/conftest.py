"""Fixtures shared by the unit tests that need a real MLflow store."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def local_store(tmp_path_factory):
    """A fresh embedded MLflow store (sqlite under TRAINER_STATE_DIR) for one test module."""
    state = tmp_path_factory.mktemp("state")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRAINER_STATE_DIR", str(state))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        yield state
