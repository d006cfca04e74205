"""A Kubernetes API server test double at the HTTP level, for the pod operator's own client.

No Kubernetes cluster can run on these machines (no container runtime), so the pod operator's
kill, timeout, Pending and retry paths are exercised against this: a threaded HTTP server on
127.0.0.1 that speaks the core/v1 pod endpoints the KubernetesPodOperator uses (create, read,
list by label selector, patch labels, delete with grace period, logs with follow, events) and
the exec websocket its xcom sidecar is read and stopped through. The real `kubernetes` client,
KubernetesHook, PodManager and KubernetesPodOperator talk to it unchanged; what a kubelet would
do (schedule, run, exit, terminate within the grace period) is scripted per pod by `Behaviour`.

    with kube_api_server(tmp_path) as api:
        api.behaviour = Behaviour(run_seconds=0.5, exit_code=0, result={"status": "completed"})
        op.config_file = str(api.kubeconfig)
        ...
        assert api.created == [...] and api.live_pods() == []
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

SIDECAR = "airflow-xcom-sidecar"
BASE = "base"
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_POD_PATH = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods(?:/(?P<name>[^/]+))?(?:/(?P<sub>log|exec|status))?$")
_EVENTS_PATH = re.compile(r"^/api/v1/namespaces/[^/]+/events$")


@dataclass
class Behaviour:
    """What the "kubelet" does with the next pods created.

    :param pending: never leaves Pending (scheduled, but e.g. no GPU node can start it)
    :param run_seconds: how long the trainer container runs before it exits
    :param exit_code: its exit code
    :param result: the JSON the step wrote to /airflow/xcom/return.json (None: none)
    :param terminating_seconds: how long a deleted pod takes to go (its SIGTERM checkpoint)
    :param logs: the container's log lines
    """

    pending: bool = False
    run_seconds: float = 0.3
    exit_code: int = 0
    result: dict[str, Any] | None = None
    terminating_seconds: float = 0.2
    logs: list[str] = field(default_factory=lambda: ["training...", "done"])
    results_by_step: dict[str, dict[str, Any]] = field(default_factory=dict)  # by the pod's trainer/step label

    def result_of(self, labels: dict[str, str]) -> dict[str, Any] | None:
        return self.results_by_step.get(labels.get("trainer/step", ""), self.result)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class FakePod:
    manifest: dict[str, Any]
    behaviour: Behaviour
    created: float = field(default_factory=time.monotonic)
    deleted_at: float | None = None
    sidecar_killed: bool = False

    @property
    def name(self) -> str:
        return self.manifest["metadata"]["name"]

    def base_exit(self) -> int | None:
        """The trainer's exit code once it ended: its own exit, or 75 after SIGTERM (checkpoint)."""
        if self.behaviour.pending:
            return None
        if self.deleted_at is not None:
            return 75
        if time.monotonic() - self.created >= self.behaviour.run_seconds:
            return self.behaviour.exit_code
        return None

    def gone(self) -> bool:
        return self.deleted_at is not None and time.monotonic() - self.deleted_at >= self.behaviour.terminating_seconds

    def to_json(self) -> dict[str, Any]:
        pod = json.loads(json.dumps(self.manifest))
        if self.deleted_at is not None:
            pod["metadata"]["deletionTimestamp"] = _now()
        images = {c["name"]: c.get("image", "") for c in pod["spec"]["containers"]}

        def status(name: str, exit_code: int | None) -> dict[str, Any]:
            if exit_code is None:
                state = {"running": {"startedAt": _now()}}
            else:
                state = {"terminated": {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error"}}
            return {"name": name, "image": images.get(name, ""), "imageID": "", "ready": exit_code is None,
                    "restartCount": 0, "state": state}

        conditions = [{"type": "PodScheduled", "status": "True"}]
        if self.behaviour.pending:
            pod["status"] = {"phase": "Pending", "conditions": conditions}
            return pod
        base = self.base_exit()
        sidecar = 0 if self.sidecar_killed or self.deleted_at is not None else None
        if base is None or sidecar is None:
            phase = "Running"
        else:
            phase = "Succeeded" if base == 0 else "Failed"
        pod["status"] = {"phase": phase, "conditions": conditions,
                         "containerStatuses": [status(BASE, base), status(SIDECAR, sidecar)]}
        return pod


def _selector_matches(selector: str, labels: dict[str, str]) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key) != value.lstrip("="):
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class KubeApi:
    """The double's state: the pods, and a record of every create and delete."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.behaviour = Behaviour()
        self.pods: dict[tuple[str, str], FakePod] = {}
        self.created: list[str] = []
        self.deleted: list[tuple[str, int | None]] = []  # (pod, grace period seconds asked)
        self.active_siblings_at_create: list[list[str]] = []  # per create: the task's other live trainers
        self.lock = threading.Lock()

    def _sweep(self) -> None:
        for key in [k for k, pod in self.pods.items() if pod.gone()]:
            del self.pods[key]

    def live_pods(self) -> list[str]:
        """Pods that exist now (running, pending, terminating or finished and kept)."""
        with self.lock:
            self._sweep()
            return sorted(name for _, name in self.pods)

    def running_pods(self) -> list[str]:
        """Pods whose trainer container is still running or waiting to start (not terminated)."""
        with self.lock:
            self._sweep()
            return sorted(p.name for p in self.pods.values() if p.base_exit() is None)

    def get(self, ns: str, name: str) -> FakePod | None:
        with self.lock:
            self._sweep()
            return self.pods.get((ns, name))


class _Handler(BaseHTTPRequestHandler):
    server_version = "kube-api-double/1"
    api: KubeApi  # set on the subclass per server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    # -- plumbing --------------------------------------------------------------------------------
    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self, what: str) -> None:
        self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                         "message": f"{what} not found", "code": 404})

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}") if length else {}

    def _route(self) -> tuple[re.Match[str] | None, dict[str, list[str]]]:
        url = urlparse(self.path)
        return _POD_PATH.match(url.path), parse_qs(url.query)

    # -- verbs -----------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        if _EVENTS_PATH.match(url.path):
            return self._send(200, {"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": []})
        match, query = self._route()
        if match is None:
            return self._not_found(url.path)
        ns, name, sub = match["ns"], match["name"], match["sub"]
        if name is None:
            selector = unquote(query.get("labelSelector", [""])[0])
            with self.api.lock:
                self.api._sweep()
                items = [p.to_json() for (pns, _), p in self.api.pods.items()
                         if pns == ns and _selector_matches(selector, p.manifest["metadata"].get("labels") or {})]
            return self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
                                    "items": items})
        pod = self.api.get(ns, name)
        if pod is None:
            return self._not_found(f"pods {name!r}")
        if sub == "exec":
            return self._exec(pod, query)
        if sub == "log":
            return self._logs(pod, follow=query.get("follow", ["false"])[0].lower() == "true")
        return self._send(200, pod.to_json())

    def do_POST(self) -> None:  # noqa: N802
        match, _ = self._route()
        if match is None or match["name"] is not None:
            return self._not_found(self.path)
        manifest = self._body()
        meta = manifest.setdefault("metadata", {})
        meta.update(namespace=match["ns"], uid=f"uid-{len(self.api.created)}", resourceVersion="1",
                    creationTimestamp=_now())
        with self.api.lock:
            self.api._sweep()
            # Pods of the same task (same labels but the try) still running or terminating: a second
            # trainer on the same run key if there is any.
            task_labels = {k: v for k, v in (meta.get("labels") or {}).items() if k != "try_number"}
            self.api.active_siblings_at_create.append(sorted(
                p.name for p in self.api.pods.values()
                if p.base_exit() is None or p.deleted_at is not None
                if task_labels.items() <= (p.manifest["metadata"].get("labels") or {}).items()
            ))
            if (match["ns"], meta["name"]) in self.api.pods:
                return self._send(409, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                        "reason": "AlreadyExists", "code": 409})
            pod = FakePod(manifest, self.api.behaviour)
            self.api.pods[(match["ns"], meta["name"])] = pod
            self.api.created.append(meta["name"])
        self._send(201, pod.to_json())

    def do_PATCH(self) -> None:  # noqa: N802
        match, _ = self._route()
        pod = self.api.get(match["ns"], match["name"]) if match and match["name"] else None
        if pod is None:
            return self._not_found(self.path)
        labels = (self._body().get("metadata") or {}).get("labels") or {}
        with self.api.lock:
            pod.manifest["metadata"].setdefault("labels", {}).update(labels)
        self._send(200, pod.to_json())

    def do_DELETE(self) -> None:  # noqa: N802
        match, query = self._route()
        pod = self.api.get(match["ns"], match["name"]) if match and match["name"] else None
        body = self._body()
        if pod is None:
            return self._not_found(self.path)
        grace = body.get("gracePeriodSeconds", query.get("gracePeriodSeconds", [None])[0])
        with self.api.lock:
            self.api.deleted.append((pod.name, None if grace is None else int(grace)))
            if pod.deleted_at is None:
                pod.deleted_at = time.monotonic()
        self._send(200, pod.to_json())

    # -- logs ------------------------------------------------------------------------------------
    def _logs(self, pod: FakePod, *, follow: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        lines = [f"{datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%S.%f')}000Z {line}\n" for line in pod.behaviour.logs]
        for line in lines:
            self.wfile.write(line.encode())
        self.wfile.flush()
        while follow and pod.base_exit() is None and not pod.gone():
            time.sleep(0.05)
        self.close_connection = True

    # -- exec (websocket, channel protocol v4.channel.k8s.io) ------------------------------------
    def _exec(self, pod: FakePod, query: dict[str, list[str]]) -> None:
        if self.headers.get("Upgrade", "").lower() != "websocket":
            return self._send(400, {"kind": "Status", "status": "Failure", "message": "exec needs a websocket"})
        accept = base64.b64encode(hashlib.sha1((self.headers["Sec-WebSocket-Key"] + _WS_GUID).encode()).digest())
        self.wfile.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n"
        )
        self.wfile.flush()
        command = query.get("command", [])
        if command[-1:] and "return.json" in command[-1]:  # the KPO reading the result file
            result = pod.behaviour.result_of(pod.manifest["metadata"].get("labels") or {})
            self._ws_send(1, (json.dumps(result) if result is not None else "__airflow_xcom_result_empty__").encode())
        else:  # an interactive shell: the KPO's "kill the sidecar" command arrives on stdin
            self._ws_read_frame()
            with self.api.lock:
                pod.sidecar_killed = True
        self._ws_send(3, json.dumps({"metadata": {}, "status": "Success"}).encode())
        self.wfile.write(b"\x88\x00")  # close
        self.wfile.flush()
        self.close_connection = True

    def _ws_send(self, channel: int, data: bytes) -> None:
        payload = bytes([channel]) + data
        header = bytes([0x82])
        if len(payload) < 126:
            header += bytes([len(payload)])
        elif len(payload) < 1 << 16:
            header += bytes([126]) + struct.pack(">H", len(payload))
        else:
            header += bytes([127]) + struct.pack(">Q", len(payload))
        self.wfile.write(header + payload)
        self.wfile.flush()

    def _ws_read_frame(self) -> bytes:
        head = self.rfile.read(2)
        if len(head) < 2:
            return b""
        length = head[1] & 0x7F
        if length == 126:
            length = struct.unpack(">H", self.rfile.read(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", self.rfile.read(8))[0]
        mask = self.rfile.read(4) if head[1] & 0x80 else b"\x00\x00\x00\x00"
        data = self.rfile.read(length)
        return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


@contextmanager
def kube_api_server(workdir: Path) -> Iterator[KubeApi]:
    """Start the double on a free loopback port; yields its state, with a kubeconfig pointing at it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    kubeconfig = Path(workdir) / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "double",
        "clusters": [{"name": "double", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "double", "user": {"token": "test-double"}}],
        "contexts": [{"name": "double", "context": {"cluster": "double", "user": "double", "namespace": "trainer"}}],
    }))
    api = KubeApi(kubeconfig)
    handler = type("Handler", (_Handler,), {"api": api})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="kube-api-double", daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
