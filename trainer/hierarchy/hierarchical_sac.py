"""HierarchicalSAC: SB3 SAC as the low-level policy under the options controller, as one class.

It owns the whole hierarchy in Stable-Baselines3's shape: `_setup_model()` builds the controller
(OptionsLearner), its option replay buffer, the options layer over the envs (OptionVecEnv), SB3's
SAC on top of it, and the two callbacks; `learn()` is the public loop (SB3's, with the callbacks);
`train()` is one controller update. Persistence goes through `state_dict()` / `load_state_dict()`
(JSON-able counters) plus `save_controller` / `load_controller` and the option buffer's files, so
no caller reaches into a callback's fields. Nothing in SB3 is forked or patched: the SAC model
trains on the OptionVecEnv, a public VecEnvWrapper. `build_sac` is shared with the Phase A
baseline, so both use the same network, hyperparameters and thread settings.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.vec_env import VecEnv

from trainer.config import ConfigError, TrainerConfig
from trainer.envs.layout import ObservationLayout
from trainer.hierarchy.controller import ControllerStats, OptionsLearner
from trainer.hierarchy.monitor import OptionsMonitorCallback, OptionsTrainingCallback
from trainer.hierarchy.option_buffer import OptionReplayBuffer
from trainer.hierarchy.option_env import OptionVecEnv
from trainer.training.fast_sac import FastSAC


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


THREADS_ENV = "TRAINER_TORCH_THREADS"


def torch_threads(configured: int) -> int:
    """$TRAINER_TORCH_THREADS when set, else the config's `sac.torch_threads`. How many threads pay
    is a property of the machine and of how many trainers share it, not of the model: the demo
    trains one symbol on an idle machine and sets 2 (1.57x faster SAC updates on 2 cores,
    benchmarks/sac_update.py); steps that share cores keep the config's 1."""
    raw = os.environ.get(THREADS_ENV)
    if not raw:
        return configured
    try:
        threads = int(raw)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ConfigError(f"{THREADS_ENV}={raw!r}: expected a positive number of threads")
    return threads


OPTIMIZER_KWARGS = {"adam": {}, "adam_foreach": {"foreach": True}, "adam_fused": {"fused": True}}


def build_sac(config: TrainerConfig, env: VecEnv, seed: int) -> SAC:
    """SB3 SAC with the config's hyperparameters (shared by Phase A and Phase B.1), as FastSAC: SB3's
    own update unless `sac.compile` / `sac.cuda_graphs` ask for the fast one."""
    sac = config.sac
    torch.set_num_threads(torch_threads(sac.torch_threads))
    torch.set_float32_matmul_precision(sac.matmul_precision)
    device = resolve_device(config.training.device)
    if sac.cuda_graphs and device != "cuda":
        raise ConfigError(f"sac.cuda_graphs needs training.device cuda; this run trains on {device}")
    policy_kwargs: dict = {"net_arch": list(sac.net_arch)}
    if OPTIMIZER_KWARGS[sac.optimizer]:
        policy_kwargs["optimizer_kwargs"] = OPTIMIZER_KWARGS[sac.optimizer]
    return FastSAC(
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
        policy_kwargs=policy_kwargs,
        seed=seed,
        device=device,
        verbose=0,
        compile_update=sac.compile,
        cuda_graphs=sac.cuda_graphs,
    )


class HierarchicalSAC:
    """:param config: a hierarchical_sac TrainerConfig
    :param venv: the trading envs
    :param seed: seeds SAC, the controller (weights, option choice, batch sampling) and option terminations
    """

    def __init__(self, config: TrainerConfig, venv: VecEnv, seed: int):
        self.config = config
        self.venv = venv
        self.seed = seed
        self._setup_model()

    def _setup_model(self) -> None:
        cfg = self.config.options
        device = resolve_device(self.config.training.device)
        self.layout = ObservationLayout(self.config.environment.window_size)
        self.learner = OptionsLearner(cfg, device=device, seed=self.seed)
        self.option_buffer = OptionReplayBuffer(cfg.option_buffer_size, cfg.state_dim, cfg.num_options)
        self.option_env = OptionVecEnv(self.venv, self.learner, cfg, self.layout, self.option_buffer, seed=self.seed)
        self.model = build_sac(self.config, self.option_env, self.seed)
        self.monitor = OptionsMonitorCallback(self.option_env, self.learner, cfg)
        self.controller_training = OptionsTrainingCallback(self)

    def learn(self, total_timesteps: int, callback=None, reset_num_timesteps: bool = True) -> "HierarchicalSAC":
        callbacks = [self.controller_training, self.monitor] + ([callback] if callback else [])
        self.learner.prepare_overlap()  # the update process starts during the warm-up, not at the first update
        try:
            self.model.learn(total_timesteps, callback=CallbackList(callbacks), reset_num_timesteps=reset_num_timesteps)
        except BaseException:
            self.learner.abandon_update()  # the run's own error is the one to report
            raise
        self.learner.finish_update()  # a worker's error ends the run here at the latest
        return self

    def train(self, wait: bool = True) -> ControllerStats | None:
        """One controller update on a batch of option transitions; None until the buffer holds a batch.
        With `wait=False` (the training callback) an update the learner overlaps is left running
        and this returns None; the learner collects it when anything next reads the controller."""
        if len(self.option_buffer) < self.config.options.batch_size:
            return None
        self.learner.start_update(self.learner.sample_batch(self.option_buffer))
        return self.learner.finish_update() if wait else None

    # ---------------------------------------------------------------- persistence

    def state_dict(self) -> dict:
        """The JSON-able part of a checkpoint: monitor counters, run totals of option usage and the
        termination-rule counts."""
        return {
            "monitor": self.monitor.state_dict(),
            "totals": self.option_env.totals.state_dict(),
            "terminations": self.option_env.terminations,
            # the controller trains every train_freq vectorised steps counted by this callback
            "controller_training_calls": self.controller_training.n_calls,
        }

    def load_state_dict(self, state: dict) -> None:
        self.monitor.load_state_dict(state["monitor"])
        self.option_env.totals.load_state_dict(state["totals"])
        for option, counts in state["terminations"].items():
            self.option_env.terminations[option].update(counts)
        # absent from checkpoints written before resume continued the controller's schedule
        self.controller_training.n_calls = int(state.get("controller_training_calls", 0))

    def rollout_state(self) -> dict:
        """The in-flight options of every env (OptionVecEnv.rollout_state), for an exact resume."""
        return self.option_env.rollout_state()

    def load_rollout_state(self, state: dict) -> None:
        self.option_env.load_rollout_state(state)

    def save_controller(self, path: Path) -> None:
        torch.save(self.learner.state_dict(), path)

    def load_controller(self, path: Path) -> None:
        self.learner.load_state_dict(torch.load(path, map_location=self.learner.device, weights_only=False))
