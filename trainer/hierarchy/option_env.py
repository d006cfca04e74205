"""The options layer between SB3's SAC and the vectorised trading envs (a public VecEnvWrapper).

Per env it keeps an `OptionEnvState` (active option, steps in it, accumulated reward, start state).
Order of events per vectorised step:
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

import copy
from dataclasses import dataclass, field

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from trainer.config import OptionsConfig
from trainer.envs.layout import ObservationLayout
from trainer.errors import NonFiniteError
from trainer.hierarchy.controller import OptionsLearner
from trainer.hierarchy.option_buffer import OptionReplayBuffer
from trainer.options import availability_mask, build_options


@dataclass
class OptionEnvState:
    """The option bookkeeping of one environment."""

    action_scales: dict[int, float]
    min_durations: dict[int, int]
    active_option: int = -1
    option_step_count: int = 0
    accumulated_reward: float = 0.0
    start_state: np.ndarray | None = None
    start_mask: np.ndarray | None = None
    memory: dict = field(default_factory=dict)
    behaviour_log_prob: float = 0.0  # log mu(o|s,m) of the active option when it was chosen
    selection_temperature: float = 1.0  # the controller temperature that chose it
    selected_at: int = 0  # the controller update index when it was chosen


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
        scales = {i: float(cfg.option_block(i).action_scale) for i in range(n_options)}
        durations = {i: int(cfg.option_block(i).min_duration) for i in range(n_options)}
        self.env_states = [OptionEnvState(dict(scales), dict(durations)) for _ in range(self.num_envs)]
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
        steps_per_option = np.bincount(self.active_options(), minlength=self.cfg.num_options)
        self.window.steps += steps_per_option
        self.totals.steps += steps_per_option
        markets = None  # decoded once per step, for all envs, when an option may terminate
        ended = []
        for i in range(self.num_envs):
            state = self.env_states[i]
            state.accumulated_reward += (self.cfg.gamma**state.option_step_count) * float(rewards[i])
            state.option_step_count += 1
            if dones[i]:
                terminal = infos[i].get("terminal_observation", obs[i])
                truncated = bool(infos[i].get("TimeLimit.truncated", False))
                infos[i]["terminal_observation"] = self._augment_one(terminal, state.active_option)
                self._end_option(i, terminal, episode_done=not truncated, cut_by_episode=True)
                ended.append(i)
            elif state.option_step_count >= state.min_durations.get(state.active_option, 0):
                if markets is None:
                    markets = self.layout.market_state(obs)
                if self._terminates(i, markets.at(i)):
                    self._end_option(i, obs[i], episode_done=False)
                    ended.append(i)
        if ended:
            self._start_options(np.asarray(ended), obs)  # one controller forward for all of them
        for i in range(self.num_envs):
            infos[i]["option"] = self.env_states[i].active_option
        self._last_obs = obs
        return self._augment(obs), rewards, dones, infos

    # ---------------------------------------------------------------- the seed's select_actions

    def select_actions(self, sac_actions: np.ndarray) -> np.ndarray:
        """Scale each env's SAC action by its option's action_scale, then let the option shape it."""
        if not np.all(np.isfinite(sac_actions)):
            raise NonFiniteError(f"SAC produced a non-finite action: {sac_actions.tolist()}")
        states = self.layout.market_state(self._last_obs)
        actions = np.zeros((self.num_envs, 1), dtype=np.float32)
        first_components = sac_actions.reshape(self.num_envs, -1)[:, 0].tolist()  # Python floats, exactly
        for env_idx, state in enumerate(self.env_states):
            option_idx = state.active_option
            action_scale = state.action_scales.get(option_idx, 1.0)
            scaled_action = first_components[env_idx] * action_scale
            option = self.options[option_idx]
            actions[env_idx, 0] = option.target_exposure(scaled_action, states.at(env_idx), state.memory)
        return actions

    # ---------------------------------------------------------------- option lifecycle

    def _terminates(self, env_idx: int, market) -> bool:
        """Whether env `env_idx`'s option ends now, given its decoded MarketState; only asked once
        the option has run min_duration steps (seed Fix 2: below it the option is forced to go on,
        whatever it says, and no termination draw is made)."""
        state = self.env_states[env_idx]
        option = self.options[state.active_option]
        term_prob, rule = option.termination(state.option_step_count, market, state.memory)
        if self.deterministic:
            ends = term_prob >= 0.5
        else:
            ends = bool(self.rng.random() < term_prob)
        if ends:
            self.terminations[option.name][rule] += 1  # which Part 2 rule ended it (run totals)
        return ends

    def _end_option(self, env_idx: int, next_obs: np.ndarray, episode_done: bool, cut_by_episode: bool = False) -> None:
        state = self.env_states[env_idx]
        if not cut_by_episode:
            # An option cut short by the episode's end says nothing about its termination rules,
            # so it is left out of the duration statistics (its transition is still learned from).
            self.window.durations.append((state.active_option, state.option_step_count))
            self.totals.durations.append((state.active_option, state.option_step_count))
        if self.buffer is not None:
            self.buffer.add(
                state.start_state,
                state.active_option,
                state.start_mask,
                state.accumulated_reward,
                state.option_step_count,
                np.asarray(next_obs, dtype=np.float32),
                episode_done,
                behaviour_log_prob=state.behaviour_log_prob,
                temperature=state.selection_temperature,
                selected_at=state.selected_at,
            )

    def _start_options(self, env_indices: np.ndarray, obs: np.ndarray) -> None:
        """The controller chooses the next option of each env in `env_indices` (in env order, so the
        option stream is the same as choosing one env at a time), in one batched forward."""
        starts = np.asarray(obs[env_indices], dtype=np.float32)
        masks = availability_mask(self.options, self.layout.market_state(starts))
        chosen, log_probs = self.learner.choose(starts, masks, self.deterministic)
        temperature, update = self.learner.effective_temperature, self.learner.num_updates
        for row, env_idx in enumerate(env_indices):
            option = int(chosen[row])
            state = self.env_states[env_idx]
            state.active_option = option
            state.behaviour_log_prob = float(log_probs[row])
            state.selection_temperature = temperature
            state.selected_at = update
            state.option_step_count = 0
            state.accumulated_reward = 0.0
            state.start_state = starts[row].copy()
            state.start_mask = masks[row]
            state.memory = {}
            self.window.selections[option] += 1
            self.totals.selections[option] += 1

    # ---------------------------------------------------------------- resume

    def rollout_state(self) -> dict:
        """What a resumed run needs to continue mid-option: each env's option state (active option,
        steps in it, accumulated reward, start state and mask, option memory, how it was chosen),
        the termination RNG, the open monitor window's counters and the last env observation.
        Arrays and dicts as they are (the checkpoint pickles them with torch.save)."""
        return {
            "env_states": [copy.deepcopy(vars(state)) for state in self.env_states],
            "rng": self.rng.bit_generator.state,
            "window": self.window.state_dict(),
            "last_obs": None if self._last_obs is None else self._last_obs.copy(),
        }

    def load_rollout_state(self, state: dict) -> None:
        if len(state["env_states"]) != self.num_envs:
            raise ValueError(f"option state of {len(state['env_states'])} envs cannot be loaded into {self.num_envs}")
        self.env_states = [OptionEnvState(**copy.deepcopy(saved)) for saved in state["env_states"]]
        self.rng.bit_generator.state = state["rng"]
        self.window.load_state_dict(state["window"])
        self._last_obs = None if state["last_obs"] is None else np.array(state["last_obs"], copy=True)

    # ---------------------------------------------------------------- observations

    def active_options(self) -> np.ndarray:
        return np.array([s.active_option for s in self.env_states], dtype=np.int64)

    def _augment_one(self, obs: np.ndarray, option: int) -> np.ndarray:
        one_hot = np.zeros(self.cfg.num_options, dtype=np.float32)
        one_hot[option] = 1.0
        return np.concatenate([np.asarray(obs, dtype=np.float32), one_hot])

    def _augment(self, obs: np.ndarray) -> np.ndarray:
        one_hot = np.zeros((self.num_envs, self.cfg.num_options), dtype=np.float32)
        one_hot[np.arange(self.num_envs), self.active_options()] = 1.0
        return np.concatenate([obs.astype(np.float32), one_hot], axis=1)
