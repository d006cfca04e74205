"""The current champion of a symbol, and the comparable trials, read from the model registry.

`trainer evaluate` backtests the champion on the candidate's own test bars (trainer/evaluation/
workflow.py); this module finds it and brings its model directory to local disk:

- the champion is the version the `champion` alias of the symbol's registered model points at;
  the model is per profile (`trainer.registry.model_name(symbol, algorithm, profile)`), so a demo
  run is never compared with the production champion;
- the version's `source` is the pyfunc its run logged (`models:/<logged model id>`,
  trainer/pyfunc_model.py log_agent_model), whose artifact `model_dir` is the agent's model
  directory; a source that is itself a model directory (meta.json at its root, e.g. the Phase A
  baseline's `runs:/<id>/model`) is used as it is.

`comparable_trial_sharpes` collects the per-bar test Sharpes (`test.sharpe_per_bar`) of the other
versions of the same registered model (same symbol, profile and stage): the trials whose spread
the deflated Sharpe ratio deflates by.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.errors import TrainerError

LOGGER = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
PYFUNC_ARTIFACT = "model_dir"
"""The pyfunc artifact holding the agent's model directory (trainer.pyfunc_model.log_agent_model)."""
SHARPE_PER_BAR_METRIC = "test.sharpe_per_bar"
"""Logged by `trainer evaluate` on every candidate's MLflow run; what later trials read."""


@dataclass(frozen=True)
class Champion:
    """:param version: the registered version the alias points at; :param model_name: the
    registered model; :param run_id: the MLflow run that trained it; :param data_end: the last
    timestamp of its training data (version tag, ISO) or None; :param model_dir: its agent model
    directory, downloaded"""

    version: int
    model_name: str
    run_id: str | None
    data_end: str | None
    model_dir: Path

    def describe(self) -> dict[str, Any]:
        """What evaluation.json records under "champion"."""
        return {"version": self.version, "model_name": self.model_name, "run_id": self.run_id, "data_end": self.data_end}

    @property
    def label(self) -> str:
        return f"champion {self.model_name} v{self.version}"


def find_champion(symbol: str, profile: str, algorithm: str = "hierarchical_sac") -> Champion | None:
    """The `champion` version of the symbol's registered model for `profile`, its model directory
    downloaded; None when the model is not registered or no version holds the alias."""
    from trainer.registry import model_name, registry_client, registry_errors

    client = registry_client()
    name = model_name(symbol, algorithm, profile)
    with registry_errors(f"read the {CHAMPION_ALIAS} of {name}"):
        version = _alias_version(client, name)
        if version is None:
            return None
        mv = client.get_model_version(name, str(version))
    tags = dict(mv.tags or {})
    with registry_errors(f"download {name} v{version} ({mv.source})"):
        model_dir = _download_model_dir(mv.source, f"{name} v{version}")
    return Champion(
        version=int(mv.version),
        model_name=name,
        run_id=mv.run_id or None,
        data_end=tags.get("data_end") or None,
        model_dir=model_dir,
    )


def _alias_version(client: Any, name: str) -> int | None:
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(name)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    version = (registered.aliases or {}).get(CHAMPION_ALIAS)  # ints on sqlite, strings over REST
    return None if version is None else int(version)


def _download_model_dir(source: str, what: str) -> Path:
    """The agent model directory of a version's source, on local disk."""
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tempfile.mkdtemp(prefix="champion-")))
    if (local / "meta.json").is_file():
        return local
    mlmodel = local / "MLmodel"
    if not mlmodel.is_file():
        raise TrainerError(f"{what}: its source {source} is neither a pyfunc model (no MLmodel) nor a model directory")
    flavor = mlflow.models.Model.load(str(mlmodel)).flavors.get("python_function", {})
    artifact = (flavor.get("artifacts") or {}).get(PYFUNC_ARTIFACT)
    if not artifact or not (local / artifact["path"] / "meta.json").is_file():
        raise TrainerError(
            f"{what}: the pyfunc at {source} has no `{PYFUNC_ARTIFACT}` artifact holding a model directory "
            "(was it logged by trainer.pyfunc_model.log_agent_model?)"
        )
    return local / artifact["path"]


def comparable_trial_sharpes(
    symbol: str, profile: str, stage: str | None, exclude_run_id: str | None, algorithm: str = "hierarchical_sac"
) -> tuple[list[float], int]:
    """(per-bar test Sharpes of the other versions of the symbol's registered model for `profile`
    whose runs were trained at `stage`, versions of that model and stage without a recorded
    `test.sharpe_per_bar`). The candidate's own run is left out; its result is added by the caller."""
    from mlflow.exceptions import MlflowException

    from trainer.registry import model_name, registry_client, registry_errors

    client = registry_client()
    name = model_name(symbol, algorithm, profile)
    with registry_errors(f"list the versions of {name}"):
        try:
            versions = client.search_model_versions(f"name = '{name}'")
        except MlflowException as exc:
            if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                return [], 0
            raise
    sharpes: list[float] = []
    unrecorded = 0
    seen: set[str] = set()
    for mv in sorted(versions, key=lambda v: int(v.version)):
        if not mv.run_id or mv.run_id == exclude_run_id or mv.run_id in seen:
            continue
        seen.add(mv.run_id)
        with registry_errors(f"read the run of {name} v{mv.version}"):
            try:
                run = client.get_run(mv.run_id)
            except MlflowException as exc:
                if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                    unrecorded += 1
                    continue
                raise
        if stage and run.data.tags.get("stage", stage) != stage:
            continue
        value = run.data.metrics.get(SHARPE_PER_BAR_METRIC)
        if value is None or not math.isfinite(value):
            unrecorded += 1
            continue
        sharpes.append(float(value))
    if unrecorded:
        LOGGER.info("%s: %d version(s) have no recorded %s; the DSR leaves them out", name, unrecorded, SHARPE_PER_BAR_METRIC)
    return sharpes, unrecorded
