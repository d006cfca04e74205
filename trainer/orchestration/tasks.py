"""The DAG's trainer steps as tasks of the configured backend, wired like TaskFlow calls.

`trainer_step(step, body, **task_kwargs)(*inputs)` adds one task running `body(*inputs, context)`
(a function of pipeline.py) and returns its XComArg:
- local backend: a TaskFlow @task whose body runs the step as a subprocess (local.py);
- kubernetes backend: a TrainerPodStep, the KubernetesPodOperator whose pod is the step, so
  Airflow's kill, timeout, deferral and retry machinery reaches the pod (kubernetes.py).
The same body and TaskSpec drive both; the KPO module is imported only for the kubernetes backend.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trainer.orchestration.settings import PipelineSettings


def trainer_step(
    settings: PipelineSettings, step: str, body: Callable[..., dict[str, Any]], *, task_id: str, **task_kwargs: Any
) -> Callable[..., Any]:
    """A callable that adds the task for `step` (the TaskSpec step `body` runs) to the current DAG."""
    if settings.backend == "kubernetes":
        from trainer.orchestration.kubernetes import TrainerPodStep

        def add_pod_task(*inputs: Any) -> Any:
            return TrainerPodStep(task_id=task_id, step=step, body=body, inputs=list(inputs), settings=settings,
                                  doc_md=body.__doc__, **task_kwargs).output

        return add_pod_task

    from airflow.sdk import task

    def run(*inputs: Any, **context: Any) -> dict[str, Any]:
        return body(*inputs, context)

    run.__doc__ = body.__doc__
    return task(task_id=task_id, **task_kwargs)(run)
