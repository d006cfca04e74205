"""End-to-end runs of the DAG through dag.test() with the local backend (real trainer steps, tiny step counts).

They need every trainer subcommand the chain calls; a test skips (saying which) while one is not built.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BUNDLED = REPO / "trainer" / "data" / "bundled"
TRAINER = Path(sys.executable).parent / "trainer"
FULL_CHAIN = ("validate", "train", "gate", "evaluate", "register", "promote", "report")
G = "symbol_pipeline."
# Tiny but real: enough env steps for the smoke gate to judge (the lead tunes these with the demo profile).
TINY = {"smoke_timesteps": 600, "full_timesteps": 1200}
# These runs test the orchestration, not the shipped network: the demo profile with a 10-bar window
# and small networks (as tests/training does), so each training is seconds and the steps' own work
# (validation, registry, report) is what the run's time goes to.
SMALL_NETWORKS = {
    "environment.window_size": 10, "options.state_dim": 108,  # 10 bars x 10 features + 8 = 108
    "sac.net_arch": [32, 32], "sac.batch_size": 32, "options.hidden_dim": 32, "options.batch_size": 16,
}

pytestmark = pytest.mark.slow


def require_commands(*commands: str) -> None:
    missing = [
        c for c in commands if subprocess.run([str(TRAINER), c, "--help"], capture_output=True).returncode != 0
    ]
    if missing:
        pytest.skip(f"trainer subcommand(s) not registered yet: {', '.join(missing)} (`trainer <cmd> --help` fails)")


def corrupted_copy(symbol: str, dest: Path) -> Path:
    """The bundled CSV with one NaN close."""
    lines = (BUNDLED / f"{symbol}.csv").read_text().splitlines()
    header = [h.strip().lower() for h in lines[0].split(",")]
    row = lines[200].split(",")
    row[header.index("close")] = "NaN"
    lines[200] = ",".join(row)
    path = dest / f"{symbol}_nan_close.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def isolated_state(tmp_path, monkeypatch, airflow_db):
    """Fresh run root and MLflow store per test; the trainer subprocesses inherit this env."""
    state = tmp_path / "state"
    db = state / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True)
    monkeypatch.setenv("TRAINER_STATE_DIR", str(state))
    monkeypatch.setenv("TRAINER_BACKEND", "local")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", f"sqlite:///{db}")
    monkeypatch.setenv("TORCH_NUM_THREADS", "1")
    return state


def small_pipeline(tmp_path: Path, monkeypatch, gates: Path | None = None) -> Path:
    """configs/pipeline.yaml as TRAINER_PIPELINE_CONFIG with SMALL_NETWORKS in the demo profile (and
    `gates` when given); absolute paths, since the copy lives in tmp_path."""
    tree = yaml.safe_load((REPO / "configs" / "pipeline.yaml").read_text())
    tree["gates"] = str(gates or REPO / tree["gates"])
    for profile in tree["profiles"].values():
        profile["config"] = str(REPO / profile["config"])
    tree["profiles"]["demo"]["overrides"].update(SMALL_NETWORKS)
    path = tmp_path / "configs" / "pipeline.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(tree))
    monkeypatch.setenv("TRAINER_PIPELINE_CONFIG", str(path))
    return path


@pytest.fixture
def small_demo(tmp_path, monkeypatch, isolated_state):
    """isolated_state, with the demo profile's networks small (small_pipeline)."""
    small_pipeline(tmp_path, monkeypatch)
    return isolated_state


def task_states(run) -> dict[tuple[str, int], str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id).all()
        states = {(ti.task_id, ti.map_index): getattr(ti.state, "value", ti.state) for ti in tis}
    print("task states:", sorted(states.items(), key=lambda kv: (kv[0][1], kv[0][0])))
    return states


def state_of(states: dict, name: str, index: int) -> str | None:
    """State of map index `index`; a mapped task never expanded (all upstream failed) keeps index -1."""
    return states.get((G + name, index), states.get((G + name, -1)))


def training_dirs(state: Path, symbol: str) -> list[Path]:
    root = state / "runs" / symbol
    return [p for p in root.iterdir() if p.name != "validation"] if root.exists() else []


def xcom_result(run, task: str, map_index: int):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id=G + task, map_index=map_index, key="return_value")
            .one()
        )
        return XComModel.deserialize_value(row)


def registry_versions():
    from mlflow import MlflowClient

    client = MlflowClient()
    return {m.name: client.search_model_versions(f"name='{m.name}'") for m in client.search_registered_models()}


def test_two_symbols_map_both_and_a_bad_one_does_not_stop_the_other(dag, small_demo, tmp_path):
    """SPY runs the whole chain and lands in the registry with its gate tags; QQQ (NaN close) fails
    its validation and trains, registers and promotes nothing, and the run is failed. (It also
    covers the one-symbol corrupted run, which took a DAG run of its own.)"""
    require_commands(*FULL_CHAIN)
    bad = corrupted_copy("QQQ", tmp_path)
    run = dag.test(
        run_conf={"symbols": ["SPY", "QQQ"], "profile": "demo", "data_overrides": {"QQQ": str(bad)}, **TINY}
    )
    states = task_states(run)
    # both symbols were mapped: every task of the group has map indexes 0 (SPY) and 1 (QQQ)
    for name in ("validate_data", "smoke_test", "register_model", "publish_report"):
        assert {(G + name, 0), (G + name, 1)} <= set(states), name
    assert state_of(states, "validate_data", 1) == "failed"
    for name in ("smoke_test", "full_train", "register_model", "promote_model", "publish_report"):
        assert state_of(states, name, 1) == "upstream_failed", name
    assert training_dirs(small_demo, "QQQ") == []
    assert run.state == "failed"  # a symbol that failed its data check fails the run, not SPY's chain

    assert state_of(states, "register_model", 0) == "success"
    for name in ("approve_promotion", "promote_model", "publish_report"):
        assert state_of(states, name, 0) == "success", name

    (full_dir,) = [p / "demo" / "full" for p in training_dirs(small_demo, "SPY") if (p / "demo" / "full").exists()]
    assert (full_dir / "summary.json").exists() and (full_dir / "gate_full.json").exists()
    assert (full_dir / "report" / "report.md").exists()

    from mlflow import MlflowClient

    registered = xcom_result(run, "register_model", 0)
    report = xcom_result(run, "publish_report", 0)
    assert report["model_name"] == registered["model_name"] and report["version"] == registered["version"]
    assert "SPY" in registered["model_name"]
    versions = registry_versions()
    assert not any("QQQ" in name.upper() for name in versions), versions
    (version,) = versions[registered["model_name"]]
    assert any("gate" in key.lower() for key in version.tags), version.tags
    # promoted exactly when the gates passed (require_approval defaults to false)
    gate = json.loads((full_dir / "gate_full.json").read_text())
    assert registered["passed"] == bool(gate.get("passed"))
    aliases = MlflowClient().get_registered_model(registered["model_name"]).aliases
    assert ("champion" in aliases) == bool(gate.get("passed")), (gate.get("passed"), aliases)
    assert xcom_result(run, "promote_model", 0)["promoted"] == bool(gate.get("passed"))
