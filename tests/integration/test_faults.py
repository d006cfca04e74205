"""Faults on real services: S3 stopped mid-run, wrong S3 keys, the MLflow server unreachable.

Each failing step must exit 2 with one clear `trainer <step>: error: ...` line naming the service
(no traceback), within bounded time, and leave a state the pipeline can continue from.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from integration_support import (
    RUNS_BUCKET,
    SMOKE_TRAIN,
    SPY_URI,
    TINY_TRAIN,
    Stack,
    finish_trainer,
    start_trainer,
    step_env,
    upload_market_data,
)
from support.seaweedfs import seaweedfs_server

pytestmark = pytest.mark.integration


def assert_clear_error(run, step: str, *needles: str) -> None:
    """Exit 2, and the last stderr line is the CLI's one-line error naming every needle; no traceback."""
    assert run.code == 2, run.explain()
    assert run.error_line.startswith(f"trainer {step}: error:"), run.explain()
    for needle in needles:
        assert needle in run.error_line, f"{needle!r} not in the error line\n{run.explain()}"
    assert "Traceback" not in run.stderr, run.explain()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_when_ready(client, bucket: str, key: str, timeout_s: float = 60.0) -> bytes:
    """GET an object from a just-restarted SeaweedFS: its S3 gateway answers before the volume
    server has re-registered its volumes with the master (InternalError until then)."""
    from botocore.exceptions import ClientError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "InternalError" or time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def test_s3_stopped_mid_train_fails_clearly_and_resume_completes(stack: Stack, tmp_path: Path) -> None:
    """S3 dies after the first checkpoint object lands; after a restart on the same data dir a fresh
    pod (empty state dir) resumes from the checkpoint on S3 and reaches the same total step count."""
    total, prefix = 600, "SPY/it-fault"
    output = f"s3://{RUNS_BUCKET}/{prefix}"
    args = [*SMOKE_TRAIN, "--data", SPY_URI, "--output-dir", output, "--total-timesteps", str(total), "--eval-freq", "300", *TINY_TRAIN]
    s3_dir = tmp_path / "seaweedfs"
    # Its own S3 server, so killing it leaves the session's (the MLflow artifact store) alone.
    with seaweedfs_server(s3_dir) as s3:
        upload_market_data(s3)
        client = s3.client()
        # A short run-key lease: the first trainer cannot release its lease with S3 down, so the
        # resume below takes it over once it is older than this (trainer/lease.py).
        env = step_env(s3, stack.mlflow.tracking_uri, tmp_path / "state-first", TRAINER_LEASE_TTL_SECONDS="2")
        started = time.monotonic()
        proc = start_trainer(args, env)
        try:
            marker = None
            while marker is None and proc.poll() is None and time.monotonic() - started < 240:
                listing = client.list_objects_v2(Bucket=RUNS_BUCKET, Prefix=f"{prefix}/checkpoints/")
                marker = next((o["Key"] for o in listing.get("Contents", []) if o["Key"].endswith("/COMPLETE")), None)
                time.sleep(0.2)
            assert marker is not None, f"no checkpoint reached S3 before the step ended (exit {proc.poll()})"
            os.killpg(s3.pid, signal.SIGKILL)  # the crash: no graceful shutdown
            first = finish_trainer(proc, started, 300, None)
        finally:
            if proc.poll() is None:  # the test failed before the step ended: never leave it running
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert_clear_error(first, "train", output, "S3")
    assert s3.endpoint_url in first.error_line or "S3 request failed" in first.error_line, first.explain()

    # The same server again: same data dir, ports and identity.
    with seaweedfs_server(s3_dir, access_key=s3.access_key, secret_key=s3.secret_key, ports=dict(s3.ports)) as s3:
        client = s3.client()
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=RUNS_BUCKET, Prefix=f"{prefix}/").get("Contents", [])]
        complete = sorted({k.split("/")[3] for k in keys if k.endswith("/COMPLETE")})
        assert complete, f"no complete checkpoint survived the restart: {keys}"
        state = json.loads(read_when_ready(client, RUNS_BUCKET, f"{prefix}/checkpoints/{complete[-1]}/state.json"))
        read_when_ready(client, "market-data", "SPY.csv")
        resumed_from = int(complete[-1].removeprefix("ckpt-"))
        assert 0 < resumed_from < total
        assert f"{prefix}/summary.json" not in keys  # the failed attempt never reached S3 with a summary

        result_json = tmp_path / "resume.json"
        env = step_env(s3, stack.mlflow.tracking_uri, tmp_path / "state-fresh-pod", TRAINER_LEASE_TTL_SECONDS="2")
        time.sleep(2.5)  # the dead trainer's lease expires
        started = time.monotonic()
        second = finish_trainer(start_trainer([*args, "--resume"], env, result_json), started, 300, result_json)
        assert second.code == 0, second.explain()
        assert "taking over the lease" in second.stderr, second.explain()
        assert "resumed from" in second.stderr and f"at step {resumed_from}" in second.stderr, second.explain()
        assert second.result["status"] == "completed" and second.result["total_timesteps"] == total
        summary = json.loads(client.get_object(Bucket=RUNS_BUCKET, Key=f"{prefix}/summary.json")["Body"].read())
        assert summary["status"] == "completed" and summary["total_timesteps"] == total
        # One MLflow run for the whole job: the resume reattached to the run the checkpoint names.
        assert summary["mlflow_run_id"] == state["mlflow_run_id"] == second.result["mlflow_run_id"]
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=RUNS_BUCKET, Prefix=f"{prefix}/checkpoints/").get("Contents", [])]
        assert f"{prefix}/checkpoints/ckpt-{total:010d}/COMPLETE" in keys
        checkpoint_steps = sorted({int(k.split("/")[3].removeprefix("ckpt-")) for k in keys if k.endswith("/COMPLETE")})
    rows = stack.sql("SELECT status FROM runs WHERE run_uuid = %s", (summary["mlflow_run_id"],))
    assert rows == [("FINISHED",)]
    tags = dict(stack.sql("SELECT key, value FROM tags WHERE run_uuid = %s", (summary["mlflow_run_id"],)))
    assert tags["status"] == "completed"
    # The resumed run keeps the schedule: checkpoints every checkpoints.freq (100) steps, none off it.
    off_schedule = [steps for steps in checkpoint_steps if steps % 100]
    assert not off_schedule, f"checkpoints off the 100-step schedule after resuming at {resumed_from}: {checkpoint_steps}"


def test_wrong_s3_secret_is_refused_by_validate(stack: Stack, trainer_cli) -> None:
    run = trainer_cli(["validate", "--symbol", "SPY", "--data", SPY_URI], stack.env(AWS_SECRET_ACCESS_KEY="not-the-secret"))
    assert_clear_error(run, "validate", SPY_URI, "AWS_SECRET_ACCESS_KEY")


def test_wrong_s3_access_key_is_refused_when_train_uploads_a_checkpoint(stack: Stack, trainer_cli) -> None:
    """Bundled data (no S3 read), so the first S3 call is the checkpoint upload to s3://."""
    output = f"s3://{RUNS_BUCKET}/SPY/it-wrong-key"
    run = trainer_cli(
        [*SMOKE_TRAIN, "--output-dir", output, "--total-timesteps", "300", "--eval-freq", "300", "--no-mlflow", *TINY_TRAIN],
        stack.env(AWS_ACCESS_KEY_ID="nobody"),
    )
    assert_clear_error(run, "train", output, "AWS_ACCESS_KEY_ID")
    assert stack.keys(RUNS_BUCKET, "SPY/it-wrong-key/") == []


def test_train_with_the_mlflow_server_unreachable_fails_within_bounded_time(stack: Stack, trainer_cli) -> None:
    uri = f"http://127.0.0.1:{closed_port()}"
    run = trainer_cli(
        [*SMOKE_TRAIN, "--output-dir", f"s3://{RUNS_BUCKET}/SPY/it-no-mlflow", "--total-timesteps", "300", "--eval-freq", "300", *TINY_TRAIN],
        stack.env(MLFLOW_TRACKING_URI=uri),
        timeout=75,  # kill a step that retries for minutes; the assertion below says how long is allowed
    )
    assert_clear_error(run, "train", uri)
    assert run.elapsed < 60, f"took {run.elapsed:.0f} s to give up\n{run.explain()}"
