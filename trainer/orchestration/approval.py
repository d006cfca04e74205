"""The human approval before promotion: Airflow 3's ApprovalOperator, asked only when it matters.

It runs after publish_report, so the review report exists (Markdown + HTML, logged to MLflow and
linked from the model version) when the question is asked, and the question links it.

The decision travels as data (XCom), not as task states: the step always ends `success` with
{"asked", "approved", "decided_by", "decided_at", "comment", "reason"} and promote_model acts on
it (the reviewer, the time and the comment go to `trainer promote` and into the ledger). Inside a
mapped task group, Airflow 3.3 evaluates non-default trigger rules of a not-yet-expanded task
against every map index (airflow/ti_deps/deps/trigger_rule_dep.py), so one symbol's failure would
stop promote/report of all symbols; keeping every task all_success keeps each symbol's chain
independent.

A reviewer answers in the Airflow UI (Required Actions) or through the REST API:
PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails with
{"chosen_options": ["Approve"], "params_input": {"comment": "..."}}.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk import Param
from airflow.sdk.definitions.param import ParamsDict

from trainer.orchestration.specs import MAX_COMMENT_LENGTH


def _decision(
    *, asked: bool, approved: bool, reason: str, decided_by: str | None = None, decided_at: str | None = None,
    comment: str = "",
) -> dict[str, Any]:
    """What promote_model reads. `decided_by` / `decided_at` are the reviewer and the time of the
    answer (None when nobody was asked, or nobody answered in time)."""
    return {
        "asked": asked, "approved": approved, "decided_by": decided_by, "decided_at": decided_at,
        "comment": comment, "reason": reason,
    }


def _responder(user: Any) -> str | None:
    """The HITL response's user ({"id", "name"}) as one name; None for the timeout default."""
    if not user:
        return None
    if isinstance(user, dict):
        return str(user.get("name") or user.get("id") or "") or None
    return str(user)


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, datetime) else str(value)


class PromotionApproval(ApprovalOperator):
    """Ask a human to approve moving `champion` to the registered version, the report in front of them.

    Short-circuits (asks nobody, returns at once) when the version failed its quality gates, or
    when neither the run's `require_approval` param nor the gates file's
    `promotion.require_human_approval` (as `trainer report` read it) asks for a human. No answer
    within `response_timeout` counts as Reject.

    :param report_task_id: the task whose XCom is publish_report's result (the registered version
        and the report's URIs)
    """

    def __init__(self, *, report_task_id: str, **kwargs: Any) -> None:
        kwargs.setdefault("subject", "Promote the registered model version to champion?")
        kwargs.setdefault("defaults", self.REJECT)
        # The reviewer's comment is a form field of the question (HITL params). BaseOperator has
        # already merged the DAG's params into `params`; HITLOperator keeps only those of source
        # "task" for the form, hence the explicit source.
        params = ParamsDict(kwargs.pop("params", None) or {})
        params["comment"] = Param(
            "",
            description="Why you approve or reject (kept in the promotion ledger).",
            source="task",
            type="string",
            maxLength=MAX_COMMENT_LENGTH,
        )
        kwargs["params"] = params
        super().__init__(ignore_downstream_trigger_rules=False, fail_on_reject=False, **kwargs)
        self.report_task_id = report_task_id

    def execute(self, context: Any) -> Any:
        ti = context["ti"]
        published = ti.xcom_pull(task_ids=self.report_task_id, map_indexes=ti.map_index) or {}
        name = f"{published.get('model_name')} v{published.get('version')}"
        if not published.get("passed"):
            reason = f"{name} failed its quality gates: nothing to approve, it will not be promoted"
            self.log.info(reason)
            return _decision(asked=False, approved=False, reason=reason)
        by_run = bool(context["params"].get("require_approval"))
        by_policy = bool(published.get("require_human_approval"))
        if not (by_run or by_policy):
            reason = "neither require_approval nor the promotion policy asks for a human: the scheduler decides"
            self.log.info(reason)
            return _decision(asked=False, approved=True, reason=reason)
        self.subject = f"Promote {name} ({published.get('symbol')}) to champion?"
        self.body = self._body(published, "the run's require_approval" if by_run else "the promotion policy")
        return super().execute(context)  # parks the task (awaiting_input) until a human answers

    @staticmethod
    def _body(published: dict[str, Any], asked_by: str) -> str:
        lines = [
            f"**Review report**: {published.get('report_url') or published.get('report_uri') or 'not logged to MLflow'}",
            "",
            f"- MLflow artifact: `{published.get('report_uri') or 'n/a'}`",
            f"- HTML file: `{published.get('report_html') or 'n/a'}`",
            f"- Markdown file: `{published.get('report_md') or 'n/a'}`",
            f"- Run directory: `{published.get('run_dir')}`",
            "",
            f"The version passed its quality gates (tier reached: {published.get('tier_reached') or 'n/a'}, "
            f"promotion requires {published.get('required_tier') or 'n/a'}). The report compares it with the "
            "current champion, the Phase A baseline and buy-and-hold on the same test bars.",
            "",
            f"Asked because of {asked_by}. Approve moves the `champion` alias; Reject (or no answer in time) "
            "keeps the current champion. Your name, the time and your comment go into the promotion ledger.",
        ]
        return "\n".join(lines)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        # HITLOperator's handling (validates the answer), without ApprovalOperator's skipping of
        # downstream tasks: promote_model reads the decision instead (see the module docstring).
        payload = HITLOperator.execute_complete(self, context=context, event=event)
        chosen = payload["chosen_options"][0]
        approved = chosen == self.APPROVE
        self.hitl_summary_extra["approved"] = approved
        responder = _responder(payload.get("responded_by_user"))
        at = _iso(payload.get("responded_at"))
        comment = str((payload.get("params_input") or {}).get("comment") or "").strip()
        reason = f"{chosen} by {responder or 'timeout default'} at {at}" + (f": {comment}" if comment else "")
        self.log.info("promotion %s: %s", "approved" if approved else "rejected", reason)
        return _decision(asked=True, approved=approved, reason=reason, decided_by=responder, decided_at=at, comment=comment)
