"""The options controller: which option to run next, learned from SMDP option transitions.

`OptionsController` is the network (state -> option logits, state value). `OptionsLearner` owns
it with its optimizer and temperature, chooses options, and trains it (`train_options_controller`;
the update itself is `gradient_step`, written to be read top to bottom against the seed's Fixes
3-5). On CPU an update can run in the update process (update_process.py) or on a worker thread
while SAC takes its own gradient step (`start_update` / `finish_update`); the rollout never sees
the difference (see `start_update`).
"""

from __future__ import annotations

import copy
import os
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from trainer.config import OptionsConfig
from trainer.errors import NonFiniteError
from trainer.hierarchy.option_buffer import OptionBatch, OptionReplayBuffer
from trainer.hierarchy.update_process import (
    BatchStaging,
    LearnerSetup,
    UpdateProcess,
    UpdateRequest,
    as_generator_state,
    hyperparameters,
    share_adam_state,
    share_parameters,
)


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask where the platform has one)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def worker_has_spare_cores() -> bool:
    """Whether an update on a worker thread, at torch's intra-op width, finds cores SAC leaves idle.
    With two torch threads on two cores SAC already uses both, and the worker's threads only
    contend with them: the demo's 6k-step run took 54 env steps/s overlapped against 75 in place."""
    return 2 * torch.get_num_threads() <= available_cores()


class SeededDropout(nn.Dropout):
    """nn.Dropout whose masks come from `generator` (torch's global RNG when None).

    The controller's own stream keeps its noise out of SAC's (they shared torch's global RNG), so
    an update on a worker thread draws the same masks whenever it runs.
    """

    def __init__(self, p: float, generator: torch.Generator | None = None):
        super().__init__(p)
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.generator is None or not self.training or self.p == 0:
            return super().forward(x)
        keep = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=self.generator)
        return x * keep / (1.0 - self.p)


class OptionsController(nn.Module):
    """MLP over the state with an option-logit head and a value head (float32 only).

    :param generator: the dropout masks' random stream (torch's global RNG when None)
    """

    def __init__(
        self,
        state_dim: int,
        num_options: int,
        hidden_dim: int = 512,
        dropout: float = 0.1,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Linear(state_dim, hidden_dim),
            nn.ReLU(),
            SeededDropout(dropout, generator),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            SeededDropout(dropout, generator),
        )
        self.option_head = nn.Linear(hidden_dim, num_options)
        self.value_head = nn.Linear(hidden_dim, 1)
        # Near-zero option logits at start (as SB3/CleanRL initialise policy heads): every option
        # starts equally likely instead of with a random favourite.
        nn.init.orthogonal_(self.option_head.weight, gain=0.01)
        nn.init.zeros_(self.option_head.bias)

    def forward(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.trunk(states)
        return self.option_head(hidden), self.value_head(hidden).squeeze(-1)

    def acting_logits(self, states: torch.Tensor) -> torch.Tensor:
        """The option logits of the noise-free network (eval-mode `forward`, the same ops), without
        the value head or module dispatch: choosing options runs this on most vectorised steps."""
        first, second = self.trunk[0], self.trunk[3]
        hidden = torch.relu(nn.functional.linear(torch.relu(nn.functional.linear(states, first.weight, first.bias)),
                                                 second.weight, second.bias))
        return nn.functional.linear(hidden, self.option_head.weight, self.option_head.bias)


def masked_log_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log-probabilities with unavailable options at -inf (probability exactly 0)."""
    return torch.log_softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)


@dataclass
class ControllerStats:
    """What one update measured (logged under options/ by the monitor)."""

    policy_loss: float
    value_loss: float
    entropy: float
    grad_norm: float
    advantage_mean: float  # before normalisation
    advantage_std: float  # before normalisation
    temperature: float  # after this update's annealing step
    clip_fraction: float = 0.0  # clipped loss: share of samples whose ratio left [1-eps, 1+eps]
    approx_kl: float = 0.0  # clipped loss: mean (rho - 1) - log rho, an estimate of KL(mu || pi)
    sample_age: float = 0.0  # mean controller updates between a sample's selection and this update
    policy_held: bool = False  # clipped loss with target_kl: the batch's approx KL was past it, value head only


class OptionsLearner:
    """Controller + optimizer + temperature schedule.

    :param cfg: the `options:` section (hidden_dim, dropout, options_lr, grad_clip, temperature,
        policy_loss, clip_range, max_sample_age_updates, overlap_update, ...)
    :param device: torch device for the controller
    :param seed: seeds the controller's weights, its dropout, the option sampler and the batch
        sampler (separate streams, so how many batches were drawn never changes which options are chosen)
    """

    def __init__(self, cfg: OptionsConfig, device: str | torch.device = "cpu", seed: int = 0):
        if cfg.use_amp:
            raise ValueError("use_amp must be false: the controller is float32 only")
        self.cfg = cfg
        self.device = torch.device(device)
        self.dropout_generator = torch.Generator(device=self.device)
        self.dropout_generator.manual_seed(int(np.random.SeedSequence([seed, 2]).generate_state(1)[0]))
        # Seeded here, not by whoever touched torch's global RNG last: the controller is built
        # before SB3 seeds torch, so its initial weights were the runs' unseeded difference.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self._controller = OptionsController(
                cfg.state_dim, cfg.num_options, cfg.hidden_dim, cfg.dropout, self.dropout_generator
            ).to(self.device, dtype=torch.float32)
        # The behaviour policy: the network that chooses options. Under the clipped loss it is a
        # snapshot refreshed every behaviour_refresh_updates updates; under the seed's, the controller itself.
        clipped = cfg.policy_loss == "clipped"
        self.behaviour = copy.deepcopy(self._controller).eval() if clipped else self._controller
        self.optimizer = torch.optim.Adam(self._controller.parameters(), lr=cfg.options_lr)
        self.current_temperature = cfg.temperature
        self.num_updates = 0
        self.policy_held_updates = 0  # updates past target_kl (value head only)
        self._last_stats: ControllerStats | None = None
        self.rng = np.random.default_rng(seed)  # option choice
        self.sample_rng = np.random.default_rng([seed, 1])  # batch sampling
        # Updates overlap the rollout only where the rollout never reads the network being trained:
        # the clipped loss chooses with the behaviour snapshot (the seed's loss chooses with the
        # controller itself), and on CPU, where the worker takes cores SAC leaves idle (on CUDA
        # both would queue on one device, and a side thread must not launch work while SAC captures
        # its CUDA graph). Whether cores are idle is asked per update (worker_has_spare_cores):
        # the torch thread count is set after the learner is built.
        self.overlaps_updates = cfg.overlap_update and clipped and self.device.type == "cpu"
        self._worker: ThreadPoolExecutor | None = None
        self._process: UpdateProcess | None = None  # the update process holding this learner's tensors
        self._process_key = 0
        self._process_finalizer: weakref.finalize | None = None
        self._staging: BatchStaging | None = None  # the batch buffer shared with the process
        self._pending: Callable[[], ControllerStats] | None = None  # waits for the update in flight
        self.last_overlap: str | None = None  # where the latest overlapped update ran: "process" or "thread"
        self._before_pending = (0, self.current_temperature)  # the counters to restore if it fails

    @property
    def controller(self) -> OptionsController:
        """The trained network, after any update in flight has finished."""
        self.finish_update()
        return self._controller

    @property
    def last_stats(self) -> ControllerStats | None:
        """What the latest update measured, after it has finished."""
        self.finish_update()
        return self._last_stats

    @property
    def effective_temperature(self) -> float:
        return max(self.current_temperature, self.cfg.min_temperature)

    # ---------------------------------------------------------------- choosing options

    @torch.no_grad()
    def choose(self, states: np.ndarray, masks: np.ndarray, deterministic: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """One option per row of `states` among the available ones (`masks`), with its behaviour
        log-probability log mu(o|s,m) under the temperature-scaled, masked policy that chose it.

        Training samples from the behaviour snapshot; `deterministic` (evaluation, serving) takes
        the argmax of the current controller, the network that was trained and is saved.
        """
        network = self.controller if deterministic or self.behaviour is self._controller else self.behaviour
        logits = network.acting_logits(torch.as_tensor(states, dtype=torch.float32, device=self.device))
        mask = torch.as_tensor(masks, dtype=torch.bool, device=self.device)
        log_probs = masked_log_softmax(logits / self.effective_temperature, mask).cpu().numpy().astype(np.float64)
        if deterministic:
            chosen = log_probs.argmax(axis=1)
        else:
            cdf = np.cumsum(np.exp(log_probs), axis=1)
            u = self.rng.random(len(cdf)) * cdf[:, -1]
            # the first option whose cumulative probability exceeds u: a masked option adds 0 to the
            # sum, so it is never the first to exceed it
            chosen = np.minimum((cdf <= u[:, None]).sum(axis=1), cdf.shape[1] - 1)
        chosen = chosen.astype(np.int64)
        return chosen, log_probs[np.arange(len(chosen)), chosen].astype(np.float32)

    def select_options(self, states: np.ndarray, masks: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """One option index per row of `states`, among the available ones (`masks`)."""
        return self.choose(states, masks, deterministic)[0]

    def sample_batch(self, buffer: OptionReplayBuffer) -> OptionBatch:
        """The batch the configured loss trains on: recent choices for `clipped`, the whole buffer for `seed`."""
        if self.cfg.policy_loss == "seed":
            return buffer.sample(self.cfg.batch_size, self.sample_rng)
        return buffer.sample_recent(self.cfg.batch_size, self.sample_rng, self.num_updates, self.cfg.max_sample_age_updates)

    # ---------------------------------------------------------------- learning

    def train_options_controller(self, batch: OptionBatch) -> ControllerStats:
        """One gradient step on a batch of option transitions (seed Fixes 3, 4 and 5), finished on return."""
        self.start_update(batch)
        return self.finish_update()

    def start_update(self, batch: OptionBatch) -> None:
        """Begin one update on `batch`; with `overlaps_updates` its gradient step runs on a worker
        thread and `finish_update` collects it.

        Everything the rollout reads before then is settled here, as if the update had finished:
        the update count (stored with each chosen option), the annealed temperature (Fix 5: once per
        optimizer step, a schedule that does not depend on the gradient), and, for an update that
        refreshes the behaviour snapshot, the snapshot itself (that update runs in the foreground).
        Dropout draws from the controller's own generator, so the result is bit for bit the same
        whether the step ran on the worker or here, and whenever it finished.
        """
        self.finish_update()  # one update in flight at a time, applied in order
        if self.cfg.policy_loss == "clipped" and batch.behaviour_log_probs is None:
            raise ValueError("the clipped policy loss needs behaviour_log_probs and temperatures in the batch")
        update_index, temperature = self.num_updates, self.effective_temperature
        self._before_pending = (self.num_updates, self.current_temperature)
        self.num_updates += 1
        self.current_temperature = max(self.cfg.min_temperature, self.current_temperature * self.cfg.temperature_decay)
        refresh = self.behaviour is not self._controller and self.num_updates % self.cfg.behaviour_refresh_updates == 0
        if self.overlaps_updates and not refresh and worker_has_spare_cores():
            try:
                self._pending = self._overlap(batch, temperature, update_index)
            except Exception:  # the update process is gone: nothing started
                self._restore_counters()
                raise
            return
        try:
            self._collect(self._gradient_step(self._tensors(batch), temperature, self.current_temperature,
                                              update_index, batch.selected_at))
        except Exception:
            self._restore_counters()
            raise
        if refresh:
            self.behaviour.load_state_dict(self._controller.state_dict())

    def prepare_overlap(self) -> None:
        """Start the update process now, where this learner's updates will run there, so its start
        (about 2 s of imports on the spare core) is over before the first update; call once the torch
        thread count is set (HierarchicalSAC.learn does)."""
        if self.overlaps_updates and self.cfg.overlap_worker == "process" and worker_has_spare_cores():
            UpdateProcess.shared()

    def finish_update(self) -> ControllerStats | None:
        """Wait for the update in flight, if any, and return the latest update's stats (re-raising
        what the worker raised, e.g. NonFiniteError)."""
        pending = self._pending
        if pending is not None:
            try:
                stats = pending()  # waits; _pending stays set meanwhile, so no reader skips the wait
            except Exception:
                self._pending = None
                self._restore_counters()
                raise
            self._pending = None
            self._collect(stats)
        return self._last_stats

    def _overlap(self, batch: OptionBatch, temperature: float, update_index: int) -> Callable[[], ControllerStats]:
        """Start the update beside the rollout, in the update process (options.overlap_worker: process,
        where one can start and the optimizer is the learner's Adam, whose state it shares) or on a
        worker thread; returns what waits for it."""
        process = UpdateProcess.shared() if self.cfg.overlap_worker == "process" else None
        if process is not None and type(self.optimizer) is torch.optim.Adam:
            setup = None
            if self._process is not process:  # first update there, or new tensors since (load_state_dict)
                setup = self._share_for_process(batch)
                if self._process_finalizer is not None:
                    self._process_finalizer()  # the process drops the tensors it held before
                self._process, self._process_key = process, process.new_key()
                self._process_finalizer = weakref.finalize(self, process.forget, self._process_key)
            staged = self._staging.put(batch)  # the previous update was collected: the buffer is free
            ticket = process.submit(self._process_key, setup,
                                    self._update_request(None if staged else batch, temperature, update_index))
            self.last_overlap = "process"

            def collect() -> ControllerStats:
                stats, generator_state = process.result(ticket)
                self.dropout_generator.set_state(as_generator_state(generator_state))
                return stats

            return collect
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="options-controller")
        self.last_overlap = "thread"
        return self._worker.submit(self._gradient_step, self._tensors(batch), temperature, self.current_temperature,
                                   update_index, batch.selected_at).result

    def _share_for_process(self, batch: OptionBatch) -> LearnerSetup:
        """Move the controller's weights and Adam's state into shared memory, with a staging buffer
        shaped like `batch`: what the update process needs once to step them where they lie."""
        self._staging = BatchStaging(BatchStaging.layout_of(batch))
        return LearnerSetup(self.cfg, share_parameters(self._controller), share_adam_state(self.optimizer),
                            self._staging.buffer, self._staging.layout)

    def _update_request(self, batch: OptionBatch | None, temperature: float, update_index: int) -> UpdateRequest:
        """One update for the process (`batch` None: it is in the staging buffer), with everything
        else the update reads here, so it computes what an update in place would."""
        return UpdateRequest(batch, temperature, self.current_temperature, update_index,
                             self.dropout_generator.get_state().numpy().tobytes(), hyperparameters(self.optimizer),
                             torch.get_num_threads(), torch.get_float32_matmul_precision())

    def _collect(self, stats: ControllerStats) -> None:
        self._last_stats = stats
        self.policy_held_updates += stats.policy_held

    def _restore_counters(self) -> None:
        """A failed update stepped nothing, so it does not count or anneal either."""
        self.num_updates, self.current_temperature = self._before_pending

    def abandon_update(self) -> None:
        """Wait for the update in flight and drop its outcome: for a run that is already failing,
        whose own error is the one to report."""
        try:
            self.finish_update()
        except Exception:  # deliberately dropped: the caller is already raising its own error
            pass

    def _gradient_step(
        self,
        t: dict[str, torch.Tensor],
        temperature: float,
        annealed_temperature: float,
        update_index: int,
        selected_at: np.ndarray | None,
    ) -> ControllerStats:
        """The update in this process (in place, or on the worker thread)."""
        return gradient_step(self.cfg, self._controller, self.optimizer, t, temperature, annealed_temperature,
                             update_index, selected_at)

    def _tensors(self, batch: OptionBatch) -> dict[str, torch.Tensor]:
        return batch_tensors(batch, self.device)

    # ---------------------------------------------------------------- persistence

    def state_dict(self) -> dict:
        self.finish_update()
        return {
            "controller": self._controller.state_dict(),
            "behaviour": self.behaviour.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "current_temperature": self.current_temperature,
            "num_updates": self.num_updates,
            "policy_held_updates": self.policy_held_updates,
            "rng": self.rng.bit_generator.state,
            "sample_rng": self.sample_rng.bit_generator.state,
            "dropout_rng": self.dropout_generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.finish_update()
        self._controller.load_state_dict(state["controller"])
        self.behaviour.load_state_dict(state.get("behaviour", state["controller"]))
        self.optimizer.load_state_dict(state["optimizer"])  # new state tensors: shared anew at the next update
        self._process = None
        self.current_temperature = float(state["current_temperature"])
        self.num_updates = int(state["num_updates"])
        self.policy_held_updates = int(state.get("policy_held_updates", 0))  # absent before target_kl
        self.rng.bit_generator.state = state["rng"]
        if "sample_rng" in state:  # absent from checkpoints written before the streams were split
            self.sample_rng.bit_generator.state = state["sample_rng"]
        if "dropout_rng" in state:  # absent from checkpoints written while dropout drew from torch's global RNG
            self.dropout_generator.set_state(state["dropout_rng"])


def gradient_step(
    cfg: OptionsConfig,
    controller: OptionsController,
    optimizer: torch.optim.Optimizer,
    t: dict[str, torch.Tensor],
    temperature: float,
    annealed_temperature: float,
    update_index: int,
    selected_at: np.ndarray | None,
) -> ControllerStats:
    """The update itself (seed Fixes 3, 4 and 5), at the temperature and update index it started
    with; it touches only the controller and its optimizer, so it may run on the worker."""
    clipped = cfg.policy_loss == "clipped"

    # --- algorithm core -------------------------------------------------------------
    # SMDP option return: the discounted reward collected inside the option, bootstrapped
    # with the value of the state where it ended (gamma ** duration), unless the episode ended.
    # Targets come from the noise-free network (eval mode: no dropout), the one that acts.
    with torch.no_grad():
        controller.eval()
        _, next_values = controller(t["next_states"])
        option_returns = t["rewards"] + (cfg.gamma ** t["durations"]) * (1.0 - t["dones"]) * next_values

    # The value head regresses with dropout (train mode). The seed's loss takes its logits from
    # the same pass; the clipped loss takes them from the noise-free pass, so its ratio compares
    # the policy that acts now with the one that acted, and nothing else.
    controller.train()
    option_logits, predicted_values = controller(t["states"])
    if clipped:
        controller.eval()
        option_logits, _ = controller(t["states"])

    # Fix 3: advantages against the value baseline, normalised to mean 0 / std 1.
    advantages = option_returns - predicted_values.detach()
    raw_mean, raw_std = advantages.mean().item(), advantages.std().item()
    if cfg.normalize_advantages and advantages.numel() > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + cfg.advantage_epsilon)

    # Fix 5: temperature-scaled logits; unavailable options were never choosable.
    scaled_logits = option_logits / temperature
    log_probs = masked_log_softmax(scaled_logits, t["masks"])
    options = t["options"].unsqueeze(1)
    extra = {}
    if clipped:
        # Clipped surrogate (PPO): rho = pi_theta(o|s,m) / mu(o|s,m). pi is taken at the temperature
        # that chose the sample, so rho measures how far the network moved since, not how far the
        # annealing schedule moved (the schedule is not the network's doing; Fix 5 stays as it is).
        log_pi_at_selection = masked_log_softmax(option_logits / t["temperatures"].unsqueeze(1), t["masks"])
        ratio = torch.exp(log_pi_at_selection.gather(1, options).squeeze(1) - t["behaviour_log_probs"])
        eps = cfg.clip_range
        surrogate = torch.min(ratio * advantages, torch.clamp(ratio, 1.0 - eps, 1.0 + eps) * advantages)
        policy_loss = -surrogate.mean()
        with torch.no_grad():
            extra = {
                "clip_fraction": ((ratio - 1.0).abs() > eps).float().mean().item(),
                "approx_kl": ((ratio - 1.0) - torch.log(ratio)).mean().item(),
                "sample_age": float(update_index - selected_at.mean()) if selected_at is not None else 0.0,
            }
    else:
        # The seed's loss, kept for reproduction: no importance ratio, so a replayed sample with
        # A < 0 keeps pushing its option's probability down however small it already is.
        policy_loss = -(log_probs.gather(1, options).squeeze(1) * advantages).mean()

    value_loss = nn.functional.mse_loss(predicted_values, option_returns)

    # Fix 4: entropy bonus keeps all options in play (masked entries contribute 0, not NaN).
    probs = torch.softmax(scaled_logits.masked_fill(~t["masks"], float("-inf")), dim=-1)
    entropy = -(probs * log_probs.masked_fill(~t["masks"], 0.0)).sum(dim=-1).mean()
    entropy_bonus_loss = -cfg.entropy_bonus * entropy

    total_loss = policy_loss + cfg.value_loss_weight * value_loss + entropy_bonus_loss
    if clipped and cfg.target_kl is not None and extra["approx_kl"] > cfg.target_kl:
        # At a low temperature one Adam step moves pi far past the clip, where no sample's gradient
        # pulls it back; past target_kl the policy waits for the next snapshot.
        extra["policy_held"] = True
        total_loss = cfg.value_loss_weight * value_loss
    if not torch.isfinite(total_loss):
        raise NonFiniteError(
            f"options controller loss is not finite at update {update_index + 1} "
            f"(policy {policy_loss.item()}, value {value_loss.item()}, entropy {entropy.item()})"
        )
    optimizer.zero_grad()
    total_loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(controller.parameters(), cfg.grad_clip)
    optimizer.step()
    # Fix 5's annealing after the step is start_update's (the rollout reads it before this ends).
    # --- end of algorithm core -------------------------------------------------------

    controller.eval()
    return ControllerStats(
        policy_loss=policy_loss.item(),
        value_loss=value_loss.item(),
        entropy=entropy.item(),
        grad_norm=float(grad_norm),
        advantage_mean=raw_mean,
        advantage_std=raw_std,
        temperature=annealed_temperature,
        **extra,
    )


def batch_tensors(batch: OptionBatch, device: torch.device) -> dict[str, torch.Tensor]:
    # A batch's arrays are the buffer's rows copied out (fancy indexing), so a worker reading
    # these never races the rollout's writes into the buffer.
    def tensor(values, dtype=None):
        return torch.as_tensor(values, device=device, dtype=dtype)

    out = {
        "states": tensor(batch.states),
        "next_states": tensor(batch.next_states),
        "options": tensor(batch.options),
        "masks": tensor(batch.masks),
        "rewards": tensor(batch.rewards),
        "durations": tensor(batch.durations, torch.float32),
        "dones": tensor(batch.dones, torch.float32),
    }
    if batch.behaviour_log_probs is not None:
        out["behaviour_log_probs"] = tensor(batch.behaviour_log_probs, torch.float32)
        out["temperatures"] = tensor(batch.temperatures, torch.float32)
    return out
