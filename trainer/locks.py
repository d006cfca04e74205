"""The per-model promotion lock: alias moves and ledger writes of one registered model never interleave.

Two implementations, chosen by where the registry lives:

- embedded store (sqlite / file next to this machine): an fcntl lock file beside the store;
- remote registry: a PostgreSQL session advisory lock (`pg_try_advisory_lock`) on the database
  named by `TRAINER_LOCK_DATABASE_URL`.

Why PostgreSQL: the production stack already runs it (MLflow's backend store), so the lock needs
no new infrastructure, and an advisory lock is a real compare-and-set in the server: exactly one
session holds a key. It is tied to the session, so a promoter killed with SIGKILL (or a pod that
vanishes) releases it when the server sees the connection close; there is no lease to guess and
no stale lock to break. A Kubernetes Lease would need the API server from every trainer pod and
a renewal loop; an S3 conditional write would need expiry rules. Before the commit point the
holder asks the server whether it still holds the key (`assert_held`), so a dropped connection
aborts the move instead of racing.

A remote registry without a lock database is refused: a promotion without mutual exclusion can
leave older data as champion (issue 10).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from trainer import faults
from trainer.errors import TrainerError

LOCK_DATABASE_ENV = "TRAINER_LOCK_DATABASE_URL"
LOCK_WAIT_S = 120.0  # how long a promotion waits for another one on the same model
_POLL_S = 0.1


class PromotionLock:
    """What a holder can ask of its lock; `assert_held` is called right before an alias moves."""

    description = "no lock"

    def assert_held(self) -> None:
        return None


class _FileLock(PromotionLock):
    def __init__(self, path: Path) -> None:
        self.description = f"file lock {path}"


class _AdvisoryLock(PromotionLock):
    def __init__(self, connection, key: int, url: str) -> None:
        self.connection, self.key = connection, key
        self.description = f"PostgreSQL advisory lock {key} on {_redacted(url)}"

    def assert_held(self) -> None:
        try:
            with self.connection.cursor() as cursor:
                cursor.execute(
                    # A bigint key shows as classid (high 32 bits) and objid (low 32 bits), objsubid 1.
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
                    "AND granted AND objsubid = 1 AND classid::bigint = %s AND objid::bigint = %s",
                    ((self.key >> 32) & 0xFFFFFFFF, self.key & 0xFFFFFFFF),
                )
                held = cursor.fetchone()[0] > 0
        except Exception as exc:  # noqa: BLE001 - any driver error means we cannot prove we hold it
            raise TrainerError(f"{self.description}: lost the connection before the alias move ({exc}); nothing moved") from None
        if not held:
            raise TrainerError(f"{self.description}: no longer held before the alias move; nothing moved")


def lock_key(model_name: str) -> int:
    """A stable signed 64-bit advisory-lock key per registered model."""
    digest = hashlib.sha256(f"trainer.promotion:{model_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _redacted(url: str) -> str:
    parsed = urlparse(url)
    host = parsed.hostname or "?"
    return f"{parsed.scheme}://{host}:{parsed.port or 5432}{parsed.path}"


def local_store_path(uri: str) -> Path | None:
    """The file behind a sqlite / file store (the lock lives next to it); None for a server."""
    if uri.startswith("sqlite:"):
        return Path(uri.split("sqlite:///", 1)[-1])
    if uri.startswith("file:"):
        return Path(urlparse(uri).path) / "store"
    if "://" not in uri:
        return Path(uri) / "store"
    return None


@contextlib.contextmanager
def promotion_lock(model_name: str, registry_uri: str) -> Iterator[PromotionLock]:
    """Hold the model's promotion lock for the block; TrainerError when it cannot be had in time."""
    if faults.disabled("promotion_lock"):
        yield PromotionLock()
        return
    url = os.environ.get(LOCK_DATABASE_ENV)
    local = local_store_path(registry_uri)
    if url:
        with _advisory_lock(url, model_name) as held:
            yield held
    elif local is not None:
        with _file_lock(local.parent / "locks" / f"{model_name}.lock") as held:
            yield held
    else:
        raise TrainerError(
            f"registry {registry_uri} is remote but {LOCK_DATABASE_ENV} is not set: promotions need a "
            "PostgreSQL database for their lock (e.g. the MLflow backend database)"
        )


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[PromotionLock]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TrainerError(f"{path}: another promotion held the lock for {LOCK_WAIT_S:.0f} s") from None
                time.sleep(_POLL_S)
        try:
            yield _FileLock(path)
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _connect(url: str):
    import psycopg2

    # SQLAlchemy-style URLs (postgresql+psycopg2://) are what MLflow's settings hold; libpq wants postgresql://.
    dsn = url.replace("postgresql+psycopg2://", "postgresql://", 1)
    try:
        connection = psycopg2.connect(
            dsn, connect_timeout=10, application_name=f"trainer-promotion {socket.gethostname()}:{os.getpid()}",
            keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3,
        )
    except psycopg2.Error as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainerError(f"promotion lock database {_redacted(url)}: cannot connect ({message})") from None
    connection.autocommit = True
    return connection


@contextlib.contextmanager
def _advisory_lock(url: str, model_name: str) -> Iterator[PromotionLock]:
    key = lock_key(model_name)
    connection = _connect(url)
    held = _AdvisoryLock(connection, key, url)
    try:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                if cursor.fetchone()[0]:
                    break
            if time.monotonic() > deadline:
                raise TrainerError(f"{held.description}: another promotion of {model_name} held it for {LOCK_WAIT_S:.0f} s")
            time.sleep(_POLL_S)
        yield held
    finally:
        # Closing the session releases the lock even when the unlock call cannot be sent.
        with contextlib.suppress(Exception):
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", (key,))
        with contextlib.suppress(Exception):
            connection.close()
