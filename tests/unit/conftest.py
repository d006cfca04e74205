"""Fixtures shared by unit test modules: a real MLflow store, the shipped torch threading."""

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


@pytest.fixture
def one_torch_thread_on_two_cores(monkeypatch):
    """The shipped setting (sac.torch_threads 1) on these 2-core machines: an overlapped controller
    update has a spare core, whatever this box has. Used by the controller-overlap modules."""
    import torch

    from trainer.hierarchy import controller

    monkeypatch.setattr(controller, "available_cores", lambda: 2)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
