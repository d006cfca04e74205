"""Typed configuration: the pydantic models behind configs/*.yaml and the one loader, `load_config`.

Every model forbids unknown keys, so a typo fails at load time with the key path named
(`options.scalp.min_durration: extra inputs are not permitted`). Where the seed specification
(shared/seed/hierarchical_options_fixes.md, Part 3) is silent, the default chosen here is
documented next to the field.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trainer.errors import TrainerError
from trainer.symbols import validate_symbol

OPTION_NAMES: tuple[str, ...] = (
    "open_long",
    "open_short",
    "close_position",
    "trend_follow",
    "scalp",
    "wait",
)
"""The six options, in controller index order (index 0 = open_long ... 5 = wait)."""


class ConfigError(TrainerError, ValueError):
    """A configuration file that cannot be used; the message names the file and the key path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------------------
# Data and environment
# --------------------------------------------------------------------------------------------


class SplitConfig(_Strict):
    """Chronological train / eval / test fractions of the bars (in that order, no overlap)."""

    train: float = Field(0.70, gt=0, lt=1, description="Share of bars for training.")
    eval: float = Field(0.15, gt=0, lt=1, description="Share of bars for periodic evaluation.")
    test: float = Field(0.15, gt=0, lt=1, description="Share of bars held out for the final backtest.")

    @model_validator(mode="after")
    def _sum_to_one(self) -> "SplitConfig":
        total = self.train + self.eval + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + eval + test must be 1.0, got {total:.6f}")
        return self


class ValidationConfig(_Strict):
    """Bounds of the Great Expectations suite (trainer/data/validation.py)."""

    max_gap_days: float = Field(
        10.0, gt=0, description="Largest calendar gap between bars; 10 days fits weekends, holidays and the 2001 closure."
    )
    max_abs_log_return: float = Field(0.25, gt=0, description="Largest |log(close_t / close_t-1)| accepted per bar.")
    max_staleness_days: float | None = Field(
        None, gt=0, description="Freshness check for nightly runs: last bar at most this old. None = off (bundled history)."
    )


class DataConfig(_Strict):
    symbol: str = Field("SPY", description="Ticker; validated by trainer.symbols before it touches any path.")
    source: str | None = Field(
        None, description="CSV/Parquet path or s3://bucket/key. None = the bundled trainer/data/bundled/<SYMBOL>.csv."
    )
    splits: SplitConfig = Field(default_factory=SplitConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    signals: str | None = Field(
        None,
        description=(
            "CSV/Parquet path or s3://bucket/key of option signals: timestamp + sentiment and/or sl_confidence in "
            "[0, 1] (trainer/data/signals.py). A value stamped t is used from bar t on, never earlier. None = no file."
        ),
    )
    sentiment_source: Literal["auto", "column", "file", "derived", "neutral"] = Field(
        "auto",
        description=(
            "Where `sentiment` comes from: auto = the signals file, else the data's column, else derived; column; "
            "file; derived (a causal proxy, trainer/data/signals.py); neutral (environment.neutral_sentiment)."
        ),
    )
    sl_confidence_source: Literal["auto", "column", "file", "derived", "neutral"] = Field(
        "auto",
        description=(
            "Where `sl_confidence` comes from, as sentiment_source; derived = a next-bar direction classifier "
            "fitted on the train split only (trainer/data/signals.py)."
        ),
    )

    @field_validator("symbol")
    @classmethod
    def _valid_symbol(cls, value: str) -> str:
        return validate_symbol(value)

    @model_validator(mode="after")
    def _file_needs_signals(self) -> "DataConfig":
        for name in ("sentiment_source", "sl_confidence_source"):
            if getattr(self, name) == "file" and not (self.signals or "").strip():
                raise ValueError(f"{name} is 'file' but data.signals names no file")
        return self


class EnvironmentConfig(_Strict):
    """The trading environment (trainer/envs/trading_env.py).

    Observation = window_size bars x 10 market features + 8 portfolio features; the shipped
    window of 57 bars gives 57 * 10 + 8 = 578 = options.state_dim, as in the seed.
    """

    window_size: int = Field(57, ge=2, description="Bars of market features in one observation.")
    episode_length: int = Field(252, ge=2, description="Bars per training episode (random start in the train split).")
    transaction_cost_bps: float = Field(1.0, ge=0, description="Commission per unit of traded exposure, basis points.")
    slippage_bps: float = Field(1.0, ge=0, description="Slippage per unit of traded exposure, basis points.")
    reward_scaling: float = Field(100.0, gt=0, description="Reward = scaling * net log return of the portfolio.")
    max_position: float = Field(1.0, gt=0, le=1, description="Largest |exposure| (fraction of equity) the env allows.")
    neutral_sentiment: float = Field(
        0.5, ge=0, le=1, description="Sentiment used when the data has no `sentiment` column (0 bearish .. 1 bullish)."
    )
    neutral_sl_confidence: float = Field(
        0.5, ge=0, le=1, description="Supervised-signal confidence used when the data has no `sl_confidence` column."
    )


# --------------------------------------------------------------------------------------------
# Low-level SAC
# --------------------------------------------------------------------------------------------


class SACConfig(_Strict):
    """Keyword arguments of stable_baselines3.SAC (names mirror SB3)."""

    learning_rate: float = Field(3e-4, gt=0)
    buffer_size: int = Field(100_000, ge=1)
    learning_starts: int = Field(1_000, ge=0)
    batch_size: int = Field(256, ge=1)
    tau: float = Field(0.005, gt=0, le=1)
    gamma: float = Field(0.99, gt=0, le=1)
    train_freq: int = Field(1, ge=1, description="Env steps (per env) between gradient phases.")
    gradient_steps: int = Field(1, ge=-1, description="Gradient steps per phase; -1 = as many as env steps collected.")
    ent_coef: str | float = Field("auto", description="'auto' learns the entropy coefficient; a float fixes it.")
    net_arch: list[int] = Field(default_factory=lambda: [256, 256], min_length=1)
    torch_threads: int = Field(
        1, ge=1, description="torch.set_num_threads; 1 beats 2 on a busy 2-core box (see README benchmarks)."
    )
    # The update path (trainer/training/fast_sac.py; benchmarks/sac_update.py measures each choice).
    optimizer: Literal["adam", "adam_foreach", "adam_fused"] = Field(
        "adam", description="Adam's implementation: per-tensor loops (SB3's default on CPU), foreach or fused kernels."
    )
    matmul_precision: Literal["highest", "high", "medium"] = Field(
        "highest", description="torch.set_float32_matmul_precision: 'high' allows TF32 on GPUs that have it."
    )
    compile: bool = Field(False, description="torch.compile the SAC gradient step (FastSAC).")
    cuda_graphs: bool = Field(False, description="Capture the SAC gradient step in a CUDA graph (device cuda only).")


# --------------------------------------------------------------------------------------------
# Options (seed Part 3); every seed key and value is here with the seed's default
# --------------------------------------------------------------------------------------------


class _OptionBase(_Strict):
    action_scale: float = Field(ge=0, le=1, description="Multiplies the SAC action before it reaches the env.")
    min_duration: int = Field(ge=0, description="Steps the option must run before it may terminate.")


class OpenLongConfig(_OptionBase):
    action_scale: float = Field(0.8, ge=0, le=1)
    min_duration: int = Field(5, ge=0)
    min_confidence: float = Field(0.5, ge=0, le=1, description="sl_confidence needed for the option to be available.")
    max_steps: int = Field(20, ge=1, description="Forced termination after this many steps.")
    max_exposure_pct: float = Field(0.15, gt=0, le=1, description="Largest exposure added per step while building.")


class OpenShortConfig(OpenLongConfig):
    pass


class ClosePositionConfig(_OptionBase):
    action_scale: float = Field(1.0, ge=0, le=1)
    min_duration: int = Field(3, ge=0)
    profit_target: float = Field(0.02, gt=0, description="Unrealised return that makes closing attractive.")
    stop_loss: float = Field(-0.01, lt=0, description="Unrealised return that forces closing.")
    max_steps: int = Field(
        20, ge=1, description="Seed is silent; 20 matches the open options so an exit never outlives an entry."
    )


class TrendFollowConfig(_OptionBase):
    action_scale: float = Field(0.6, ge=0, le=1)
    min_duration: int = Field(10, ge=0)
    momentum_threshold: float = Field(0.015, gt=0, description="|trend strength| needed to start; < half ends it.")
    max_position_size: float = Field(0.15, gt=0, le=1, description="Largest |exposure| while following a trend.")
    max_steps: int = Field(
        60, ge=1, description="Seed is silent; 60 bars (about a quarter of daily data) caps a trend ride."
    )


class ScalpConfig(_OptionBase):
    action_scale: float = Field(1.0, ge=0, le=1)
    min_duration: int = Field(5, ge=0)
    profit_target: float = Field(0.008, gt=0)
    stop_loss: float = Field(-0.004, lt=0)
    max_steps: int = Field(15, ge=1)


class WaitConfig(_OptionBase):
    action_scale: float = Field(0.0, ge=0, le=1)
    min_duration: int = Field(5, ge=0)
    max_wait_steps: int = Field(30, ge=1)
    min_wait_steps: int = Field(5, ge=0)


class MonitorConfig(_Strict):
    """OptionsMonitorCallback and the collapse early stop (beyond the seed)."""

    window_steps: int = Field(1_000, ge=1, description="Env steps (all envs together) per monitor window.")
    collapse_threshold: float = Field(
        0.6, gt=0, le=1, description="Seed is silent; a single option above 60% of steps is a collapse warning."
    )
    used_option_min_pct: float = Field(0.05, ge=0, le=1, description="Usage share that counts an option as used.")
    collapse_patience: int = Field(
        5, ge=1, description="Consecutive collapsed windows after warmup that abort the run ('aborted: option collapse')."
    )
    early_stop_on_collapse: bool = True


class OptionsConfig(_Strict):
    """The seed's `options:` section, key for key."""

    enabled: bool = True
    use_amp: bool = Field(False, description="Must stay false: the controller runs in float32 for stability.")
    state_dim: int = Field(578, ge=1)
    num_options: int = Field(6, ge=6, le=6)
    hidden_dim: int = Field(512, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    options_lr: float = Field(3e-4, gt=0)
    train_freq: int = Field(8, ge=1)
    warmup_steps: int = Field(2000, ge=0)
    value_loss_weight: float = Field(1.0, ge=0)
    grad_clip: float = Field(0.5, gt=0)
    normalize_advantages: bool = True
    advantage_epsilon: float = Field(1e-8, gt=0)
    entropy_bonus: float = Field(0.01, ge=0)
    temperature: float = Field(1.0, gt=0)
    temperature_decay: float = Field(0.9995, gt=0, le=1)
    min_temperature: float = Field(0.1, gt=0)
    option_buffer_size: int = Field(80_000, ge=1)
    batch_size: int = Field(128, ge=2)
    gamma: float = Field(0.99, gt=0, le=1, description="Seed is silent; discount of rewards accumulated inside an option.")
    policy_loss: Literal["clipped", "seed"] = Field(
        "clipped",
        description=(
            "Controller policy loss. `clipped` (default): PPO-style clipped surrogate with the importance ratio "
            "against the behaviour probability stored at selection; `seed`: the seed's -(log pi * A), kept to "
            "reproduce its collapse (it has no importance ratio, so replayed samples with A < 0 push pi -> 0)."
        ),
    )
    clip_range: float = Field(0.2, gt=0, lt=1, description="epsilon of the clipped surrogate (ratio kept in [1-eps, 1+eps]).")
    behaviour_refresh_updates: int = Field(
        384,
        ge=1,
        description=(
            "Clipped loss: options are chosen by a snapshot of the controller (the behaviour policy) that is "
            "refreshed every this many updates, PPO's rollout; the clip bounds each refresh's change to about clip_range."
        ),
    )
    max_sample_age_updates: int = Field(
        384,
        ge=1,
        description=(
            "Clipped loss: train only on option transitions chosen at most this many controller updates ago "
            "(falls back to the newest batch_size transitions when fewer are that recent)."
        ),
    )
    target_kl: float | None = Field(
        0.02,
        gt=0,
        description=(
            "Not in the seed (SB3 PPO's target_kl): clipped loss only; an update whose batch has moved further than "
            "this approx KL from the behaviour snapshot trains the value head only, so the policy waits for the "
            "next refresh. None: no limit (the seed's full command then collapsed onto scalp at 449k steps)."
        ),
    )
    overlap_update: bool = Field(
        True,
        description=(
            "Not in the seed: on CPU with the clipped loss, run each controller update beside SAC's gradient step "
            "(where: overlap_worker), where cores are left idle (2 x torch threads <= CPUs); bit-identical results "
            "(benchmarks/wrapper_overhead.py)."
        ),
    )
    overlap_worker: Literal["process", "thread"] = Field(
        "process",
        description=(
            "Not in the seed: where an overlapped update runs. process: one update process per trainer, stepping the "
            "controller's weights and Adam state in shared memory (a thread took ~0.7 ms of SAC's 19 ms gradient step "
            "in GIL hand-offs; the process nothing); thread: a worker thread of the trainer (also where no process can "
            "start). Bit-identical results either way."
        ),
    )
    open_long: OpenLongConfig = Field(default_factory=OpenLongConfig)
    open_short: OpenShortConfig = Field(default_factory=OpenShortConfig)
    close_position: ClosePositionConfig = Field(default_factory=ClosePositionConfig)
    trend_follow: TrendFollowConfig = Field(default_factory=TrendFollowConfig)
    scalp: ScalpConfig = Field(default_factory=ScalpConfig)
    wait: WaitConfig = Field(default_factory=WaitConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)

    @model_validator(mode="after")
    def _consistent(self) -> "OptionsConfig":
        if self.use_amp:
            raise ValueError("use_amp must be false: the options controller is float32 only")
        if self.min_temperature > self.temperature:
            raise ValueError(
                f"min_temperature ({self.min_temperature}) must be <= temperature ({self.temperature})"
            )
        for name in ("open_long", "open_short", "close_position", "trend_follow", "scalp"):
            block = getattr(self, name)
            if block.min_duration > block.max_steps:
                raise ValueError(f"{name}.min_duration ({block.min_duration}) must be <= {name}.max_steps ({block.max_steps})")
        if self.wait.min_wait_steps > self.wait.max_wait_steps:
            raise ValueError("wait.min_wait_steps must be <= wait.max_wait_steps")
        if self.wait.min_duration > self.wait.max_wait_steps:
            raise ValueError("wait.min_duration must be <= wait.max_wait_steps")
        return self

    def option_block(self, index: int) -> _OptionBase:
        """The per-option block for controller index `index` (see OPTION_NAMES)."""
        return getattr(self, OPTION_NAMES[index])


# --------------------------------------------------------------------------------------------
# Run-level sections
# --------------------------------------------------------------------------------------------


class TrainingConfig(_Strict):
    total_timesteps: int = Field(500_000, ge=1, description="Env steps over all envs together.")
    n_envs: int = Field(16, ge=1)
    vec_env: Literal["dummy", "subproc"] = Field("dummy", description="SB3 VecEnv class; dummy avoids IPC on small boxes.")
    eval_freq: int = Field(15_000, ge=1, description="Env steps between evaluations on the eval split.")
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"


class EvaluationConfig(_Strict):
    deterministic: bool = True
    include_eval_split: bool = Field(False, description="`trainer evaluate` also backtests the eval split.")
    max_drawdown_bound: float = Field(0.35, gt=0, le=1, description="Target tier: max drawdown must stay under this.")


class CheckpointConfig(_Strict):
    freq: int = Field(10_000, ge=1, description="Env steps between checkpoints.")
    keep_last: int = Field(2, ge=1, description="Complete checkpoints kept; older ones are deleted.")
    save_replay_buffer: bool = Field(True, description="Resume continues with the same SAC replay buffer.")


class TrainerConfig(_Strict):
    """A whole run: Phase A (algorithm 'sac') or Phase B.1 (algorithm 'hierarchical_sac')."""

    name: str = Field(description="Run family name, e.g. phase_b1_options.")
    algorithm: Literal["sac", "hierarchical_sac"]
    data: DataConfig = Field(default_factory=DataConfig)
    environment: EnvironmentConfig = Field(default_factory=EnvironmentConfig)
    sac: SACConfig = Field(default_factory=SACConfig)
    options: OptionsConfig = Field(default_factory=OptionsConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    checkpoints: CheckpointConfig = Field(default_factory=CheckpointConfig)

    @property
    def hierarchical(self) -> bool:
        return self.algorithm == "hierarchical_sac" and self.options.enabled

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of the resolved config (an idempotency key part)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


_BOUND_MESSAGES = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "extra_forbidden": "unknown key (not part of this section)",
    "missing": "required key is missing",
}


def _format_validation_error(path: str, err: ValidationError) -> str:
    lines = []
    for item in err.errors():
        loc = ".".join(str(part) for part in item["loc"]) or "<root>"
        if item["type"] in _BOUND_MESSAGES:
            msg = _BOUND_MESSAGES[item["type"]].format(**item.get("ctx", {}))
            if item["type"] not in ("extra_forbidden", "missing"):
                msg += f" (got {item['input']!r})"
        else:
            msg = item["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        lines.append(f"{path}: {loc}: {msg}")
    return "\n".join(lines)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: override {dotted!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse `key.path=value` (value read as YAML, so `3e-4`, `true`, `[256, 256]` work)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY.PATH=VALUE")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    return key.strip(), value


def _yaml_floats(tree: Any) -> Any:
    """PyYAML reads `3e-4` (no dot) as a string; turn such scientific literals into floats."""
    if isinstance(tree, dict):
        return {k: _yaml_floats(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_yaml_floats(v) for v in tree]
    if isinstance(tree, str):
        try:
            if any(c in tree for c in "eE") and tree.strip().lstrip("+-")[:1].isdigit():
                return float(tree)
        except ValueError:
            return tree
    return tree


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainerConfig:
    """Load and validate a run config; `overrides` maps dotted key paths to values.

    Raises ConfigError with every problem as `<file>: <key.path>: <message>`.
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{source}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read config ({exc.strerror})") from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level")
    tree = _yaml_floats(copy.deepcopy(tree))
    for dotted, value in (overrides or {}).items():
        _set_dotted(tree, dotted, value, source)
    try:
        return TrainerConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(source, exc)) from None


def check_state_dim(config: TrainerConfig, observation_size: int) -> None:
    """Stop at start-up when the controller's state_dim and the env's observation disagree."""
    if config.hierarchical and config.options.state_dim != observation_size:
        raise ConfigError(
            f"options.state_dim is {config.options.state_dim} but the environment's observation has "
            f"{observation_size} values (environment.window_size={config.environment.window_size}); "
            "make them agree"
        )
