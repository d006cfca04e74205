"""MLflow logging of a training run: params, tags, the dataset, metrics over time, artifacts.

Every MLflow call goes through `_guard`, so an unreachable server or a broken store becomes one
clear TrainerError naming the tracking URI instead of a traceback.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from trainer.errors import TrainerError
from trainer.tracking import configure_mlflow, tracking_uri

LOGGER = logging.getLogger(__name__)


def _flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:500]
    return flat


def dataset_source(source: str):
    """MLflow's DatasetSource for a data path or URI (`s3://...`: an S3 source, a path: a local one)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    with warnings.catch_warnings():
        # MLflow 3 registers two classes named LocalArtifactDatasetSource and warns on every local
        # path that it "can be interpreted in multiple ways"; both give the same source.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
        return resolve_dataset_source(str(source))


class RunTracker:
    def __init__(self, run_id: str | None = None):
        self.run_id = run_id
        self._client = None

    def _guard(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TrainerError:
            raise
        except Exception as exc:  # noqa: BLE001 - any MLflow/transport failure becomes one clear error
            raise TrainerError(f"MLflow ({tracking_uri()}): could not {what}: {type(exc).__name__}: {exc}") from None

    def start(self, config, data, tags: dict[str, str]) -> str:
        """Create the MLflow run (or reattach to `run_id` when resuming); returns its id."""
        import mlflow

        self._guard("set up the experiment", configure_mlflow)
        self._client = mlflow.MlflowClient()
        if self.run_id:
            LOGGER.info("MLflow: resuming run %s", self.run_id)
            return self.run_id
        run = self._guard(
            "create a run",
            self._client.create_run,
            mlflow.get_experiment_by_name("hierarchical-options").experiment_id,
            run_name=f"{tags['symbol']}-{config.name}-{tags.get('stage', 'run')}",
            tags=tags,
        )
        self.run_id = run.info.run_id
        params = _flatten(config.model_dump(mode="json"))
        self._guard("log params", self._log_params, params)
        self._guard("log the dataset", self._log_input, data)
        LOGGER.info("MLflow: run %s at %s", self.run_id, tracking_uri())
        return self.run_id

    def _log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self._client.log_batch(self.run_id, params=items[start : start + 100])

    def _log_input(self, data) -> None:
        import mlflow
        from mlflow.entities import DatasetInput, InputTag

        frame = data.frame.reset_index()
        dataset = mlflow.data.from_pandas(frame, source=dataset_source(data.source), name=data.symbol,
                                          digest=data.digest[:20])
        entity = dataset._to_mlflow_entity()
        self._client.log_inputs(self.run_id, [DatasetInput(entity, tags=[InputTag("mlflow.data.context", "training")])])

    def log_metrics(self, record: dict, step: int) -> None:
        from mlflow.entities import Metric
        import math
        import time

        now = int(time.time() * 1000)
        metrics = [
            Metric(key, float(value), now, int(step))
            for key, value in record.items()
            if key != "timesteps" and isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(float(value))
        ]
        if metrics:
            self._guard("log metrics", self._client.log_batch, self.run_id, metrics=metrics)

    def finish(self, output_dir: Path, status: str) -> None:
        from trainer.run_dir import MODEL_DIRS, TRAINING_FILES, RunDir

        run = RunDir(output_dir)
        if run.summary_path.exists():
            # The registry recomputes the gates from the run's MLflow metrics, never from files, so
            # every summary metric goes there too, at the last step (the latest value of its key).
            summary = run.read_summary()
            self.log_metrics(summary.get("metrics") or {}, int(summary.get("total_timesteps") or 0))
        for name in TRAINING_FILES:
            path = output_dir / name
            if path.exists():
                self._guard(f"log {name}", self._client.log_artifact, self.run_id, str(path))
        for folder in MODEL_DIRS:
            if (output_dir / folder).exists():
                self._guard(f"log {folder}/", self._client.log_artifacts, self.run_id, str(output_dir / folder), folder)
        self._guard("set the status tag", self._client.set_tag, self.run_id, "status", status)
        mlflow_status = "FINISHED" if status == "completed" else ("KILLED" if status == "preempted" else "FAILED")
        self._guard("close the run", self._client.set_terminated, self.run_id, mlflow_status)
