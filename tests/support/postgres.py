"""A throwaway PostgreSQL server on loopback for tests: Debian's PostgreSQL binaries, `initdb` in a temp dir.

    with postgres_server() as pg:
        pg.create_database("mlflow")
        uri = pg.sqlalchemy_uri("mlflow")      # postgresql+psycopg2://postgres@127.0.0.1:PORT/mlflow
        with pg.connect("mlflow") as conn:     # psycopg2, autocommit
            ...

Recipe from shared/PLATFORM_NOTES.md: `initdb` refuses to run as root, so as root the cluster is
created and run as the `postgres` system user (runuser); as any other user it runs as that user.
The cluster lives in its own temp dir under the system temp root (pytest's tmp dirs are 0700 to
root, which `postgres` cannot enter) and is removed at teardown.
Trust authentication, TCP on 127.0.0.1 only, the Unix socket in the temp dir (not /var/run), a
free port, fsync off (a throwaway cluster). Teardown is `pg_ctl stop -m fast`, then SIGKILL of the
postmaster if it is still there, then the temp dir is removed.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUPERUSER = "postgres"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries, or the server did not start; the message says which and shows its log."""


def postgres_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<major>/bin with initdb and pg_ctl, else the directory of `initdb` on PATH."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0)
    for directory in reversed(candidates):
        if (Path(directory) / "initdb").exists() and (Path(directory) / "pg_ctl").exists():
            return Path(directory)
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _as_server_user(argv: list[str]) -> list[str]:
    """initdb/pg_ctl refuse root: run them as the `postgres` system user when we are root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", SUPERUSER, "--", *argv]
    return argv


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str = SUPERUSER

    def sqlalchemy_uri(self, database: str) -> str:
        # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; the venv ships psycopg2(-binary).
        return f"postgresql+psycopg2://{self.user}@{self.host}:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> Any:
        """A psycopg2 connection in autocommit mode (each query sees the latest committed state)."""
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname=database, connect_timeout=5)
        conn.autocommit = True
        return conn

    def create_database(self, name: str) -> None:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()

    def query(self, database: str, sql: str, params: tuple = ()) -> list[tuple]:
        conn = self.connect(database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        finally:
            conn.close()


def _postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def postgres_server(*, ready_timeout_s: float = 60.0) -> Iterator[PostgresServer]:
    """initdb a cluster in a fresh temp dir, start it on a free loopback port, yield it, always stop and remove it."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise PostgresUnavailable("PostgreSQL server binaries (initdb, pg_ctl) not found (apt-get install postgresql)")
    workdir = Path(tempfile.mkdtemp(prefix="trainer-pg-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(workdir, user=SUPERUSER)
        with _cluster(bin_dir, workdir, ready_timeout_s) as server:
            yield server
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def _cluster(bin_dir: Path, workdir: Path, ready_timeout_s: float) -> Iterator[PostgresServer]:
    data_dir, log_path, port = workdir / "data", workdir / "postgres.log", _free_port()

    def run(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(_as_server_user(argv), capture_output=True, text=True, timeout=timeout, cwd=workdir)

    init = run([str(bin_dir / "initdb"), "-D", str(data_dir), "-A", "trust", "-U", SUPERUSER, "--no-sync"], 120)
    if init.returncode != 0:
        raise PostgresUnavailable(f"initdb failed ({init.returncode}):\n{init.stderr[-2000:]}")
    options = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    start = run([str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-o", options, "-l", str(log_path),
                 "-w", "-t", str(int(ready_timeout_s)), "start"], ready_timeout_s + 10)
    try:
        if start.returncode != 0:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            raise PostgresUnavailable(f"pg_ctl start failed ({start.returncode}): {start.stderr.strip()}\n{tail}")
        yield PostgresServer("127.0.0.1", port)
    finally:
        pid = _postmaster_pid(data_dir)
        with contextlib.suppress(subprocess.TimeoutExpired):
            run([str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "-t", "20", "stop"], 30)
        # pg_ctl could not stop it (or timed out): kill the postmaster; its backends (each in a
        # session of its own) notice the postmaster's death and exit by themselves.
        if pid is not None and (data_dir / "postmaster.pid").exists():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(1.0)
