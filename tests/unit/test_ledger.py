"""The promotion ledger: local JSON lines under concurrent appends, the registry mirror, replay."""

from __future__ import annotations

import json
import multiprocessing

import pytest

from trainer import ledger
from trainer.ledger import LedgerRecord
from trainer.registry import champion_history


def record(action: str, version: int | None, **extra) -> LedgerRecord:
    return LedgerRecord(actor="t", action=action, symbol="SPY", model_name="m-SPY", version=version, **extra)


def test_record_round_trip_and_validation():
    rec = record("promote", 3, from_version=2, alias="champion", reason="x" * 5000, approved_by="alice")
    back = LedgerRecord.from_json(rec.to_json())
    assert (back.version, back.from_version, back.approved_by) == (3, 2, "alice")
    assert len(back.reason) == 2000  # bounded so a tag never overflows
    assert back.ts.endswith("+00:00")
    with pytest.raises(ValueError, match="action"):
        record("delete", 1)


def _append_many(path: str, worker: int) -> None:
    for i in range(50):
        ledger.append_local(record("noop", worker * 100 + i, reason="r" * 300), path=__import__("pathlib").Path(path))


def test_local_appends_from_processes_never_interleave(tmp_path):
    path = tmp_path / "ledger.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(path), w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = path.read_text().splitlines()
    assert len(lines) == 150 and all(json.loads(line)["action"] == "noop" for line in lines)
    assert sorted(r.version for r in ledger.read_local(path)) == sorted(w * 100 + i for w in range(3) for i in range(50))


def test_local_default_path_and_filter(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINER_STATE_DIR", str(tmp_path))
    ledger.append_local(record("register", 1))
    ledger.append_local(LedgerRecord(actor="t", action="register", symbol="QQQ", model_name="m-QQQ", version=1))
    assert ledger.local_ledger_path() == tmp_path / "registry" / "ledger.jsonl"
    assert [r.model_name for r in ledger.read_local(model_name="m-QQQ")] == ["m-QQQ"]
    ledger.local_ledger_path().write_text(ledger.local_ledger_path().read_text() + "{not json\n")
    with pytest.raises(Exception, match="ledger.jsonl:3"):
        ledger.read_local()


def test_registry_mirror_in_a_real_store(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("TRAINER_STATE_DIR", str(tmp_path))
    store = f"sqlite:///{tmp_path / 'db.sqlite'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    client.create_registered_model("m-SPY")
    for rec in (record("promote", 1), record("promote", 2, from_version=1), record("noop", 2),
                record("promote", 3, from_version=2), record("rollback", 2, from_version=3)):
        ledger.append(client, rec)
    mirrored = ledger.read_registry(client, "m-SPY")
    assert [r.action for r in mirrored] == ["promote", "promote", "noop", "promote", "rollback"]
    assert sorted(k for k in client.get_registered_model("m-SPY").tags if k.startswith("ledger."))[-1] == "ledger.000005"
    assert [r.to_json() for r in mirrored] == [r.to_json() for r in ledger.read_local(model_name="m-SPY")]
    assert champion_history(mirrored) == [1, 2]
