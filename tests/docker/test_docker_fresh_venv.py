"""Install each image's requirement set into a fresh venv and run what the image runs.

No Docker engine here: the venv stands in for the image. The CPU torch wheel pip finds locally
stands in for the CUDA build the trainer image installs. One venv per image per session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
INSTALL_TIMEOUT = 1200


def _run(cmd, **kwargs):
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _package_source(tmp: Path) -> Path:
    """A copy of what the Dockerfiles COPY for `pip install --no-deps`, so the build leaves the repo untouched."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "trainer", src / "trainer", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return src


def _make_venv(tmp: Path, requirement_args: list[str]) -> Path:
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    # --no-compile: byte-compiling all of torch's and Airflow's sources at install time is not what
    # these tests check (the interpreter compiles what the entrypoint imports when it imports it).
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile"]
    _run(pip + requirement_args, timeout=INSTALL_TIMEOUT)
    # The requirement set is self-consistent; checked before the package, whose --no-deps install
    # in the Airflow image deliberately leaves its heavy dependencies out.
    _run([str(venv / "bin" / "python"), "-m", "pip", "check"], timeout=120)
    _run(pip + ["--no-deps", str(_package_source(tmp))], timeout=300)
    return venv


@pytest.fixture(scope="session")
def trainer_venv(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("trainer-image")
    return _make_venv(tmp, ["-r", str(REPO / "docker/trainer/requirements.txt"), "torch==2.13.0"])


@pytest.fixture(scope="session")
def airflow_venv(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("airflow-image")
    return _make_venv(tmp, ["apache-airflow==3.3.2", "-r", str(REPO / "docker/airflow/requirements.txt")])


def _clean_env(venv: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON", "AIRFLOW"))}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    env.update(extra)
    return env


def test_trainer_image_runs_help_and_version(trainer_venv, tmp_path):
    trainer = str(trainer_venv / "bin" / "trainer")
    env = _clean_env(trainer_venv)
    helped = _run([trainer, "--help"], cwd=tmp_path, env=env, timeout=120)
    assert "usage: trainer" in helped.stdout
    version = _run([trainer, "--version"], cwd=tmp_path, env=env, timeout=60)
    assert version.stdout.strip().startswith("trainer ")
    # The heavy stack imports from the image's set alone (torch stands in for the CUDA build).
    _run([str(trainer_venv / "bin" / "python"), "-c", "import torch, stable_baselines3, mlflow, great_expectations, gymnasium"],
         cwd=tmp_path, env=env, timeout=300)


def test_airflow_image_has_no_torch_and_imports_the_provider(airflow_venv, tmp_path):
    py = str(airflow_venv / "bin" / "python")
    env = _clean_env(airflow_venv, AIRFLOW_HOME=str(tmp_path / "airflow-home"))
    probe = _run([py, "-c", textwrap.dedent("""
        import importlib.util
        assert importlib.util.find_spec("torch") is None, "torch must not be in the Airflow image"
        import airflow, trainer.symbols
        from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
        print(airflow.__version__)
    """)], cwd=tmp_path, env=env, timeout=300)
    assert probe.stdout.strip().splitlines()[-1] == "3.3.2"


def test_airflow_image_parses_the_dags(airflow_venv, tmp_path):
    dag_files = sorted((REPO / "dags").glob("*.py"))
    if not dag_files:
        pytest.skip("dags/ has no .py files yet (the DAG engineer is writing it)")
    script = textwrap.dedent(f"""
        import json
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(REPO / 'dags')!r})
        print(json.dumps({{"errors": {{k: str(v) for k, v in bag.import_errors.items()}}, "dags": sorted(bag.dag_ids)}}))
    """)
    env = _clean_env(
        airflow_venv,
        AIRFLOW_HOME=str(tmp_path / "airflow-home"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="True",
        # as docker/airflow/Dockerfile sets it (the image copies configs/ next to the DAGs)
        TRAINER_PIPELINE_CONFIG=str(REPO / "configs" / "pipeline.yaml"),
    )
    proc = _run([str(airflow_venv / "bin" / "python"), "-c", script], cwd=tmp_path, env=env, timeout=600)
    import json

    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}, f"DAG import errors in the Airflow image's set: {result['errors']}"
    assert result["dags"], "the DagBag found no DAGs in dags/"
