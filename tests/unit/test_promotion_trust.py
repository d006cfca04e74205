"""Promotion a quant team can trust (issue 10), against a real local MLflow store:

- forgery: a hand-written gate_full.json, edited version tags, a laxer gates file: each refused
  with exit 2, the registry unchanged;
- crashes: the promoting / rolling-back process SIGKILLed at each step; every kill leaves a state
  in which the ledger, the aliases and rollback agree once the next command has reconciled it;
- a failed ledger write after the alias moved: completed on the next command, not undone;
- the race of two promoters (older and newer data, a slow call inside the critical section):
  the newer-data model ends as champion, and with the lock disabled it does not.

The remote registry (MLflow on PostgreSQL, the advisory lock) is tests/integration/test_promotion_remote.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from trainer import ledger
from trainer.registry import (
    CHALLENGER,
    CHAMPION,
    PromotionRefused,
    VerdictMismatch,
    champion_history,
    load_policy,
    model_name,
    promote,
    register_run,
    registry_client,
    registry_status,
    rollback,
)
from support.registry_runs import GATES, make_run, policy_file, tiny_model_dir

REPO = Path(__file__).resolve().parents[2]
POLICY = load_policy(GATES)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("model") / "model")


def register(run_dir: Path):
    return register_run(run_dir, gates=GATES)


def state(symbol: str) -> dict:
    """Aliases, ledger actions and the replayed champion history of the symbol's Phase A model."""
    client = registry_client()
    name = model_name(symbol, "sac")
    records = ledger.read_registry(client, name)
    aliases = {k: int(v) for k, v in (client.get_registered_model(name).aliases or {}).items()}
    return {
        "aliases": aliases,
        "actions": [r.action for r in records],
        "history": champion_history(records),
        "pending": ledger.pending_intent(records),
        "versions": len(client.search_model_versions(f"name = '{name}'")),
    }


def assert_consistent(symbol: str) -> dict:
    """No pending intent, and the ledger's replay ends where `champion` points."""
    now = state(symbol)
    assert now["pending"] is None, now
    assert (now["history"][-1] if now["history"] else None) == now["aliases"].get(CHAMPION), now
    return now


# ------------------------------------------------------------------------------------------
# Forgery
# ------------------------------------------------------------------------------------------


def test_a_forged_gate_file_is_refused_and_nothing_is_registered(local_store, model_dir, tmp_path):
    run_dir = make_run(tmp_path, model_dir, "FORGA", sharpe=-0.4)
    verdict = json.loads((run_dir / "gate_full.json").read_text())
    forged = {**verdict, "passed": True, "tier_reached": "target",
              "results": [{**r, "status": "pass"} for r in verdict["results"]]}
    (run_dir / "gate_full.json").write_text(json.dumps(forged))

    with pytest.raises(VerdictMismatch, match=r"test_sharpe_min: file pass, run fail"):
        register(run_dir)
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):
        registry_client().get_registered_model(model_name("FORGA", "sac"))  # not even created

    from trainer.cli import main

    assert main(["register", "--run", str(run_dir), "--gates", str(GATES)]) == 2


def test_registering_under_another_gates_file_than_the_verdicts_is_refused(local_store, model_dir, tmp_path):
    run_dir = make_run(tmp_path, model_dir, "FORGE", sharpe=-0.4)
    verdict = json.loads((run_dir / "gate_full.json").read_text())
    (run_dir / "gate_full.json").write_text(json.dumps({**verdict, "gates_sha256": POLICY.sha256}))
    lax_path = tmp_path / "lax.yaml"
    lax_path.write_text(GATES.read_text().replace("threshold: 0.0\n    tier: minimum", "threshold: -1.0\n    tier: minimum", 1))
    with pytest.raises(VerdictMismatch, match="was computed under a gates file"):
        register_run(run_dir, gates=lax_path)


def test_edited_version_tags_are_refused_and_nothing_moves(local_store, model_dir, tmp_path):
    failed = register(make_run(tmp_path, model_dir, "FORGB", sharpe=-0.4))
    client = registry_client()
    client.set_model_version_tag(failed.model_name, str(failed.version), "verdict", "passed")
    client.set_model_version_tag(failed.model_name, str(failed.version), "tier_reached", "target")
    client.set_registered_model_alias(failed.model_name, CHALLENGER, str(failed.version))
    before = state("FORGB")

    with pytest.raises(VerdictMismatch, match="the tags were edited"):
        promote("FORGB", actor="mallory", reason="r", policy=POLICY, algorithm="sac")
    assert state("FORGB") == before and CHAMPION not in before["aliases"]

    from trainer.cli import main

    assert main(["promote", "--symbol", "FORGB", "--gates", str(GATES)]) == 2
    assert state("FORGB") == before


def test_a_laxer_gates_file_is_refused_even_with_the_hash_tag_edited(local_store, model_dir, tmp_path):
    failed = register(make_run(tmp_path, model_dir, "FORGC", sharpe=-0.4))
    lax_path = tmp_path / "lax.yaml"
    lax_path.write_text(GATES.read_text().replace("threshold: 0.0\n    tier: minimum", "threshold: -1.0\n    tier: minimum", 1))
    lax = load_policy(lax_path)
    assert lax.judge({"test.sharpe": -0.4, "champion.present": 0.0}).passed  # it would pass the failed version
    before = state("FORGC")

    with pytest.raises(VerdictMismatch, match="is not the gates file"):
        promote("FORGC", failed.version, actor="mallory", reason="r", policy=lax, algorithm="sac")
    # Editing the version's hash tag to match the laxer file does not help: the run carries the real one.
    client = registry_client()
    client.set_model_version_tag(failed.model_name, str(failed.version), "gates_hash", lax.sha256)
    with pytest.raises(VerdictMismatch, match="the tag was edited"):
        promote("FORGC", failed.version, actor="mallory", reason="r", policy=lax, algorithm="sac")
    assert state("FORGC") == before


def test_a_stricter_policy_file_refuses_under_its_own_rules(local_store, model_dir, tmp_path):
    """The policy hash covers the promotion section too: another file is refused, not re-interpreted."""
    version = register(make_run(tmp_path, model_dir, "FORGD", sharpe=0.2))
    strict = load_policy(policy_file(tmp_path, "strict.yaml", required_tier="target"))
    with pytest.raises(VerdictMismatch, match="is not the gates file"):
        promote("FORGD", version.version, actor="t", reason="r", policy=strict, algorithm="sac")


# ------------------------------------------------------------------------------------------
# Crashes: SIGKILL at each step of promote and of rollback
# ------------------------------------------------------------------------------------------

_MOVER = textwrap.dedent("""
    import sys
    from trainer.registry import load_policy, promote, rollback
    operation, symbol, gates = sys.argv[1:4]
    if operation == "promote":
        promote(symbol, None, actor="crash-test", reason="crash", policy=load_policy(gates), algorithm="sac")
    else:
        rollback(symbol, actor="crash-test", reason="crash", algorithm="sac")
""")


def run_mover(operation: str, symbol: str, faults: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRAINER_FAULTS": faults}
    return subprocess.run([sys.executable, "-c", _MOVER, operation, symbol, str(GATES)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def two_versions(tmp_path: Path, model_dir: Path, symbol: str, *, promote_second: bool) -> tuple[int, int]:
    v1 = register(make_run(tmp_path, model_dir, symbol, data_end="2018-06-29"))
    promote(symbol, actor="t", reason="first", policy=POLICY, algorithm="sac")
    v2 = register(make_run(tmp_path, model_dir, symbol, data_end="2018-12-31", judged_against=v1.version))
    if promote_second:
        promote(symbol, actor="t", reason="second", policy=POLICY, algorithm="sac")
    return v1.version, v2.version


PROMOTE_KILLS = [  # (fault point, champion after reconciling)
    ("promote.locked", 1),
    ("promote.intent_written", 1),
    ("promote.alias_moved", 2),
    ("promote.recorded", 2),
]


@pytest.mark.parametrize(("point", "champion"), PROMOTE_KILLS, ids=[p for p, _ in PROMOTE_KILLS])
def test_promote_killed_at_each_step_leaves_a_state_rollback_agrees_with(local_store, model_dir, tmp_path, point, champion):
    symbol = "KILP" + str(PROMOTE_KILLS.index((point, champion)))
    two_versions(tmp_path, model_dir, symbol, promote_second=False)
    killed = run_mover("promote", symbol, f"{point}=kill")
    assert killed.returncode == -9, killed.stderr[-2000:]

    (entry,) = registry_status(symbol)["models"]  # reconciles a pending intent
    after = assert_consistent(symbol)
    assert after["aliases"][CHAMPION] == champion
    if point in ("promote.intent_written",):
        assert "abandoned" in entry["reconciled"] and after["actions"][-1] == "abandon"
    elif point == "promote.alias_moved":
        assert "completed" in entry["reconciled"] and after["actions"][-1] == "promote"
    else:
        assert entry["reconciled"] is None
    if champion == 2:
        back = rollback(symbol, actor="t", reason="after the crash", algorithm="sac")
        assert back.version == 1 and assert_consistent(symbol)["aliases"][CHAMPION] == 1
    else:
        with pytest.raises(PromotionRefused, match="no previous champion"):
            rollback(symbol, actor="t", reason="after the crash", algorithm="sac")
        assert promote(symbol, actor="t", reason="retry", policy=POLICY, algorithm="sac").version == 2
        assert_consistent(symbol)


ROLLBACK_KILLS = [  # (fault point, champion after reconciling)
    ("rollback.intent_written", 2),
    ("rollback.challenger_dropped", 2),
    ("rollback.alias_moved", 1),
    ("rollback.recorded", 1),
]


@pytest.mark.parametrize(("point", "champion"), ROLLBACK_KILLS, ids=[p for p, _ in ROLLBACK_KILLS])
def test_rollback_killed_at_each_step_leaves_nothing_a_plain_promote_resends(local_store, model_dir, tmp_path, point, champion):
    symbol = "KILR" + str(ROLLBACK_KILLS.index((point, champion)))
    two_versions(tmp_path, model_dir, symbol, promote_second=True)
    killed = run_mover("rollback", symbol, f"{point}=kill")
    assert killed.returncode == -9, killed.stderr[-2000:]

    registry_status(symbol)
    after = assert_consistent(symbol)
    assert after["aliases"][CHAMPION] == champion
    if champion == 1:
        # Rolled back: v2 is not challenger any more, so the nightly plain promote cannot resend it.
        assert CHALLENGER not in after["aliases"]
        with pytest.raises(PromotionRefused, match="no challenger"):
            promote(symbol, actor="nightly", reason="r", policy=POLICY, algorithm="sac")
        assert after["history"] == [1]
    else:
        # The rollback never happened: doing it again works and ends consistent.
        assert rollback(symbol, actor="t", reason="again", algorithm="sac").version == 1
        assert assert_consistent(symbol)["aliases"][CHAMPION] == 1


def test_a_failed_ledger_write_after_the_move_is_completed_not_undone(local_store, model_dir, tmp_path):
    two_versions(tmp_path, model_dir, "LEDGA", promote_second=False)
    failed = run_mover("promote", "LEDGA", "promote.alias_moved=raise")
    assert failed.returncode == 1 and "injected fault at promote.alias_moved" in failed.stderr
    before = state("LEDGA")
    assert before["pending"] is not None and before["aliases"][CHAMPION] == 2
    # rollback reconciles first, then rolls the completed promotion back to the version that served.
    back = rollback("LEDGA", actor="t", reason="r", algorithm="sac")
    assert "completed" in back.reconciled and back.version == 1
    assert assert_consistent("LEDGA")["history"] == [1]


# ------------------------------------------------------------------------------------------
# The race: older and newer data, a slow call inside the critical section
# ------------------------------------------------------------------------------------------


def race(symbol: str, older: int, newer: int, tmp_path: Path, extra_faults: str = "") -> None:
    """The older-data promoter stalls between its last champion read and the alias move (up to
    10 s); the newer-data one starts once it stalls, and the stall ends as soon as it is done."""
    script = textwrap.dedent("""
        import sys
        from trainer.registry import PromotionRefused, load_policy, promote
        try:
            promote(sys.argv[1], int(sys.argv[2]), actor="racer", reason="race", policy=load_policy(sys.argv[3]), algorithm="sac")
        except PromotionRefused as exc:
            print("refused:", exc)
    """)
    release = tmp_path / f"release-{symbol}"
    stall = f"promote.before_alias=pause:10:{release}"
    slow = subprocess.Popen([sys.executable, "-c", script, symbol, str(older), str(GATES)], cwd=REPO, text=True,
                            env={**os.environ, "TRAINER_FAULTS": f"{stall};{extra_faults}"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while not Path(f"{release}.reached").exists():
        assert slow.poll() is None and time.monotonic() < deadline, slow.communicate()[1][-2000:]
        time.sleep(0.05)
    fast = subprocess.run([sys.executable, "-c", script, symbol, str(newer), str(GATES)], cwd=REPO, text=True,
                          env={**os.environ, "TRAINER_FAULTS": extra_faults}, capture_output=True, timeout=120)
    release.write_text("go")
    _, err = slow.communicate(timeout=120)
    assert slow.returncode == 0 and fast.returncode == 0, err[-2000:] + fast.stderr[-2000:]


def race_setup(tmp_path: Path, model_dir: Path, symbol: str) -> tuple[int, int]:
    v1 = register(make_run(tmp_path, model_dir, symbol, data_end="2018-01-31"))
    promote(symbol, actor="t", reason="first", policy=POLICY, algorithm="sac")
    older = register(make_run(tmp_path, model_dir, symbol, data_end="2018-06-29", judged_against=v1.version))
    newer = register(make_run(tmp_path, model_dir, symbol, data_end="2018-12-31", judged_against=v1.version))
    return older.version, newer.version


@pytest.mark.slow
def test_racing_promoters_leave_the_newer_data_champion_and_not_without_the_lock(local_store, model_dir, tmp_path):
    older, newer = race_setup(tmp_path, model_dir, "RACEA")
    race("RACEA", older, newer, tmp_path)
    locked = assert_consistent("RACEA")
    assert locked["aliases"][CHAMPION] == newer and locked["history"] == [1, older, newer]

    # The same race with the lock disabled: the stalled promoter overwrites the newer champion.
    older, newer = race_setup(tmp_path, model_dir, "RACEB")
    race("RACEB", older, newer, tmp_path, "promotion_lock=off")
    unlocked = state("RACEB")
    assert unlocked["aliases"][CHAMPION] == older, "without the lock the race should have been lost"
