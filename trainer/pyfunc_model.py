"""The trained agent as an MLflow pyfunc model: observations in, actions (and options) out.

What a registered version serves. The model directory of a run (meta.json, sac.zip, controller.pt)
travels as the pyfunc artifact `model_dir`; `load_context` rebuilds the agent with
`trainer.agent.load_agent`, so serving and backtesting share one loader.

    model = mlflow.pyfunc.load_model("models:/hierarchical-options-SPY@champion")
    model.predict(observations)   # DataFrame with `action` (float) and `option` (name or "")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

MODEL_NAME_IN_RUN = "agent"
"""The LoggedModel name used for the agent inside a training run."""


class AgentPyfunc(mlflow.pyfunc.PythonModel):
    """Wraps `trainer.agent.Agent`; stateless between calls (each row is one observation)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        import json

        from trainer.agent import load_agent

        model_dir = Path(context.artifacts["model_dir"])
        self._agent = load_agent(model_dir)
        meta = json.loads((model_dir / "meta.json").read_text())
        self._option_names: list[str] = list(meta.get("option_names") or [])

    # No type hints here on purpose: MLflow 3 turns predict() hints into a schema and warns on Any.
    def predict(self, context, model_input, params=None):
        observations = _as_observations(model_input, self._agent.observation_size)
        decision = self._agent.predict(observations)
        actions = np.asarray(decision.actions, dtype=np.float64).reshape(-1)
        if decision.option_indices is None or not self._option_names:
            # Phase A (plain SAC) has no options: the column stays, empty, so callers need no branch.
            options = [""] * len(actions)
        else:
            options = [self._option_names[int(i)] for i in np.asarray(decision.option_indices).reshape(-1)]
        return pd.DataFrame({"action": actions, "option": options})


def _as_observations(model_input: Any, observation_size: int) -> np.ndarray:
    """Accept a DataFrame, ndarray or nested list of shape (n, observation_size); refuse anything else."""
    if isinstance(model_input, pd.DataFrame):
        array = model_input.to_numpy(dtype=np.float32)
    else:
        array = np.asarray(model_input, dtype=np.float32)
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2 or array.shape[1] != observation_size:
        raise ValueError(
            f"expected observations of shape (n, {observation_size}), got {tuple(array.shape)}"
        )
    if not np.isfinite(array).all():
        raise ValueError("observations contain NaN or infinity")
    return array


def _pip_requirements() -> list[str]:
    """Pinned from the running environment, so logging skips MLflow's slow requirement inference
    (it would load the model in a subprocess)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for dist in ("mlflow", "stable-baselines3", "torch", "gymnasium", "numpy", "pandas"):
        try:
            pins.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            pins.append(dist)
    return pins


def log_agent_model(model_dir: str | Path, run_id: str) -> mlflow.models.model.ModelInfo:
    """Log `model_dir` as the pyfunc model `agent` of MLflow run `run_id` (a LoggedModel).

    The `trainer` package goes along as code, so a loader without the package installed
    still finds `trainer.agent` and this class.
    """
    import trainer

    model_dir = Path(model_dir)
    if not (model_dir / "meta.json").is_file():
        from trainer.errors import TrainerError

        raise TrainerError(f"{model_dir}: not a model directory (meta.json missing)")
    package_dir = Path(trainer.__file__).parent
    with mlflow.start_run(run_id=run_id):
        return mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=AgentPyfunc(),
            artifacts={"model_dir": str(model_dir)},
            code_paths=[str(package_dir)],
            pip_requirements=_pip_requirements(),
        )
