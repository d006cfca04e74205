"""One interface, two backends: `run_step(spec, context) -> dict` (the step's result, pushed as XCom).

The backend comes from configs/pipeline.yaml `backend:` or TRAINER_BACKEND, never from the DAG.
The kubernetes module (and its ~0.8 s KubernetesPodOperator import) loads only when selected.
"""

from __future__ import annotations

from typing import Any

from trainer.orchestration.settings import PipelineSettings, load_settings
from trainer.orchestration.specs import TaskSpec


def run_step(spec: TaskSpec, context: Any, settings: PipelineSettings | None = None) -> dict[str, Any]:
    settings = settings or load_settings()
    if settings.backend == "kubernetes":
        from trainer.orchestration import kubernetes as backend
    else:
        from trainer.orchestration import local as backend  # type: ignore[no-redef]
    return backend.run_step(spec, context, settings)
