"""S3 retention on a real S3 server (SeaweedFS): S3 keeps only the checkpoints `keep_last` keeps.

A tiny training (checkpoints every 100 steps over 500 steps, keep_last 2) runs into an s3://
run directory with the real console script; the bucket then holds exactly the last two
checkpoints, each complete. The second test drives RunStorage.prune_checkpoints directly on
hand-made checkpoints: the newest complete checkpoint is never deleted, a checkpoint newer than it
(an upload under way) is left alone, and a half-deleted checkpoint has lost its COMPLETE marker.
MLflow tracks into a throwaway SQLite store (the MLflow server is not what this tests).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from integration_support import (
    RUNS_BUCKET,
    SMOKE_TRAIN,
    SPY_URI,
    TINY_TRAIN,
    finish_trainer,
    start_trainer,
    step_env,
    upload_market_data,
)
from support.seaweedfs import S3Server

pytestmark = pytest.mark.integration

CHECKPOINT_FILES = {"sac.zip", "rng.pt", "rollout.pt", "state.json", "COMPLETE"}


def _keys(s3: S3Server, prefix: str) -> list[str]:
    client = s3.client()
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=RUNS_BUCKET, Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return keys


def _checkpoints(keys: list[str], prefix: str) -> dict[str, set[str]]:
    """checkpoint name -> the file names S3 holds for it."""
    found: dict[str, set[str]] = {}
    for key in keys:
        rel = key[len(prefix):]
        if rel.startswith("checkpoints/"):
            _, name, file = rel.split("/", 2)
            found.setdefault(name, set()).add(file)
    return found


def test_s3_keeps_only_the_last_checkpoints_of_a_training(s3_server: S3Server, tmp_path: Path) -> None:
    upload_market_data(s3_server)
    prefix = "SPY/it-retention/"
    output = f"s3://{RUNS_BUCKET}/{prefix.rstrip('/')}"
    args = [*SMOKE_TRAIN, "--data", SPY_URI, "--output-dir", output, "--total-timesteps", "500", "--eval-freq", "500",
            *TINY_TRAIN, "--set", "checkpoints.keep_last=2"]
    env = step_env(s3_server, f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "state")
    run = finish_trainer(start_trainer(args, env), time.monotonic(), 300.0, None)
    assert run.code == 0, run.explain()
    assert "pruned" in run.stderr, run.explain()  # the pruning happened during the run, not only at the end

    remote = _checkpoints(_keys(s3_server, prefix), prefix)
    assert sorted(remote) == ["ckpt-0000000400", "ckpt-0000000500"], remote
    for name, files in remote.items():
        assert CHECKPOINT_FILES <= files, f"{name} is incomplete on S3: {sorted(files)}"
    # Checkpoint objects carry the tag the lifecycle rule of helm/README.md filters on; others do not.
    client = s3_server.client()
    tags = client.get_object_tagging(Bucket=RUNS_BUCKET, Key=f"{prefix}checkpoints/ckpt-0000000500/COMPLETE")
    assert {"Key": "trainer-object", "Value": "checkpoint"} in tags["TagSet"]
    assert client.get_object_tagging(Bucket=RUNS_BUCKET, Key=f"{prefix}summary.json")["TagSet"] == []


def _upload_checkpoint(s3: S3Server, prefix: str, name: str, complete: bool) -> None:
    client = s3.client()
    for file in ("sac.zip", "state.json", *(["COMPLETE"] if complete else [])):
        client.put_object(Bucket=RUNS_BUCKET, Key=f"{prefix}checkpoints/{name}/{file}", Body=b"x")


def test_prune_never_deletes_the_newest_complete_checkpoint(s3_server: S3Server, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.storage import RunStorage

    upload_market_data(s3_server)
    for name, value in s3_server.env_vars().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TRAINER_STATE_DIR", str(tmp_path / "state"))
    prefix = "SPY/it-prune/"
    _upload_checkpoint(s3_server, prefix, "ckpt-0000000100", complete=True)
    _upload_checkpoint(s3_server, prefix, "ckpt-0000000200", complete=False)  # debris of a killed upload
    _upload_checkpoint(s3_server, prefix, "ckpt-0000000300", complete=True)
    _upload_checkpoint(s3_server, prefix, "ckpt-0000000400", complete=False)  # newer than the newest complete
    storage = RunStorage(f"s3://{RUNS_BUCKET}/{prefix.rstrip('/')}")

    # An empty staging folder (a fresh pod) keeps nothing locally: still the newest complete stays.
    assert storage.prune_checkpoints() == ["ckpt-0000000100", "ckpt-0000000200"]
    remote = _checkpoints(_keys(s3_server, prefix), prefix)
    assert remote == {"ckpt-0000000300": {"sac.zip", "state.json", "COMPLETE"},
                      "ckpt-0000000400": {"sac.zip", "state.json"}}
    assert storage.prune_checkpoints() == []

    # The marker goes first: a deletion cut short after it leaves an incomplete checkpoint.
    _upload_checkpoint(s3_server, prefix, "ckpt-0000000500", complete=True)
    client = s3_server.client()
    real_delete_objects = client.delete_objects

    def cut_short(**kwargs):
        raise ConnectionError("killed mid-prune")

    monkeypatch.setattr("trainer.storage.s3_client", lambda: client)
    monkeypatch.setattr(client, "delete_objects", cut_short)
    (storage.local / "checkpoints" / "ckpt-0000000500").mkdir(parents=True)
    with pytest.raises(ConnectionError):
        storage.prune_checkpoints()
    remote = _checkpoints(_keys(s3_server, prefix), prefix)
    assert remote["ckpt-0000000300"] == {"sac.zip", "state.json"}, "COMPLETE must be deleted first"
    monkeypatch.setattr(client, "delete_objects", real_delete_objects)
    assert storage.prune_checkpoints() == ["ckpt-0000000300", "ckpt-0000000400"]
    assert sorted(_checkpoints(_keys(s3_server, prefix), prefix)) == ["ckpt-0000000500"]
