"""The MLflow registry against a real local store (sqlite + local artifacts) and a real
`mlflow server` over HTTP: registration, aliases, promotion policy, rollback, ledger, races,
mid-promotion failures. No mocks: every call goes through MLflow.

Each test uses its own symbol, so one store per module is enough (tests stay independent).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainer import ledger
from trainer.errors import TrainerError
from trainer.registry import (
    CHALLENGER,
    CHAMPION,
    PromotionRefused,
    apply_promotion,
    champion_history,
    model_name,
    plan_promotion,
    promote,
    register_run,
    registry_client,
    registry_status,
    rollback,
)

WINDOW = 2
OBS_SIZE = WINDOW * 10 + 8  # ObservationLayout: 10 market features per bar + 8 portfolio values
FIRST_DECISION = 34 + WINDOW - 1  # the first bar a served model decides on (feature warm-up + window)
REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def Policy(**fields):
    """The real policy model of configs/gates.yaml's `promotion:` section."""
    from trainer.evaluation.gates import PromotionPolicy

    return PromotionPolicy(**fields)


# ------------------------------------------------------------------------------------------
# Building real run directories
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny real Phase A agent (SB3 SAC, 50 steps) saved by trainer.agent in the model layout."""
    import gymnasium as gym
    import torch
    from stable_baselines3 import SAC

    from trainer.agent import Agent
    from trainer.config import TrainerConfig

    torch.set_num_threads(1)
    config = TrainerConfig(name="tiny", algorithm="sac", environment={"window_size": WINDOW})

    class Toy(gym.Env):
        observation_space = gym.spaces.Box(-1.0, 1.0, (OBS_SIZE,), np.float32)
        action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return self.np_random.uniform(-1, 1, OBS_SIZE).astype(np.float32), {}

        def step(self, action):
            obs = self.np_random.uniform(-1, 1, OBS_SIZE).astype(np.float32)
            return obs, float(action[0] * obs[0]), False, False, {}

    sac = SAC("MlpPolicy", Toy(), learning_starts=10, batch_size=16, policy_kwargs={"net_arch": [16]}, seed=0)
    sac.learn(50)
    agent = Agent(config, sac)
    assert agent.observation_size == OBS_SIZE
    out = tmp_path_factory.mktemp("model") / "model"
    agent.save(out)
    return out


def make_run(root: Path, model_dir: Path, symbol: str, *, passed: bool = True, tier: str = "target",
             sharpe: float = 0.5, data_end: str = "2018-12-31", digest: str = "digest-1",
             algorithm: str = "sac") -> Path:
    """A gated, evaluated run directory whose MLflow run exists in the configured store."""
    client = registry_client()
    from trainer.tracking import configure_mlflow

    run_id = client.create_run(configure_mlflow()).info.run_id
    client.set_terminated(run_id)
    run_dir = root / f"run-{symbol}-{run_id[:8]}"
    shutil.copytree(model_dir, run_dir / "model")
    (run_dir / "summary.json").write_text(json.dumps({
        "status": "completed", "symbol": symbol, "algorithm": algorithm, "profile": "demo",
        "config_hash": "cfg-1", "data_digest": digest, "data_end": data_end, "code_version": "abc123",
        "mlflow_run_id": run_id, "metrics": {"eval.sharpe": 0.2},
    }))
    results = [
        {"id": "test_sharpe_min", "metric": "test.sharpe", "observed": sharpe, "comparison": ">",
         "threshold_shown": "0.0", "status": "pass" if passed else "fail", "tier": "minimum", "blocking": True},
    ]
    (run_dir / "gate_full.json").write_text(json.dumps({  # the layout `trainer gate` writes
        "stage": "full", "required_tier": "minimum", "passed": passed, "tier_reached": tier if passed else "none",
        "results": results,
    }))
    (run_dir / "evaluation.json").write_text(json.dumps({
        "metrics": {"test.sharpe": sharpe, "test.total_return": 0.1, "buy_and_hold.sharpe": 0.4},
        "split": "test", "periods_per_year": 252.0, "baseline": {"source": "trained", "model_uri": None},
        "interpretation": "PSR is an estimate.",
    }))
    stamps = pd.bdate_range(end=data_end, periods=5)
    pd.DataFrame({"timestamp": stamps, "candidate_return": 0.0}).to_csv(run_dir / "backtest.csv", index=False)
    return run_dir


def spy_bars(n: int) -> pd.DataFrame:
    """The first `n` bundled SPY bars as a served model takes them (timestamp column + OHLCV)."""
    from trainer.data.loaders import bundled_path, load_ohlcv

    return load_ohlcv(bundled_path("SPY")).iloc[:n][["open", "high", "low", "close", "volume"]].reset_index()


def champion_of(symbol: str) -> int | None:
    aliases = registry_client().get_registered_model(model_name(symbol, "sac")).aliases
    return int(aliases[CHAMPION]) if CHAMPION in aliases else None


# ------------------------------------------------------------------------------------------
# Local store
# ------------------------------------------------------------------------------------------


@pytest.fixture
def runs(tmp_path):
    return tmp_path


def test_register_tags_challenger_and_idempotency(local_store, model_dir, runs):
    run_dir = make_run(runs, model_dir, "REGA", sharpe=0.7, data_end="2018-06-29")
    first = register_run(run_dir)
    again = register_run(run_dir)
    assert first.created and not again.created
    assert (again.model_name, again.version) == (first.model_name, first.version) == ("phase-a-baseline-REGA", 1)

    client = registry_client()
    mv = client.get_model_version(first.model_name, "1")
    assert mv.tags["verdict"] == "passed" and mv.tags["tier_reached"] == "target"
    assert mv.tags["data_end"] == "2018-06-29T00:00:00"
    assert mv.tags["trials_count"] == "1" and mv.tags["data_digest"] == "digest-1"
    assert mv.tags["gate.test_sharpe_min"] == "pass: 0.7 > 0.0"
    assert float(mv.tags["metric.test.sharpe"]) == 0.7 and float(mv.tags["metric.buy_and_hold.sharpe"]) == 0.4
    assert "Verdict: passed" in mv.description and "test.sharpe 0.700" in mv.description
    # Source is the run's LoggedModel (the sqlite store keeps no model_id column on versions).
    assert mv.source.startswith("models:/m-") and mv.run_id == json.loads((run_dir / "summary.json").read_text())["mlflow_run_id"]
    assert int(client.get_registered_model(first.model_name).aliases[CHALLENGER]) == 1
    # Registration and the challenger move are in the ledger, twice over; a re-registration adds nothing.
    actions = [r.action for r in ledger.read_registry(client, first.model_name)]
    assert actions == ["register", "challenger"]
    assert [r.action for r in ledger.read_local(model_name=first.model_name)] == actions


def test_failed_version_is_registered_but_never_champion(local_store, model_dir, runs):
    failed = register_run(make_run(runs, model_dir, "FAILA", passed=False))
    assert failed.created and not failed.passed
    client = registry_client()
    assert CHALLENGER not in client.get_registered_model(failed.model_name).aliases
    assert client.get_model_version(failed.model_name, "1").tags["verdict"] == "failed"
    with pytest.raises(PromotionRefused, match="did not pass"):
        promote("FAILA", failed.version, actor="t", reason="try", policy=Policy(), algorithm="sac")
    # No challenger to fall back on either.
    with pytest.raises(PromotionRefused, match="no challenger"):
        promote("FAILA", actor="t", reason="try", policy=Policy(), algorithm="sac")
    assert champion_of("FAILA") is None
    # A later passing run counts the failed one as a trial.
    second = register_run(make_run(runs, model_dir, "FAILA"))
    assert client.get_model_version(second.model_name, str(second.version)).tags["trials_count"] == "2"


def test_required_tier_and_human_approval(local_store, model_dir, runs):
    minimum = register_run(make_run(runs, model_dir, "TIERA", tier="minimum"))
    with pytest.raises(PromotionRefused, match="requires target"):
        promote("TIERA", actor="t", reason="r", policy=Policy(required_tier="target"), algorithm="sac")
    with pytest.raises(PromotionRefused, match="approval"):
        promote("TIERA", actor="t", reason="r", policy=Policy(require_human_approval=True), algorithm="sac")
    move = promote("TIERA", actor="airflow", reason="r", approved_by="alice",
                   policy=Policy(require_human_approval=True), algorithm="sac")
    assert (move.action, move.version) == ("promote", minimum.version)
    assert move.record.approved_by == "alice"
    assert registry_client().get_model_version(minimum.model_name, "1").tags["approved_by"] == "alice"


def test_promote_twice_is_noop_and_pyfunc_serves_champion(local_store, model_dir, runs):
    import mlflow

    reg = register_run(make_run(runs, model_dir, "NOOPA"))
    first = promote("NOOPA", actor="t", reason="first", policy=Policy(), algorithm="sac")
    second = promote("NOOPA", actor="t", reason="again", policy=Policy(), algorithm="sac")
    assert first.action == "promote" and second.action == "noop"
    assert champion_of("NOOPA") == reg.version
    records = ledger.read_registry(registry_client(), reg.model_name)
    assert [r.action for r in records] == ["register", "challenger", "promote", "noop"]
    assert champion_history(records) == [reg.version]  # the replay ignores the noop

    # The champion replays raw bars (tests/unit/test_served_model.py checks it against the backtest).
    model = mlflow.pyfunc.load_model(f"models:/{reg.model_name}@champion")
    out = model.predict(spy_bars(40))
    assert list(out.columns) == ["timestamp", "exposure"] and len(out) == 40  # Phase A: exposure only
    decided = out["exposure"].iloc[FIRST_DECISION:].to_numpy()
    assert out["exposure"].iloc[:FIRST_DECISION].isna().all() and np.all(np.abs(decided) <= 1.0)
    with pytest.raises(TrainerError, match="needs at least"):
        model.predict(spy_bars(FIRST_DECISION))


def test_must_beat_champion_and_older_data(local_store, model_dir, runs):
    strong = register_run(make_run(runs, model_dir, "BEATA", sharpe=0.9, data_end="2018-06-29"))
    promote("BEATA", actor="t", reason="r", policy=Policy(), algorithm="sac")
    weak = register_run(make_run(runs, model_dir, "BEATA", sharpe=0.3, data_end="2018-06-29"))
    with pytest.raises(PromotionRefused, match="does not beat"):
        promote("BEATA", weak.version, actor="t", reason="r", policy=Policy(), algorithm="sac")
    # Same window, policy off: allowed.
    promote("BEATA", weak.version, actor="t", reason="r", policy=Policy(must_beat_champion=False), algorithm="sac")
    assert champion_of("BEATA") == weak.version
    # Newer data on another window: Sharpe is not compared, newer data wins.
    newer = register_run(make_run(runs, model_dir, "BEATA", sharpe=0.1, data_end="2018-12-31", digest="digest-2"))
    promote("BEATA", newer.version, actor="t", reason="r", policy=Policy(), algorithm="sac")
    # Older data never replaces newer, whatever its Sharpe and whatever the policy.
    with pytest.raises(PromotionRefused, match="older"):
        promote("BEATA", strong.version, actor="t", reason="r", policy=Policy(must_beat_champion=False), algorithm="sac")
    assert champion_of("BEATA") == newer.version


def test_rollback_follows_the_ledger(local_store, model_dir, runs):
    v1 = register_run(make_run(runs, model_dir, "ROLLA", data_end="2018-01-31"))
    promote("ROLLA", actor="t", reason="one", policy=Policy(), algorithm="sac")
    v2 = register_run(make_run(runs, model_dir, "ROLLA", data_end="2018-02-28"))
    promote("ROLLA", actor="t", reason="two", policy=Policy(), algorithm="sac")
    v3 = register_run(make_run(runs, model_dir, "ROLLA", data_end="2018-03-30"))
    promote("ROLLA", actor="t", reason="three", policy=Policy(), algorithm="sac")

    back = rollback("ROLLA", actor="bob", reason="bad fills", algorithm="sac")
    assert (back.version, back.from_version) == (v2.version, v3.version) and champion_of("ROLLA") == v2.version
    back = rollback("ROLLA", actor="bob", reason="still bad", algorithm="sac")
    assert champion_of("ROLLA") == v1.version
    with pytest.raises(PromotionRefused, match="no previous champion"):
        rollback("ROLLA", actor="bob", reason="r", algorithm="sac")
    record = ledger.read_registry(registry_client(), v1.model_name)[-1]
    assert (record.action, record.actor, record.reason, record.version) == ("rollback", "bob", "still bad", v1.version)

    status = registry_status("ROLLA")
    (entry,) = status["models"]
    assert entry["aliases"][CHAMPION] == v1.version
    assert [v["version"] for v in entry["versions"]] == [1, 2, 3]
    assert entry["ledger"][-1]["action"] == "rollback"


def test_error_mid_promotion_keeps_previous_champion(local_store, model_dir, runs):
    v1 = register_run(make_run(runs, model_dir, "MIDA", data_end="2018-01-31"))
    promote("MIDA", actor="t", reason="r", policy=Policy(), algorithm="sac")
    v2 = register_run(make_run(runs, model_dir, "MIDA", data_end="2018-02-28"))
    client = registry_client()
    plan = plan_promotion(client, "MIDA", v2.version, actor="t", reason="r", policy=Policy(), algorithm="sac")
    # The store changes under the plan: the candidate disappears before the alias moves.
    client.delete_model_version(v2.model_name, str(v2.version))
    with pytest.raises(Exception):
        apply_promotion(client, plan)
    assert champion_of("MIDA") == v1.version
    assert [r.action for r in ledger.read_registry(client, v1.model_name)][-1] == "challenger"
    # A version that does not exist is refused before anything is written.
    with pytest.raises(TrainerError, match="no version 99"):
        promote("MIDA", 99, actor="t", reason="r", policy=Policy(), algorithm="sac")
    assert champion_of("MIDA") == v1.version


# ------------------------------------------------------------------------------------------
# Races: two processes promote at the same instant
# ------------------------------------------------------------------------------------------

_PROMOTER = textwrap.dedent("""
    import json, sys, time
    from trainer.evaluation.gates import PromotionPolicy
    from trainer.registry import promote, PromotionRefused
    symbol, version, start_at = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    policy = PromotionPolicy(required_tier="minimum", must_beat_champion=False, require_human_approval=False)
    time.sleep(max(0.0, start_at - time.time()))
    try:
        move = promote(symbol, version, actor=f"proc-{version}", reason="race", policy=policy, algorithm="sac")
        print(json.dumps({"version": version, "action": move.action}))
    except PromotionRefused as exc:
        print(json.dumps({"version": version, "refused": str(exc)}))
""")


def race(symbol: str, versions: list[int], env: dict[str, str]) -> list[dict]:
    start_at = time.time() + 6.0  # both processes have imported mlflow by then
    procs = [
        subprocess.Popen([PYTHON, "-c", _PROMOTER, symbol, str(v), str(start_at)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        for v in versions
    ]
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        outcomes.append(json.loads(out.strip().splitlines()[-1]))
    return outcomes


def assert_newer_data_wins(symbol: str, older: int, newer: int, outcomes: list[dict]) -> None:
    assert champion_of(symbol) == newer
    records = [r for r in ledger.read_registry(registry_client(), model_name(symbol, "sac")) if r.action == "promote"]
    # Either old then new (both promoted, in that order) or new first and old refused.
    assert records[-1].version == newer
    if len(records) == 2:
        assert [r.version for r in records] == [older, newer]
    else:
        assert [o for o in outcomes if o["version"] == older][0].get("refused")


@pytest.mark.slow
def test_racing_promotions_local_store(local_store, model_dir, runs):
    old = register_run(make_run(runs, model_dir, "RACEA", data_end="2018-01-31"))
    new = register_run(make_run(runs, model_dir, "RACEA", data_end="2018-12-31"))
    outcomes = race("RACEA", [old.version, new.version], {**os.environ, "TRAINER_STATE_DIR": str(local_store)})
    assert_newer_data_wins("RACEA", old.version, new.version, outcomes)


# ------------------------------------------------------------------------------------------
# Remote: a real `mlflow server` on loopback
# ------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port, self.proc = root, port, None
        self.uri = f"http://127.0.0.1:{port}"

    def start(self) -> None:
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        mlflow_bin = str(Path(PYTHON).with_name("mlflow"))
        self.proc = subprocess.Popen(
            [mlflow_bin, "server", "--backend-store-uri", f"sqlite:///{self.root / 'db.sqlite'}",
             "--artifacts-destination", str(self.root / "art"), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            env=env, stdout=open(self.root / "server.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError((self.root / "server.log").read_text()[-3000:])
                time.sleep(0.5)
        raise RuntimeError("mlflow server did not become healthy in 90 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="module")
def remote_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    server = MlflowServer(root, _free_port())
    server.start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TRAINER_STATE_DIR", str(root / "state"))
            mp.setenv("MLFLOW_TRACKING_URI", server.uri)
            mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
            yield server
    finally:
        server.stop()


@pytest.mark.integration
def test_remote_register_promote_rollback_and_race(remote_store, model_dir, runs):
    import mlflow

    old = register_run(make_run(runs, model_dir, "REMA", data_end="2018-01-31"))
    assert register_run(make_run(runs, model_dir, "REMA", data_end="2018-01-31")).version == 2
    move = promote("REMA", old.version, actor="t", reason="r", policy=Policy(must_beat_champion=False), algorithm="sac")
    assert move.action == "promote" and champion_of("REMA") == old.version
    assert isinstance(registry_client().get_registered_model(old.model_name).aliases[CHAMPION], (int, str))
    out = mlflow.pyfunc.load_model(f"models:/{old.model_name}@champion").predict(spy_bars(40))
    assert len(out) == 40 and out["exposure"].iloc[FIRST_DECISION:].notna().all()

    promote("REMA", 2, actor="t", reason="r", policy=Policy(must_beat_champion=False), algorithm="sac")
    back = rollback("REMA", actor="t", reason="r", algorithm="sac")
    assert back.version == old.version and champion_of("REMA") == old.version
    # The ledger lives in the registry: wiping the local copy changes nothing for rollback's view.
    (remote_store.root / "state" / "registry" / "ledger.jsonl").unlink()
    assert [r.action for r in ledger.read_registry(registry_client(), old.model_name)][-1] == "rollback"

    a = register_run(make_run(runs, model_dir, "RACEB", data_end="2018-01-31"))
    b = register_run(make_run(runs, model_dir, "RACEB", data_end="2018-12-31"))
    outcomes = race("RACEB", [a.version, b.version], dict(os.environ))
    assert_newer_data_wins("RACEB", a.version, b.version, outcomes)
    assert "promotion.lock" not in registry_client().get_registered_model(a.model_name).tags


@pytest.mark.integration
def test_remote_unreachable_mid_promotion_keeps_champion(remote_store, model_dir, runs):
    v1 = register_run(make_run(runs, model_dir, "DOWNA", data_end="2018-01-31"))
    promote("DOWNA", actor="t", reason="r", policy=Policy(), algorithm="sac")
    v2 = register_run(make_run(runs, model_dir, "DOWNA", data_end="2018-02-28"))
    client = registry_client()
    plan = plan_promotion(client, "DOWNA", v2.version, actor="t", reason="r", policy=Policy(), algorithm="sac")
    remote_store.stop()  # the server goes away after the checks, before the alias move
    try:
        started = time.monotonic()
        with pytest.raises(Exception):
            apply_promotion(client, plan)
        assert time.monotonic() - started < 25
        started = time.monotonic()
        with pytest.raises(TrainerError, match=remote_store.uri):
            promote("DOWNA", v2.version, actor="t", reason="r", policy=Policy(), algorithm="sac")
        assert time.monotonic() - started < 25
    finally:
        remote_store.start()
    assert champion_of("DOWNA") == v1.version


# ------------------------------------------------------------------------------------------
# The commands (local store)
# ------------------------------------------------------------------------------------------


def test_cli_register_promote_status_rollback(local_store, model_dir, runs, tmp_path):
    from trainer.cli import main

    def call(*argv: str) -> tuple[int, dict]:
        out = tmp_path / "result.json"
        code = main(["--result-json", str(out), *argv])
        return code, json.loads(out.read_text())

    failed = make_run(runs, model_dir, "CLIA", passed=False, algorithm="hierarchical_sac")
    code, result = call("register", "--run", str(failed))
    assert code == 0 and result["model_name"] == "hierarchical-options-CLIA" and result["passed"] is False
    code, result = call("promote", "--symbol", "CLIA", "--version", "1", "--gates", str(REPO / "configs/gates.yaml"))
    assert code == 1 and "did not pass" in result["refused"]

    first = make_run(runs, model_dir, "CLIA", data_end="2018-01-31", algorithm="hierarchical_sac")
    second = make_run(runs, model_dir, "CLIA", data_end="2018-02-28", algorithm="hierarchical_sac")
    assert call("register", "--run", str(first))[1]["version"] == 2
    assert call("promote", "--symbol", "CLIA", "--reason", "gate passed", "--actor", "airflow")[0] == 0
    assert call("register", "--run", str(second))[1]["version"] == 3
    code, result = call("promote", "--symbol", "CLIA", "--reason", "gate passed")
    assert code == 0 and (result["version"], result["from_version"]) == (3, 2)

    code, result = call("registry-status", "--symbol", "CLIA")
    (model,) = result["models"]
    assert code == 0 and model["aliases"] == {"challenger": 3, "champion": 3}
    assert [v["verdict"] for v in model["versions"]] == ["failed", "passed", "passed"]

    code, result = call("rollback", "--symbol", "CLIA", "--reason", "drift")
    assert code == 0 and result["version"] == 2
    assert call("rollback", "--symbol", "CLIA")[0] == 1  # nothing before v2
    assert call("promote", "--symbol", "bad symbol!")[0] == 2
    assert call("promote", "--symbol", "NOPE", "--version", "1")[0] == 2
