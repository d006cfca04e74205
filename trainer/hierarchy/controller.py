"""The options controller: which option to run next, learned from SMDP option transitions.

`OptionsController` is the network (state -> option logits, state value). `OptionsLearner` owns
it with its optimizer and temperature, chooses options, and runs `train_options_controller`,
written to be read top to bottom against the seed's Fixes 3-5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from trainer.config import OptionsConfig
from trainer.errors import NonFiniteError
from trainer.hierarchy.option_buffer import OptionBatch


class OptionsController(nn.Module):
    """MLP over the state with an option-logit head and a value head (float32 only)."""

    def __init__(self, state_dim: int, num_options: int, hidden_dim: int = 512, dropout: float = 0.1):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Linear(state_dim, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
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


class OptionsLearner:
    """Controller + optimizer + temperature schedule.

    :param cfg: the `options:` section (hidden_dim, dropout, options_lr, grad_clip, temperature, ...)
    :param device: torch device for the controller
    :param seed: seeds the option sampler
    """

    def __init__(self, cfg: OptionsConfig, device: str | torch.device = "cpu", seed: int = 0):
        if cfg.use_amp:
            raise ValueError("use_amp must be false: the controller is float32 only")
        self.cfg = cfg
        self.device = torch.device(device)
        self.controller = OptionsController(cfg.state_dim, cfg.num_options, cfg.hidden_dim, cfg.dropout).to(
            self.device, dtype=torch.float32
        )
        self.optimizer = torch.optim.Adam(self.controller.parameters(), lr=cfg.options_lr)
        self.current_temperature = cfg.temperature
        self.num_updates = 0
        self.last_stats: ControllerStats | None = None
        self.rng = np.random.default_rng(seed)

    # ---------------------------------------------------------------- choosing options

    @torch.no_grad()
    def select_options(self, states: np.ndarray, masks: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """One option index per row of `states`, among the available ones (`masks`)."""
        self.controller.eval()
        logits, _ = self.controller(torch.as_tensor(states, dtype=torch.float32, device=self.device))
        scaled = logits / max(self.current_temperature, self.cfg.min_temperature)
        mask = torch.as_tensor(masks, dtype=torch.bool, device=self.device)
        log_probs = masked_log_softmax(scaled, mask)
        if deterministic:
            return log_probs.argmax(dim=-1).cpu().numpy()
        probs = log_probs.exp().cpu().numpy().astype(np.float64)
        probs /= probs.sum(axis=1, keepdims=True)
        return np.array([self.rng.choice(len(row), p=row) for row in probs], dtype=np.int64)

    # ---------------------------------------------------------------- learning

    def train_options_controller(self, batch: OptionBatch) -> ControllerStats:
        """One gradient step on a batch of option transitions (seed Fixes 3, 4 and 5)."""
        self.controller.train()
        states = torch.as_tensor(batch.states, device=self.device)
        next_states = torch.as_tensor(batch.next_states, device=self.device)
        options = torch.as_tensor(batch.options, device=self.device)
        masks = torch.as_tensor(batch.masks, device=self.device)
        rewards = torch.as_tensor(batch.rewards, device=self.device)
        durations = torch.as_tensor(batch.durations, device=self.device, dtype=torch.float32)
        dones = torch.as_tensor(batch.dones, device=self.device, dtype=torch.float32)

        # --- algorithm core -------------------------------------------------------------
        # SMDP option return: the discounted reward collected inside the option, bootstrapped
        # with the value of the state where it ended (gamma ** duration), unless the episode ended.
        with torch.no_grad():
            _, next_values = self.controller(next_states)
            option_returns = rewards + (self.cfg.gamma**durations) * (1.0 - dones) * next_values

        option_logits, predicted_values = self.controller(states)

        # Fix 3: advantages against the value baseline, normalised to mean 0 / std 1.
        advantages = option_returns - predicted_values.detach()
        raw_mean, raw_std = advantages.mean().item(), advantages.std().item()
        if self.cfg.normalize_advantages and advantages.numel() > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + self.cfg.advantage_epsilon)

        # Fix 5: temperature-scaled logits; unavailable options were never choosable.
        scaled_logits = option_logits / max(self.current_temperature, self.cfg.min_temperature)
        log_probs = masked_log_softmax(scaled_logits, masks)
        selected_log_probs = log_probs.gather(1, options.unsqueeze(1)).squeeze(1)
        policy_loss = -(selected_log_probs * advantages).mean()

        value_loss = nn.functional.mse_loss(predicted_values, option_returns)

        # Fix 4: entropy bonus keeps all options in play (masked entries contribute 0, not NaN).
        probs = torch.softmax(scaled_logits.masked_fill(~masks, float("-inf")), dim=-1)
        entropy = -(probs * log_probs.masked_fill(~masks, 0.0)).sum(dim=-1).mean()
        entropy_bonus_loss = -self.cfg.entropy_bonus * entropy

        total_loss = policy_loss + self.cfg.value_loss_weight * value_loss + entropy_bonus_loss
        if not torch.isfinite(total_loss):
            raise NonFiniteError(
                f"options controller loss is not finite at update {self.num_updates + 1} "
                f"(policy {policy_loss.item()}, value {value_loss.item()}, entropy {entropy.item()})"
            )
        self.optimizer.zero_grad()
        total_loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.controller.parameters(), self.cfg.grad_clip)
        self.optimizer.step()

        # Fix 5: anneal after every optimizer step.
        self.current_temperature = max(self.cfg.min_temperature, self.current_temperature * self.cfg.temperature_decay)
        # --- end of algorithm core -------------------------------------------------------

        self.num_updates += 1
        self.last_stats = ControllerStats(
            policy_loss=policy_loss.item(),
            value_loss=value_loss.item(),
            entropy=entropy.item(),
            grad_norm=float(grad_norm),
            advantage_mean=raw_mean,
            advantage_std=raw_std,
            temperature=self.current_temperature,
        )
        return self.last_stats

    # ---------------------------------------------------------------- persistence

    def state_dict(self) -> dict:
        return {
            "controller": self.controller.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "current_temperature": self.current_temperature,
            "num_updates": self.num_updates,
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict) -> None:
        self.controller.load_state_dict(state["controller"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.current_temperature = float(state["current_temperature"])
        self.num_updates = int(state["num_updates"])
        self.rng.bit_generator.state = state["rng"]
