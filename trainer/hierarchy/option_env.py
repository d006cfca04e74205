"""The options layer between SB3's SAC and the vectorised trading envs (a public VecEnvWrapper).

It keeps every env's option bookkeeping (active option, steps in it, accumulated reward, start
state, the options' memory) as arrays over envs, and computes each step for all envs at once: one
numpy call per option and rule, not one Python call per env. `env_states[i]` is env i's view of
those arrays, with the seed's `OptionEnvState` fields. Order of events per vectorised step:
  1. `step_async` -> `select_actions`: SAC's action (computed on an observation that already names
     the active option) is multiplied by that option's action_scale (seed Fix 1) and the option
     turns it into the env's target exposure.
  2. `step_wait`: rewards are accumulated into the option; below min_duration the option is forced
     to continue (seed Fix 2), otherwise it ends with its termination probability. An ended
     option's SMDP transition goes to the option buffer and the controller picks the next option.
  3. The observation SAC sees is the env observation + a one-hot of the active option, so the
     low-level policy knows which option it is executing (it learns one behaviour per option).
Options are decided after observations arrive and before SAC acts, so SAC never acts under a
stale option.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from trainer.config import OptionsConfig
from trainer.envs.layout import ObservationLayout
from trainer.errors import NonFiniteError
from trainer.hierarchy.controller import OptionsLearner
from trainer.hierarchy.option_buffer import OptionReplayBuffer
from trainer.options import availability_mask, build_options
from trainer.options.trading_options import OptionMemory

STATE_FIELDS = (  # an env's option state, as checkpoints store it (rollout_state)
    "action_scales", "min_durations", "active_option", "option_step_count", "accumulated_reward",
    "start_state", "start_mask", "memory", "behaviour_log_prob", "selection_temperature", "selected_at",
)


class _OptionRow(MutableMapping):
    """{option index: value} over one env's row of a per-option array (the seed's action_scales
    and min_durations dicts), live: writing to it changes what the wrapper uses."""

    def __init__(self, row: np.ndarray):
        self._row = row

    def __getitem__(self, option: int):
        if not isinstance(option, (int, np.integer)) or not 0 <= option < len(self._row):
            raise KeyError(option)
        return self._row[option].item()

    def __setitem__(self, option: int, value) -> None:
        self[option]  # KeyError for an unknown option
        self._row[option] = value

    def __delitem__(self, option: int) -> None:
        raise TypeError("every option has an entry; set it instead")

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self._row)))

    def __len__(self) -> int:
        return len(self._row)

    def __repr__(self) -> str:
        return repr(dict(self))


def _env_field(array: str, kind: type) -> property:
    """One env's entry of the wrapper's array `array`, read as `kind`, written through."""

    def get(view: "OptionEnvState"):
        return kind(getattr(view._env, array)[view._i])

    def set_(view: "OptionEnvState", value) -> None:
        getattr(view._env, array)[view._i] = value

    return property(get, set_)


class OptionEnvState:
    """Env `i`'s option bookkeeping (the seed's OptionEnvState fields), a view of the wrapper's arrays."""

    def __init__(self, env: "OptionVecEnv", i: int):
        self._env, self._i = env, i

    @property
    def action_scales(self) -> _OptionRow:
        return _OptionRow(self._env.action_scales[self._i])

    @property
    def min_durations(self) -> _OptionRow:
        return _OptionRow(self._env.min_durations[self._i])

    active_option = _env_field("active", int)
    option_step_count = _env_field("step_counts", int)
    accumulated_reward = _env_field("option_returns", float)
    behaviour_log_prob = _env_field("behaviour_log_probs", float)  # log mu(o|s,m) of the active option when it was chosen
    selection_temperature = _env_field("selection_temperatures", float)  # the controller temperature that chose it
    selected_at = _env_field("selected_at", int)  # the controller update index when it was chosen

    @property
    def start_state(self) -> np.ndarray | None:
        return self._env.start_states[self._i].copy() if self._env.started[self._i] else None

    @property
    def start_mask(self) -> np.ndarray | None:
        return self._env.start_masks[self._i].copy() if self._env.started[self._i] else None

    @property
    def memory(self) -> dict:
        """The options' memory of this env, as a dict (a copy: assign to change it)."""
        return self._env.memory.to_dict(self._i)

    @memory.setter
    def memory(self, value: dict) -> None:
        self._env.memory.load_dict(self._i, value)

    def as_dict(self) -> dict:
        """Plain Python values and array copies (what checkpoints store)."""
        state = {name: getattr(self, name) for name in STATE_FIELDS}
        state["action_scales"], state["min_durations"] = dict(state["action_scales"]), dict(state["min_durations"])
        return state

    def load(self, state: dict) -> None:
        missing = set(STATE_FIELDS) - set(state)
        if missing:
            raise ValueError(f"option state lacks {sorted(missing)}")
        env, i = self._env, self._i
        env.action_scales[i] = [state["action_scales"][o] for o in range(env.action_scales.shape[1])]
        env.min_durations[i] = [state["min_durations"][o] for o in range(env.min_durations.shape[1])]
        for name in ("active_option", "option_step_count", "accumulated_reward", "behaviour_log_prob",
                     "selection_temperature", "selected_at", "memory"):
            setattr(self, name, state[name])
        env.started[i] = state["start_state"] is not None
        if env.started[i]:
            env.start_states[i] = state["start_state"]
            env.start_masks[i] = state["start_mask"]


@dataclass
class OptionUsage:
    """Counters the monitor reads and resets every window (plus run totals)."""

    num_options: int
    steps: np.ndarray = None  # env steps spent per option
    selections: np.ndarray = None
    durations: list = None  # (option, duration) of completed options

    def __post_init__(self):
        self.reset()

    def reset(self) -> None:
        self.steps = np.zeros(self.num_options, dtype=np.int64)
        self.selections = np.zeros(self.num_options, dtype=np.int64)
        self.durations = []

    def state_dict(self) -> dict:
        return {
            "steps": self.steps.tolist(),
            "selections": self.selections.tolist(),
            "durations": [[int(o), int(d)] for o, d in self.durations],
        }

    def load_state_dict(self, state: dict) -> None:
        self.steps[:] = state["steps"]
        self.selections[:] = state["selections"]
        self.durations = [tuple(d) for d in state["durations"]]


class OptionVecEnv(VecEnvWrapper):
    """:param venv: the trading envs; :param learner: the controller; :param cfg: `options:` config
    :param layout: the env observation layout (decodes MarketState); :param buffer: where option
    transitions go (None in evaluation); :param deterministic: argmax options and terminate at p >= 0.5
    """

    def __init__(
        self,
        venv: VecEnv,
        learner: OptionsLearner,
        cfg: OptionsConfig,
        layout: ObservationLayout,
        buffer: OptionReplayBuffer | None = None,
        deterministic: bool = False,
        seed: int = 0,
    ):
        n_options = cfg.num_options
        inner = venv.observation_space
        observation_space = spaces.Box(
            low=np.concatenate([inner.low, np.zeros(n_options, dtype=np.float32)]),
            high=np.concatenate([inner.high, np.ones(n_options, dtype=np.float32)]),
            dtype=np.float32,
        )
        super().__init__(venv, observation_space=observation_space)
        self.learner = learner
        self.cfg = cfg
        self.layout = layout
        self.buffer = buffer
        self.deterministic = deterministic
        self.options = build_options(cfg)
        self.rng = np.random.default_rng(seed)
        n = self.num_envs
        self._envs = np.arange(n)
        # Per env and option (seed Fixes 1 and 2: the seed keeps them per env state).
        self.action_scales = np.tile([float(cfg.option_block(i).action_scale) for i in range(n_options)], (n, 1))
        self.min_durations = np.tile([int(cfg.option_block(i).min_duration) for i in range(n_options)], (n, 1))
        # Per env: the active option and what it has collected (set by _start_options).
        self.active = np.full(n, -1, dtype=np.int64)
        self.step_counts = np.zeros(n, dtype=np.int64)
        self.option_returns = np.zeros(n)  # discounted reward accumulated inside the option
        self.started = np.zeros(n, dtype=bool)
        self.start_states = np.zeros((n, inner.shape[0]), dtype=np.float32)
        self.start_masks = np.zeros((n, n_options), dtype=bool)
        self.behaviour_log_probs = np.zeros(n)
        self.selection_temperatures = np.ones(n)
        self.selected_at = np.zeros(n, dtype=np.int64)
        self.memory = OptionMemory.empty(n)
        self.env_states = [OptionEnvState(self, i) for i in range(n)]
        self._discounts = np.ones(1)  # gamma ** k, grown as options run longer (_discount)
        self.window = OptionUsage(n_options)
        self.totals = OptionUsage(n_options)
        # {option: {rule: count}} of the options ended by their termination rules (not by the episode end)
        self.terminations = {o.name: dict.fromkeys(o.rules, 0) for o in self.options}
        self._last_obs: np.ndarray | None = None
        self._actions: np.ndarray | None = None

    # ---------------------------------------------------------------- VecEnv API

    def reset(self) -> np.ndarray:
        obs = self.venv.reset()
        self._start_options(np.arange(self.num_envs), obs)
        self._last_obs = obs
        return self._augment(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = self.select_actions(np.asarray(actions))
        self.venv.step_async(self._actions)

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        steps_per_option = np.bincount(self.active, minlength=self.cfg.num_options)
        self.window.steps += steps_per_option
        self.totals.steps += steps_per_option
        self.option_returns += self._discount(self.step_counts) * rewards.astype(np.float64)
        self.step_counts += 1
        ending = np.array(dones, dtype=bool)
        # Below min_duration an option is forced to continue (seed Fix 2): no termination draw.
        may_end = np.flatnonzero(~ending & (self.step_counts >= self.min_durations[self._envs, self.active]))
        if len(may_end):
            ending[self._terminate(may_end, obs)] = True
        ended = np.flatnonzero(ending)  # in env order
        for i in ended.tolist():
            if dones[i]:
                terminal = infos[i].get("terminal_observation", obs[i])
                truncated = bool(infos[i].get("TimeLimit.truncated", False))
                infos[i]["terminal_observation"] = self._augment_one(terminal, self.active[i])
                self._end_option(i, terminal, episode_done=not truncated, cut_by_episode=True)
            else:
                self._end_option(i, obs[i], episode_done=False)
        if len(ended):
            self._start_options(ended, obs)  # one controller forward for all of them
        for info, option in zip(infos, self.active.tolist()):
            info["option"] = option
        self._last_obs = obs
        return self._augment(obs), rewards, dones, infos

    # ---------------------------------------------------------------- the seed's select_actions

    def select_actions(self, sac_actions: np.ndarray) -> np.ndarray:
        """Scale each env's SAC action by its option's action_scale, then let the option shape it."""
        if not np.all(np.isfinite(sac_actions)):
            raise NonFiniteError(f"SAC produced a non-finite action: {sac_actions.tolist()}")
        scaled = sac_actions.reshape(self.num_envs, -1)[:, 0].astype(np.float64) * self.action_scales[self._envs, self.active]
        states = self.layout.market_state(self._last_obs)
        actions = np.zeros((self.num_envs, 1), dtype=np.float32)
        for option, envs in self._by_option(self._envs):
            actions[envs, 0] = option.target_exposures(scaled[envs], states, envs, self.memory)
        return actions

    # ---------------------------------------------------------------- option lifecycle

    def _by_option(self, envs: np.ndarray):
        """(option, the envs of `envs` running it) for every option they run."""
        running = self.active[envs]
        for index in np.flatnonzero(np.bincount(running, minlength=len(self.options))).tolist():
            yield self.options[index], envs[running == index]

    def _terminate(self, envs: np.ndarray, obs: np.ndarray) -> np.ndarray:
        """Of `envs` (in env order, all past min_duration), those whose option ends now: each with
        its option's termination probability, drawn in env order (one draw per env asked)."""
        markets = self.layout.market_state(obs)
        probabilities = np.zeros(self.num_envs)
        fired = np.zeros(self.num_envs, dtype=np.int64)
        for option, running in self._by_option(envs):
            probabilities[running], fired[running] = option.terminations(self.step_counts[running], markets, running, self.memory)
        if self.deterministic:
            ended = envs[probabilities[envs] >= 0.5]
        else:
            ended = envs[self.rng.random(len(envs)) < probabilities[envs]]
        for env_idx, rule in zip(ended.tolist(), fired[ended].tolist()):
            option = self.options[self.active[env_idx]]
            self.terminations[option.name][option.rules[rule]] += 1  # which Part 2 rule ended it (run totals)
        return ended

    def _discount(self, steps: np.ndarray) -> np.ndarray:
        """gamma ** steps, each power computed once by Python (the same float as gamma ** k)."""
        longest = int(steps.max()) if len(steps) else 0
        if longest >= len(self._discounts):
            self._discounts = np.array([self.cfg.gamma**k for k in range(2 * longest + 1)])
        return self._discounts[steps]

    def _end_option(self, env_idx: int, next_obs: np.ndarray, episode_done: bool, cut_by_episode: bool = False) -> None:
        option, duration = int(self.active[env_idx]), int(self.step_counts[env_idx])
        if not cut_by_episode:
            # An option cut short by the episode's end says nothing about its termination rules,
            # so it is left out of the duration statistics (its transition is still learned from).
            self.window.durations.append((option, duration))
            self.totals.durations.append((option, duration))
        if self.buffer is not None:
            self.buffer.add(
                self.start_states[env_idx],
                option,
                self.start_masks[env_idx],
                float(self.option_returns[env_idx]),
                duration,
                np.asarray(next_obs, dtype=np.float32),
                episode_done,
                behaviour_log_prob=float(self.behaviour_log_probs[env_idx]),
                temperature=float(self.selection_temperatures[env_idx]),
                selected_at=int(self.selected_at[env_idx]),
            )

    def _start_options(self, env_indices: np.ndarray, obs: np.ndarray) -> None:
        """The controller chooses the next option of each env in `env_indices` (in env order, so the
        option stream is the same as choosing one env at a time), in one batched forward."""
        starts = np.asarray(obs[env_indices], dtype=np.float32)
        masks = availability_mask(self.options, self.layout.market_state(starts))
        chosen, log_probs = self.learner.choose(starts, masks, self.deterministic)
        self.active[env_indices] = chosen
        self.behaviour_log_probs[env_indices] = log_probs
        self.selection_temperatures[env_indices] = self.learner.effective_temperature
        self.selected_at[env_indices] = self.learner.num_updates
        self.step_counts[env_indices] = 0
        self.option_returns[env_indices] = 0.0
        self.started[env_indices] = True
        self.start_states[env_indices] = starts
        self.start_masks[env_indices] = masks
        self.memory.clear(env_indices)
        chosen_per_option = np.bincount(chosen, minlength=self.cfg.num_options)
        self.window.selections += chosen_per_option
        self.totals.selections += chosen_per_option

    # ---------------------------------------------------------------- resume

    def rollout_state(self) -> dict:
        """What a resumed run needs to continue mid-option: each env's option state (active option,
        steps in it, accumulated reward, start state and mask, option memory, how it was chosen),
        the termination RNG, the open monitor window's counters and the last env observation.
        Plain values and arrays (the checkpoint pickles them with torch.save)."""
        return {
            "env_states": [state.as_dict() for state in self.env_states],
            "rng": self.rng.bit_generator.state,
            "window": self.window.state_dict(),
            "last_obs": None if self._last_obs is None else self._last_obs.copy(),
        }

    def load_rollout_state(self, state: dict) -> None:
        if len(state["env_states"]) != self.num_envs:
            raise ValueError(f"option state of {len(state['env_states'])} envs cannot be loaded into {self.num_envs}")
        for view, saved in zip(self.env_states, state["env_states"]):
            view.load(saved)
        self.rng.bit_generator.state = state["rng"]
        self.window.load_state_dict(state["window"])
        self._last_obs = None if state["last_obs"] is None else np.array(state["last_obs"], copy=True)

    # ---------------------------------------------------------------- observations

    def active_options(self) -> np.ndarray:
        return self.active.copy()

    def _augment_one(self, obs: np.ndarray, option: int) -> np.ndarray:
        one_hot = np.zeros(self.cfg.num_options, dtype=np.float32)
        one_hot[option] = 1.0
        return np.concatenate([np.asarray(obs, dtype=np.float32), one_hot])

    def _augment(self, obs: np.ndarray) -> np.ndarray:
        one_hot = np.zeros((self.num_envs, self.cfg.num_options), dtype=np.float32)
        one_hot[self._envs, self.active] = 1.0
        return np.concatenate([obs.astype(np.float32), one_hot], axis=1)
