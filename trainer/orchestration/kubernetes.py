"""Kubernetes backend: every trainer step is a KubernetesPodOperator task of the DAG (TrainerPodStep).

Imported only when the kubernetes backend is selected (the KPO import costs ~0.8 s).
The pod runs `trainer --result-json /airflow/xcom/return.json <argv>`; the operator's xcom sidecar
reads the result back. Secrets travel by reference (secretKeyRef), never by value. Retries of
training resume from the newest checkpoint because the output dir is the same s3:// run key and the
argv carries `--resume`.

The task *is* the pod operator, so Airflow's machinery reaches the pod: `on_kill` (marked failed,
execution_timeout, worker shutdown) deletes it with its grace period (training checkpoints on
SIGTERM); long steps defer to the triggerer; a retry reattaches to its task's pod when it is still
running, waits for one that is still terminating, and otherwise starts exactly one new pod. A pod
still Pending or Running when its try ends is deleted whatever `on_finish_action` says (no orphans).
Which run key is trained is decided by the upstream results at run time, so the task body (the
same trainer/orchestration/pipeline.py function the local backend runs) builds the step's TaskSpec
and hands it to `run_pod`, which runs this operator's own KPO execute on it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator, PodPhase
from airflow.providers.cncf.kubernetes.utils.xcom_sidecar import PodDefaults
from kubernetes.client import models as k8s
from kubernetes.client.exceptions import ApiException

from trainer.orchestration.outcome import StepCrashed, outcome
from trainer.orchestration.settings import PipelineSettings
from trainer.orchestration.specs import TaskSpec

log = logging.getLogger(__name__)

XCOM_RESULT_PATH = "/airflow/xcom/return.json"
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

    def extract_xcom(self, pod: k8s.V1Pod, **kwargs: Any) -> Any:
        result = super().extract_xcom(pod, **kwargs)
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


def _pod_identity(step: str, settings: PipelineSettings) -> dict[str, Any]:
    """What a step's pod operator and its DAG task agree on: where the pod runs, how it is found
    again (labels), and what happens to it when it ends."""
    assert settings.kubernetes is not None
    k8s_settings = settings.kubernetes
    sidecar = k8s_settings.xcom_sidecar_image or k8s_settings.image
    return {
        "name": f"trainer-{step}".replace("_", "-"),
        "random_name_suffix": True,
        "namespace": k8s_settings.namespace,
        "image": k8s_settings.image.reference,
        "image_pull_policy": k8s_settings.image.pull_policy,
        "xcom_sidecar_image": sidecar.reference,
        "xcom_sidecar_pull_policy": sidecar.pull_policy,
        "labels": {"app.kubernetes.io/name": APP_LABEL, "trainer/step": _label(step)},
        "startup_timeout_seconds": k8s_settings.startup_timeout_seconds,
        "on_finish_action": k8s_settings.on_finish_action,
        # SIGTERM (task timeout, kill, preemption, deadline) -> checkpoint written and uploaded -> exit 75.
        # Also the grace on_kill deletes the pod with.
        "termination_grace_period": k8s_settings.termination_grace_period_seconds,
        "do_xcom_push": True,
        "get_logs": True,
        "log_events_on_failure": True,
    }


def build_operator(spec: TaskSpec, settings: PipelineSettings, task_id: str | None = None) -> TrainerPodOperator:
    """The pod operator for one step's TaskSpec: the pod TrainerPodStep starts for it (also used
    offline: `build_operator(...).build_pod_request_obj(dry_run=True)`)."""
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
    return TrainerPodOperator(
        task_id=task_id or spec.step,
        **_pod_identity(spec.step, settings),
        image_pull_secrets=[k8s.V1LocalObjectReference(name=name) for name in k8s_settings.image_pull_secrets],
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
        # The kubelet ends a pod that outlives its try's time limit even if Airflow lost track of it.
        active_deadline_seconds=spec.timeout_seconds,
        # Retries are the DAG task's; this pod operator itself never retries.
        retries=0,
    )


def _exit_code(op: KubernetesPodOperator) -> int | None:
    """The trainer container's exit code, from the newest pod status the operator read."""
    for pod in (getattr(op, "remote_pod", None), getattr(op, "pod", None)):
        statuses = (pod.status.container_statuses if pod is not None and pod.status else None) or []
        for status in statuses:
            if status.name == op.base_container_name and status.state and status.state.terminated:
                return status.state.terminated.exit_code
    return None


def _interruption(exc: BaseException) -> BaseException | None:
    """The execution timeout or kill (a BaseException, not an Exception) `exc` was raised during, if any."""
    seen = exc.__context__
    while seen is not None:
        if not isinstance(seen, Exception):
            return seen
        seen = seen.__context__
    return None


def _is_terminated(pod: k8s.V1Pod) -> bool:
    return bool(pod.status) and pod.status.phase in (PodPhase.SUCCEEDED, PodPhase.FAILED)


class TrainerPodStep(TrainerPodOperator):
    """One trainer step of the DAG as a KubernetesPodOperator task.

    `body(*inputs, context)` is the step's task body (trainer/orchestration/pipeline.py); `inputs`
    are upstream XComArgs (and the mapped group's symbol), resolved when the task renders. The body
    decides the pod (the TaskSpec) and calls `run_pod` through backends.run_step at most once; a
    body that needs no pod (promotion of a failed version) returns without one.

    :param step: the TaskSpec step this task runs (`full_train`, ...): its pod labels and deferral
    :param body: the task body, `body(*inputs, context) -> dict`
    :param inputs: the body's positional arguments (templated: XComArgs resolve at run time)
    :param settings: the pipeline settings the DAG was parsed with
    """

    runs_trainer_pods = True  # backends.run_step hands specs to run_pod (checked without importing us)
    template_fields = (*TrainerPodOperator.template_fields, "step_inputs")

    def __init__(
        self, *, step: str, body: Callable[..., dict[str, Any]], inputs: list[Any], settings: PipelineSettings,
        **kwargs: Any,
    ) -> None:
        if settings.kubernetes is None:
            raise ValueError("the kubernetes backend needs the kubernetes section of configs/pipeline.yaml")
        super().__init__(
            **_pod_identity(step, settings),
            deferrable=step in settings.kubernetes.deferrable_steps,
            reattach_on_restart=True,
            **kwargs,
        )
        self.step = step
        self.body = body
        self.step_inputs = list(inputs)
        self._pod_template: TrainerPodOperator | None = None
        self._reentry_event: dict[str, Any] | None = None
        self._in_pod = False

    def execute(self, context: Any) -> dict[str, Any]:
        self._reentry_event = None
        return self.body(*self.step_inputs, context)

    def trigger_reentry(self, context: Any, event: dict[str, Any]) -> Any:
        """Back from the triggerer: the body runs again (it is deterministic in its inputs) and its
        run_pod picks up the pod the trigger watched instead of starting one. Called from inside
        run_pod (the KPO skips deferring a pod that has already finished), it is the KPO's own."""
        if self._in_pod:
            return KubernetesPodOperator.trigger_reentry(self, context, event)
        self._reentry_event = event
        return self.body(*self.step_inputs, context)

    def run_pod(self, spec: TaskSpec, context: Any, settings: PipelineSettings) -> dict[str, Any]:
        """Run `spec` as this task's pod; the result or the outcome.py exception of its exit code."""
        if spec.step != self.step:
            raise ValueError(f"task {self.task_id} runs step {self.step}, not {spec.step}")
        if self._pod_template is not None and self._reentry_event is None:
            raise RuntimeError(f"task {self.task_id} already ran its pod in this try")
        self._pod_template = build_operator(spec, settings, task_id=self.task_id)
        self._pod_template.hook = self.hook  # this task's cluster connection (it labels the pod in-cluster or not)
        self.arguments = self._pod_template.arguments  # for the logs and on-failure messages
        log.info("step %s as this task's pod: trainer %s", spec.step, " ".join(self.arguments))
        self._in_pod = True
        try:
            if self._reentry_event is None:
                result = KubernetesPodOperator.execute(self, context)
            else:
                result = KubernetesPodOperator.trigger_reentry(self, context, self._reentry_event)
        except Exception as exc:
            interrupted = _interruption(exc)
            if interrupted is not None:
                # The KPO's cleanup raised while a timeout or kill was unwinding: that is the outcome.
                raise interrupted from exc
            code = _exit_code(self)
            if code is None or code == 0:
                # No terminated container: the pod never ran (Pending past startup_timeout, API error),
                # or the step succeeded but reading its result failed. Both are worth a retry.
                raise StepCrashed(spec.step, None, {"error": str(exc).splitlines()[0] if str(exc) else repr(exc)}) from exc
            return outcome(spec.step, code, self.step_result)
        finally:
            self._in_pod = False
        return outcome(spec.step, 0, result if isinstance(result, dict) else {})

    def build_pod_request_obj(self, context: Any = None, *, dry_run: bool = False) -> k8s.V1Pod:
        if self._pod_template is None:
            return super().build_pod_request_obj(context, dry_run=dry_run)
        return self._pod_template.build_pod_request_obj(context, dry_run=dry_run)

    def get_or_create_pod(self, pod_request_obj: k8s.V1Pod, context: Any) -> k8s.V1Pod:
        """A retry never starts a pod beside its task's previous one: wait while that one terminates."""
        self._wait_for_terminating_pods(pod_request_obj.metadata.namespace, context)
        return super().get_or_create_pod(pod_request_obj, context)

    def _wait_for_terminating_pods(self, namespace: str, context: Any) -> None:
        selector = self._build_find_pod_label_selector(context, exclude_checked=False)
        # A pod being deleted gets its grace period to checkpoint, plus a margin for the kubelet.
        deadline = time.monotonic() + (self.termination_grace_period or 30) + 60
        while True:
            pods = self.client.list_namespaced_pod(namespace=namespace, label_selector=selector).items
            terminating = [p.metadata.name for p in pods if p.metadata.deletion_timestamp is not None]
            if not terminating:
                return
            if time.monotonic() > deadline:
                raise StepCrashed(self.step, None, {"error": f"pods {terminating} of this task are still terminating"})
            log.info("waiting for pod(s) %s of this task to finish terminating before starting a new one", terminating)
            time.sleep(self.startup_check_interval_seconds)

    def process_pod_deletion(self, pod: k8s.V1Pod, *, reraise: bool = True) -> bool:
        """Delete a pod that is not terminated whatever on_finish_action says: one still Pending or
        Running when its try ends (startup timeout, task timeout, an API error) would otherwise be
        left holding its GPU and writing to the run key with nobody watching it."""
        if pod is not None:
            try:
                current = self.pod_manager.read_pod(pod)
            except ApiException as exc:
                if exc.status == 404:
                    return False  # gone already
                log.debug("could not re-read pod %s: %s", pod.metadata.name, exc)
                current = pod  # unreadable: judge by the status we have
            if not _is_terminated(current):
                log.warning("deleting pod %s: still %s when its try ended", pod.metadata.name,
                            current.status.phase if current.status else "unknown")
                try:
                    self.client.delete_namespaced_pod(
                        current.metadata.name, current.metadata.namespace,
                        grace_period_seconds=self.termination_grace_period,  # time to checkpoint
                    )
                except ApiException as exc:
                    if exc.status == 404:
                        return True  # went away by itself meanwhile
                    if reraise:
                        raise
                    log.exception("could not delete pod %s", pod.metadata.name)
                    return False
                return True
        return super().process_pod_deletion(pod, reraise=reraise)
