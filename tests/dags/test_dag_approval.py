"""Human approval through Airflow's own human-in-the-loop interface, in a real DAG run.

One dag.test() run with the local backend and tiny step counts trains two symbols. A reviewer
answers each approval question through the public REST API (PATCH
/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails) of
Airflow's own FastAPI app with the simple auth manager, from a thread, while dag.test() waits on the
parked (awaiting_input) tasks: SPY is approved with a comment, QQQ rejected. The gates file
(tests/dags/gates_approval.yaml) is lax enough for a tiny run to pass, so the question is really
asked, and its policy requires a human, so only a promotion that carries the reviewer succeeds.
"""

from __future__ import annotations

import re
import threading
import time
import traceback
from datetime import datetime
from pathlib import Path

import pytest
from test_dag_e2e import (  # noqa: F401 (isolated_state is a fixture)
    TINY,
    isolated_state,
    require_commands,
    small_pipeline,
    task_states,
    xcom_result,
)

DAG_ID = "hierarchical_options_training"
APPROVAL_TASK = "symbol_pipeline.approve_promotion"
GATES = Path(__file__).with_name("gates_approval.yaml")
REVIEWER, VIEWER = "quant-reviewer", "read-only-viewer"
PASSWORDS = {REVIEWER: "review-pw", VIEWER: "view-pw"}
DECISIONS = {"SPY": ("Approve", "report read: CI and costs fine"), "QQQ": ("Reject", "turnover too high for the costs")}
QUESTION_DEADLINE_S = 1200  # both questions must appear within this long (training included)

pytestmark = pytest.mark.slow


def require_flags(command: str, *flags: str) -> None:
    import subprocess
    import sys

    trainer = Path(sys.executable).parent / "trainer"
    text = subprocess.run([str(trainer), command, "--help"], capture_output=True, text=True).stdout
    missing = [f for f in flags if f not in text]
    if missing:
        pytest.skip(f"`trainer {command}` has no {', '.join(missing)} yet")


@pytest.fixture
def approval_pipeline(tmp_path, monkeypatch, isolated_state):  # noqa: F811 (the imported fixture)
    """The small-network demo profile (small_pipeline) with the lax gates file."""
    small_pipeline(tmp_path, monkeypatch, gates=GATES)
    return isolated_state


@pytest.fixture
def api(airflow_db, tmp_path, monkeypatch):
    """Airflow's own API app (core API + simple auth manager) on this session's metadata DB."""
    import json

    from fastapi.testclient import TestClient

    passwords = tmp_path / "simple_auth_passwords.json"
    passwords.write_text(json.dumps(PASSWORDS))
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", f"{REVIEWER}:user,{VIEWER}:viewer")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "test-dag-approval-jwt-secret-0123456789")
    from airflow.api_fastapi.app import create_app, purge_cached_app

    client = TestClient(create_app("core"))

    def token(user: str) -> dict[str, str]:
        response = client.post("/auth/token", json={"username": user, "password": PASSWORDS[user]})
        assert response.status_code == 201, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    yield client, token
    client.close()
    purge_cached_app()


class Reviewer(threading.Thread):
    """Answers each approval question through the REST API as soon as it is asked, per DECISIONS."""

    def __init__(self, client, token) -> None:
        super().__init__(daemon=True)
        self.client, self.token = client, token
        self.stop = threading.Event()
        self.seen: dict[str, dict] = {}  # symbol -> what the reviewer saw and answered
        self.error: str | None = None

    def run(self) -> None:
        try:
            headers, viewer = self.token(REVIEWER), self.token(VIEWER)
            deadline = time.monotonic() + QUESTION_DEADLINE_S
            while len(self.seen) < len(DECISIONS) and not self.stop.is_set():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"approval questions asked: {sorted(self.seen)} of {sorted(DECISIONS)}")
                listing = self.client.get(
                    f"/api/v2/dags/{DAG_ID}/dagRuns/~/hitlDetails", headers=headers,
                    params={"response_received": False},
                )
                assert listing.status_code == 200, listing.text
                for detail in listing.json()["hitl_details"]:
                    # Answer a question only once its task is parked. The response resumes a task in
                    # awaiting_input; one that lands between the question's creation and the park
                    # resumes nothing, and the task then waits forever. PostgreSQL's row locks order
                    # the two; sqlite has none (a run hung so on 2026-12-07, answered 80 ms after asking).
                    if detail["task_instance"]["state"] == "awaiting_input":
                        self._answer(detail, headers, viewer)
                self.stop.wait(1.0)
        except Exception:  # noqa: BLE001 - reported by the test in the main thread
            self.error = traceback.format_exc()

    def _answer(self, detail: dict, headers: dict, viewer: dict) -> None:
        ti = detail["task_instance"]
        (symbol,) = re.findall(r"\((\w+)\) to champion\?", detail["subject"])
        choice, comment = DECISIONS[symbol]
        url = (
            f"/api/v2/dags/{DAG_ID}/dagRuns/{ti['dag_run_id']}/taskInstances/{ti['task_id']}/{ti['map_index']}"
            "/hitlDetails"
        )
        html = re.search(r"HTML file: `([^`]+)`", detail["body"] or "")
        seen = {
            "map_index": ti["map_index"],
            "body": detail["body"],
            "params": detail["params"],
            # the report is there before the question is answered (publish_report ran first)
            "report_existed": bool(html) and Path(html.group(1)).is_file(),
            "viewer_status": self.client.patch(url, headers=viewer, json={"chosen_options": [choice]}).status_code,
        }
        response = self.client.patch(
            url, headers=headers, json={"chosen_options": [choice], "params_input": {"comment": comment}}
        )
        seen["status"], seen["response"] = response.status_code, response.json()
        self.seen[symbol] = seen


def champion_of(model_name: str) -> int | None:
    from mlflow import MlflowClient

    aliases = MlflowClient().get_registered_model(model_name).aliases
    return int(aliases["champion"]) if "champion" in aliases else None


def ledger_of(model_name: str):
    from mlflow import MlflowClient

    from trainer import ledger

    return ledger.read_registry(MlflowClient(), model_name)


@pytest.mark.timeout(2400)
def test_approve_promotes_and_reject_does_not_through_the_hitl_api(dag, approval_pipeline, api):
    require_commands("validate", "train", "gate", "evaluate", "register", "promote", "report")
    require_flags("promote", "--profile", "--approved-at", "--approval-comment", "--gates")
    require_flags("register", "--gates")
    reviewer = Reviewer(*api)
    reviewer.start()
    try:
        run = dag.test(run_conf={"symbols": list(DECISIONS), "profile": "demo", "require_approval": True, **TINY})
    finally:
        reviewer.stop.set()
        reviewer.join(timeout=30)
    states = task_states(run)
    assert reviewer.error is None, reviewer.error
    assert set(reviewer.seen) == set(DECISIONS), f"questions answered: {sorted(reviewer.seen)}; states {states}"
    for symbol, seen in reviewer.seen.items():
        index = seen["map_index"]
        for task in ("publish_report", "approve_promotion", "promote_model"):
            assert states[("symbol_pipeline." + task, index)] == "success", (symbol, task)
        published = xcom_result(run, "publish_report", index)
        # the question links the report that publish_report logged and attached, and asks for a comment
        assert published["report_uri"] and published["report_uri"] in seen["body"], seen["body"]
        assert seen["report_existed"], seen["body"]
        assert "comment" in seen["params"]
        assert seen["viewer_status"] == 403  # a viewer cannot decide
        assert seen["status"] == 200 and seen["response"]["responded_by"]["name"] == REVIEWER

    # Approve: the champion alias moved, and the ledger knows who, when and why.
    spy = reviewer.seen["SPY"]
    registered = xcom_result(run, "register_model", spy["map_index"])
    promotion = xcom_result(run, "promote_model", spy["map_index"])
    assert promotion["promoted"] is True and promotion["approved_by"] == REVIEWER, promotion
    assert champion_of(registered["model_name"]) == int(registered["version"])
    (record,) = [r for r in ledger_of(registered["model_name"]) if r.action == "promote"]
    assert record.version == int(registered["version"]) and record.approved_by == REVIEWER
    assert record.approval_comment == DECISIONS["SPY"][1]
    answered_at = datetime.fromisoformat(spy["response"]["responded_at"].replace("Z", "+00:00"))
    assert datetime.fromisoformat(record.approved_at) == answered_at
    assert xcom_result(run, "publish_report", spy["map_index"])["report_uri"] in record.reason

    # Reject: no alias moved, and promote_model says why.
    qqq = reviewer.seen["QQQ"]
    registered = xcom_result(run, "register_model", qqq["map_index"])
    promotion = xcom_result(run, "promote_model", qqq["map_index"])
    assert promotion["promoted"] is False and f"Reject by {REVIEWER}" in promotion["reason"], promotion
    assert DECISIONS["QQQ"][1] in promotion["reason"]
    assert champion_of(registered["model_name"]) is None
    assert not [r for r in ledger_of(registered["model_name"]) if r.action == "promote"]
    assert run.state == "success"
