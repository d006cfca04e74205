"""HierarchicalSACWrapper: SB3 SAC as the low-level policy under the options controller.

Built only on SB3's public API: the SAC model trains on an OptionVecEnv (a VecEnvWrapper), the
controller trains from an SB3 callback, and both are saved side by side. Nothing in SB3 is
forked or patched. `build_sac` is shared with the Phase A baseline, so both use the same network,
hyperparameters and thread settings.
"""

from __future__ import annotations

from pathlib import Path

import torch
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.vec_env import VecEnv

from trainer.config import TrainerConfig
from trainer.envs.layout import ObservationLayout
from trainer.hierarchy.controller import OptionsLearner
from trainer.hierarchy.monitor import OptionsMonitorCallback, OptionsTrainingCallback
from trainer.hierarchy.option_buffer import OptionReplayBuffer
from trainer.hierarchy.option_env import OptionVecEnv


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def build_sac(config: TrainerConfig, env: VecEnv, seed: int) -> SAC:
    """SB3 SAC with the config's hyperparameters (shared by Phase A and Phase B.1)."""
    sac = config.sac
    torch.set_num_threads(sac.torch_threads)
    return SAC(
        "MlpPolicy",
        env,
        learning_rate=sac.learning_rate,
        buffer_size=sac.buffer_size,
        learning_starts=sac.learning_starts,
        batch_size=sac.batch_size,
        tau=sac.tau,
        gamma=sac.gamma,
        train_freq=sac.train_freq,
        gradient_steps=sac.gradient_steps,
        ent_coef=sac.ent_coef,
        policy_kwargs={"net_arch": list(sac.net_arch)},
        seed=seed,
        device=resolve_device(config.training.device),
        verbose=0,
    )


class HierarchicalSACWrapper:
    """:param config: a hierarchical_sac TrainerConfig; :param venv: the trading envs
    :param seed: seeds SAC, the controller's option sampler and option terminations"""

    def __init__(self, config: TrainerConfig, venv: VecEnv, seed: int):
        self.config = config
        cfg = config.options
        device = resolve_device(config.training.device)
        self.layout = ObservationLayout(config.environment.window_size)
        self.learner = OptionsLearner(cfg, device=device, seed=seed)
        self.option_buffer = OptionReplayBuffer(cfg.option_buffer_size, cfg.state_dim, cfg.num_options)
        self.option_env = OptionVecEnv(venv, self.learner, cfg, self.layout, self.option_buffer, seed=seed)
        self.model = build_sac(config, self.option_env, seed)
        self.monitor = OptionsMonitorCallback(self.option_env, self.learner, cfg)
        self.controller_training = OptionsTrainingCallback(self.learner, self.option_buffer, cfg)

    def learn(self, total_timesteps: int, callback=None, reset_num_timesteps: bool = True):
        callbacks = [self.controller_training, self.monitor] + ([callback] if callback else [])
        self.model.learn(total_timesteps, callback=CallbackList(callbacks), reset_num_timesteps=reset_num_timesteps)
        return self

    # ---------------------------------------------------------------- persistence

    def save_controller(self, path: Path) -> None:
        torch.save(self.learner.state_dict(), path)

    def load_controller(self, path: Path) -> None:
        self.learner.load_state_dict(torch.load(path, map_location=self.learner.device, weights_only=False))
