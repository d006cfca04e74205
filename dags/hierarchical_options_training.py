"""Nightly training and gating of the hierarchical options agent, one mapped chain per symbol.

Per symbol: validate_data -> smoke_test -> smoke_gate -> full_train -> evaluate -> quality_gates
-> register_model -> publish_report -> approve_promotion -> promote_model.

Scale and admission (configs/pipeline.yaml `concurrency`, `priority`, `kubernetes.gpu_pool`/`cpu_pool`):
up to `max_symbols` symbols a run; `max_active_tasks` per run, `max_active_tis_per_dagrun` per mapped
task and `max_active_tis_per_dag` on the MLflow-registry writers keep the API server and MLflow within
bounds; with the kubernetes backend full training runs in the GPU pool (one slot per GPU) at a higher
absolute priority than the CPU steps, which have their own pool.

A waiting approval holds only its own symbol's promotion: `concurrency.max_active_runs` (3) lets
the next scheduled run start beside it, and the approval times out (Reject) after
`approval.response_timeout_hours`. Two active runs never train one run directory at once (training
holds a lease on its run key, trainer/lease.py; the second retries later), and every champion move
takes the registry's per-model lock and re-reads the champion inside it, refusing a stale
comparison (trainer/registry.py).

Failed or collapsed trainings and promotions that did not happen send one webhook message
(configs/pipeline.yaml `notifications`); a promotion emits the model's champion Asset event
(`mlflow://models/<name>@champion`), on which dags/champion_inference.py is scheduled.

The report comes first, so a reviewer asked to approve (run param `require_approval`, or the gates
file's `promotion.require_human_approval`) has it in front of them; the question links it, and the
answer (who, when, comment) goes to `trainer promote` and into the ledger.

Wiring only: the task bodies live in trainer/orchestration/pipeline.py, the step argv in
trainer/orchestration/specs.py, and the backend (local subprocess or Kubernetes pod) is chosen by
configs/pipeline.yaml `backend:` or TRAINER_BACKEND. Parsing reads configs/pipeline.yaml and imports
nothing heavy (no torch, SB3, mlflow, great_expectations, pandas, KubernetesPodOperator).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task, task_group

from trainer.orchestration import pipeline
from trainer.orchestration.approval import PromotionApproval
from trainer.orchestration.notify import TrainingFailureNotifier
from trainer.orchestration.settings import load_settings
from trainer.orchestration.tasks import trainer_step
from trainer.symbols import SYMBOL_PATTERN

SETTINGS = load_settings()  # one small YAML file (plus env overrides); cheap at parse time
GROUP = "symbol_pipeline"

_retry = SETTINGS.retries
TRAINING_RETRIES = {
    "retries": _retry.training_count,
    "retry_delay": timedelta(seconds=_retry.delay_seconds),
    "retry_exponential_backoff": 2.0,  # 1, 2, 4 ... x delay, capped below
    "max_retry_delay": timedelta(seconds=_retry.max_delay_seconds),
}
_limits = SETTINGS.concurrency
# One webhook message when a training try fails for good (configs/pipeline.yaml `notifications`,
# read when the callback runs; off while webhook_url is null).
NOTIFY_ON_FAILURE = {"on_failure_callback": TrainingFailureNotifier()}


def step(name: str, body, *, task_id: str, **task_kwargs):
    """The task of trainer step `name` running `body`, with its try's time limit: the longest over
    the profiles (the pod's own deadline is its run's)."""
    timeout = timedelta(seconds=SETTINGS.timeout_seconds(name))
    return trainer_step(SETTINGS, name, body, task_id=task_id, execution_timeout=timeout, **task_kwargs)


def _admission(accelerator: str) -> dict:
    """Pool (kubernetes backend only), absolute priority and per-run fan-out of a mapped trainer step."""
    pool = SETTINGS.pools().get(accelerator)
    gpu = accelerator == "gpu"
    admission = {
        "priority_weight": SETTINGS.priority.gpu if gpu else SETTINGS.priority.cpu,
        "weight_rule": "absolute",
        "max_active_tis_per_dagrun": _limits.max_active_tis_per_dagrun,
    }
    if pool is not None:
        assert SETTINGS.kubernetes is not None
        admission["pool"] = pool.name
        admission["pool_slots"] = SETTINGS.kubernetes.gpu_pool_slots_per_task if gpu else 1
    return admission


CPU_STEP = _admission("cpu")
GPU_STEP = _admission("gpu")
MLFLOW_WRITER = {**CPU_STEP, "max_active_tis_per_dag": _limits.mlflow_writers}

PARAMS = {
    "symbols": Param(
        SETTINGS.defaults.symbols,
        type="array",
        items={"type": "string", "pattern": SYMBOL_PATTERN, "minLength": 1, "maxLength": 15},
        minItems=1,
        maxItems=_limits.max_symbols,
        uniqueItems=True,
        description="Tickers to train, one mapped chain each (A-Z, 0-9, '.', '-').",
    ),
    "profile": Param(
        SETTINGS.defaults.profile,
        type="string",
        enum=sorted(SETTINGS.profiles),
        description="Step counts from configs/pipeline.yaml: demo (minutes on 2 CPUs) or production.",
    ),
    "smoke_timesteps": Param(
        None, type=["null", "integer"], minimum=1, description="Override the profile's smoke-stage steps."
    ),
    "full_timesteps": Param(
        None, type=["null", "integer"], minimum=1, description="Override the profile's full-stage steps."
    ),
    "require_approval": Param(
        SETTINGS.defaults.require_approval,
        type="boolean",
        description="Ask a human (Airflow HITL) before moving the champion alias, with the report linked.",
    ),
    "data_overrides": Param(
        {},
        type="object",
        propertyNames={"pattern": SYMBOL_PATTERN},
        additionalProperties={"type": "string", "minLength": 1, "maxLength": 1024, "pattern": r"^[^\x00-\x1f]+$"},
        description="Optional {SYMBOL: CSV/Parquet path or s3://bucket/key} instead of the bundled data.",
    ),
}


@dag(
    dag_id="hierarchical_options_training",
    description="Train, gate, register and promote the hierarchical options SAC agent per symbol",
    schedule=SETTINGS.schedule,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    # More than one run: a waiting approval must not hold back the nightly run (see the docstring).
    max_active_runs=_limits.max_active_runs,
    max_active_tasks=_limits.max_active_tasks,
    tags=["training", "rl", "hierarchical-options", "mlflow"],
    params=PARAMS,
    default_args={
        "owner": "ml-platform",
        "retries": _retry.count,
        "retry_delay": timedelta(seconds=_retry.delay_seconds),
    },
    doc_md=__doc__,
)
def hierarchical_options_training():
    @task
    def select_symbols(**context) -> list[str]:
        return pipeline.select_symbols(context["params"])

    @task_group(group_id=GROUP)
    def symbol_pipeline(symbol: str):
        # Each trainer step is a task of the configured backend: a subprocess @task locally, the
        # step's own KubernetesPodOperator with the kubernetes backend (trainer/orchestration/tasks.py).
        validate_data = step("validate_data", pipeline.validate_data, task_id="validate_data", **CPU_STEP)
        smoke_test = step("smoke_train", pipeline.smoke_train, task_id="smoke_test",
                          **CPU_STEP, **TRAINING_RETRIES, **NOTIFY_ON_FAILURE)
        smoke_gate = step("smoke_gate", pipeline.smoke_gate, task_id="smoke_gate", **CPU_STEP)
        full_train = step("full_train", pipeline.full_train, task_id="full_train",
                          **GPU_STEP, **TRAINING_RETRIES, **NOTIFY_ON_FAILURE)
        evaluate = step("evaluate", pipeline.evaluate, task_id="evaluate", **CPU_STEP)
        quality_gates = step("full_gate", pipeline.quality_gates, task_id="quality_gates", **CPU_STEP)
        register_model = step("register_model", pipeline.register_model, task_id="register_model", **MLFLOW_WRITER)
        # Every task keeps the default all_success rule: inside a mapped task group Airflow 3.3 judges
        # other trigger rules of a not-yet-expanded task against *all* symbols, so one symbol's failure
        # would stop the others. publish_report runs for every registered version, passed or not, and
        # "not promoted" (gates failed, rejected, policy) is a result of promote_model (see approval.py).
        publish_report = step("publish_report", pipeline.publish_report, task_id="publish_report", **MLFLOW_WRITER)
        # A promotion adds its model's champion Asset to this alias (one event, only when promoted),
        # which schedules dags/champion_inference.py; not promoted = a webhook message, still success.
        promote_model = step("promote_model", pipeline.promote_model, task_id="promote_model",
                             outlets=[pipeline.champion_alias()], **MLFLOW_WRITER)

        validated = validate_data(symbol)
        smoke = smoke_test(validated)
        smoke_verdict = smoke_gate(smoke)
        full = full_train(validated, smoke_verdict)
        verdict = quality_gates(evaluate(full))
        published = publish_report(register_model(verdict))
        approval = PromotionApproval(
            task_id="approve_promotion",
            report_task_id=f"{GROUP}.publish_report",
            # Shorter than the gap between scheduled runs; no pool: a deferred question holds no slot.
            response_timeout=timedelta(hours=SETTINGS.approval.response_timeout_hours),
        )
        published >> approval
        promote_model(published, approval.output)

    symbol_pipeline.expand(symbol=select_symbols())


hierarchical_options_training()
