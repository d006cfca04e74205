"""One throwaway Airflow home (sqlite) per test session, set before anything imports airflow."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
DAG_ID = "hierarchical_options_training"
BIN = Path(sys.executable).parent

# Airflow reads its configuration at import time, so this must run before the first `import airflow`.
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="airflow-home-tests-")
os.environ.update(
    {
        "AIRFLOW_HOME": _AIRFLOW_HOME,
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME}/airflow.db",
    }
)
for _name in ("TRAINER_BACKEND", "TRAINER_SCHEDULE", "TRAINER_PIPELINE_CONFIG"):
    os.environ.pop(_name, None)


def pytest_sessionfinish(session, exitstatus):  # noqa: ARG001
    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}, bag.import_errors
    return bag.dags[DAG_ID]


@pytest.fixture(scope="session")
def airflow_db():
    """`airflow db migrate` once per session (~4 s), for tests that create DAG runs."""
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], check=True, capture_output=True, text=True)
    return _AIRFLOW_HOME
