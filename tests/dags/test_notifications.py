"""Failure notifications reach a real webhook: one JSON message per event, naming symbol, step,
verdict and link (issue 11 section 3).

The receiver is a real HTTP server on 127.0.0.1 (http.server in a thread, a free port). The
notifier and pipeline.promote_model are called with contexts shaped like the Task SDK's (the
task instance's `log_url`, `run_id`, `dag`, the rendered task arguments).
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from airflow.sdk import DAG

from trainer.orchestration import notify, pipeline
from trainer.orchestration.outcome import StepVerdictNo
from trainer.orchestration.settings import Notifications, load_settings

RUN_ID = "scheduled__2025-06-02T22:30:00+00:00"
LOG_URL = "http://airflow.example/dags/hierarchical_options_training/runs/r/tasks/symbol_pipeline.full_train/mapped/0"


class Receiver:
    """A webhook on 127.0.0.1 that records every POST body (answers `status`)."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                assert self.headers["Content-Type"] == "application/json"
                receiver.messages.append(json.loads(body))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args):  # keep pytest output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def settings_with(url: str | None):
    return load_settings(env={}).model_copy(update={"notifications": Notifications(webhook_url=url, timeout_seconds=2)})


def training_context(exception: BaseException, task_id: str = "symbol_pipeline.full_train") -> dict:
    """What the Task SDK hands on_failure_callback of a mapped training task (the parts we read)."""
    validated = {"symbol": "SPY", "profile": "demo", "data_digest": "abc"}
    return {
        "ti": SimpleNamespace(task_id=task_id, run_id=RUN_ID, dag_id="hierarchical_options_training",
                              map_index=0, log_url=LOG_URL),
        "task": SimpleNamespace(task_id=task_id, op_args=[], op_kwargs={"validated": validated, "smoke_verdict": {}}),
        "dag": DAG(dag_id="hierarchical_options_training", schedule=None),
        "run_id": RUN_ID,
        "exception": exception,
    }


def failed_training(status: str) -> Exception:
    """train()'s exception for a `trainer train` exit 1 with `status` (raised from StepVerdictNo)."""
    try:
        try:
            raise StepVerdictNo("train", {"status": status})
        except StepVerdictNo as exc:
            raise RuntimeError(f"full training of SPY ended with verdict no ({status})") from exc
    except RuntimeError as exc:
        return exc


def test_collapse_status_is_the_monitors():
    from trainer.hierarchy.monitor import COLLAPSE_STATUS

    assert notify.COLLAPSE_STATUS == COLLAPSE_STATUS


@pytest.mark.parametrize(("status", "verdict"), [(notify.COLLAPSE_STATUS, "collapsed"), ("diverged", "failed")])
def test_failed_or_collapsed_training_sends_one_message(receiver, status, verdict):
    exception = failed_training(status)
    notify.TrainingFailureNotifier(settings_with(receiver.url))(training_context(exception))
    assert len(receiver.messages) == 1
    message = receiver.messages[0]
    assert message["symbol"] == "SPY"
    assert message["step"] == "symbol_pipeline.full_train"
    assert message["verdict"] == verdict
    assert message["link"] == LOG_URL
    assert status in message["reason"] and status in message["text"]
    assert message["run_id"] == RUN_ID and message["map_index"] == 0


def test_the_link_is_the_run_id_without_a_task_instance(receiver):
    context = training_context(RuntimeError("boom"))
    del context["ti"]
    notify.TrainingFailureNotifier(settings_with(receiver.url))(context)
    assert [m["link"] for m in receiver.messages] == [f"run {RUN_ID}"]


def test_no_webhook_no_message(receiver):
    notify.TrainingFailureNotifier(settings_with(None))(training_context(RuntimeError("boom")))
    assert receiver.messages == []


def test_a_webhook_answering_an_error_is_logged_and_never_raises(receiver, caplog):
    receiver.status = 500
    notify.TrainingFailureNotifier(settings_with(receiver.url))(training_context(RuntimeError("boom")))
    assert len(receiver.messages) == 1  # sent once, not retried
    assert "not sent to the webhook: HTTP Error 500" in caplog.text


def test_a_webhook_nobody_listens_on_is_logged_and_never_raises(caplog):
    with socket.socket() as probe:  # a free port, closed again: nothing listens on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    notify.TrainingFailureNotifier(settings_with(f"http://127.0.0.1:{port}/hook"))(training_context(RuntimeError("boom")))
    assert "not sent to the webhook" in caplog.text


PUBLISHED = {
    "symbol": "QQQ", "profile": "demo", "model_name": "demo.hierarchical-options-QQQ", "version": 3,
    "run_dir": "/runs/QQQ/x", "run_key": "QQQ/x", "passed": True, "report_uri": "runs:/r/report.html",
}


def promote_context(outlet_events=None) -> dict:
    from airflow.sdk.execution_time.context import OutletEventAccessors

    return {
        "ti": SimpleNamespace(task_id="symbol_pipeline.promote_model", run_id=RUN_ID, map_index=1,
                              dag_id="hierarchical_options_training", log_url=LOG_URL.replace("full_train", "promote_model")),
        "dag": DAG(dag_id="hierarchical_options_training", schedule=None),
        "run_id": RUN_ID,
        "params": {},
        "outlet_events": outlet_events if outlet_events is not None else OutletEventAccessors(),
    }


@pytest.mark.parametrize(
    ("published", "decision", "verdict", "reason"),
    [
        ({**PUBLISHED, "passed": False}, {"asked": False, "approved": False, "reason": "gates"}, "gates_failed",
         "quality gates failed"),
        (PUBLISHED, {"asked": True, "approved": False, "decided_by": "alice", "decided_at": "2025-06-03T08:00:00",
                     "reason": "Reject by alice at 2025-06-03T08:00:00: drawdown"}, "rejected", "Reject by alice"),
        # ApprovalOperator's timeout default: Reject, nobody answered (a stuck approval).
        (PUBLISHED, {"asked": True, "approved": False, "decided_by": None, "decided_at": None,
                     "reason": "Reject by timeout default at None"}, "approval_timed_out", "timeout default"),
    ],
)
def test_a_promotion_that_did_not_happen_sends_one_message_and_succeeds(receiver, published, decision, verdict, reason):
    result = pipeline.promote_model(published, decision, promote_context(), settings_with(receiver.url))
    assert result["promoted"] is False and result["verdict"] == verdict
    assert len(receiver.messages) == 1
    message = receiver.messages[0]
    assert (message["symbol"], message["step"], message["verdict"]) == ("QQQ", "promote_model", verdict)
    assert reason in message["reason"]
    assert message["link"].endswith("/tasks/symbol_pipeline.promote_model/mapped/0")
