"""Resumable checkpoints, written so a kill at any instant leaves a usable newest checkpoint.

A checkpoint is a folder checkpoints/ckpt-<steps>/ holding: sac.zip (SAC, without its replay
buffer), replay_buffer.pkl, controller.pt (controller + optimizer + temperature + sampler RNG),
option_buffer.npz, rng.pt (torch / numpy / python / option-env RNG states) and state.json
(counters, monitor records, eval history, MLflow run id). It is written into a hidden
`.ckpt-<steps>.partial` folder, a COMPLETE marker is written last, and only then is the folder
renamed into place. Loading takes the newest folder with a COMPLETE marker; anything else is
skipped with a warning.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import torch

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


def rng_state(option_env_rng: np.random.Generator | None) -> dict:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "option_env": option_env_rng.bit_generator.state if option_env_rng is not None else None,
    }


def restore_rng_state(state: dict, option_env_rng: np.random.Generator | None) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if option_env_rng is not None and state.get("option_env") is not None:
        option_env_rng.bit_generator.state = state["option_env"]


def write_checkpoint(root: Path, steps: int, session, state: dict, keep_last: int, save_replay_buffer: bool) -> Path:
    """Write one checkpoint of `session` (a TrainingSession) and prune old ones."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(steps)
    partial = root / f".{final.name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    session.sac.save(partial / "sac.zip", exclude=["replay_buffer"])
    if save_replay_buffer:
        save_replay(session.sac.replay_buffer, partial / "replay_buffer.npz")
    hierarchy = session.hierarchy
    if hierarchy is not None:
        hierarchy.save_controller(partial / "controller.pt")
        hierarchy.option_buffer.save(partial / "option_buffer.npz")
    torch.save(rng_state(hierarchy.option_env.rng if hierarchy else None), partial / "rng.pt")
    write_json_atomic(partial / "state.json", {**state, "num_timesteps": steps})
    (partial / COMPLETE).write_text("ok\n")
    if final.exists():
        shutil.rmtree(final)
    partial.rename(final)
    for old in complete_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    LOGGER.info("checkpoint written: %s", final)
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
