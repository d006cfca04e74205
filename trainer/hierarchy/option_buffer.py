"""Replay buffer of SMDP option transitions (a ring of option_buffer_size entries)."""

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
        self.pos = 0
        self.full = False

    def __len__(self) -> int:
        return self.capacity if self.full else self.pos

    def add(self, state, option: int, mask, reward: float, duration: int, next_state, done: bool) -> None:
        i = self.pos
        self.states[i] = state
        self.options[i] = option
        self.masks[i] = mask
        self.rewards[i] = reward
        self.durations[i] = duration
        self.next_states[i] = next_state
        self.dones[i] = done
        self.pos = (self.pos + 1) % self.capacity
        self.full = self.full or self.pos == 0

    def sample(self, batch_size: int, rng: np.random.Generator) -> OptionBatch:
        idx = rng.integers(0, len(self), size=batch_size)
        return OptionBatch(
            states=self.states[idx],
            options=self.options[idx],
            masks=self.masks[idx],
            rewards=self.rewards[idx],
            durations=self.durations[idx],
            next_states=self.next_states[idx],
            dones=self.dones[idx],
        )

    _ARRAYS = ("states", "next_states", "options", "masks", "rewards", "durations", "dones")

    def save(self, path: Path) -> None:
        n = len(self)
        np.savez(path, pos=self.pos, full=self.full, **{k: getattr(self, k)[:n] for k in self._ARRAYS})

    def load(self, path: Path) -> None:
        with np.load(path) as data:
            n = len(data["options"])
            for key in self._ARRAYS:
                getattr(self, key)[:n] = data[key]
            self.pos, self.full = int(data["pos"]), bool(data["full"])
