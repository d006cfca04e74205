"""The MLflow registry against a real local store (sqlite + local artifacts): registration, aliases,
promotion policy, the champion comparison, rollback, ledger, mid-promotion failures and the
commands. No mocks: every call goes through MLflow. Forgery, crash and race scenarios are in
test_promotion_trust.py; the remote registry (MLflow on PostgreSQL) in tests/integration.

Each test uses its own symbol, so one store per module is enough (tests stay independent).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainer import ledger
from trainer.errors import TrainerError
from trainer.registry import (
    CHALLENGER,
    CHAMPION,
    Approval,
    PromotionRefused,
    apply_promotion,
    champion_history,
    load_policy,
    model_name,
    plan_promotion,
    promote,
    register_run,
    registry_client,
    registry_status,
    rollback,
)
from support.registry_runs import GATES, make_run, policy_file, tiny_model_dir

WINDOW = 2
FIRST_DECISION = 34 + WINDOW - 1  # the first bar a served model decides on (feature warm-up + window)
REPO = Path(__file__).resolve().parents[2]


def Policy(**promotion):
    """The registry tests' gates file as a policy; with `promotion` fields, a copy that says so."""
    if not promotion:
        return load_policy(GATES)
    import tempfile

    return load_policy(policy_file(Path(tempfile.mkdtemp(prefix="policy-")), "gates.yaml", **promotion))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("model") / "model")


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


def register(run_dir: Path, **kwargs):
    return register_run(run_dir, gates=GATES, **kwargs)


def test_register_tags_challenger_and_idempotency(local_store, model_dir, runs):
    run_dir = make_run(runs, model_dir, "REGA", sharpe=0.7, data_end="2018-06-29")
    first = register(run_dir)
    again = register(run_dir)
    assert first.created and not again.created
    assert (again.model_name, again.version) == (first.model_name, first.version) == ("phase-a-baseline-REGA", 1)

    client = registry_client()
    mv = client.get_model_version(first.model_name, "1")
    assert mv.tags["verdict"] == "passed" and mv.tags["tier_reached"] == "target"
    assert mv.tags["gates_hash"] == load_policy(GATES).sha256 and mv.tags["required_tier"] == "minimum"
    assert mv.tags["data_end"] == "2018-06-29T00:00:00" and mv.tags["judged_against_champion"] == "none"
    assert mv.tags["trials_count"] == "1" and mv.tags["data_digest"] == "digest-1"
    assert mv.tags["image_digest"] == "local"  # outside an image (TRAINER_IMAGE_DIGEST unset)
    assert mv.tags["gate.test_sharpe_min"] == "pass: 0.7 > 0"
    assert mv.tags["gate.beats_champion"].startswith("not_applicable")
    assert float(mv.tags["metric.test.sharpe"]) == 0.7 and float(mv.tags["metric.buy_and_hold.sharpe"]) == 0.4
    assert "Verdict: passed" in mv.description and "test.sharpe 0.700" in mv.description
    # Source is the run's LoggedModel (the sqlite store keeps no model_id column on versions).
    assert mv.source.startswith("models:/m-") and mv.run_id == json.loads((run_dir / "summary.json").read_text())["mlflow_run_id"]
    assert int(client.get_registered_model(first.model_name).aliases[CHALLENGER]) == 1
    # Registration and the challenger move are in the ledger, twice over, with the policy's hash.
    records = ledger.read_registry(client, first.model_name)
    assert [r.action for r in records] == ["register", "challenger"]
    assert {r.gates_hash for r in records} == {load_policy(GATES).sha256}
    assert [r.action for r in ledger.read_local(model_name=first.model_name)] == ["register", "challenger"]


def test_each_profile_has_its_own_registered_model(local_store, model_dir, runs):
    production = register(make_run(runs, model_dir, "PROFA"))
    demo = register(make_run(runs, model_dir, "PROFA", profile="demo"))
    assert (production.model_name, demo.model_name) == ("phase-a-baseline-PROFA", "demo.phase-a-baseline-PROFA")
    assert production.version == demo.version == 1  # separate models: separate trial counts
    promote("PROFA", actor="t", reason="demo run", policy=Policy(), algorithm="sac", profile="demo")
    assert champion_of("PROFA") is None  # the production model has no champion from a demo run
    with pytest.raises(TrainerError, match="invalid profile"):
        model_name("PROFA", "sac", "Bad Profile")


def test_failed_version_is_registered_but_never_champion(local_store, model_dir, runs):
    failed = register(make_run(runs, model_dir, "FAILA", sharpe=-0.2))
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
    second = register(make_run(runs, model_dir, "FAILA"))
    assert client.get_model_version(second.model_name, str(second.version)).tags["trials_count"] == "2"


def test_required_tier_and_human_approval(local_store, model_dir, runs, tmp_path):
    target = policy_file(tmp_path, "target.yaml", required_tier="target")
    approval = policy_file(tmp_path, "approval.yaml", require_human_approval=True)
    minimum = register_run(make_run(runs, model_dir, "TIERA", sharpe=0.2, gates=target), gates=target)
    assert not minimum.passed and minimum.tier_reached == "minimum"  # the policy needs target
    with pytest.raises(PromotionRefused, match="requires target"):
        promote("TIERA", minimum.version, actor="t", reason="r", policy=load_policy(target), algorithm="sac")

    asked = register_run(make_run(runs, model_dir, "TIERB", gates=approval), gates=approval)
    with pytest.raises(PromotionRefused, match="approval"):
        promote("TIERB", actor="t", reason="r", policy=load_policy(approval), algorithm="sac")
    decision = Approval("alice", "2026-12-01T10:00:00+00:00", "fills look right")
    move = promote("TIERB", actor="airflow", reason="r", approval=decision, policy=load_policy(approval), algorithm="sac")
    assert (move.action, move.version) == ("promote", asked.version)
    assert (move.record.approved_by, move.record.approved_at, move.record.approval_comment) == (
        "alice", "2026-12-01T10:00:00+00:00", "fills look right")
    assert move.record.gates_hash == load_policy(approval).sha256
    assert registry_client().get_model_version(asked.model_name, "1").tags["approved_by"] == "alice"


def test_promote_twice_is_noop_and_pyfunc_serves_champion(local_store, model_dir, runs):
    import mlflow

    reg = register(make_run(runs, model_dir, "NOOPA"))
    first = promote("NOOPA", actor="t", reason="first", policy=Policy(), algorithm="sac")
    second = promote("NOOPA", actor="t", reason="again", policy=Policy(), algorithm="sac")
    assert first.action == "promote" and second.action == "noop"
    assert champion_of("NOOPA") == reg.version
    records = ledger.read_registry(registry_client(), reg.model_name)
    assert [r.action for r in records] == ["register", "challenger", "intent", "promote", "noop"]
    assert records[2].intent_id == records[3].intent_id and records[2].operation == "promote"
    assert champion_history(records) == [reg.version]  # the replay ignores the intent and the noop

    # The champion replays raw bars (tests/unit/test_served_model.py checks it against the backtest).
    model = mlflow.pyfunc.load_model(f"models:/{reg.model_name}@champion")
    out = model.predict(spy_bars(40))
    assert list(out.columns) == ["timestamp", "exposure"] and len(out) == 40  # Phase A: exposure only
    decided = out["exposure"].iloc[FIRST_DECISION:].to_numpy()
    assert out["exposure"].iloc[:FIRST_DECISION].isna().all() and np.all(np.abs(decided) <= 1.0)
    with pytest.raises(TrainerError, match="needs at least"):
        model.predict(spy_bars(FIRST_DECISION))


def test_champion_is_replaced_only_by_a_candidate_judged_against_it(local_store, model_dir, runs):
    strong = register(make_run(runs, model_dir, "BEATA", sharpe=1.5, data_end="2018-06-29"))
    promote("BEATA", actor="t", reason="r", policy=Policy(), algorithm="sac")
    # The stale-check bug: one more day of data, Sharpe 0.01. Compared with the champion on its own
    # bars it is worse, so its comparison gate fails and it is registered as failed.
    weak = register(make_run(runs, model_dir, "BEATA", sharpe=0.01, data_end="2018-07-02", digest="digest-2",
                             judged_against=strong.version, sharpe_diff=-1.4))
    assert not weak.passed
    with pytest.raises(PromotionRefused, match="did not pass"):
        promote("BEATA", weak.version, actor="t", reason="r", policy=Policy(), algorithm="sac")
    # A good Sharpe that was never compared with the champion does not replace it either.
    unjudged = register(make_run(runs, model_dir, "BEATA", sharpe=2.0, data_end="2018-07-03", digest="digest-3"))
    assert unjudged.passed
    with pytest.raises(PromotionRefused, match="not compared with any champion"):
        promote("BEATA", unjudged.version, actor="t", reason="r", policy=Policy(), algorithm="sac")
    # Judged against the champion and better on its bars: promoted.
    better = register(make_run(runs, model_dir, "BEATA", sharpe=1.6, data_end="2018-07-03", digest="digest-3",
                               judged_against=strong.version, sharpe_diff=0.1))
    promote("BEATA", better.version, actor="t", reason="r", policy=Policy(), algorithm="sac")
    assert champion_of("BEATA") == better.version
    # Judged against the old champion, not the current one: re-evaluate first.
    sibling_older = register(make_run(runs, model_dir, "BEATA", sharpe=1.7, data_end="2018-07-03", digest="digest-3",
                                      judged_against=strong.version, sharpe_diff=0.2))
    with pytest.raises(PromotionRefused, match="champion is now"):
        promote("BEATA", sibling_older.version, actor="t", reason="r", policy=Policy(), algorithm="sac")
    # A sibling (judged against the same champion as the current one) on newer data may replace it.
    sibling_newer = register(make_run(runs, model_dir, "BEATA", sharpe=1.7, data_end="2018-07-06", digest="digest-4",
                                      judged_against=strong.version, sharpe_diff=0.2))
    promote("BEATA", sibling_newer.version, actor="t", reason="r", policy=Policy(), algorithm="sac")
    # Older data never replaces newer, whatever its Sharpe.
    with pytest.raises(PromotionRefused, match="older"):
        promote("BEATA", strong.version, actor="t", reason="r", policy=Policy(), algorithm="sac")
    assert champion_of("BEATA") == sibling_newer.version


def test_rollback_follows_the_ledger_and_clears_the_challenger(local_store, model_dir, runs):
    v1 = register(make_run(runs, model_dir, "ROLLA", data_end="2018-01-31"))
    promote("ROLLA", actor="t", reason="one", policy=Policy(), algorithm="sac")
    v2 = register(make_run(runs, model_dir, "ROLLA", data_end="2018-02-28", judged_against=1))
    promote("ROLLA", actor="t", reason="two", policy=Policy(), algorithm="sac")
    v3 = register(make_run(runs, model_dir, "ROLLA", data_end="2018-03-30", judged_against=2))
    promote("ROLLA", actor="t", reason="three", policy=Policy(), algorithm="sac")

    back = rollback("ROLLA", actor="bob", reason="bad fills", algorithm="sac")
    assert (back.version, back.from_version) == (v2.version, v3.version) and champion_of("ROLLA") == v2.version
    # v3 was the challenger; it is gone, so a plain promote has nothing to send back.
    assert CHALLENGER not in registry_client().get_registered_model(v1.model_name).aliases
    with pytest.raises(PromotionRefused, match="no challenger"):
        promote("ROLLA", actor="t", reason="nightly", policy=Policy(), algorithm="sac")
    back = rollback("ROLLA", actor="bob", reason="still bad", algorithm="sac")
    assert champion_of("ROLLA") == v1.version
    with pytest.raises(PromotionRefused, match="no previous champion"):
        rollback("ROLLA", actor="bob", reason="r", algorithm="sac")
    record = ledger.read_registry(registry_client(), v1.model_name)[-1]
    assert (record.action, record.actor, record.reason, record.version) == ("rollback", "bob", "still bad", v1.version)

    status = registry_status("ROLLA")
    (entry,) = status["models"]
    assert entry["aliases"][CHAMPION] == v1.version and entry["champion_history"] == [v1.version]
    assert [v["version"] for v in entry["versions"]] == [1, 2, 3]
    assert entry["ledger"][-1]["action"] == "rollback" and entry["reconciled"] is None


def test_error_mid_promotion_keeps_previous_champion(local_store, model_dir, runs):
    v1 = register(make_run(runs, model_dir, "MIDA", data_end="2018-01-31"))
    promote("MIDA", actor="t", reason="r", policy=Policy(), algorithm="sac")
    v2 = register(make_run(runs, model_dir, "MIDA", data_end="2018-02-28", judged_against=1))
    client = registry_client()
    plan = plan_promotion(client, "MIDA", v2.version, actor="t", reason="r", policy=Policy(), algorithm="sac")
    # The store changes under the plan: the candidate disappears before the alias moves.
    client.delete_model_version(v2.model_name, str(v2.version))
    with pytest.raises(Exception):
        apply_promotion(client, plan)
    assert champion_of("MIDA") == v1.version
    # The intent it wrote is pending; the next command closes it as never having happened.
    assert ledger.pending_intent(ledger.read_registry(client, v1.model_name)) is not None
    (entry,) = registry_status("MIDA")["models"]
    assert "abandoned" in entry["reconciled"] and entry["ledger"][-1]["action"] == "abandon"
    # A version that does not exist is refused before anything is written.
    with pytest.raises(TrainerError, match="no version 99"):
        promote("MIDA", 99, actor="t", reason="r", policy=Policy(), algorithm="sac")
    assert champion_of("MIDA") == v1.version


# ------------------------------------------------------------------------------------------
# The commands (local store)
# ------------------------------------------------------------------------------------------


def test_cli_register_promote_status_rollback(local_store, model_dir, runs, tmp_path):
    from trainer.cli import main

    def call(*argv: str) -> tuple[int, dict]:
        out = tmp_path / "result.json"
        code = main(["--result-json", str(out), *argv])
        return code, json.loads(out.read_text())

    gates = ("--gates", str(GATES))
    failed = make_run(runs, model_dir, "CLIA", sharpe=-1.0, algorithm="hierarchical_sac")
    code, result = call("register", "--run", str(failed), *gates)
    assert code == 0 and result["model_name"] == "hierarchical-options-CLIA" and result["passed"] is False
    code, result = call("promote", "--symbol", "CLIA", "--version", "1", *gates)
    assert code == 1 and "did not pass" in result["refused"]

    first = make_run(runs, model_dir, "CLIA", data_end="2018-01-31", algorithm="hierarchical_sac")
    second = make_run(runs, model_dir, "CLIA", data_end="2018-02-28", algorithm="hierarchical_sac", judged_against=2)
    assert call("register", "--run", str(first), *gates)[1]["version"] == 2
    assert call("promote", "--symbol", "CLIA", "--reason", "gate passed", "--actor", "airflow", *gates)[0] == 0
    assert call("register", "--run", str(second), *gates)[1]["version"] == 3
    code, result = call("promote", "--symbol", "CLIA", "--reason", "gate passed", "--approved-by", "carol",
                        "--approved-at", "2026-12-01T09:00:00Z", "--approval-comment", "ok", *gates)
    assert code == 0 and (result["version"], result["from_version"]) == (3, 2)
    assert result["gates_hash"] == load_policy(GATES).sha256

    code, result = call("registry-status", "--symbol", "CLIA")
    (model,) = result["models"]
    assert code == 0 and model["aliases"] == {"challenger": 3, "champion": 3}
    assert [v["verdict"] for v in model["versions"]] == ["failed", "passed", "passed"]
    assert model["ledger"][-1]["approval_comment"] == "ok" and model["ledger"][-1]["approved_by"] == "carol"

    code, result = call("rollback", "--symbol", "CLIA", "--reason", "drift")
    assert code == 0 and result["version"] == 2
    assert call("rollback", "--symbol", "CLIA")[0] == 1  # nothing before v2
    assert call("promote", "--symbol", "bad symbol!", *gates)[0] == 2
    assert call("promote", "--symbol", "NOPE", "--version", "1", *gates)[0] == 2
    assert call("registry-status", "--symbol", "CLIA", "--profile", "demo")[1]["models"] == []
