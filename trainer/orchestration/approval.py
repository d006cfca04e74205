"""The human approval before promotion: Airflow 3's ApprovalOperator, asked only when it matters.

The decision travels as data (XCom), not as task states: the step always ends `success` with
{"asked", "approved", "reason"} and promote_model acts on it. Inside a mapped task group, Airflow
3.3 evaluates non-default trigger rules of a not-yet-expanded task against every map index
(airflow/ti_deps/deps/trigger_rule_dep.py), so one symbol's failure would stop promote/report of
all symbols; keeping every task all_success keeps each symbol's chain independent.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator


class PromotionApproval(ApprovalOperator):
    """Ask a human to approve moving `champion` to the registered version.

    Short-circuits (asks nobody, returns at once) when the run's `require_approval` param is false
    or when the version failed its quality gates. No answer within `response_timeout` counts as Reject.
    """

    def __init__(self, *, register_task_id: str, **kwargs: Any) -> None:
        kwargs.setdefault("subject", "Promote the registered model version to champion?")
        kwargs.setdefault("defaults", self.REJECT)
        super().__init__(ignore_downstream_trigger_rules=False, fail_on_reject=False, **kwargs)
        self.register_task_id = register_task_id

    def execute(self, context: Any) -> Any:
        ti = context["ti"]
        registered = ti.xcom_pull(task_ids=self.register_task_id, map_indexes=ti.map_index) or {}
        name = f"{registered.get('model_name')} v{registered.get('version')}"
        if not registered.get("passed"):
            reason = f"{name} failed its quality gates: nothing to approve, it will not be promoted"
            self.log.info(reason)
            return {"asked": False, "approved": False, "reason": reason}
        if not context["params"].get("require_approval"):
            reason = "require_approval is false: promotion needs no human approval"
            self.log.info(reason)
            return {"asked": False, "approved": True, "reason": reason}
        self.subject = f"Promote {name} ({registered.get('symbol')}) to champion?"
        self.body = (
            f"Run directory: `{registered.get('run_dir')}`\n\n"
            "The version passed its quality gates (gate_full.json and the report are in the run directory). "
            "Approve moves the `champion` alias; Reject (or no answer in time) keeps the current champion."
        )
        return super().execute(context)  # parks the task until a human answers

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        # HITLOperator's handling (validates the answer), without ApprovalOperator's skipping of
        # downstream tasks: promote_model reads the decision instead (see the module docstring).
        payload = HITLOperator.execute_complete(self, context=context, event=event)
        chosen = payload["chosen_options"][0]
        approved = chosen == self.APPROVE
        self.hitl_summary_extra["approved"] = approved
        reason = f"{chosen} by {payload.get('responded_by_user') or 'timeout default'}"
        self.log.info("promotion %s: %s", "approved" if approved else "rejected", reason)
        return {"asked": True, "approved": approved, "reason": reason}
