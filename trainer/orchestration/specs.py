"""What one pipeline step runs: the `trainer` argv, resources and environment (backend-neutral).

One builder per step turns (symbol, profile, settings, run key) into a `TaskSpec`; the local
backend runs the argv as a subprocess, the kubernetes backend as a pod. `--result-json` is not
part of the argv: each backend adds it with a path it can read back.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from trainer import __version__
from trainer.orchestration.settings import PipelineSettings, StageSteps
from trainer.symbols import validate_symbol
from trainer.versioning import IMAGE_DIGEST_ENV

Stage = Literal["smoke", "full"]
Accelerator = Literal["cpu", "gpu"]

_DIGEST_RE = re.compile(r"^(?:[a-z0-9]+:)?([A-Za-z0-9]{12,128})$")
_IMAGE_LABEL = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,139}")
_RUN_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_APPROVER_LENGTH = 200
MAX_COMMENT_LENGTH = 1000


@dataclass(frozen=True)
class Resources:
    cpu: str
    memory: str
    gpu: int = 0


@dataclass(frozen=True)
class SecretEnvRef:
    """Env var `env` <- key `key` of Kubernetes Secret `secret`: a reference, never a value."""

    env: str
    secret: str
    key: str


@dataclass(frozen=True)
class TaskSpec:
    """One `trainer` invocation.

    :param step: pipeline step name (validate, smoke_train, full_train, smoke_gate, ...)
    :param argv: arguments after `trainer` (subcommand first; `--result-json` is added by the backend)
    :param resources: what the step needs (the kubernetes backend turns it into requests/limits)
    :param accelerator: cpu or gpu placement (node selector and tolerations from the settings)
    :param env: plain environment variables (no secrets)
    :param secret_env: environment variables filled from Kubernetes Secrets by reference
    :param timeout_seconds: one try's time limit (the kubernetes backend's activeDeadlineSeconds);
        None = no limit of its own
    """

    step: str
    argv: tuple[str, ...]
    resources: Resources
    accelerator: Accelerator = "cpu"
    env: dict[str, str] = field(default_factory=dict)
    secret_env: tuple[SecretEnvRef, ...] = ()
    timeout_seconds: int | None = None

    @property
    def command(self) -> str:
        return self.argv[0]


@dataclass(frozen=True)
class RunKey:
    """Idempotency key of a training run: same inputs -> same run directory -> reuse.

    Layout: <SYMBOL>/<digest[:12]>-<config_hash[:8]>-v<code_version>-i<image>/<profile>/<stage>,
    where <image> is the trainer image digest's first 12 letters (kubernetes, digest pinned), or
    its label: `tag-<tag>` (kubernetes, no digest pinned) or `local` (local backend). A new image
    therefore trains into a new run directory instead of resuming or reusing another image's run.
    A key without an image (image_digest None) has no `-i` part: the layout of run directories
    written before the image was part of the key.

    :param image_digest: the trainer image (PipelineSettings.image_digest): a digest
        (sha256:..., 12+ letters/digits) or a label (letters, digits, `._-`)
    """

    symbol: str
    data_digest: str
    config_hash: str
    profile: str
    stage: Stage
    code_version: str = __version__
    image_digest: str | None = None

    def __post_init__(self) -> None:
        validate_symbol(self.symbol)
        object.__setattr__(self, "data_digest", clean_digest(self.data_digest, "data digest"))
        object.__setattr__(self, "config_hash", clean_digest(self.config_hash, "config hash", min_len=8))
        if self.stage not in ("smoke", "full"):
            raise ValueError(f"run key: unknown stage {self.stage!r}")
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", self.profile):
            raise ValueError(f"run key: invalid profile name {self.profile!r}")
        if not re.fullmatch(r"[0-9A-Za-z.+_-]{1,32}", self.code_version):
            raise ValueError(f"run key: invalid code version {self.code_version!r}")
        if self.image_digest is not None:
            object.__setattr__(self, "image_digest", clean_image(self.image_digest))

    @property
    def short_image(self) -> str | None:
        """The image's part of the path: a digest's first 12 letters, or the label as it is."""
        if self.image_digest is None:
            return None
        return self.image_digest[:12] if _DIGEST_RE.fullmatch(self.image_digest) else self.image_digest

    @property
    def relpath(self) -> str:
        image = f"-i{self.short_image}" if self.image_digest is not None else ""
        return (
            f"{self.symbol}/{self.data_digest[:12]}-{self.config_hash[:8]}-v{self.code_version}{image}"
            f"/{self.profile}/{self.stage}"
        )

    def under(self, runs_root: str) -> str:
        return join_uri(runs_root, self.relpath)


def clean_digest(value: Any, what: str, min_len: int = 12) -> str:
    """A hex/alnum digest safe to put in a path (an optional `sha256:` prefix is dropped)."""
    match = _DIGEST_RE.fullmatch(value) if isinstance(value, str) else None
    if not match or len(match.group(1)) < min_len:
        raise ValueError(f"{what} {value!r} is not a digest (expected >= {min_len} letters/digits)")
    return match.group(1)


def clean_image(value: Any) -> str:
    """A trainer image digest (its `sha256:` prefix dropped) or label (`local`, `tag-0.1.0`), safe in a path."""
    if isinstance(value, str) and _DIGEST_RE.fullmatch(value):
        return clean_digest(value, "image digest")
    if isinstance(value, str) and _IMAGE_LABEL.fullmatch(value):
        return value
    raise ValueError(
        f"image digest {value!r} is neither a digest (sha256:<12+ letters/digits>) nor a label "
        "(letters, digits, '._-'); check kubernetes.image in the pipeline settings"
    )


def join_uri(root: str, *parts: str) -> str:
    """Join path parts onto a local path or an s3:// prefix with '/'."""
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])


def safe_run_id(run_id: str) -> str:
    """An Airflow run id (manual__2025-01-01T00:00:00+00:00) as one path segment."""
    return _RUN_ID_UNSAFE.sub("_", run_id).strip("._") or "run"


def stage_steps(
    settings: PipelineSettings, profile: str, stage: Stage, total_timesteps: int | None = None
) -> StageSteps:
    """The profile's step counts for a stage, with the run's optional total-timesteps override."""
    steps = settings.profile(profile).stage(stage)
    if total_timesteps is not None:
        if int(total_timesteps) < 1:
            raise ValueError(f"{stage} total_timesteps must be >= 1, got {total_timesteps}")
        steps = steps.model_copy(update={"total_timesteps": int(total_timesteps)})
    return steps


def stage_overrides(symbol: str, settings: PipelineSettings, profile: str, steps: StageSteps) -> dict[str, Any]:
    """Config overrides a `trainer train` of this stage applies (so they belong in the config hash)."""
    overrides: dict[str, Any] = {
        "data.symbol": validate_symbol(symbol),
        "training.total_timesteps": steps.total_timesteps,
        "training.n_envs": steps.n_envs,
        "training.eval_freq": steps.eval_freq,
    }
    prof = settings.profile(profile)
    overrides.update(prof.overrides)
    if prof.seed is not None:
        overrides["training.seed"] = prof.seed
    return overrides


def compute_config_hash(settings: PipelineSettings, symbol: str, profile: str, steps: StageSteps) -> str:
    """Config hash of the run with the stage's step counts applied (read at task run time)."""
    from trainer.config import load_config  # pydantic models; cheap, but kept out of DAG parsing

    config = load_config(settings.local_config_path(profile), stage_overrides(symbol, settings, profile, steps))
    return config.config_hash()


# ------------------------------------------------------------------------------------------------
# One builder per step
# ------------------------------------------------------------------------------------------------


def _base(
    settings: PipelineSettings, accelerator: Accelerator, step: str, profile: str | None = None
) -> dict[str, Any]:
    """The step's resources, placement, environment and time limit (profile None: the longest limit).

    Every step's environment names its trainer image (IMAGE_DIGEST_ENV), so training can record it
    and registration can tag the model version with it.
    """
    timeout = settings.timeout_seconds(step, profile)
    image = {IMAGE_DIGEST_ENV: settings.image_digest()}
    if settings.backend == "kubernetes":
        assert settings.kubernetes is not None
        k8s = settings.kubernetes
        placement = k8s.gpu if accelerator == "gpu" else k8s.cpu
        res = placement.resources
        return {
            "resources": Resources(cpu=res.cpu, memory=res.memory, gpu=res.gpu),
            "accelerator": accelerator,
            "env": {**k8s.env, **image},
            "secret_env": tuple(SecretEnvRef(s.env, s.secret, s.key) for s in k8s.secret_env),
            "timeout_seconds": timeout,
        }
    return {"resources": Resources(cpu="1", memory="2Gi"), "accelerator": accelerator, "env": image,
            "timeout_seconds": timeout}


def _data_args(data: str | None) -> list[str]:
    return ["--data", data] if data else []


def validate_spec(
    symbol: str, profile: str, settings: PipelineSettings, report_dir: str, data: str | None = None
) -> TaskSpec:
    argv = [
        "validate",
        "--symbol", validate_symbol(symbol),
        "--config", settings.step_config_path(profile),
        *_data_args(data),
        "--report-dir", report_dir,
    ]
    return TaskSpec(step="validate_data", argv=tuple(argv), **_base(settings, "cpu", "validate_data", profile))


def train_spec(
    symbol: str,
    profile: str,
    settings: PipelineSettings,
    run_key: RunKey,
    data: str | None = None,
    steps: StageSteps | None = None,
) -> TaskSpec:
    """Smoke training on CPU, full training on GPU (kubernetes); `--resume` makes retries continue."""
    if run_key.symbol != symbol or run_key.profile != profile:
        raise ValueError(f"run key {run_key.relpath} does not belong to {symbol}/{profile}")
    prof = settings.profile(profile)
    steps = steps or prof.stage(run_key.stage)
    argv = [
        "train",
        "--config", settings.step_config_path(profile),
        "--symbol", symbol,
        "--profile", profile,
        "--stage", run_key.stage,
        "--total-timesteps", str(steps.total_timesteps),
        "--n-envs", str(steps.n_envs),
        "--eval-freq", str(steps.eval_freq),
        "--output-dir", run_key.under(settings.runs_root()),
        *_data_args(data),
        "--resume",
    ]
    if prof.seed is not None:
        argv += ["--seed", str(prof.seed)]
    for key, value in prof.overrides.items():
        argv += ["--set", f"{key}={json.dumps(value)}"]
    accelerator: Accelerator = "gpu" if run_key.stage == "full" else "cpu"
    step = f"{run_key.stage}_train"
    return TaskSpec(step=step, argv=tuple(argv), **_base(settings, accelerator, step, profile))


def gate_spec(run_dir: str, stage: Stage, settings: PipelineSettings) -> TaskSpec:
    argv = ("gate", "--run", run_dir, "--stage", stage, "--gates", settings.gates_path())
    return TaskSpec(step=f"{stage}_gate", argv=argv, **_base(settings, "cpu", f"{stage}_gate"))


def evaluate_spec(run_dir: str, settings: PipelineSettings, data: str | None = None) -> TaskSpec:
    argv = ("evaluate", "--run", run_dir, *_data_args(data))
    return TaskSpec(step="evaluate", argv=argv, **_base(settings, "cpu", "evaluate"))


def register_spec(run_dir: str, settings: PipelineSettings) -> TaskSpec:
    argv = ("register", "--run", run_dir, "--gates", settings.gates_path())
    return TaskSpec(step="register_model", argv=argv, **_base(settings, "cpu", "register_model"))


def report_spec(run_dir: str, settings: PipelineSettings) -> TaskSpec:
    """The report reads the same gates file, so it shows the tier promotion requires."""
    argv = ("report", "--run", run_dir, "--gates", settings.gates_path())
    return TaskSpec(step="publish_report", argv=argv, **_base(settings, "cpu", "publish_report"))


@dataclass(frozen=True)
class Approval:
    """A reviewer's approval as `trainer promote` records it in the ledger.

    :param approved_by: the reviewer's name (from the Airflow HITL response)
    :param approved_at: when they answered, ISO 8601 with a time zone
    :param comment: their comment ("" for none)
    """

    approved_by: str
    approved_at: str
    comment: str = ""

    def __post_init__(self) -> None:
        name = (self.approved_by or "").strip()
        if not name or len(name) > MAX_APPROVER_LENGTH or _CONTROL.search(name):
            raise ValueError(f"approver must be 1-{MAX_APPROVER_LENGTH} printable characters, got {self.approved_by!r}")
        try:
            moment = datetime.fromisoformat(self.approved_at)
        except (TypeError, ValueError):
            raise ValueError(f"approval time {self.approved_at!r} is not ISO 8601") from None
        if moment.tzinfo is None:
            raise ValueError(f"approval time {self.approved_at!r} has no time zone")
        comment = (self.comment or "").strip()
        if len(comment) > MAX_COMMENT_LENGTH or "\x00" in comment:
            raise ValueError(f"approval comment must be at most {MAX_COMMENT_LENGTH} characters without NUL")
        object.__setattr__(self, "approved_by", name)
        object.__setattr__(self, "approved_at", moment.astimezone(timezone.utc).isoformat())
        object.__setattr__(self, "comment", comment)

    def argv(self) -> tuple[str, ...]:
        comment = ("--approval-comment", self.comment) if self.comment else ()
        return ("--approved-by", self.approved_by, "--approved-at", self.approved_at, *comment)


def promote_spec(
    symbol: str,
    profile: str,
    version: int | str,
    reason: str,
    settings: PipelineSettings,
    approval: Approval | None = None,
) -> TaskSpec:
    """`trainer promote` of one version under the gates file's policy.

    With `approval` the reviewer, the time and the comment go to the ledger; without it the
    promotion is the scheduler's decision (no `--approved-by`), which a policy with
    `require_human_approval` refuses.
    """
    if not str(version).isdigit():
        raise ValueError(f"model version must be a positive integer, got {version!r}")
    settings.profile(profile)
    argv = (
        "promote",
        "--symbol", validate_symbol(symbol),
        "--profile", profile,
        "--version", str(version),
        "--reason", reason,
        "--gates", settings.gates_path(),
        *(approval.argv() if approval else ()),
    )
    return TaskSpec(step="promote_model", argv=argv, **_base(settings, "cpu", "promote_model", profile))
