"""A trained agent as one object: save/load a model directory, act, and backtest a split.

Model directory (docs/contracts.md): meta.json, config.resolved.yaml, sac.zip, and for
Phase B.1 controller.pt. `Agent.predict` is stateless (for serving through MLflow pyfunc): the
controller picks the best available option for each observation and SAC acts under it.
`Agent.backtest` walks a whole split with option persistence (min_duration, terminations), the
way the agent trades; it is deterministic (argmax options, terminate when p >= 0.5).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from trainer.config import OPTION_NAMES, TrainerConfig
from trainer.data.features import FeatureFrame
from trainer.envs.layout import ObservationLayout
from trainer.errors import NonFiniteError, TrainerError
from trainer.io import replace_dir, write_json_atomic

MODEL_FILES = ("meta.json", "config.resolved.yaml", "sac.zip")


@dataclass
class AgentDecision:
    actions: np.ndarray  # (n,) target exposure sent to the env
    option_indices: np.ndarray | None  # (n,) active option (Phase B.1) or None (Phase A)


@dataclass
class BacktestResult:
    timestamps: list[str]
    returns: np.ndarray  # simple portfolio return per bar, net of costs
    positions: np.ndarray  # exposure held over each bar
    options: np.ndarray | None  # option index per bar (Phase B.1)
    bar_returns: np.ndarray  # the asset's own return per bar (buy-and-hold)


class Agent:
    def __init__(self, config: TrainerConfig, sac, learner=None):
        self.config = config
        self.sac = sac
        self.learner = learner
        self.layout = ObservationLayout(config.environment.window_size)

    @property
    def hierarchical(self) -> bool:
        return self.learner is not None

    @property
    def observation_size(self) -> int:
        return self.layout.size

    # ---------------------------------------------------------------- acting

    def predict(self, observations: np.ndarray) -> AgentDecision:
        obs = np.atleast_2d(np.asarray(observations, dtype=np.float32))
        if obs.shape[1] != self.observation_size:
            raise ValueError(f"expected observations with {self.observation_size} values, got {obs.shape[1]}")
        if not self.hierarchical:
            actions, _ = self.sac.predict(obs, deterministic=True)
            return AgentDecision(np.asarray(actions).reshape(-1), None)
        from trainer.options import availability_mask, build_options

        options = build_options(self.config.options)
        states = self.layout.market_state(obs)
        masks = availability_mask(options, states)
        chosen = self.learner.select_options(obs, masks, deterministic=True)
        one_hot = np.eye(self.config.options.num_options, dtype=np.float32)[chosen]
        raw, _ = self.sac.predict(np.concatenate([obs, one_hot], axis=1), deterministic=True)
        actions = np.empty(len(obs), dtype=np.float64)
        for i, option_idx in enumerate(chosen):
            option = options[option_idx]
            scaled = float(np.asarray(raw[i]).reshape(-1)[0]) * option.action_scale
            actions[i] = option.target_exposure(scaled, states.at(i), {})
        return AgentDecision(actions, chosen)

    def backtest(self, features: FeatureFrame, seed: int = 0) -> BacktestResult:
        """One deterministic pass over a featurised split."""
        from trainer.envs.factory import make_vec_env

        venv = make_vec_env(features, self.config, n_envs=1, seed=seed, full_pass=True)
        option_env = None
        if self.hierarchical:
            from trainer.hierarchy.option_env import OptionVecEnv

            option_env = OptionVecEnv(
                venv, self.learner, self.config.options, self.layout, buffer=None, deterministic=True, seed=seed
            )
            venv = option_env
        obs = venv.reset()
        timestamps, returns, positions, bar_returns, options = [], [], [], [], []
        while True:
            active = option_env.active_options()[0] if option_env else None
            action, _ = self.sac.predict(obs, deterministic=True)
            obs, _, dones, infos = venv.step(action)
            info = infos[0]
            timestamps.append(info["timestamp"])  # DummyVecEnv keeps the step's info on auto-reset
            returns.append(info["portfolio_return"])
            positions.append(info["position"])
            bar_returns.append(info["bar_return"])
            if active is not None:
                options.append(active)
            if dones[0]:
                break
        venv.close()
        result = BacktestResult(
            timestamps=timestamps,
            returns=np.asarray(returns),
            positions=np.asarray(positions),
            options=np.asarray(options, dtype=np.int64) if options else None,
            bar_returns=np.asarray(bar_returns),
        )
        if not np.all(np.isfinite(result.returns)):
            raise NonFiniteError("backtest produced non-finite portfolio returns")
        return result

    # ---------------------------------------------------------------- persistence

    def save(self, model_dir: str | Path, extra_meta: dict | None = None) -> None:
        """Write the model directory atomically; refuses to save non-finite weights."""
        self._check_finite_weights()
        model_dir = Path(model_dir)
        model_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=model_dir.parent, prefix=f".{model_dir.name}."))
        self.sac.save(staging / "sac.zip", exclude=["replay_buffer"])
        if self.hierarchical:
            torch.save({"controller": self.learner.controller.state_dict(),
                        "current_temperature": self.learner.current_temperature}, staging / "controller.pt")
        (staging / "config.resolved.yaml").write_text(yaml.safe_dump(self.config.model_dump(mode="json"), sort_keys=False))
        meta = {
            "algorithm": self.config.algorithm,
            "observation_size": self.observation_size,
            "option_names": list(OPTION_NAMES) if self.hierarchical else [],
            "symbol": self.config.data.symbol,
            "config_hash": self.config.config_hash(),
            **(extra_meta or {}),
        }
        write_json_atomic(staging / "meta.json", meta)
        replace_dir(staging, model_dir)

    def _check_finite_weights(self) -> None:
        modules = [("SAC policy", self.sac.policy)]
        if self.hierarchical:
            modules.append(("options controller", self.learner.controller))
        for label, module in modules:
            for name, param in module.state_dict().items():
                if torch.is_tensor(param) and param.is_floating_point() and not torch.isfinite(param).all():
                    raise NonFiniteError(f"{label} parameter {name} is not finite; the model is not saved")


def load_agent(model_dir: str | Path) -> Agent:
    """Load a model directory written by Agent.save."""
    from stable_baselines3 import SAC

    model_dir = Path(model_dir)
    missing = [name for name in MODEL_FILES if not (model_dir / name).exists()]
    if missing:
        raise TrainerError(f"{model_dir} is not a model directory: missing {', '.join(missing)}")
    config = TrainerConfig.model_validate(yaml.safe_load((model_dir / "config.resolved.yaml").read_text()))
    meta = json.loads((model_dir / "meta.json").read_text())
    sac = SAC.load(model_dir / "sac.zip", device="cpu")
    learner = None
    if meta["algorithm"] == "hierarchical_sac":
        from trainer.hierarchy.controller import OptionsLearner

        learner = OptionsLearner(config.options, device="cpu")
        state = torch.load(model_dir / "controller.pt", map_location="cpu", weights_only=False)
        learner.controller.load_state_dict(state["controller"])
        learner.current_temperature = float(state["current_temperature"])
        learner.controller.eval()
    return Agent(config, sac, learner)
