"""configs/pipeline.yaml as typed settings: the one place the orchestration reads YAML and env vars.

Env overrides (read only in `load_settings`):
- TRAINER_PIPELINE_CONFIG: another pipeline file;
- TRAINER_BACKEND: `local` or `kubernetes` (wins over the file's `backend`);
- TRAINER_SCHEDULE: a cron expression, or `none` for manual runs only;
- TRAINER_STATE_DIR: local runs root = $TRAINER_STATE_DIR/runs (unless the file sets local.runs_root).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
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
    full_timeout_minutes: int = Field(720, ge=1, description="execution_timeout of one full-training try.")
    seed: int | None = Field(None, description="`--seed` for both stages; None = the config's training.seed.")
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Run-config keys (dotted paths) both stages set with `trainer train --set`; part of the config hash.",
    )

    def stage(self, stage: str) -> StageSteps:
        if stage not in ("smoke", "full"):
            raise SettingsError(f"unknown stage {stage!r}: expected smoke or full")
        return getattr(self, stage)


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


class Placement(_Strict):
    resources: Resources
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)


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
    on_finish_action: Literal["delete_pod", "delete_succeeded_pod", "keep_pod"] = "delete_succeeded_pod"
    run_as_user: int = Field(10001, ge=1, description="Non-root UID of the trainer container.")
    run_as_group: int = Field(10001, ge=1)
    env: dict[str, str] = Field(default_factory=dict)
    secret_env: list[SecretEnv] = Field(default_factory=list)
    cpu: Placement
    gpu: Placement

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
        return self

    def profile(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            raise SettingsError(f"unknown profile {name!r}: expected one of {sorted(self.profiles)}") from None

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
    try:
        settings = PipelineSettings.model_validate(tree)
    except ValidationError as exc:
        raise SettingsError(_format_error(str(source), exc)) from None
    # Relative paths are relative to the folder above the file's own (the repository root for
    # configs/pipeline.yaml, /opt/airflow for the image's /opt/airflow/configs/pipeline.yaml),
    # never to wherever the package happens to be installed.
    settings._base_dir = source.resolve().parent.parent
    return settings
