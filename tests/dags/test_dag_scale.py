"""A nightly run of 500 symbols: the DagBag imports, and the mapped group expands to 500 in a real DAG run.

The 500-symbol settings file is tests/dags/pipeline_500_symbols.yaml. The run is created in this
session's Airflow DB the way `dag.test()` creates one; only `select_symbols` runs (its real task
body, in-process), then the scheduler's own DagRun.update_state expands the group. Nothing is trained.
A subprocess keeps TRAINER_PIPELINE_CONFIG away from the other tests' DAG.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.orchestration.settings import load_settings

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CONFIG = HERE / "pipeline_500_symbols.yaml"
DAG_ID = "hierarchical_options_training"
G = "symbol_pipeline."

EXPAND = f"""
import json
from airflow import settings
from airflow.dag_processing.bundles.manager import DagBundlesManager
from airflow.dag_processing.dagbag import BundleDagBag, DagBag, sync_bag_to_db
from airflow.models.dagrun import DagRun, get_or_create_dagrun
from airflow.models.taskinstance import TaskInstance
from airflow.sdk import timezone
from airflow.sdk.definitions.dag import _run_task
from airflow.serialization.definitions.mappedoperator import get_mapped_ti_count
from airflow.serialization.encoders import coerce_to_core_timetable
from airflow.serialization.serialized_objects import DagSerialization
from airflow.utils.state import TaskInstanceState
from airflow.utils.types import DagRunTriggeredByType, DagRunType

bag = DagBag(dag_folder={str(REPO / "dags")!r})
dag = bag.dags[{DAG_ID!r}]
out = {{"import_errors": {{k: str(v) for k, v in bag.import_errors.items()}},
        "default_symbols": len(dag.params["symbols"]),
        "max_items": dag.params.get_param("symbols").schema["maxItems"]}}

session = settings.Session()
manager = DagBundlesManager()
manager.sync_bundles_to_db(session=session)
session.commit()
for bundle in manager.get_all_dag_bundles():
    if not bundle.is_initialized:
        bundle.initialize()
    sync_bag_to_db(BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name),
                   bundle.name, bundle.version)
scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
now = timezone.utcnow()
dr = get_or_create_dagrun(
    dag=scheduler_dag, start_date=now, logical_date=now, run_after=now,
    data_interval=coerce_to_core_timetable(dag.timetable).infer_manual_data_interval(run_after=now),
    run_id=DagRun.generate_run_id(run_type=DagRunType.MANUAL, logical_date=now, run_after=now),
    session=session, conf={{}}, triggered_by=DagRunTriggeredByType.TEST, triggering_user_name="test_dag_scale",
)
schedulable, _ = dr.update_state(session=session)
out["first_schedulable"] = sorted(ti.task_id for ti in schedulable)
(select,) = [ti for ti in schedulable if ti.task_id == "select_symbols"]
select.try_number += 1
select.state = TaskInstanceState.SCHEDULED
session.commit()
_run_task(ti=select, task=dag.task_dict["select_symbols"])
session.expire_all()
schedulable, _ = dr.update_state(session=session)
out["select_state"] = str(dr.get_task_instance("select_symbols", session=session).state)
tis = session.query(TaskInstance).filter(TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == dr.run_id,
                                         TaskInstance.task_id == {G + "validate_data"!r}).all()
out["validate_map_indexes"] = sorted(ti.map_index for ti in tis)
out["schedulable_validate"] = sum(ti.task_id == {G + "validate_data"!r} for ti in schedulable)
out["mapped_counts"] = {{t.task_id: get_mapped_ti_count(t, dr.run_id, session=session)
                        for t in scheduler_dag.tasks if t.task_id.startswith({G!r})}}
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def expanded(airflow_db):
    env = {**os.environ, "TRAINER_PIPELINE_CONFIG": str(CONFIG), "TRAINER_BACKEND": "local"}
    proc = subprocess.run([sys.executable, "-c", EXPAND], capture_output=True, text=True, env=env, cwd=REPO, timeout=300, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


def test_the_500_symbol_file_is_what_the_test_says():
    settings = load_settings(CONFIG, env={})
    assert len(settings.defaults.symbols) == 500
    assert settings.concurrency.max_symbols >= 500


def test_dagbag_imports_with_500_symbols(expanded):
    assert expanded["import_errors"] == {}
    assert expanded["default_symbols"] == 500
    assert expanded["max_items"] >= 500


def test_the_mapped_group_expands_to_500(expanded):
    assert expanded["first_schedulable"] == ["select_symbols"]
    assert expanded["select_state"] == "success"
    assert expanded["validate_map_indexes"] == list(range(500))
    assert expanded["schedulable_validate"] == 500  # the scheduler's own limits then admit 32 at a time
    counts = expanded["mapped_counts"]
    assert len(counts) == 10
    assert set(counts.values()) == {500}, counts


def test_over_max_symbols_is_refused_at_load_time(tmp_path):
    from trainer.orchestration.settings import SettingsError

    text = CONFIG.read_text().replace("profiles:", "concurrency: {max_symbols: 499}\nprofiles:", 1)
    path = tmp_path / "configs" / "pipeline.yaml"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(SettingsError, match="max_symbols"):
        load_settings(path, env={})
