"""The DAG imports cleanly, is wired as documented and refuses bad trigger input."""

from __future__ import annotations

import json
import subprocess
import sys

from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import pytest

from trainer.orchestration.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
DAG_ID = "hierarchical_options_training"

G = "symbol_pipeline."
# Upstream task ids of every task in the per-symbol chain (data edges included: full_train reads the
# validation result, promote_model reads publish_report's result and the decision). The report comes
# before the question, and the question before the promotion.
EXPECTED_UPSTREAM = {
    "validate_data": {"select_symbols"},
    "smoke_test": {G + "validate_data"},
    "smoke_gate": {G + "smoke_test"},
    "full_train": {G + "validate_data", G + "smoke_gate"},
    "evaluate": {G + "full_train"},
    "quality_gates": {G + "evaluate"},
    "register_model": {G + "quality_gates"},
    "publish_report": {G + "register_model"},
    "approve_promotion": {G + "publish_report"},
    "promote_model": {G + "publish_report", G + "approve_promotion"},
}
TRAINING_TASKS = (G + "smoke_test", G + "full_train")
HEAVY_MODULES = ("torch", "stable_baselines3", "mlflow", "great_expectations", "pandas")
KPO_MODULE = "airflow.providers.cncf.kubernetes.operators.pod"
SETTINGS = load_settings(env={})
CPU_STEPS = [name for name in EXPECTED_UPSTREAM if name not in ("full_train", "approve_promotion")]
MLFLOW_WRITERS = ("register_model", "publish_report", "promote_model")


def test_dagbag_imports_without_errors(dag):
    assert dag.dag_id == DAG_ID
    assert dag.fileloc.endswith("hierarchical_options_training.py")


def test_dag_settings(dag):
    assert dag.tags and {"training", "rl"} <= set(dag.tags)
    assert dag.catchup is False
    # More than one: a run waiting for an approval does not hold back the next (the run-key lease
    # keeps two runs from training one run directory).
    assert dag.max_active_runs == SETTINGS.concurrency.max_active_runs == 3
    assert dag.max_active_tasks == SETTINGS.concurrency.max_active_tasks == 64
    assert dag.start_date is not None and dag.start_date.year == 2025
    assert dag.timetable.expression == "30 22 * * 1-5"  # the cron from configs/pipeline.yaml


def test_every_task_retries_and_training_backs_off(dag):
    for task in dag.tasks:
        assert task.retries >= 2, task.task_id
    for task_id in TRAINING_TASKS:
        task = dag.get_task(task_id)
        assert task.retries >= 2
        assert task.retry_exponential_backoff >= 2.0
        assert task.max_retry_delay is not None
        assert task.execution_timeout is not None


def test_per_symbol_chain_is_exact(dag):
    from airflow.sdk.definitions.taskgroup import MappedTaskGroup

    assert isinstance(dag.task_group_dict["symbol_pipeline"], MappedTaskGroup)
    in_group = {t.task_id for t in dag.tasks if t.task_id.startswith(G)}
    assert in_group == {G + name for name in EXPECTED_UPSTREAM}
    for name, upstream in EXPECTED_UPSTREAM.items():
        assert dag.get_task(G + name).upstream_task_ids == upstream, name
    # and the linear order the issue asks for, read from downstream edges
    order = list(EXPECTED_UPSTREAM)
    for first, second in zip(order, order[1:]):
        assert G + second in dag.get_task(G + first).downstream_task_ids, (first, second)
    assert dag.get_task("select_symbols").downstream_task_ids == {G + "validate_data"}


def test_trigger_rules_and_operators(dag):
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    approval = dag.get_task(G + "approve_promotion")
    assert isinstance(approval, ApprovalOperator)
    assert approval.report_task_id == G + "publish_report"
    # the reviewer's comment is a HITL form field (it travels to the ledger), Reject is the timeout default
    assert approval.serialized_params["comment"]["schema"]["type"] == "string"
    assert approval.defaults == [ApprovalOperator.REJECT]
    # all_success everywhere: other rules in a mapped group are judged across all symbols (see approval.py)
    for name in EXPECTED_UPSTREAM:
        assert dag.get_task(G + name).trigger_rule == "all_success", name


# ------------------------------------------------------------------------------------------------
# Admission: GPU pool and priority, concurrency limits, an approval that cannot block the schedule
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s_dag(monkeypatch_module):
    """The DAG as the kubernetes backend parses it (a fresh DagBag re-reads the settings)."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch_module.setenv("TRAINER_BACKEND", "kubernetes")
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}, bag.import_errors
    return bag.dags[DAG_ID]


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_full_training_runs_in_the_gpu_pool_first(k8s_dag):
    from airflow.serialization.serialized_objects import DagSerialization

    k8s = load_settings(env={"TRAINER_BACKEND": "kubernetes"}).kubernetes
    assert k8s is not None
    # the scheduler's view of the tasks (what it orders queued task instances by)
    k8s_dag = DagSerialization.from_dict(DagSerialization.to_dict(k8s_dag))
    full = k8s_dag.get_task(G + "full_train")
    assert full.pool == k8s.gpu_pool.name == "trainer_gpu"
    assert full.pool_slots == k8s.gpu.resources.gpu == 1 <= k8s.gpu_pool.slots
    for name in CPU_STEPS:
        task = k8s_dag.get_task(G + name)
        assert task.pool == k8s.cpu_pool.name == "trainer_cpu", name
        assert task.pool_slots == 1, name
        assert type(task.weight_rule).__name__ == type(full.weight_rule).__name__ == "_AbsolutePriorityWeightStrategy"
        # absolute weights: the task's own weight is its priority, whatever lies downstream
        assert full.priority_weight > task.priority_weight, name
    assert full.priority_weight == SETTINGS.priority.gpu and SETTINGS.priority.gpu > SETTINGS.priority.cpu
    # the question is deferred, not a pod: it holds no pool slot while it waits
    assert k8s_dag.get_task(G + "approve_promotion").pool == "default_pool"


def test_the_gpu_pool_must_fit_one_full_training_pod(tmp_path):
    from trainer.orchestration.settings import SettingsError

    text = (REPO / "configs" / "pipeline.yaml").read_text()
    bad = tmp_path / "pipeline.yaml"
    two_gpus = 'resources: {cpu: "8", memory: 32Gi, gpu: 2}'
    bad.write_text(text.replace('resources: {cpu: "8", memory: 32Gi, gpu: 1}', two_gpus))
    assert two_gpus in bad.read_text()
    with pytest.raises(SettingsError, match="gpu_pool.slots"):
        load_settings(bad, env={"TRAINER_BACKEND": "kubernetes"})


def test_local_backend_uses_no_trainer_pools(dag):
    """Nobody creates trainer pools for a laptop run; a task in a missing pool would never be scheduled."""
    for name in CPU_STEPS + ["full_train"]:
        assert dag.get_task(G + name).pool == "default_pool", name
    assert dag.get_task(G + "full_train").priority_weight > dag.get_task(G + "validate_data").priority_weight


def test_concurrency_limits_on_the_mapped_tasks(dag):
    limits = SETTINGS.concurrency
    for name in CPU_STEPS + ["full_train"]:
        task = dag.get_task(G + name)
        assert task.max_active_tis_per_dagrun == limits.max_active_tis_per_dagrun == 32, name
        assert task.execution_timeout is not None, name
    for name in MLFLOW_WRITERS:
        assert dag.get_task(G + name).max_active_tis_per_dag == limits.mlflow_writers == 8, name
    assert dag.params.get_param("symbols").schema["maxItems"] == limits.max_symbols >= 500


def test_a_waiting_approval_ends_before_the_next_scheduled_run(dag, serialized_dag):
    """A response timeout shorter than every gap between two nightly runs: a waiting approval delays
    the next scheduled run by less than the schedule's own interval."""
    from airflow.timetables.base import DataInterval, TimeRestriction

    approval = dag.get_task(G + "approve_promotion")
    assert approval.response_timeout == timedelta(hours=SETTINGS.approval.response_timeout_hours)
    restriction = TimeRestriction(earliest=dag.start_date, latest=None, catchup=True)
    last: DataInterval | None = None
    fires = []
    for _ in range(40):  # eight weeks of weekday runs, weekends included
        info = serialized_dag.timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
        fires.append(info.run_after)
        last = info.data_interval
    shortest = min(b - a for a, b in pairwise(fires))
    assert shortest == timedelta(days=1)
    assert approval.response_timeout < shortest


def test_an_approval_timeout_as_long_as_the_schedule_gap_is_refused(tmp_path):
    from trainer.orchestration.settings import SettingsError

    bad = tmp_path / "pipeline.yaml"
    bad.write_text((REPO / "configs" / "pipeline.yaml").read_text().replace("response_timeout_hours: 20", "response_timeout_hours: 24"))
    with pytest.raises(SettingsError, match="response_timeout_hours"):
        load_settings(bad, env={})
    assert load_settings(bad, env={"TRAINER_SCHEDULE": "none"}).approval.response_timeout_hours == 24


# ------------------------------------------------------------------------------------------------
# Params: the check Airflow 3 runs at trigger time (SerializedDAG.create_dagrun:
# `self.params.deep_merge(conf).validate()` on the serialized DAG)
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def serialized_dag(dag):
    from airflow.serialization.serialized_objects import DagSerialization

    return DagSerialization.from_dict(DagSerialization.to_dict(dag))


def _validate(serialized_dag, conf):
    return serialized_dag.params.deep_merge(conf).validate()


@pytest.mark.parametrize(
    "conf",
    [
        {"symbols": ["SPY"], "profile": "demo"},
        {"symbols": ["SPY", "QQQ", "BRK.B", "RDS-A"], "profile": "production", "require_approval": True},
        {"symbols": ["SPY"], "profile": "demo", "smoke_timesteps": 200, "full_timesteps": None},
        {"symbols": ["SPY"], "profile": "demo", "data_overrides": {"SPY": "/tmp/spy.csv"}},
    ],
)
def test_good_params_accepted(serialized_dag, conf):
    resolved = _validate(serialized_dag, conf)
    assert resolved["symbols"] == conf["symbols"]


@pytest.mark.parametrize(
    "conf",
    [
        {"symbols": ["../x"]},
        {"symbols": ["SPY;rm -rf /"]},
        {"symbols": [""]},
        {"symbols": ["A" * 200]},
        {"symbols": ["spy"]},
        {"symbols": []},
        {"symbols": ["SPY", "SPY"]},
        {"symbols": "SPY"},
        {"profile": "turbo"},
        {"smoke_timesteps": 0},
        {"full_timesteps": -5},
        {"full_timesteps": "100"},
        {"require_approval": "yes"},
        {"data_overrides": {"../x": "/tmp/a.csv"}},
        {"data_overrides": {"SPY": ""}},
        {"data_overrides": {"SPY": "/tmp/a.csv\n--config=/etc/passwd"}},
    ],
)
def test_bad_params_refused(serialized_dag, conf):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        _validate(serialized_dag, conf)


def test_trigger_with_bad_symbol_creates_no_run(dag, airflow_db):
    """The real trigger path: dag.test() -> create_dagrun refuses before any task runs."""
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        dag.test(run_conf={"symbols": ["../x"], "profile": "demo"})


# ------------------------------------------------------------------------------------------------
# Parse cost: nothing heavy, and the KPO only with the kubernetes backend (its steps are KPO tasks)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["local", "kubernetes"])
def test_parse_imports_nothing_heavy(backend):
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('dagfile', {str(DAGS / 'hierarchical_options_training.py')!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        f"print(json.dumps([m for m in {list(HEAVY_MODULES) + [KPO_MODULE]!r} if m in sys.modules]))\n"
    )
    env = {**__import__("os").environ, "TRAINER_BACKEND": backend}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    expected = [KPO_MODULE] if backend == "kubernetes" else []
    assert loaded == expected, f"parsing the DAG imported {loaded}"


def test_champion_inference_parses_without_heavy_imports():
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('dagfile', {str(DAGS / 'champion_inference.py')!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        f"print(json.dumps([m for m in {list(HEAVY_MODULES)!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == [], f"parsing champion_inference imported {loaded}"
