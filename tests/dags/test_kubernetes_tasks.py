"""With the kubernetes backend each trainer step is the DAG task's own KubernetesPodOperator, and its
kill, timeout, Pending and retry paths leave no orphan and no duplicate pod.

The pod operator runs against tests/support/kube_api.py, a Kubernetes API test double at the HTTP
level: no cluster can run on these machines (no container runtime), so this is the one place a
stand-in is used. Everything on our side of the HTTP connection is real: the DAG's own task
(parsed by DagBag with TRAINER_BACKEND=kubernetes), its body from trainer/orchestration/pipeline.py,
the KubernetesPodOperator, KubernetesHook, PodManager and `kubernetes` client, and Airflow's own
execution-timeout wrapper (the task runner's `_run_execute_callable`, which calls on_kill).
"""

from __future__ import annotations

import copy
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from conftest import DAG_ID, DAGS
from support.kube_api import Behaviour, KubeApi, kube_api_server

GROUP = "symbol_pipeline"
RUN_ID = "scheduled__2026-12-01T00:00:00+00:00"
EVALUATED = {"status": "completed", "test_sharpe": 0.5}
TRAINED = {"status": "completed", "config_hash": "", "mlflow_run_id": "abc"}
FULL = {
    "symbol": "SPY", "profile": "demo", "stage": "full", "data": None, "run_key": "SPY/x",
    "run_dir": "s3://trainer-runs/runs/SPY/x/full", "config_hash": "x", "data_digest": "d", "image_digest": "i",
}
VALIDATED = {"symbol": "SPY", "profile": "demo", "data": None, "data_digest": "a" * 64, "rows": 100, "report_dir": "r"}


@pytest.fixture(scope="module")
def k8s_dag():
    mp = pytest.MonkeyPatch()
    mp.setenv("TRAINER_BACKEND", "kubernetes")
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS / "hierarchical_options_training.py"))
    assert bag.import_errors == {}, bag.import_errors
    yield bag.dags[DAG_ID]
    mp.undo()


@pytest.fixture
def api(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINER_BACKEND", "kubernetes")  # the task bodies load the settings at run time
    with kube_api_server(tmp_path) as server:
        yield server


class TaskInstance:
    """The task-instance fields the pod operator reads (labels, XCom of the pod's name)."""

    def __init__(self, task_id: str, try_number: int) -> None:
        self.dag_id, self.task_id, self.map_index, self.try_number = DAG_ID, task_id, 0, try_number
        self.start_date = datetime.now(UTC)
        self.xcom: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcom[key] = value


def task_try(dag, api: KubeApi, task: str, inputs: list, try_number: int = 1):
    """The DAG's task for one try, its inputs rendered, its client pointed at the double."""
    op = copy.deepcopy(dag.get_task(f"{GROUP}.{task}"))
    op.step_inputs = inputs
    op.kubernetes_conn_id = None
    op.config_file = str(api.kubeconfig)
    op.in_cluster = False
    # Poll the double quickly (the production intervals are seconds).
    op.startup_check_interval_seconds = 0.1
    op.poll_interval = 0.1
    op.base_container_status_polling_interval = 0.1
    ti = TaskInstance(op.task_id, try_number)
    context = {"ti": ti, "task": op, "run_id": RUN_ID, "dag": SimpleNamespace(dag_id=DAG_ID),
               "params": {"profile": "demo", "full_timesteps": None, "smoke_timesteps": None}}
    return op, context


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def in_thread(fn, *args):
    """Run fn in a thread; returns (thread, box) where box gets 'result' or 'error'."""
    box: dict[str, object] = {}

    def run():
        try:
            box["result"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


# ------------------------------------------------------------------------------------------------
# The DAG: every trainer step is a pod-operator task
# ------------------------------------------------------------------------------------------------


def test_every_trainer_step_is_a_pod_operator_task(k8s_dag):
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    from trainer.orchestration.kubernetes import TrainerPodStep

    steps = {"validate_data": "validate_data", "smoke_test": "smoke_train", "smoke_gate": "smoke_gate",
             "full_train": "full_train", "evaluate": "evaluate", "quality_gates": "full_gate",
             "register_model": "register_model", "publish_report": "publish_report", "promote_model": "promote_model"}
    for task_id, step in steps.items():
        task = k8s_dag.get_task(f"{GROUP}.{task_id}")
        assert isinstance(task, TrainerPodStep) and isinstance(task, KubernetesPodOperator), task_id
        assert task.step == step
        assert type(task).on_kill is KubernetesPodOperator.on_kill  # Airflow's kill reaches the pod
        assert task.reattach_on_restart and task.execution_timeout is not None
    # Long steps wait in the triggerer; short ones hold their slot for seconds.
    assert {t: k8s_dag.get_task(f"{GROUP}.{t}").deferrable for t in ("smoke_test", "full_train", "evaluate")} == {
        "smoke_test": True, "full_train": True, "evaluate": False}
    assert k8s_dag.get_task(f"{GROUP}.full_train").pool == "trainer_gpu"
    assert k8s_dag.get_task(f"{GROUP}.evaluate").pool == "trainer_cpu"
    # Upstream results reach the pod tasks as inputs (and order them).
    assert k8s_dag.get_task(f"{GROUP}.evaluate").upstream_task_ids == {f"{GROUP}.full_train"}


def test_a_local_task_body_refuses_to_run_a_pod_inside_itself(monkeypatch):
    """A KPO run inside another task was the old design (kill and timeout never reached the pod)."""
    from trainer.orchestration.backends import run_step
    from trainer.orchestration.settings import load_settings
    from trainer.orchestration.specs import evaluate_spec

    monkeypatch.setenv("TRAINER_BACKEND", "kubernetes")
    settings = load_settings()
    with pytest.raises(RuntimeError, match="must be the step's pod"):
        run_step(evaluate_spec("s3://b/r", settings, None), {"task": object()}, settings)


# ------------------------------------------------------------------------------------------------
# Against the Kubernetes API double
# ------------------------------------------------------------------------------------------------


def test_a_step_runs_as_one_pod_and_returns_its_result(k8s_dag, api):
    api.behaviour = Behaviour(run_seconds=0.3, exit_code=0, result=EVALUATED)
    op, context = task_try(k8s_dag, api, "evaluate", [FULL])
    result = op.execute(context)
    assert result["evaluation"]["test_sharpe"] == 0.5 and result["run_dir"] == FULL["run_dir"]
    assert len(api.created) == 1 and api.deleted == [(api.created[0], None)]  # succeeded: delete_succeeded_pod
    assert context["ti"].xcom["pod_name"] == api.created[0]
    wait_for(lambda: api.live_pods() == [])


def test_a_pod_pending_past_startup_timeout_is_deleted_and_the_try_is_retryable(k8s_dag, api):
    from trainer.orchestration.outcome import StepCrashed

    api.behaviour = Behaviour(pending=True)
    op, context = task_try(k8s_dag, api, "evaluate", [FULL])
    op.startup_timeout_seconds = op.schedule_timeout_seconds = 1
    with pytest.raises(StepCrashed):
        op.execute(context)
    assert len(api.created) == 1
    assert [name for name, _ in api.deleted] == api.created  # on_finish_action alone would keep it
    wait_for(lambda: api.live_pods() == [])


def test_execution_timeout_deletes_the_running_pod_with_its_grace_period(k8s_dag, api):
    from airflow.sdk.exceptions import AirflowTaskTimeout
    from airflow.sdk.execution_time.task_runner import _run_execute_callable

    api.behaviour = Behaviour(run_seconds=60, terminating_seconds=0.5)
    op, context = task_try(k8s_dag, api, "evaluate", [FULL])
    op.execution_timeout = timedelta(seconds=2)
    with pytest.raises(AirflowTaskTimeout):
        _run_execute_callable(context, op.execute, op)
    assert len(api.created) == 1
    grace = op.termination_grace_period
    assert (api.created[0], grace) in api.deleted  # on_kill: SIGTERM, time to checkpoint
    wait_for(lambda: api.live_pods() == [])


def test_marking_the_task_failed_deletes_its_pod(k8s_dag, api):
    """The task runner calls on_kill when the task is marked failed (SIGTERM from the supervisor)."""
    api.behaviour = Behaviour(run_seconds=60, terminating_seconds=0.3)
    op, context = task_try(k8s_dag, api, "evaluate", [FULL])
    thread, box = in_thread(op.execute, context)
    wait_for(lambda: api.running_pods() != [] and op.pod is not None)
    op.on_kill()
    thread.join(30)
    assert not thread.is_alive() and "error" in box
    assert len(api.created) == 1 and (api.created[0], op.termination_grace_period) in api.deleted
    wait_for(lambda: api.live_pods() == [])


def test_a_retry_reattaches_to_the_pod_its_lost_try_left_running(k8s_dag, api):
    """Try 1's worker died (no cleanup ran): try 2 follows the same pod instead of starting a second."""
    api.behaviour = Behaviour(run_seconds=1.5, exit_code=0, result=EVALUATED)
    first, first_context = task_try(k8s_dag, api, "evaluate", [FULL], try_number=1)
    worker_gone = threading.Event()
    first.await_pod_completion = lambda pod: worker_gone.wait()  # its worker dies once the pod runs
    in_thread(first.execute, first_context)
    wait_for(lambda: api.running_pods() != [])
    retry, retry_context = task_try(k8s_dag, api, "evaluate", [FULL], try_number=2)
    result = retry.execute(retry_context)
    assert result["evaluation"]["test_sharpe"] == 0.5
    assert len(api.created) == 1 and retry_context["ti"].xcom["pod_name"] == api.created[0]


def test_a_retry_waits_for_the_timed_out_pod_to_terminate_before_starting_one(k8s_dag, api):
    """A timed-out try's pod checkpoints during its grace period; the retry must not train beside it."""
    from airflow.sdk.exceptions import AirflowTaskTimeout
    from airflow.sdk.execution_time.task_runner import _run_execute_callable

    api.behaviour = Behaviour(run_seconds=60, terminating_seconds=1.5)
    first, first_context = task_try(k8s_dag, api, "evaluate", [FULL], try_number=1)
    first.execution_timeout = timedelta(seconds=2)
    with pytest.raises(AirflowTaskTimeout):
        _run_execute_callable(first_context, first.execute, first)
    api.behaviour = Behaviour(run_seconds=0.3, exit_code=0, result=EVALUATED)
    retry, retry_context = task_try(k8s_dag, api, "evaluate", [FULL], try_number=2)
    assert retry.execute(retry_context)["evaluation"]["test_sharpe"] == 0.5
    assert len(api.created) == 2
    assert api.active_siblings_at_create == [[], []]  # each pod started with no other trainer of the task


def test_a_failed_pod_is_kept_for_inspection_and_its_retry_starts_one_new_pod(k8s_dag, api):
    from trainer.orchestration.outcome import StepPreempted

    api.behaviour = Behaviour(run_seconds=0.3, exit_code=75, result={"status": "preempted"})
    first, first_context = task_try(k8s_dag, api, "evaluate", [FULL], try_number=1)
    with pytest.raises(StepPreempted):
        first.execute(first_context)
    assert api.live_pods() == api.created  # kept (on_finish_action: delete_succeeded_pod), labelled checked
    api.behaviour = Behaviour(run_seconds=0.3, exit_code=0, result=EVALUATED)
    retry, retry_context = task_try(k8s_dag, api, "evaluate", [FULL], try_number=2)
    retry.execute(retry_context)
    assert len(api.created) == 2 and api.active_siblings_at_create == [[], []]


def test_full_training_defers_and_resumes_on_the_same_pod(k8s_dag, api):
    from airflow.sdk.exceptions import TaskDeferred

    api.behaviour = Behaviour(run_seconds=0.5, exit_code=0, result=TRAINED)
    op, context = task_try(k8s_dag, api, "full_train", [VALIDATED, {"passed": True}])
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    assert deferred.value.method_name == "trigger_reentry"
    assert deferred.value.trigger.pod_name == api.created[0]
    wait_for(lambda: api.running_pods() == [])
    # The triggerer saw the pod finish; Airflow resumes the task on a fresh copy of it.
    resumed, resumed_context = task_try(k8s_dag, api, "full_train", [VALIDATED, {"passed": True}])
    event = {"status": "success", "name": api.created[0], "namespace": "trainer", "message": ""}
    result = resumed.trigger_reentry(resumed_context, event)
    assert result["stage"] == "full" and result["symbol"] == "SPY" and result["mlflow_run_id"] == "abc"
    assert len(api.created) == 1
    wait_for(lambda: api.live_pods() == [])


# ------------------------------------------------------------------------------------------------
# A whole DAG run on the kubernetes backend
# ------------------------------------------------------------------------------------------------

STEP_RESULTS = {
    "validate_data": {"passed": True, "data_digest": "b" * 64, "rows": 5031},
    "smoke_train": {"status": "completed", "mlflow_run_id": "smoke-run"},
    "smoke_gate": {"passed": True},
    "full_train": {"status": "completed", "mlflow_run_id": "full-run"},
    "evaluate": {"test_sharpe": 0.7},
    "full_gate": {"passed": True},
    "register_model": {"passed": True, "model_name": "demo.hierarchical-options-SPY", "version": 3,
                       "tier_reached": "minimum"},
    "publish_report": {"report_uri": "runs:/full-run/report/report.html", "required_tier": "minimum",
                       "require_human_approval": False},
    "promote_model": {"promoted": True, "model_name": "demo.hierarchical-options-SPY"},
}


def test_a_dag_run_on_the_kubernetes_backend_runs_every_step_as_one_pod(k8s_dag, api, airflow_db, monkeypatch, capfd, caplog):
    """`dag.test()`: the real task runner renders each pod task's inputs (the mapped group's symbol,
    the upstream XComs) and passes each pod's result to the next task; smoke and full training defer
    and the KubernetesPodTrigger itself (async client) watches their pods against the double before
    the task resumes. The operators reach the cluster through the `kubernetes_default` connection,
    as a deployment configures it. One pod per step, none left behind, and the promotion happens."""
    # The cluster connection the operators use, as a deployment configures it (kubernetes_default).
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(
        {"conn_type": "kubernetes", "extra": {"kube_config_path": str(api.kubeconfig), "in_cluster": False}}))
    api.behaviour = Behaviour(run_seconds=0.2, results_by_step=STEP_RESULTS)
    run = k8s_dag.test(run_conf={"symbols": ["SPY"], "profile": "demo"})
    tis = {ti.task_id.split(".")[-1]: ti for ti in run.get_task_instances()}
    assert run.state == "success", {name: ti.state for name, ti in tis.items()}
    # Both training steps deferred once, their trigger ran to completion, and they resumed (no retry).
    out = capfd.readouterr().out
    deferred = [line for line in out.splitlines() if "Pausing task as DEFERRED" in line]
    assert len(deferred) == 2 and any("smoke_test" in line for line in deferred) and any("full_train" in line for line in deferred)
    assert (out + caplog.text).count("[DAG TEST] Trigger completed") == 2
    assert tis["smoke_test"].try_number == tis["full_train"].try_number == 1
    steps = [name.split("-")[1:-1] for name in api.created]
    assert sorted("-".join(s) for s in steps) == sorted(
        ["validate-data", "smoke-train", "smoke-gate", "full-train", "evaluate", "full-gate", "register-model",
         "publish-report", "promote-model"])
    wait_for(lambda: api.live_pods() == [])
