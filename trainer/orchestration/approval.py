"""The human approval before promotion: Airflow 3's ApprovalOperator, asked only when it matters."""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk.exceptions import AirflowSkipException


class PromotionApproval(ApprovalOperator):
    """Ask a human to approve moving `champion` to the registered version.

    Skips itself (and asks nobody) when the run's `require_approval` param is false or when the
    version failed its quality gates; promote_model then decides on its own (its trigger rule lets
    it run after a skipped approval). A "Reject" skips promote_model (a direct downstream task) but
    not publish_report, which keeps its own trigger rule.
    """

    def __init__(self, *, register_task_id: str, **kwargs: Any) -> None:
        kwargs.setdefault("subject", "Promote the registered model version to champion?")
        super().__init__(ignore_downstream_trigger_rules=False, fail_on_reject=False, **kwargs)
        self.register_task_id = register_task_id

    def execute(self, context: Any) -> Any:
        if not context["params"].get("require_approval"):
            raise AirflowSkipException("require_approval is false: promotion needs no human approval")
        ti = context["ti"]
        registered = ti.xcom_pull(task_ids=self.register_task_id, map_indexes=ti.map_index)
        if not registered:
            raise AirflowSkipException(f"nothing was registered by {self.register_task_id}; nothing to approve")
        if not registered.get("passed"):
            raise AirflowSkipException(
                f"{registered.get('model_name')} v{registered.get('version')} failed its quality gates; "
                "it will not be promoted, so there is nothing to approve"
            )
        self.subject = (
            f"Promote {registered.get('model_name')} version {registered.get('version')} "
            f"({registered.get('symbol')}) to champion?"
        )
        self.body = (
            f"Run directory: `{registered.get('run_dir')}`\n\n"
            f"The version passed its quality gates (see gate_full.json and the report in the run directory). "
            "Approve moves the `champion` alias; Reject leaves the current champion in place."
        )
        return super().execute(context)
