"""A real MLflow tracking server on loopback for tests: PostgreSQL backend store, S3 artifact store.

    with mlflow_server(tmp_dir, backend_store_uri=pg.sqlalchemy_uri("mlflow"),
                       artifacts_destination="s3://mlflow-artifacts/", env=s3.env_vars()) as server:
        server.tracking_uri                    # http://127.0.0.1:PORT
        server.stop(); server.start()          # same port, same stores (fault tests)

Flags follow shared/PLATFORM_NOTES.md: `mlflow server --host 127.0.0.1 --port P --workers 1` with
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false (two processes, healthy in ~5 s). With `auth=` the server
runs MLflow's basic-auth app (`--app-name basic-auth`), as the chart deploys it: users and
permissions in `auth.database_uri`, the admin from `auth.admin_*`, READ for everyone else by default. Artifacts are proxied:
clients upload through the server, which writes to `artifacts_destination` with its own AWS_* /
MLFLOW_S3_ENDPOINT_URL. The server runs in its own process group; stop() sends SIGTERM to the group,
then SIGKILL after a grace period; the context manager always stops it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BasicAuth:
    """The basic-auth app's settings (its basic_auth.ini), admin credentials included."""

    database_uri: str
    admin_username: str = "admin"
    admin_password: str = "integration-admin-password"
    default_permission: str = "READ"

    def write_config(self, path: Path) -> Path:
        path.write_text(
            "[mlflow]\n"
            f"default_permission = {self.default_permission}\n"
            f"database_uri = {self.database_uri}\n"
            f"admin_username = {self.admin_username}\n"
            f"admin_password = {self.admin_password}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        return path


class MlflowServerUnavailable(RuntimeError):
    """The server exited or did not answer /health in time; the message shows its log."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """One `mlflow server` process group that can be stopped and started again on the same port."""

    def __init__(self, workdir: Path, backend_store_uri: str, artifacts_destination: str, env: dict[str, str],
                 ready_timeout_s: float = 90.0, stop_grace_s: float = 10.0, auth: BasicAuth | None = None):
        self.workdir = workdir
        self.port = _free_port()
        self.tracking_uri = f"http://127.0.0.1:{self.port}"
        self.backend_store_uri = backend_store_uri
        self.artifacts_destination = artifacts_destination
        self.log_path = workdir / "mlflow-server.log"
        self._env = {**os.environ, **env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.auth = auth
        if auth is not None:
            self._env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth.write_config(workdir / "basic_auth.ini"))
            self._env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = "integration-flask-secret"
        self._ready_timeout_s = ready_timeout_s
        self._stop_grace_s = stop_grace_s
        self._proc: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.tracking_uri + "/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start(self) -> None:
        if self.running:
            return
        mlflow_cli = Path(sys.executable).parent / "mlflow"
        argv = [
            str(mlflow_cli) if mlflow_cli.exists() else "mlflow", "server",
            "--backend-store-uri", self.backend_store_uri,
            "--artifacts-destination", self.artifacts_destination,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--workers", "1",
            *(["--app-name", "basic-auth"] if self.auth is not None else []),
        ]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(argv, cwd=self.workdir, env=self._env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self._ready_timeout_s
        while not self.healthy():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                state = (f"exited with {self._proc.returncode}" if self._proc.poll() is not None
                         else f"not healthy after {self._ready_timeout_s:.0f} s")
                self.stop()
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise MlflowServerUnavailable(f"mlflow server {state}; log {self.log_path}:\n{tail}")
            time.sleep(0.3)

    def stop(self) -> None:
        """SIGTERM the process group (gunicorn/uvicorn and its workers), SIGKILL after the grace."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=self._stop_grace_s)
            except subprocess.TimeoutExpired:
                pass
        # Workers may outlive the leader: kill whatever is left in the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


@contextlib.contextmanager
def mlflow_server(workdir: str | Path, *, backend_store_uri: str, artifacts_destination: str,
                  env: dict[str, str] | None = None, auth: BasicAuth | None = None) -> Iterator[MlflowServer]:
    """Start an MLflow server (own process group, free loopback port), yield it, always stop it."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    server = MlflowServer(workdir, backend_store_uri, artifacts_destination, env or {}, auth=auth)
    try:
        server.start()
        yield server
    finally:
        server.stop()
