"""configs/pipeline.yaml as typed settings: the one place the orchestration reads YAML and env vars.

Env overrides (read only in `load_settings`):
- TRAINER_PIPELINE_CONFIG: another pipeline file;
- TRAINER_BACKEND: `local` or `kubernetes` (wins over the file's `backend`);
- TRAINER_SCHEDULE: a cron expression, or `none` for manual runs only;
- TRAINER_STATE_DIR: local runs root = $TRAINER_STATE_DIR/runs (unless the file sets local.runs_root);
- TRAINER_NOTIFY_WEBHOOK_URL: notifications.webhook_url (a webhook URL is often its own credential,
  so it can come from a Secret instead of the pipeline file; empty = off).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from itertools import pairwise
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from trainer.errors import TrainerError
from trainer.symbols import validate_symbol

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The checkout holding configs/ and dags/ (the package is installed editable from it)."""

DEFAULT_SETTINGS_PATH = REPO_ROOT / "configs" / "pipeline.yaml"
BACKENDS = ("local", "kubernetes")


class SettingsError(TrainerError, ValueError):
    """configs/pipeline.yaml (or an env override) that cannot be used; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StageSteps(_Strict):
    """Step counts of one training stage (passed as `trainer train` flags and hashed into the run key)."""

    total_timesteps: int = Field(ge=1, description="Env steps over all envs together.")
    n_envs: int = Field(ge=1, description="Parallel environments.")
    eval_freq: int = Field(ge=1, description="Env steps between evaluations on the eval split.")


class Profile(_Strict):
    config: str = Field(description="Run config, relative to the repository root (or absolute).")
    smoke: StageSteps
    full: StageSteps
    full_timeout_minutes: int = Field(
        720, ge=1, description="execution_timeout of one full-training try (and its pod's activeDeadlineSeconds)."
    )
    smoke_timeout_minutes: int = Field(
        60, ge=1, description="execution_timeout of one smoke-training try (and its pod's activeDeadlineSeconds)."
    )
    step_timeout_minutes: int = Field(
        60, ge=1,
        description="execution_timeout of one try of every other trainer step: validate, gates, evaluate, "
        "register, report, promote (and their pods' activeDeadlineSeconds).",
    )
    seed: int | None = Field(None, description="`--seed` for both stages; None = the config's training.seed.")
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Run-config keys (dotted paths) both stages set with `trainer train --set`; part of the config hash.",
    )

    def stage(self, stage: str) -> StageSteps:
        if stage not in ("smoke", "full"):
            raise SettingsError(f"unknown stage {stage!r}: expected smoke or full")
        return getattr(self, stage)

    def timeout_seconds(self, step: str) -> int:
        """One try's time limit of a trainer step (`full_train`, `smoke_train`, or any other step)."""
        minutes = {"full_train": self.full_timeout_minutes, "smoke_train": self.smoke_timeout_minutes}
        return 60 * minutes.get(step, self.step_timeout_minutes)


class Defaults(_Strict):
    symbols: list[str] = Field(min_length=1)
    profile: str
    require_approval: bool = False

    @field_validator("symbols")
    @classmethod
    def _valid_symbols(cls, value: list[str]) -> list[str]:
        for symbol in value:
            validate_symbol(symbol)
        if len(set(value)) != len(value):
            raise ValueError(f"symbols must be unique, got {value}")
        return value


class Concurrency(_Strict):
    """How big a run may be and how much of it runs at once (see configs/pipeline.yaml for the why)."""

    max_symbols: int = Field(500, ge=1, description="Most symbols one run accepts: the `symbols` Param's maxItems.")
    max_active_runs: int = Field(
        3, ge=1,
        description="DAG runs active at once (a waiting approval, tonight's run, a manual one); the run-key "
        "lease keeps two of them from training one run directory at once.",
    )
    max_active_tasks: int = Field(
        64, ge=1, description="Running task instances of one DAG run, all tasks together (Airflow 3: per run)."
    )
    max_active_tis_per_dagrun: int = Field(
        32, ge=1, description="Running map indexes (symbols) of one mapped task in one DAG run."
    )
    mlflow_writers: int = Field(
        8, ge=1,
        description="Running instances, over all runs and symbols, of each task that writes to the MLflow "
        "registry (register_model, publish_report, promote_model): their max_active_tis_per_dag.",
    )


class Approval(_Strict):
    response_timeout_hours: float = Field(
        20, gt=0,
        description="How long a promotion waits for a reviewer before it counts as Reject; must be shorter "
        "than the shortest gap between two scheduled runs.",
    )


class Notifications(_Strict):
    """Failure notifications (trainer/orchestration/notify.py): one JSON POST per event."""

    webhook_url: str | None = Field(
        None, pattern=r"^https?://[^\s]+$", max_length=2048,
        description="Webhook that gets failed / collapsed trainings and promotions that did not happen; None = off.",
    )
    timeout_seconds: float = Field(
        5, gt=0, le=30, description="Timeout of one POST; a webhook that does not answer in time is logged, never retried."
    )


class Priority(_Strict):
    """Absolute priority weights (weight_rule=absolute): the scheduler starts higher weights first."""

    gpu: int = Field(100, ge=1, description="priority_weight of full training (the GPU pool's tasks).")
    cpu: int = Field(10, ge=1, description="priority_weight of every CPU trainer step.")

    @model_validator(mode="after")
    def _gpu_first(self) -> "Priority":
        if self.gpu <= self.cpu:
            raise ValueError(f"priority.gpu ({self.gpu}) must be above priority.cpu ({self.cpu}): full training goes first")
        return self


class Retries(_Strict):
    count: int = Field(2, ge=2, description="Retries of every task (house rule: >= 2).")
    training_count: int = Field(3, ge=2, description="Retries of smoke and full training.")
    delay_seconds: int = Field(60, ge=1)
    max_delay_seconds: int = Field(1800, ge=1)


class LocalSettings(_Strict):
    runs_root: str | None = None
    terminate_grace_seconds: int = Field(60, ge=1)


class Resources(_Strict):
    cpu: str = Field(description="Kubernetes CPU quantity, e.g. '2' or '500m'.")
    memory: str = Field(description="Kubernetes memory quantity, e.g. '8Gi'.")
    gpu: int = Field(0, ge=0, description="nvidia.com/gpu count (0 = no GPU).")


class Toleration(_Strict):
    key: str
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
K8S_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


class Placement(_Strict):
    resources: Resources
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    priority_class_name: str | None = Field(
        None, pattern=K8S_NAME_PATTERN, max_length=253,
        description="Kubernetes PriorityClass of this class's pods (None = the cluster default).",
    )
    scratch_size: str | None = Field(
        None, pattern=QUANTITY_PATTERN,
        description="sizeLimit of the /tmp emptyDir (state, staging of checkpoints before upload, caches) and "
        "the pod's ephemeral-storage request; None = neither (configs/pipeline.yaml sets both classes).",
    )


class Pool(_Strict):
    """An Airflow pool; whoever deploys Airflow creates it with `slots` (the chart, from its values)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,256}$")
    slots: int = Field(ge=1, description="Size of the pool.")


class Image(_Strict):
    repository: str
    tag: str = "latest"
    digest: str | None = None
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"

    @property
    def reference(self) -> str:
        return f"{self.repository}@{self.digest}" if self.digest else f"{self.repository}:{self.tag}"


class SecretEnv(_Strict):
    """An env var filled from a key of a Kubernetes Secret (a reference, never a value)."""

    env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    secret: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    key: str = Field(pattern=r"^[-._a-zA-Z0-9]+$")


class KubernetesSettings(_Strict):
    image: Image
    namespace: str
    service_account: str
    config_dir: str = Field(description="Folder of the run configs inside the image.")
    runs_root: str = Field(description="s3://bucket/prefix of the run directories.")
    startup_timeout_seconds: int = Field(900, ge=1)
    on_finish_action: Literal["delete_pod", "delete_succeeded_pod", "keep_pod"] = Field(
        "delete_succeeded_pod",
        description="What happens to a finished (terminated) step pod; a pod that is still Pending or Running "
        "when its try ends is always deleted (TrainerPodStep), so no action leaves an orphan behind.",
    )
    deferrable_steps: list[str] = Field(
        default_factory=lambda: ["smoke_train", "full_train"],
        description="Steps whose task waits for its pod in the triggerer (deferrable KPO), not on a worker slot.",
    )
    run_as_user: int = Field(10001, ge=1, description="Non-root UID of the trainer container.")
    run_as_group: int = Field(10001, ge=1)
    env: dict[str, str] = Field(default_factory=dict)
    secret_env: list[SecretEnv] = Field(default_factory=list)
    cpu: Placement
    gpu: Placement
    termination_grace_period_seconds: int = Field(
        300, ge=30,
        description="Seconds between SIGTERM and SIGKILL of a step pod: must cover writing and uploading "
        "one checkpoint (see configs/pipeline.yaml for the figure).",
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list, description="Secrets (names) the step pods pull the trainer and sidecar images with."
    )
    xcom_sidecar_image: Image | None = Field(
        None, description="Image of the KPO's xcom sidecar (needs sh); None = the trainer image, already on the node."
    )
    gpu_pool: Pool | None = Field(
        None,
        description="Airflow pool of the GPU steps, slots = GPUs the trainer may hold at once; a full-training "
        "task takes gpu.resources.gpu slots. None = default_pool (set it only once the pool exists).",
    )
    cpu_pool: Pool | None = Field(
        None,
        description="Airflow pool of the CPU trainer steps, one slot per running step pod. None = default_pool.",
    )

    @field_validator("image_pull_secrets")
    @classmethod
    def _secret_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(K8S_NAME_PATTERN, name) or len(name) > 253:
                raise ValueError(f"image pull secret {name!r} is not a Kubernetes object name")
        if len(set(value)) != len(value):
            raise ValueError(f"image pull secrets must be unique, got {value}")
        return value

    @model_validator(mode="after")
    def _pools_fit(self) -> "KubernetesSettings":
        if self.gpu_pool and self.cpu_pool and self.gpu_pool.name == self.cpu_pool.name:
            raise ValueError(f"gpu_pool and cpu_pool must be different pools, both are {self.gpu_pool.name!r}")
        if self.gpu_pool and self.gpu_pool_slots_per_task > self.gpu_pool.slots:
            raise ValueError(
                f"gpu_pool.slots ({self.gpu_pool.slots}) is below the GPUs of one full-training pod "
                f"({self.gpu.resources.gpu}): full training would never be scheduled"
            )
        return self

    @property
    def gpu_pool_slots_per_task(self) -> int:
        """Pool slots one full-training task takes: its pod's GPUs (at least one)."""
        return max(1, self.gpu.resources.gpu)

    @field_validator("runs_root")
    @classmethod
    def _s3(cls, value: str) -> str:
        if not value.startswith("s3://"):
            raise ValueError(f"must be an s3:// prefix (pods share no disk), got {value!r}")
        return value.rstrip("/")


class PipelineSettings(_Strict):
    schedule: str | None = Field(description="Cron expression; None = manual runs only.")
    backend: Literal["local", "kubernetes"] = "local"
    defaults: Defaults
    retries: Retries = Field(default_factory=Retries)
    concurrency: Concurrency = Field(default_factory=Concurrency)
    approval: Approval = Field(default_factory=Approval)
    priority: Priority = Field(default_factory=Priority)
    notifications: Notifications = Field(default_factory=Notifications)
    profiles: dict[str, Profile] = Field(min_length=1)
    local: LocalSettings = Field(default_factory=LocalSettings)
    kubernetes: KubernetesSettings | None = None
    gates: str = Field(
        "configs/gates.yaml",
        description="Gates file (quality gates and promotion policy) that gate, register, report and promote read; "
        "relative to the repository root, or absolute. The kubernetes backend uses the file of the same name "
        "in kubernetes.config_dir.",
    )
    state_dir: str | None = Field(None, description="Filled from TRAINER_STATE_DIR by load_settings.")
    # Base of relative paths: set by load_settings to the folder above the settings file's folder.
    _base_dir: Path = PrivateAttr(default=REPO_ROOT)

    @model_validator(mode="after")
    def _consistent(self) -> "PipelineSettings":
        if self.defaults.profile not in self.profiles:
            raise ValueError(f"defaults.profile {self.defaults.profile!r} is not one of profiles {sorted(self.profiles)}")
        if self.backend == "kubernetes" and self.kubernetes is None:
            raise ValueError("backend is kubernetes but the kubernetes section is missing")
        if len(self.defaults.symbols) > self.concurrency.max_symbols:
            raise ValueError(
                f"defaults.symbols has {len(self.defaults.symbols)} symbols, more than "
                f"concurrency.max_symbols ({self.concurrency.max_symbols})"
            )
        gap = _shortest_schedule_gap_hours(self.schedule)
        if gap is not None and self.approval.response_timeout_hours >= gap:
            raise ValueError(
                f"approval.response_timeout_hours ({self.approval.response_timeout_hours:g}) must be shorter than "
                f"the shortest gap between scheduled runs of {self.schedule!r} ({gap:g} h): a waiting approval "
                "must end before the next scheduled run"
            )
        return self

    def pools(self) -> dict[str, Pool]:
        """The Airflow pools the DAG's tasks use, by accelerator class (none with the local backend)."""
        if self.backend != "kubernetes":
            return {}
        assert self.kubernetes is not None
        pools = {"gpu": self.kubernetes.gpu_pool, "cpu": self.kubernetes.cpu_pool}
        return {accelerator: pool for accelerator, pool in pools.items() if pool is not None}

    def profile(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            raise SettingsError(f"unknown profile {name!r}: expected one of {sorted(self.profiles)}") from None

    def timeout_seconds(self, step: str, profile: str | None = None) -> int:
        """One try's time limit of a trainer step under `profile` (None: the longest over all profiles)."""
        if profile is not None:
            return self.profile(profile).timeout_seconds(step)
        return max(p.timeout_seconds(step) for p in self.profiles.values())

    def image_digest(self) -> str:
        """What names the trainer image of this backend's steps (in the run key, and the steps'
        TRAINER_IMAGE_DIGEST for the model version's tag).

        kubernetes: the pinned digest (sha256:...); without one, `tag-<tag>` (a tag can be moved to
        another image, so pin the digest in production). local: "local", the steps run this
        checkout, which the run key's code version names.
        """
        if self.backend != "kubernetes":
            return "local"
        assert self.kubernetes is not None
        image = self.kubernetes.image
        return image.digest or f"tag-{image.tag}"

    def runs_root(self) -> str:
        """Where run directories live for the selected backend (a local path or an s3:// prefix)."""
        if self.backend == "kubernetes":
            assert self.kubernetes is not None
            return self.kubernetes.runs_root
        if self.local.runs_root:
            return str(self._resolve(self.local.runs_root))
        state = Path(self.state_dir) if self.state_dir else self._base_dir / "state"
        return str(state.resolve() / "runs")

    def local_config_path(self, profile: str) -> Path:
        """The run config as this machine sees it (the config hash is computed from this file)."""
        return self._resolve(self.profile(profile).config)

    def step_config_path(self, profile: str) -> str:
        """The run config as the step sees it: the local file, or its copy inside the image."""
        if self.backend == "kubernetes":
            assert self.kubernetes is not None
            return f"{self.kubernetes.config_dir.rstrip('/')}/{Path(self.profile(profile).config).name}"
        return str(self.local_config_path(profile))

    def gates_path(self) -> str:
        """The gates file as the step sees it: the local file, or its copy inside the image.

        Every step that judges a version (gate, register, report, promote) gets this one path, so
        they all apply the same policy.
        """
        if self.backend == "kubernetes":
            assert self.kubernetes is not None
            return f"{self.kubernetes.config_dir.rstrip('/')}/{Path(self.gates).name}"
        return str(self._resolve(self.gates))

    def _resolve(self, path: str) -> Path:
        candidate = Path(path)
        return candidate if candidate.is_absolute() else self._base_dir / candidate


def _shortest_schedule_gap_hours(schedule: str | None, horizon: int = 30) -> float | None:
    """Shortest gap, in hours, between consecutive fire times of a cron schedule (over `horizon` fires)."""
    if schedule is None:
        return None
    from croniter import croniter  # Airflow's own cron parser; small, read only for a schedule

    if not croniter.is_valid(schedule):
        return None  # a preset Airflow knows and croniter does not (@once, @continuous): nothing to compare
    it = croniter(schedule, datetime(2025, 1, 1, tzinfo=timezone.utc))
    times = [it.get_next(datetime) for _ in range(horizon + 1)]
    return min((b - a).total_seconds() for a, b in pairwise(times)) / 3600


def _format_error(source: str, err: ValidationError) -> str:
    lines = []
    for item in err.errors():
        loc = ".".join(str(part) for part in item["loc"]) or "<root>"
        msg = item["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> PipelineSettings:
    """Read configs/pipeline.yaml (or `path`, or $TRAINER_PIPELINE_CONFIG) and apply the env overrides."""
    env = os.environ if env is None else env
    source = Path(path or env.get("TRAINER_PIPELINE_CONFIG") or DEFAULT_SETTINGS_PATH)
    try:
        tree = yaml.safe_load(source.read_text())
    except FileNotFoundError:
        raise SettingsError(f"{source}: pipeline settings file not found") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise SettingsError(f"{source}: expected a mapping at the top level")
    backend = env.get("TRAINER_BACKEND")
    if backend:
        if backend not in BACKENDS:
            raise SettingsError(f"TRAINER_BACKEND={backend!r}: expected one of {', '.join(BACKENDS)}")
        tree["backend"] = backend
    schedule = env.get("TRAINER_SCHEDULE")
    if schedule is not None:
        tree["schedule"] = schedule
    if isinstance(tree.get("schedule"), str) and tree["schedule"].strip().lower() in ("", "none", "null"):
        tree["schedule"] = None
    if env.get("TRAINER_STATE_DIR"):
        tree["state_dir"] = env["TRAINER_STATE_DIR"]
    webhook = env.get("TRAINER_NOTIFY_WEBHOOK_URL")
    if webhook is not None:
        notifications = tree.get("notifications")
        tree["notifications"] = {**(notifications if isinstance(notifications, dict) else {}),
                                 "webhook_url": webhook.strip() or None}
    try:
        settings = PipelineSettings.model_validate(tree)
    except ValidationError as exc:
        raise SettingsError(_format_error(str(source), exc)) from None
    # Relative paths are relative to the folder above the file's own (the repository root for
    # configs/pipeline.yaml, /opt/airflow for the image's /opt/airflow/configs/pipeline.yaml),
    # never to wherever the package happens to be installed.
    settings._base_dir = source.resolve().parent.parent
    return settings
