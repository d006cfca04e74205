"""One interface, two backends: `run_step(spec, context) -> dict` (the step's result, pushed as XCom).

The backend comes from configs/pipeline.yaml `backend:` or TRAINER_BACKEND, never from the DAG.
Local: the step runs as a subprocess of the task (local.py). Kubernetes: the task itself is the
step's pod operator (kubernetes.TrainerPodStep, wired by tasks.py), and the spec goes to it.
"""

from __future__ import annotations

from typing import Any

from trainer.orchestration.settings import PipelineSettings, load_settings
from trainer.orchestration.specs import TaskSpec


def run_step(spec: TaskSpec, context: Any, settings: PipelineSettings | None = None) -> dict[str, Any]:
    settings = settings or load_settings()
    task = context.get("task") if hasattr(context, "get") else None
    if getattr(task, "runs_trainer_pods", False):
        return task.run_pod(spec, context, settings)  # the task is the step's pod (kubernetes.TrainerPodStep)
    if settings.backend == "kubernetes":
        # Running a pod operator inside another task would leave Airflow's kill, timeout and
        # deferral reaching the task but never the pod.
        raise RuntimeError(
            f"step {spec.step}: with the kubernetes backend the task must be the step's pod "
            f"(trainer.orchestration.tasks.trainer_step), not {type(task).__name__}; was the DAG parsed "
            "with another backend than this task runs with (configs/pipeline.yaml backend, TRAINER_BACKEND)?"
        )
    from trainer.orchestration import local

    return local.run_step(spec, context, settings)
