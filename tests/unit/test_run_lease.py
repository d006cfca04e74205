"""The run-key lease (trainer/lease.py): one trainer per run directory, in S3 (a real SeaweedFS
server, conditional writes) and in a local folder (fcntl), and `trainer train` refusing a busy key."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from support.seaweedfs import lease_renewed_at
from trainer.errors import EXIT_BUSY
from trainer.lease import LeaseHeldError, LeaseLostError, LocalLease, S3Lease, run_key_lease

ROOT = Path(__file__).resolve().parents[2]
TRAINER = str(Path(sys.executable).parent / "trainer")
BUCKET = "lease-runs"


@pytest.fixture
def s3(s3_server, monkeypatch):
    for key, value in s3_server.env_vars().items():
        monkeypatch.setenv(key, value)
    client = s3_server.client()
    if BUCKET not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=BUCKET)
    return client


def run_key() -> str:
    return f"s3://{BUCKET}/runs/SPY/{uuid.uuid4().hex[:12]}/full"


def test_a_second_trainer_is_refused_while_the_s3_lease_is_held_and_admitted_after_release(s3):
    key = run_key()
    first = S3Lease(key, "pod-a", ttl_seconds=60)
    first.acquire()
    second = S3Lease(key, "pod-b", ttl_seconds=60)
    with pytest.raises(LeaseHeldError, match="being trained by pod-a") as refused:
        second.acquire()
    assert refused.value.exit_code == EXIT_BUSY
    assert first.renew()  # renewing one's own lease works (conditional on our last write)
    first.release()
    second.acquire()
    second.assert_held()
    second.release()


def test_only_one_of_many_simultaneous_trainers_gets_a_fresh_s3_lease(s3):
    key = run_key()
    leases = [S3Lease(key, f"pod-{i}", ttl_seconds=60) for i in range(6)]
    start = threading.Barrier(len(leases))
    won: list[str] = []
    refused: list[str] = []

    def contend(lease: S3Lease) -> None:
        start.wait()
        try:
            lease.acquire()
            won.append(lease.holder)
        except LeaseHeldError:
            refused.append(lease.holder)

    threads = [threading.Thread(target=contend, args=(lease,)) for lease in leases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(won) == 1 and len(refused) == len(leases) - 1
    next(lease for lease in leases if lease.holder == won[0]).release()


def test_a_lease_not_renewed_within_its_ttl_is_taken_over_and_its_holder_stops_writing(s3):
    key = run_key()
    stale = S3Lease(key, "pod-lost", ttl_seconds=1.0)
    stale.acquire()
    stale._stop.set()  # its process froze: no more renewals
    time.sleep(1.3)
    fresh = S3Lease(key, "pod-new", ttl_seconds=60)
    fresh.acquire()  # taken over by a conditional write on the expired lease
    assert not stale.renew()
    with pytest.raises(LeaseLostError, match="taken over"):
        stale.assert_held()
    stale.release()  # never deletes the new holder's lease
    with pytest.raises(LeaseHeldError, match="pod-new"):
        S3Lease(key, "pod-third", ttl_seconds=60).acquire()
    fresh.release()


def test_the_renewal_thread_keeps_a_short_lease_alive(s3):
    key = run_key()
    with run_key_lease(key, Path("unused")) as lease:
        assert isinstance(lease, S3Lease)
    # The renewal thread must keep stamping the lease, every ttl / 5, past two TTLs. Read from S3
    # rather than slept for: a fixed 5 s sleep with a 2.5 s TTL failed on a fully loaded 2-core CI
    # box, where neither the thread nor the S3 server got the CPU for 3 s (a real expiry; production
    # TTLs are 120 s). So the median gap between renewals is checked, which a starved second or two
    # cannot move, and the contender asks just after a renewal has landed.
    ttl = 3.0
    holder = S3Lease(key, "pod-alive", ttl_seconds=ttl)
    holder.acquire()
    stamps = [lease_renewed_at(s3, key)]
    deadline = time.monotonic() + 120
    while True:
        stamped = lease_renewed_at(s3, key)
        if stamped != stamps[-1]:
            stamps.append(stamped)
        if stamped >= stamps[0] + 2 * ttl and time.time() - stamped < ttl / 4:
            break
        assert time.monotonic() < deadline, f"the lease was not renewed past two TTLs (stamps {stamps})"
        time.sleep(0.05)
    gaps = np.diff(stamps)
    assert np.median(gaps) < ttl / 2, f"renewals {gaps.round(2).tolist()} s apart, with a TTL of {ttl} s"
    with pytest.raises(LeaseHeldError, match="pod-alive"):
        S3Lease(key, "pod-waiting", ttl_seconds=ttl).acquire()
    holder.release()


def test_release_with_s3_unreachable_never_masks_the_steps_own_outcome(s3, monkeypatch, caplog):
    lease = S3Lease(run_key(), "pod-a", ttl_seconds=60)
    lease.acquire()
    lease._stop.set()
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # S3 went away as the step ended
    lease.release()  # logs, does not raise
    assert "could not release the lease" in caplog.text


def test_local_run_directories_are_leased_with_a_lock_released_when_the_holder_dies(tmp_path):
    run = tmp_path / "run"
    first = LocalLease(run, "host:1:a")
    first.acquire()
    with pytest.raises(LeaseHeldError, match="host:1:a"):
        LocalLease(run, "host:2:b").acquire()
    first.release()
    # A holder SIGKILLed mid-run: the kernel drops its lock.
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from trainer.lease import LocalLease; import time; "
         f"lease = LocalLease({str(run)!r}, 'doomed'); lease.acquire(); print('held', flush=True); time.sleep(600)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(LeaseHeldError, match="doomed"):
        LocalLease(run, "me").acquire()
    holder.kill()
    holder.wait()
    lease = LocalLease(run, "me")
    lease.acquire()
    lease.release()


def _train(output: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    args = [TRAINER, "train", "--config", str(ROOT / "configs" / "phase_b1_options.yaml"), "--symbol", "SPY",
            "--total-timesteps", "200", "--n-envs", "1", "--output-dir", output, "--no-mlflow"]
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_trainer_train_refuses_a_run_key_another_trainer_holds(s3, tmp_path):
    key = run_key()
    other = S3Lease(key, "trainer-full-train-abc12:7:deadbeef", ttl_seconds=120)
    other.acquire()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TRAINER_"))}
    env["TRAINER_STATE_DIR"] = str(tmp_path / "state")
    try:
        proc = _train(key, env)
    finally:
        other.release()
    assert proc.returncode == EXIT_BUSY, proc.stderr[-2000:]
    assert "being trained by trainer-full-train-abc12:7:deadbeef" in proc.stderr
    assert "Traceback" not in proc.stderr
    bucket, prefix = key[len("s3://"):].split("/", 1)
    assert s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("KeyCount", 0) == 0  # nothing written
