"""The run-key lease: one run directory is trained by at most one process (pod) at a time.

Two Airflow runs of the same symbol and config, a retry started while its previous pod is still
checkpointing, or a pod the scheduler lost track of would otherwise train the same run key at once
and overwrite each other's checkpoints. `train` therefore holds a lease on its run directory from
before it pulls the checkpoint until after its last push:

- s3:// run directory: the object `<run prefix>/lease.json` (holder, renewed_at, ttl_seconds),
  created with a conditional write (`If-None-Match: *`) and renewed every ttl/5 seconds with
  `If-Match: <etag of our last write>`, so two writers can never both believe they hold it. A
  lease not renewed for ttl_seconds (its holder was SIGKILLed or lost its node) may be taken over,
  again by a conditional write. A holder whose renewal fails because someone else holds the lease
  now stops pushing (`assert_held` raises before every upload).
- local run directory: an fcntl lock on `<run dir>/.lease`, released by the kernel when its holder
  exits however it exits.

A second trainer finds the lease held and exits with EXIT_BUSY (73), naming the holder and when its
lease expires; Airflow retries the step later (trainer/orchestration/outcome.py StepBusy).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainer.errors import EXIT_BUSY, TrainerError

LOGGER = logging.getLogger(__name__)

LEASE_OBJECT = "lease.json"
LOCAL_LEASE_FILE = ".lease"
TTL_ENV = "TRAINER_LEASE_TTL_SECONDS"
DEFAULT_TTL_S = 120.0  # a SIGKILLed holder blocks its run key at most this long (Airflow retries outlast it)


class LeaseHeldError(TrainerError):
    """Another trainer holds the run key's lease; retry later."""

    exit_code = EXIT_BUSY


class LeaseLostError(TrainerError):
    """This trainer's lease was taken over (it was not renewed in time); it must stop writing."""

    exit_code = EXIT_BUSY


def holder_id() -> str:
    """host (the pod's name on Kubernetes), pid and a random suffix: unique per process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lease_ttl() -> float:
    raw = os.environ.get(TTL_ENV)
    try:
        ttl = float(raw) if raw else DEFAULT_TTL_S
    except ValueError as exc:
        raise TrainerError(f"{TTL_ENV}={raw!r}: expected a number of seconds") from exc
    if ttl <= 0:
        raise TrainerError(f"{TTL_ENV}={raw!r}: must be positive")
    return ttl


class LocalLease:
    """An fcntl lock on `<run dir>/.lease` (the file records the holder, for the refusal message)."""

    def __init__(self, run_dir: Path, holder: str) -> None:
        self.path = Path(run_dir) / LOCAL_LEASE_FILE
        self.holder = holder
        self._file: Any = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            other = handle.read().strip() or "another process"
            handle.close()
            raise LeaseHeldError(
                f"run directory {self.path.parent} is being trained by {other}; "
                "not training it twice at once (retry when that run has stopped)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(self.holder)
        handle.flush()
        self._file = handle

    def assert_held(self) -> None:
        if self._file is None:
            raise LeaseLostError(f"no lease held on {self.path.parent}")

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class S3Lease:
    """`<prefix>/lease.json` written only with conditional writes (see the module docstring)."""

    def __init__(self, remote: str, holder: str, ttl_seconds: float) -> None:
        from trainer.s3 import parse_s3_uri

        self.remote = remote.rstrip("/")
        bucket, prefix = parse_s3_uri(self.remote)
        self.bucket, self.key = bucket, f"{prefix.rstrip('/')}/{LEASE_OBJECT}" if prefix else LEASE_OBJECT
        self.uri = f"s3://{self.bucket}/{self.key}"
        self.holder = holder
        self.ttl = ttl_seconds
        self._etag: str | None = None
        self._lost: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    # -- S3 ----------------------------------------------------------------------------------------
    def _body(self) -> bytes:
        return json.dumps({"holder": self.holder, "renewed_at": time.time(), "ttl_seconds": self.ttl}).encode()

    def _put(self, client, **condition: str) -> str | None:
        """Write our lease under `condition`; its new ETag, or None when the condition failed."""
        from botocore.exceptions import ClientError

        from trainer.s3 import s3_errors

        try:
            with s3_errors(self.uri):
                try:
                    return client.put_object(Bucket=self.bucket, Key=self.key, Body=self._body(),
                                             ContentType="application/json", **condition)["ETag"]
                except ClientError as exc:
                    code = exc.response.get("Error", {}).get("Code")
                    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                    if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                        return None
                    raise
        except TrainerError as exc:
            raise TrainerError(f"run-key lease {self.uri}: {exc}") from exc

    def _read(self, client) -> tuple[dict[str, Any], str] | None:
        from botocore.exceptions import ClientError

        try:
            response = client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise TrainerError(f"run-key lease {self.uri}: {exc}") from exc
        try:
            payload = json.loads(response["Body"].read())
        except ValueError:
            payload = {}  # unreadable: treat as expired, taken over only by a conditional write
        return (payload if isinstance(payload, dict) else {}), response["ETag"]

    # -- lease -------------------------------------------------------------------------------------
    def acquire(self) -> None:
        from trainer.s3 import s3_client

        client = s3_client()
        etag = self._put(client, IfNoneMatch="*")
        if etag is None:
            current = self._read(client)
            if current is None:  # released between our write and our read
                etag = self._put(client, IfNoneMatch="*")
            else:
                payload, current_etag = current
                age = time.time() - float(payload.get("renewed_at") or 0)
                ttl = float(payload.get("ttl_seconds") or self.ttl)
                if age < ttl:
                    raise LeaseHeldError(
                        f"run key {self.remote} is being trained by {payload.get('holder', 'another trainer')} "
                        f"(lease {self.uri} renewed {age:.0f} s ago, expires in {ttl - age:.0f} s); "
                        "not training it twice at once; retry later"
                    )
                LOGGER.warning("taking over the lease of %s: %s did not renew it for %.0f s (ttl %.0f s)",
                               self.remote, payload.get("holder", "its holder"), age, ttl)
                etag = self._put(client, IfMatch=current_etag)
            if etag is None:
                raise LeaseHeldError(f"run key {self.remote}: another trainer took the lease {self.uri} just now; retry later")
        self._etag = etag
        LOGGER.info("lease on run key %s taken by %s (ttl %.0f s)", self.remote, self.holder, self.ttl)
        self._renewer = threading.Thread(target=self._renew_loop, name="run-key-lease", daemon=True)
        self._renewer.start()

    def renew(self) -> bool:
        """Extend the lease; False (and `lost`) when someone else holds it now."""
        from trainer.s3 import s3_client

        with self._lock:
            if self._lost or self._etag is None:
                return False
            etag = self._put(s3_client(), IfMatch=self._etag)
            if etag is None:
                self._lost = f"lease {self.uri} was taken over by another trainer (not renewed within {self.ttl:.0f} s)"
                LOGGER.error("%s; this trainer stops writing to %s", self._lost, self.remote)
                return False
            self._etag = etag
            return True

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 5):
            try:
                if not self.renew():
                    return
            except TrainerError as exc:  # S3 briefly unreachable: try again before the lease expires
                LOGGER.warning("could not renew the lease on %s: %s", self.remote, exc)

    def assert_held(self) -> None:
        if self._lost:
            raise LeaseLostError(f"{self._lost}; stopped before writing to {self.remote}")
        if self._etag is None:
            raise LeaseLostError(f"no lease held on {self.remote}")

    def release(self) -> None:
        """Delete the lease if it is still ours. Best effort: it runs while the step is ending,
        often because S3 failed; a lease that cannot be deleted expires after its TTL."""
        from trainer.s3 import s3_client

        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=10)
        with self._lock:
            etag, self._etag = self._etag, None
            if self._lost or etag is None:
                return
            try:
                client = s3_client()
                current = self._read(client)
                if current is not None and current[1] == etag:  # still ours: nobody took it over
                    client.delete_object(Bucket=self.bucket, Key=self.key)
            except Exception as exc:  # noqa: BLE001 - never mask the step's own outcome
                LOGGER.warning("could not release the lease %s (%s); it expires %.0f s after its last renewal",
                               self.uri, exc, self.ttl)


@contextlib.contextmanager
def run_key_lease(output: str, local_dir: Path, holder: str | None = None) -> Iterator[LocalLease | S3Lease]:
    """Hold the lease of run directory `output` (s3:// prefix, else `local_dir`) for the block."""
    holder = holder or holder_id()
    lease: LocalLease | S3Lease
    lease = S3Lease(output, holder, lease_ttl()) if output.startswith("s3://") else LocalLease(local_dir, holder)
    lease.acquire()
    try:
        yield lease
    finally:
        lease.release()
