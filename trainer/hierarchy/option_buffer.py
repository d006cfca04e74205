"""Replay buffer of SMDP option transitions (a ring of option_buffer_size entries).

Besides the SMDP transition itself, every entry keeps how it was chosen: the behaviour
log-probability `log mu(o|s,m)` under the temperature-scaled, masked policy that picked it, that
temperature, and the controller update index at selection. The clipped loss needs the first two
for its importance ratio, and `sample_recent` uses the index to train on recent choices only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class OptionBatch:
    states: np.ndarray  # (b, state_dim) float32: where the option started
    options: np.ndarray  # (b,) int64
    masks: np.ndarray  # (b, num_options) bool: options available at the start state
    rewards: np.ndarray  # (b,) float32: discounted reward accumulated over the option
    durations: np.ndarray  # (b,) int64: steps the option ran
    next_states: np.ndarray  # (b, state_dim) float32: where it ended
    dones: np.ndarray  # (b,) bool: the episode terminated inside the option
    behaviour_log_probs: np.ndarray | None = None  # (b,) float32: log mu(o|s,m) at selection
    temperatures: np.ndarray | None = None  # (b,) float32: controller temperature at selection
    selected_at: np.ndarray | None = None  # (b,) int64: controller update index at selection


class OptionReplayBuffer:
    def __init__(self, capacity: int, state_dim: int, num_options: int):
        self.capacity = capacity
        self.states = np.zeros((capacity, state_dim), dtype=np.float32)
        self.next_states = np.zeros((capacity, state_dim), dtype=np.float32)
        self.options = np.zeros(capacity, dtype=np.int64)
        self.masks = np.zeros((capacity, num_options), dtype=bool)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.durations = np.zeros(capacity, dtype=np.int64)
        self.dones = np.zeros(capacity, dtype=bool)
        self.behaviour_log_probs = np.zeros(capacity, dtype=np.float32)
        self.temperatures = np.ones(capacity, dtype=np.float32)
        self.selected_at = np.zeros(capacity, dtype=np.int64)
        self.pos = 0
        self.full = False

    def __len__(self) -> int:
        return self.capacity if self.full else self.pos

    def add(
        self,
        state,
        option: int,
        mask,
        reward: float,
        duration: int,
        next_state,
        done: bool,
        behaviour_log_prob: float = 0.0,
        temperature: float = 1.0,
        selected_at: int = 0,
    ) -> None:
        i = self.pos
        self.states[i] = state
        self.options[i] = option
        self.masks[i] = mask
        self.rewards[i] = reward
        self.durations[i] = duration
        self.next_states[i] = next_state
        self.dones[i] = done
        self.behaviour_log_probs[i] = behaviour_log_prob
        self.temperatures[i] = temperature
        self.selected_at[i] = selected_at
        self.pos = (self.pos + 1) % self.capacity
        self.full = self.full or self.pos == 0

    def sample(self, batch_size: int, rng: np.random.Generator) -> OptionBatch:
        """Uniform over the whole buffer (the seed's sampling)."""
        return self._batch(rng.integers(0, len(self), size=batch_size))

    def sample_recent(self, batch_size: int, rng: np.random.Generator, current_update: int, max_age: int) -> OptionBatch:
        """Uniform over the transitions chosen at most `max_age` updates before `current_update`.

        When fewer than batch_size are that recent (small n_envs, long options), it draws from the
        newest batch_size transitions instead, so a batch never repeats a handful of samples.
        """
        n = len(self)
        recent = np.flatnonzero(self.selected_at[:n] >= current_update - max_age)
        if len(recent) < batch_size:
            recent = (self.pos - 1 - np.arange(min(batch_size, n))) % self.capacity
        return self._batch(recent[rng.integers(0, len(recent), size=batch_size)])

    def _batch(self, idx: np.ndarray) -> OptionBatch:
        return OptionBatch(**{key: getattr(self, key)[idx] for key in self._ARRAYS})

    _ARRAYS = (
        "states", "next_states", "options", "masks", "rewards", "durations", "dones",
        "behaviour_log_probs", "temperatures", "selected_at",
    )

    def save(self, path: Path) -> None:
        n = len(self)
        np.savez(path, pos=self.pos, full=self.full, **{k: getattr(self, k)[:n] for k in self._ARRAYS})

    def load(self, path: Path) -> None:
        with np.load(path) as data:
            n = len(data["options"])
            for key in self._ARRAYS:
                if key in data:  # checkpoints written before the behaviour fields existed lack them
                    getattr(self, key)[:n] = data[key]
            self.pos, self.full = int(data["pos"]), bool(data["full"])
