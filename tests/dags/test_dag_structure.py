"""The DAG imports cleanly, is wired as documented and refuses bad trigger input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pathlib import Path

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


def test_dagbag_imports_without_errors(dag):
    assert dag.dag_id == DAG_ID
    assert dag.fileloc.endswith("hierarchical_options_training.py")


def test_dag_settings(dag):
    assert dag.tags and {"training", "rl"} <= set(dag.tags)
    assert dag.catchup is False
    assert dag.max_active_runs == 1
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
# Parse cost: nothing heavy, and the KPO only when the kubernetes backend runs a step
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
    assert loaded == [], f"parsing the DAG imported {loaded}"
