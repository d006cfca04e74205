"""Resumable checkpoints, written so a kill at any instant leaves a usable newest checkpoint.

A checkpoint is a folder checkpoints/ckpt-<steps>/ holding: sac.zip (SAC, without its replay
buffer, with its rollout state: `_last_obs`, `_last_original_obs`, `_last_episode_starts`, the
episode info buffers, the episode count and any action noise), replay_buffer.npz, controller.pt
(controller + optimizer + temperature + option-choice and batch-sampling RNGs), option_buffer.npz,
rng.pt (torch (+ CUDA) / numpy / python / SAC action-space / option-env RNG states), rollout.pt
(every trading env's bar, portfolio and `np_random`, its Monitor wrapper's episode counters, and
the in-flight option of every env) and state.json (counters, monitor records, eval history, MLflow
run id, and the settings a resume must not change).

A resumed run is a continuation: it ends with the same metrics and weights as the run that was
never stopped. For that a checkpoint is only taken between two of SB3's rollouts (after a step's
transition is in the replay buffer, `_last_obs` is updated and the gradient step ran), see
trainer.training.session.PeriodicCallback.

It is written into a hidden `.ckpt-<steps>.partial` folder, a COMPLETE marker is written last, and
only then is the folder renamed into place. Loading takes the newest folder with a COMPLETE marker;
anything else is skipped with a warning.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from trainer.errors import TrainerError
from trainer.io import write_json_atomic

LOGGER = logging.getLogger(__name__)

COMPLETE = "COMPLETE"
PREFIX = "ckpt-"


def checkpoint_name(steps: int) -> str:
    return f"{PREFIX}{steps:010d}"


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first; incomplete ones are reported and skipped."""
    if not root.exists():
        return []
    found = []
    for path in sorted(root.iterdir()):
        if not path.is_dir():
            continue
        if path.name.startswith(PREFIX) and (path / COMPLETE).exists():
            found.append(path)
        else:
            LOGGER.warning("skipping incomplete checkpoint %s (no %s marker)", path, COMPLETE)
    return found


def latest_checkpoint(root: Path) -> Path | None:
    found = complete_checkpoints(root)
    return found[-1] if found else None


def rng_state(option_env_rng: np.random.Generator | None, action_space=None) -> dict:
    """The global RNGs, SAC's action space (its warm-up actions are `action_space.sample()`) and the
    option env's termination stream. Each env's `np_random` is in rollout.pt, the controller's in
    controller.pt."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "action_space": action_space.np_random.bit_generator.state if action_space is not None else None,
        "option_env": option_env_rng.bit_generator.state if option_env_rng is not None else None,
    }


def restore_rng_state(state: dict, option_env_rng: np.random.Generator | None, action_space=None) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_initialized():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if action_space is not None and state.get("action_space") is not None:
        action_space.np_random.bit_generator.state = state["action_space"]
    if option_env_rng is not None and state.get("option_env") is not None:
        option_env_rng.bit_generator.state = state["option_env"]


# SB3's Monitor wrapper counts the open episode's rewards (its `info["episode"]` at the end feeds
# SAC's ep_info_buffer) and the run's episodes.
_MONITOR_FIELDS = ("rewards", "needs_reset", "episode_returns", "episode_lengths", "episode_times", "total_steps")


def env_state(venv) -> dict:
    """Every trading env's episode (TradingEnv.get_state: bar, portfolio, np_random) and its Monitor
    wrapper's counters, read through the VecEnv API (DummyVecEnv or SubprocVecEnv alike)."""
    return {
        "envs": venv.env_method("get_state"),
        "monitors": {name: [_copy(v) for v in venv.get_attr(name)] for name in _MONITOR_FIELDS},
    }


def restore_env_state(venv, state: dict) -> None:
    if len(state["envs"]) != venv.num_envs:
        raise ValueError(f"env state of {len(state['envs'])} envs cannot be loaded into {venv.num_envs}")
    for index, saved in enumerate(state["envs"]):
        venv.env_method("set_state", saved, indices=[index])
    for name, values in state["monitors"].items():
        for index, value in enumerate(values):
            venv.set_attr(name, _copy(value), indices=[index])


def _copy(value):
    """A list is copied (a DummyVecEnv hands out the Monitor's own); anything else is immutable here."""
    return list(value) if isinstance(value, list) else value


# ---------------------------------------------------------------- settings a resume must keep

def resume_settings(config) -> dict:
    """The settings whose value fixes the shape of what a checkpoint holds: a resume with another
    value would load envs, observations or buffers of the wrong size."""
    settings = {"training.n_envs": config.training.n_envs, "sac.buffer_size": config.sac.buffer_size}
    if config.hierarchical:
        settings["options.option_buffer_size"] = config.options.option_buffer_size
    return settings


def check_resume_settings(checkpoint: Path, saved: dict | None, config) -> None:
    """Refuse a resume that changes a setting of `resume_settings` (naming it and both values)."""
    if not saved:
        LOGGER.warning("checkpoint %s records no settings (written by an older trainer); not checked", checkpoint)
        return
    changed = [
        f"{name} is {saved[name]} in the checkpoint and {value} now"
        for name, value in resume_settings(config).items()
        if name in saved and saved[name] != value
    ]
    if changed:
        raise TrainerError(
            f"cannot resume from {checkpoint}: " + "; ".join(changed)
            + ". Resume with the checkpoint's values, or train into a new --output-dir"
        )


def write_checkpoint(root: Path, steps: int, session, state: dict, keep_last: int, save_replay_buffer: bool) -> Path:
    """Write one checkpoint of `session` (a TrainingSession) and prune old ones."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(steps)
    partial = root / f".{final.name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    started = time.perf_counter()
    session.sac.save(partial / "sac.zip", exclude=["replay_buffer"])
    if save_replay_buffer:
        save_replay(session.sac.replay_buffer, partial / "replay_buffer.npz")
    hierarchy = session.hierarchy
    if hierarchy is not None:
        hierarchy.save_controller(partial / "controller.pt")
        hierarchy.option_buffer.save(partial / "option_buffer.npz")
    rollout_started = time.perf_counter()
    torch.save(rng_state(hierarchy.option_env.rng if hierarchy else None, session.sac.action_space), partial / "rng.pt")
    rollout = {"envs": env_state(session.train_env), "options": hierarchy.rollout_state() if hierarchy else None}
    torch.save(rollout, partial / "rollout.pt")
    rollout_seconds = time.perf_counter() - rollout_started
    write_json_atomic(partial / "state.json", {**state, "num_timesteps": steps})
    (partial / COMPLETE).write_text("ok\n")
    if final.exists():
        shutil.rmtree(final)
    partial.rename(final)
    for old in complete_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    LOGGER.info("checkpoint written: %s in %.3f s (RNG, env and option state: %.4f s)",
                final, time.perf_counter() - started, rollout_seconds)
    return final


_REPLAY_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def save_replay(buffer, path: Path) -> None:
    """Only the filled part of SB3's ReplayBuffer (its pickle holds the whole pre-allocated array:
    ~470 MB for 100k x 584 float32 observations, however few steps were collected)."""
    n = buffer.buffer_size if buffer.full else buffer.pos
    arrays = {name: getattr(buffer, name)[:n] for name in _REPLAY_ARRAYS if getattr(buffer, name, None) is not None}
    np.savez(path, pos=buffer.pos, full=buffer.full, **arrays)


def load_replay(buffer, path: Path) -> None:
    with np.load(path) as data:
        for name in _REPLAY_ARRAYS:
            if name in data:
                getattr(buffer, name)[: len(data[name])] = data[name]
        buffer.pos, buffer.full = int(data["pos"]), bool(data["full"])


def read_state(checkpoint: Path) -> dict:
    return json.loads((checkpoint / "state.json").read_text())
