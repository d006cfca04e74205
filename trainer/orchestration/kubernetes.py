"""Kubernetes backend: one pod per step through the KubernetesPodOperator.

Imported only when the kubernetes backend is selected (the KPO import costs ~0.8 s).
The pod runs `trainer --result-json /airflow/xcom/return.json <argv>`; the operator's xcom sidecar
reads the result back. Secrets travel by reference (secretKeyRef), never by value. Retries of
training resume from the newest checkpoint because the output dir is the same s3:// run key and the
argv carries `--resume`.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.utils.xcom_sidecar import PodDefaults
from kubernetes.client import models as k8s

from trainer.orchestration.outcome import StepCrashed, outcome
from trainer.orchestration.settings import PipelineSettings
from trainer.orchestration.specs import TaskSpec

log = logging.getLogger(__name__)

XCOM_RESULT_PATH = "/airflow/xcom/return.json"
CONTAINER_NAME = "base"  # the KPO's base container name
APP_LABEL = "hierarchical-options-trainer"


SCRATCH_VOLUME = "tmp"  # the emptyDir at /tmp: HOME, caches, TRAINER_STATE_DIR (the run's staging copy)


class TrainerPodOperator(KubernetesPodOperator):
    """A KPO that keeps the step's result JSON even when the container exits non-zero, and runs its
    xcom sidecar from an image of ours.

    The KPO takes the sidecar's image only from the Kubernetes connection's extra
    (`xcom_sidecar_container_image`, read by the hook; the default is alpine from Docker Hub), so the
    image is set here, on the pod the KPO built, where the settings say it.

    :param xcom_sidecar_image: image reference of the xcom sidecar (None: the KPO's choice)
    :param xcom_sidecar_pull_policy: its imagePullPolicy
    """

    def __init__(
        self, *, xcom_sidecar_image: str | None = None, xcom_sidecar_pull_policy: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.xcom_sidecar_image = xcom_sidecar_image
        self.xcom_sidecar_pull_policy = xcom_sidecar_pull_policy
        self.step_result: dict[str, Any] | None = None

    def build_pod_request_obj(self, context: Any = None, *, dry_run: bool = False) -> k8s.V1Pod:
        pod = super().build_pod_request_obj(context, dry_run=dry_run)
        if self.xcom_sidecar_image:
            for container in pod.spec.containers:
                if container.name == PodDefaults.SIDECAR_CONTAINER_NAME:
                    container.image = self.xcom_sidecar_image
                    container.image_pull_policy = self.xcom_sidecar_pull_policy
        return pod

    def extract_xcom(self, pod: k8s.V1Pod) -> Any:
        result = super().extract_xcom(pod)
        self.step_result = result if isinstance(result, dict) else None
        return result


def _label(value: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", value)[:63].strip("-._")
    return cleaned or "x"


def _non_root_container_context(settings: PipelineSettings) -> k8s.V1SecurityContext:
    assert settings.kubernetes is not None
    return k8s.V1SecurityContext(
        run_as_non_root=True,
        run_as_user=settings.kubernetes.run_as_user,
        run_as_group=settings.kubernetes.run_as_group,
        allow_privilege_escalation=False,
        privileged=False,
        read_only_root_filesystem=True,
        capabilities=k8s.V1Capabilities(drop=["ALL"]),
        seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
    )


def build_operator(spec: TaskSpec, settings: PipelineSettings, task_id: str | None = None) -> TrainerPodOperator:
    """The pod operator for one step (also used offline: `op.build_pod_request_obj(dry_run=True)`)."""
    if settings.kubernetes is None:
        raise ValueError("the kubernetes backend needs the kubernetes section of configs/pipeline.yaml")
    k8s_settings = settings.kubernetes
    placement = k8s_settings.gpu if spec.accelerator == "gpu" else k8s_settings.cpu

    # ephemeral-storage: the scheduler places the pod where its scratch emptyDir fits (the kubelet
    # evicts it past the emptyDir's sizeLimit); no limit, so logs never get a training pod evicted.
    requests = {"cpu": spec.resources.cpu, "memory": spec.resources.memory}
    if placement.scratch_size:
        requests["ephemeral-storage"] = placement.scratch_size
    limits = {"memory": spec.resources.memory}
    if spec.resources.gpu:
        limits["nvidia.com/gpu"] = str(spec.resources.gpu)
    resources = k8s.V1ResourceRequirements(requests=requests, limits=limits)

    env = [k8s.V1EnvVar(name=name, value=value) for name, value in sorted(spec.env.items())]
    # The root filesystem is read-only: caches and temp files go to the /tmp emptyDir.
    env += [
        k8s.V1EnvVar(name="HOME", value="/tmp"),
        k8s.V1EnvVar(name="MPLCONFIGDIR", value="/tmp/matplotlib"),
        k8s.V1EnvVar(name="TRAINER_STATE_DIR", value="/tmp/state"),
    ]
    env += [
        k8s.V1EnvVar(
            name=ref.env,
            value_from=k8s.V1EnvVarSource(secret_key_ref=k8s.V1SecretKeySelector(name=ref.secret, key=ref.key)),
        )
        for ref in spec.secret_env
    ]
    tolerations = [
        k8s.V1Toleration(key=t.key, operator=t.operator, value=t.value, effect=t.effect) for t in placement.tolerations
    ]
    pod_name = f"trainer-{spec.step}".replace("_", "-")
    sidecar = k8s_settings.xcom_sidecar_image or k8s_settings.image
    return TrainerPodOperator(
        task_id=task_id or spec.step,
        name=pod_name,
        random_name_suffix=True,
        namespace=k8s_settings.namespace,
        image=k8s_settings.image.reference,
        image_pull_policy=k8s_settings.image.pull_policy,
        image_pull_secrets=[k8s.V1LocalObjectReference(name=name) for name in k8s_settings.image_pull_secrets],
        xcom_sidecar_image=sidecar.reference,
        xcom_sidecar_pull_policy=sidecar.pull_policy,
        cmds=["trainer"],
        arguments=["--result-json", XCOM_RESULT_PATH, *spec.argv],
        env_vars=env,
        container_resources=resources,
        node_selector=dict(placement.node_selector),
        tolerations=tolerations,
        service_account_name=k8s_settings.service_account,
        automount_service_account_token=False,
        security_context=k8s.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=k8s_settings.run_as_user,
            run_as_group=k8s_settings.run_as_group,
            fs_group=k8s_settings.run_as_group,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        ),
        container_security_context=_non_root_container_context(settings),
        xcom_sidecar_container_security_context=_non_root_container_context(settings),
        volumes=[
            k8s.V1Volume(name=SCRATCH_VOLUME, empty_dir=k8s.V1EmptyDirVolumeSource(size_limit=placement.scratch_size))
        ],
        volume_mounts=[k8s.V1VolumeMount(name=SCRATCH_VOLUME, mount_path="/tmp")],
        priority_class_name=placement.priority_class_name,
        # SIGTERM (task timeout, kill, preemption, deadline) -> checkpoint written and uploaded -> exit 75.
        termination_grace_period=k8s_settings.termination_grace_period_seconds,
        # The kubelet ends a pod that outlives its try's time limit even if Airflow lost track of it.
        active_deadline_seconds=spec.timeout_seconds,
        labels={"app.kubernetes.io/name": APP_LABEL, "trainer/step": _label(spec.step)},
        startup_timeout_seconds=k8s_settings.startup_timeout_seconds,
        on_finish_action=k8s_settings.on_finish_action,
        do_xcom_push=True,
        get_logs=True,
        log_events_on_failure=True,
        # Retries are the Airflow task's (the wrapping @task); the operator itself never retries.
        retries=0,
    )


def _exit_code(op: TrainerPodOperator) -> int | None:
    pod = getattr(op, "remote_pod", None)
    statuses = (pod.status.container_statuses if pod is not None and pod.status else None) or []
    for status in statuses:
        if status.name == op.base_container_name and status.state and status.state.terminated:
            return status.state.terminated.exit_code
    return None


def run_step(spec: TaskSpec, context: Any, settings: PipelineSettings) -> dict[str, Any]:
    """Run the step as a pod from inside the Airflow task and map its exit code like the local backend."""
    op = build_operator(spec, settings, task_id=context["ti"].task_id)
    log.info("running step %s as a pod: trainer %s", spec.step, " ".join(op.arguments))
    try:
        result = op.execute(context)
    except Exception as exc:
        code = _exit_code(op)
        if code is None or code == 0:
            # No terminated container: the pod never ran (Pending past startup_timeout, API error),
            # or the step succeeded but reading its result failed. Both are worth a retry.
            raise StepCrashed(spec.step, None, {"error": str(exc).splitlines()[0]}) from exc
        return outcome(spec.step, code, op.step_result)
    return outcome(spec.step, 0, result if isinstance(result, dict) else {})
