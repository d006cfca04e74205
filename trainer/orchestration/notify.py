"""Failure notifications: one JSON POST to a webhook per event that needs a person.

Events (configs/pipeline.yaml `notifications`; webhook_url null = off):
- a failed or collapsed training: `TrainingFailureNotifier`, the on_failure_callback of smoke_test
  and full_train (Airflow calls it once, after the last retry; a collapse abort is exit 1 of
  `trainer train` and fails the task without retries);
- a promotion that did not happen: pipeline.promote_model calls `notify_not_promoted` when it
  returns promoted: false (gates failed, the policy refused, the reviewer rejected, or nobody
  answered before the approval's timeout). The task itself still succeeds: every task stays
  all_success (see approval.py).

The message, one JSON object:
    {"text": "...", "symbol", "step", "verdict", "reason", "link", "dag_id", "run_id", "map_index"}
`link` is the Airflow task instance URL when the context has a task instance, else the run id.
`text` is one human-readable line, so Slack / Teams style incoming webhooks show it as is.

The POST uses only the stdlib with a short timeout. A notification that cannot be sent is
logged with the reason and never fails (or retries) the task it reports on.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any

from airflow.sdk import BaseNotifier

from trainer.orchestration.settings import (
    Notifications,
    PipelineSettings,
    load_settings,
)

log = logging.getLogger(__name__)

COLLAPSE_STATUS = "aborted: option collapse"
"""trainer.hierarchy.monitor.COLLAPSE_STATUS, repeated here: importing the monitor pulls in torch."""

VERDICTS = ("failed", "collapsed", "gates_failed", "policy_refused", "rejected", "approval_timed_out")
"""Every verdict a message can carry."""


def message(*, symbol: str, step: str, verdict: str, reason: str, context: Any) -> dict[str, Any]:
    """The JSON object sent for one event (see the module docstring)."""
    if verdict not in VERDICTS:
        raise ValueError(f"unknown notification verdict {verdict!r}: expected one of {', '.join(VERDICTS)}")
    ti = context.get("ti")
    run_id = context.get("run_id") or getattr(ti, "run_id", None)
    dag = context.get("dag")
    dag_id = getattr(dag, "dag_id", None) or getattr(ti, "dag_id", None)
    link = _log_url(ti) or f"run {run_id}"
    return {
        "text": f"[{verdict}] {symbol} {step}: {reason} ({link})",
        "symbol": symbol,
        "step": step,
        "verdict": verdict,
        "reason": reason,
        "link": link,
        "dag_id": dag_id,
        "run_id": run_id,
        "map_index": getattr(ti, "map_index", None),
    }


def _log_url(ti: Any) -> str | None:
    """The task instance's URL in the Airflow UI (RuntimeTaskInstance.log_url), if there is one."""
    if ti is None:
        return None
    try:
        url = ti.log_url
    except Exception as exc:  # noqa: BLE001 (a partial context, e.g. a callback outside a task run: use the run id)
        log.debug("task instance has no log_url: %s", exc)
        return None
    return str(url) if url else None


def send(config: Notifications, payload: dict[str, Any]) -> bool:
    """POST `payload` as JSON to the webhook; True when it answered 2xx. Never raises."""
    if not config.webhook_url:
        return False
    body = json.dumps(payload, default=str).encode()
    request = urllib.request.Request(
        config.webhook_url, data=body, method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "trainer-notifier"},
    )
    try:
        with urllib.request.urlopen(request, timeout=config.timeout_seconds) as response:
            status = response.status
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.error(
            "notification for %s %s (%s) not sent to the webhook: %s",
            payload.get("symbol"), payload.get("step"), payload.get("verdict"), exc,
        )
        return False
    if not 200 <= status < 300:
        log.error("notification webhook answered HTTP %s for %s %s", status, payload.get("symbol"), payload.get("step"))
        return False
    log.info("notification sent: %s", payload["text"])
    return True


def _symbol(context: Any) -> str:
    """The symbol of a per-symbol task: from its (rendered) arguments, else validate_data's XCom."""
    task = context.get("task")
    arguments = [*(getattr(task, "op_args", None) or ()), *(getattr(task, "op_kwargs", None) or {}).values()]
    for value in arguments:
        if isinstance(value, dict) and value.get("symbol"):
            return str(value["symbol"])
    ti = context.get("ti")
    if ti is not None:
        try:
            validated = ti.xcom_pull(task_ids="symbol_pipeline.validate_data", map_indexes=ti.map_index)
        except Exception as exc:  # noqa: BLE001 (no XCom backend reachable: the message still goes out)
            log.debug("could not read validate_data's result: %s", exc)
            validated = None
        if isinstance(validated, dict) and validated.get("symbol"):
            return str(validated["symbol"])
    return "unknown"


def _training_verdict(exception: BaseException | None) -> str:
    """collapsed when the step's result says the collapse detector aborted it, else failed."""
    seen = set()
    while exception is not None and id(exception) not in seen:
        seen.add(id(exception))
        result = getattr(exception, "result", None)
        if isinstance(result, dict) and str(result.get("status", "")) == COLLAPSE_STATUS:
            return "collapsed"
        exception = exception.__cause__ or exception.__context__
    return "failed"


class TrainingFailureNotifier(BaseNotifier):
    """on_failure_callback of the training tasks: one message when a try fails for good.

    :param settings: the pipeline settings to read `notifications` from; None = load_settings()
        when the callback runs (the file and env of the worker, like every task body)
    """

    def __init__(self, settings: PipelineSettings | None = None) -> None:
        super().__init__()
        self._settings = settings

    def notify(self, context: Any) -> None:
        try:
            config = (self._settings or load_settings()).notifications
            if not config.webhook_url:
                return
            exception = context.get("exception")
            ti = context.get("ti")
            step = getattr(context.get("task"), "task_id", None) or getattr(ti, "task_id", "training")
            payload = message(
                symbol=_symbol(context),
                step=step,
                verdict=_training_verdict(exception),
                reason=str(exception) if exception else "task failed",
                context=context,
            )
        except Exception:  # never let a notification turn into a second failure of the task
            log.exception("failure notification could not be built")
            return
        send(config, payload)


def notify_not_promoted(result: dict[str, Any], context: Any, settings: PipelineSettings) -> bool:
    """One message for promote_model's result promoted: false; the verdict says why."""
    config = settings.notifications
    if not config.webhook_url:
        return False
    try:
        payload = message(
            symbol=result["symbol"],
            step="promote_model",
            verdict=result.get("verdict") or "policy_refused",
            reason=str(result.get("reason")),
            context=context,
        )
    except Exception:
        log.exception("not-promoted notification could not be built")
        return False
    return send(config, payload)
