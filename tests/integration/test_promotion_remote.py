"""Promotion against the integration stack's MLflow server (PostgreSQL backend, S3 artifacts) with
the PostgreSQL advisory lock (trainer.locks) on the same database:

- the race of two promoters (older and newer data, a slow call inside the critical section):
  the newer-data model ends as champion, and with the lock disabled it does not (both runs);
- a promoter SIGKILLed while it holds the lock frees it (the server ends its session), and the
  next promote reconciles what it left;
- forged verdicts refused over HTTP;
- a remote registry without a lock database is refused, with nothing moved.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from integration_support import MLFLOW_DB, REPO_ROOT, Stack, as_step
from support.registry_runs import GATES, make_run, tiny_model_dir

pytestmark = pytest.mark.integration

_PROMOTER = textwrap.dedent("""
    import sys
    from trainer.registry import PromotionRefused, load_policy, promote
    try:
        move = promote(sys.argv[1], int(sys.argv[2]), actor="racer", reason="race", policy=load_policy(sys.argv[3]),
                       algorithm="sac")
        print(move.action, move.version)
    except PromotionRefused as exc:
        print("refused:", exc)
""")


@pytest.fixture(scope="module")
def remote(stack: Stack, tmp_path_factory):
    """This process talks to the stack like a step does (same environment, lock database included)."""
    env = stack.env(tmp_path_factory.mktemp("remote-state"))
    with as_step(env):
        yield env


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("model") / "model")


def setup_race(tmp_path: Path, model_dir: Path, symbol: str) -> tuple[int, int]:
    from trainer.registry import load_policy, promote, register_run

    v1 = register_run(make_run(tmp_path, model_dir, symbol, data_end="2018-01-31"), gates=GATES)
    promote(symbol, actor="t", reason="first", policy=load_policy(GATES), algorithm="sac")
    older = register_run(make_run(tmp_path, model_dir, symbol, data_end="2018-06-29", judged_against=v1.version), gates=GATES)
    newer = register_run(make_run(tmp_path, model_dir, symbol, data_end="2018-12-31", judged_against=v1.version), gates=GATES)
    return older.version, newer.version


def champion(stack: Stack, symbol: str) -> int | None:
    return stack.aliases(f"phase-a-baseline-{symbol}").get("champion")


def race(env: dict, symbol: str, older: int, newer: int, tmp_path: Path, extra: str = "") -> list[str]:
    """The older-data promoter stalls inside its critical section (before the alias move) until the
    newer-data one has finished, or 15 s."""
    release = tmp_path / f"release-{symbol}"
    slow = subprocess.Popen(
        [sys.executable, "-c", _PROMOTER, symbol, str(older), str(GATES)], cwd=REPO_ROOT, text=True,
        env={**env, "TRAINER_FAULTS": f"promote.before_alias=pause:15:{release};{extra}"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not Path(f"{release}.reached").exists():
        assert slow.poll() is None and time.monotonic() < deadline, slow.communicate()[1][-3000:]
        time.sleep(0.05)
    fast = subprocess.run([sys.executable, "-c", _PROMOTER, symbol, str(newer), str(GATES)], cwd=REPO_ROOT, text=True,
                          env={**env, "TRAINER_FAULTS": extra}, capture_output=True, timeout=180)
    release.write_text("go")
    out, err = slow.communicate(timeout=180)
    assert slow.returncode == 0 and fast.returncode == 0, err[-3000:] + fast.stderr[-3000:]
    return [out.strip(), fast.stdout.strip()]


def test_racing_promoters_leave_the_newer_data_champion_and_lose_without_the_lock(stack, remote, model_dir, tmp_path):
    older, newer = setup_race(tmp_path, model_dir, "PGRACEA")
    outcomes = race(remote, "PGRACEA", older, newer, tmp_path)
    assert champion(stack, "PGRACEA") == newer, outcomes
    ledger = [json.loads(v) for k, v in sorted(stack.model_tags("phase-a-baseline-PGRACEA").items()) if k.startswith("ledger.")]
    promotions = [r["version"] for r in ledger if r["action"] == "promote"]
    assert promotions == [1, older, newer], ledger  # the newer one waited for the lock, then moved from `older`

    older, newer = setup_race(tmp_path, model_dir, "PGRACEB")
    outcomes = race(remote, "PGRACEB", older, newer, tmp_path, "promotion_lock=off")
    assert champion(stack, "PGRACEB") == older, f"without the lock the race should be lost: {outcomes}"


def test_a_killed_lock_holder_frees_the_lock_and_its_intent_is_reconciled(stack, remote, model_dir, tmp_path):
    from trainer.registry import load_policy, promote, register_run

    v1 = register_run(make_run(tmp_path, model_dir, "PGKILL", data_end="2018-01-31"), gates=GATES)
    promote("PGKILL", actor="t", reason="first", policy=load_policy(GATES), algorithm="sac")
    v2 = register_run(make_run(tmp_path, model_dir, "PGKILL", data_end="2018-06-29", judged_against=v1.version), gates=GATES)
    killed = subprocess.run([sys.executable, "-c", _PROMOTER, "PGKILL", str(v2.version), str(GATES)], cwd=REPO_ROOT,
                            env={**remote, "TRAINER_FAULTS": "promote.alias_moved=kill"}, capture_output=True, text=True,
                            timeout=180)
    assert killed.returncode == -9, killed.stderr[-3000:]
    time.sleep(1.0)  # the server notices the closed socket at once; give it a moment
    held = stack.postgres.query(MLFLOW_DB, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")
    assert held[0][0] == 0, "the killed promoter's advisory lock is still held"

    started = time.monotonic()
    move = promote("PGKILL", actor="t", reason="after the crash", policy=load_policy(GATES), algorithm="sac")
    assert time.monotonic() - started < 30
    assert "completed" in move.reconciled and move.action == "noop" and champion(stack, "PGKILL") == v2.version


def test_forged_verdicts_are_refused_by_the_remote_registry(stack, remote, model_dir, tmp_path):
    from trainer.registry import VerdictMismatch, load_policy, promote, register_run

    run_dir = make_run(tmp_path, model_dir, "PGFORGE", sharpe=-0.4)
    forged = json.loads((run_dir / "gate_full.json").read_text()) | {"passed": True, "tier_reached": "target"}
    (run_dir / "gate_full.json").write_text(json.dumps(forged))
    with pytest.raises(VerdictMismatch):
        register_run(run_dir, gates=GATES)

    failed = register_run(make_run(tmp_path, model_dir, "PGFORGE", sharpe=-0.4), gates=GATES)
    from trainer.registry import registry_client

    registry_client().set_model_version_tag(failed.model_name, str(failed.version), "verdict", "passed")
    before = (stack.aliases(failed.model_name), stack.model_tags(failed.model_name))
    with pytest.raises(VerdictMismatch, match="tags were edited"):
        promote("PGFORGE", failed.version, actor="mallory", reason="r", policy=load_policy(GATES), algorithm="sac")
    assert (stack.aliases(failed.model_name), stack.model_tags(failed.model_name)) == before


def test_a_remote_registry_without_a_lock_database_is_refused(stack, remote, trainer_cli, model_dir, tmp_path):
    from trainer.registry import register_run

    registered = register_run(make_run(tmp_path, model_dir, "PGNOLOCK"), gates=GATES)
    env = {k: v for k, v in remote.items() if k != "TRAINER_LOCK_DATABASE_URL"}
    run = trainer_cli(["promote", "--symbol", "PGNOLOCK", "--phase-a", "--gates", str(GATES)], env)
    assert run.code == 2 and "TRAINER_LOCK_DATABASE_URL is not set" in run.error_line, run.explain()
    assert "champion" not in stack.aliases(registered.model_name)

