"""SB3's SAC with an optional fast update path: the same losses, compiled or captured as a CUDA graph.

SB3's `SAC.train` runs each gradient step as ~100 small kernels launched one by one from Python,
with four host syncs (`.item()`) per step. On a GPU the launch overhead, not the arithmetic, sets
the speed of SAC with small networks; the fastest published SAC implementations compile the update
or capture it in a CUDA graph. `FastSAC.train` does the same, behind two flags (config `sac.compile`,
`sac.cuda_graphs`); with both off it *is* SB3's `train` (tests/training/test_fast_sac.py checks the
weights bit for bit against plain SAC).

- `compile`: one gradient step (`_gradient_step`: SB3's losses in SB3's order, entropy-coefficient,
  critic and actor steps, Polyak update) with its four network passes (policy sample, target,
  critic loss, actor loss) `torch.compile`d; statistics are kept as tensors and read once per
  `train` call instead of four times per step.
- `cuda_graphs` (device cuda only): the whole gradient step, forward, backward and the three Adam
  steps, captured once in a CUDA graph and replayed on static input buffers the sampled batch is
  copied into (PyTorch's "whole-network capture"; the optimizers are rebuilt with
  `capturable=True`, the entropy coefficient and the Polyak update live in the graph). Needs a
  constant learning rate and target_update_interval 1, which the run configs use.

Not a fork: this subclasses SB3's SAC and calls its own networks, optimizers and replay buffer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from stable_baselines3 import SAC
from torch.distributions import Distribution

LOGGER = logging.getLogger(__name__)


@contextmanager
def no_distribution_validation() -> Iterator[None]:
    """torch.distributions checks every new distribution's parameters (on by default, `__debug__`)
    with `bool(tensor)`, a host sync: inside a CUDA graph capture that is an error ("operation not
    permitted when stream is capturing"), and under torch.compile a graph break. SB3's actor builds
    a Normal on every pass, so the fast update path runs with the checks off; the losses are the same."""
    previous = Distribution._validate_args
    Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        Distribution.set_default_validate_args(previous)


class FastSAC(SAC):
    """:param compile_update: torch.compile the gradient step
    :param cuda_graphs: capture the gradient step in a CUDA graph (device cuda only)
    Every other argument is SB3 SAC's."""

    def __init__(self, *args: Any, compile_update: bool = False, cuda_graphs: bool = False, **kwargs: Any) -> None:
        self.compile_update = compile_update
        self.cuda_graphs = cuda_graphs
        self._passes_cache = None
        self._graph = None
        super().__init__(*args, **kwargs)
        if self.cuda_graphs and self.device.type != "cuda":
            raise ValueError(f"sac.cuda_graphs needs device cuda, not {self.device}")

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_passes_cache", "_graph"]

    @property
    def fast_path(self) -> bool:
        return self.compile_update or self.cuda_graphs

    # ---------------------------------------------------------------- train

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        if not self.fast_path:
            return super().train(gradient_steps, batch_size)
        if self.use_sde or self.target_update_interval != 1 or self.replay_buffer is None:
            raise ValueError("the fast SAC update supports target_update_interval 1 without gSDE")
        self.policy.set_training_mode(True)
        optimizers = [self.actor.optimizer, self.critic.optimizer]
        if self.ent_coef_optimizer is not None:
            optimizers.append(self.ent_coef_optimizer)
        self._update_learning_rate(optimizers)
        stats = []
        with no_distribution_validation():
            for _ in range(gradient_steps):
                data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
                discounts = data.discounts if data.discounts is not None else torch.full_like(data.rewards, self.gamma)
                batch = (data.observations, data.actions, data.next_observations, data.dones, data.rewards, discounts)
                stats.append(self._replay(batch) if self.cuda_graphs else self._gradient_step(*batch))
        self._n_updates += gradient_steps
        means = torch.stack([torch.stack(s) for s in stats]).mean(dim=0).tolist()  # one host sync
        ent_coef_loss, ent_coef, critic_loss, actor_loss = means
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/ent_coef", ent_coef)
        self.logger.record("train/actor_loss", actor_loss)
        self.logger.record("train/critic_loss", critic_loss)
        if self.ent_coef_optimizer is not None:
            self.logger.record("train/ent_coef_loss", ent_coef_loss)

    def _gradient_step(self, obs, actions, next_obs, dones, rewards, discounts) -> tuple[torch.Tensor, ...]:
        """One SAC gradient step, exactly SB3's `SAC.train` loop body (same ops in the same order);
        returns its statistics as tensors. The four network passes go through `_passes`, compiled
        with `compile`: each backward then runs through its own compiled graph, once."""
        passes = self._passes()
        actions_pi, log_prob = passes["sample"](obs)
        if self.ent_coef_optimizer is not None and self.log_ent_coef is not None:
            ent_coef = torch.exp(self.log_ent_coef.detach())
            ent_coef_loss = -(self.log_ent_coef * (log_prob + self.target_entropy).detach()).mean()
            self.ent_coef_optimizer.zero_grad()
            ent_coef_loss.backward()
            self.ent_coef_optimizer.step()
        else:
            ent_coef = self.ent_coef_tensor
            ent_coef_loss = torch.zeros((), device=obs.device)

        target_q_values = passes["target"](next_obs, rewards, dones, discounts, ent_coef)
        critic_loss = passes["critic_loss"](obs, actions, target_q_values)
        self.critic.optimizer.zero_grad()
        critic_loss.backward()
        self.critic.optimizer.step()

        actor_loss = passes["actor_loss"](obs, actions_pi, log_prob, ent_coef)
        self.actor.optimizer.zero_grad()
        actor_loss.backward()
        self.actor.optimizer.step()

        with torch.no_grad():  # SB3's polyak_update, as foreach ops (one kernel per op, graph-safe)
            critic = list(self.critic.parameters())
            target = list(self.critic_target.parameters())
            torch._foreach_mul_(target, 1.0 - self.tau)
            torch._foreach_add_(target, critic, alpha=self.tau)
            for stat, stat_target in zip(self.batch_norm_stats, self.batch_norm_stats_target):
                stat_target.copy_(stat)
        return (ent_coef_loss.detach(), ent_coef.detach().reshape(()), critic_loss.detach(), actor_loss.detach())

    # ---------------------------------------------------------------- the network passes

    def _sample(self, obs):
        actions_pi, log_prob = self.actor.action_log_prob(obs)
        return actions_pi, log_prob.reshape(-1, 1)

    def _target(self, next_obs, rewards, dones, discounts, ent_coef):
        with torch.no_grad():
            next_actions, next_log_prob = self.actor.action_log_prob(next_obs)
            next_q_values = torch.cat(self.critic_target(next_obs, next_actions), dim=1)
            next_q_values, _ = torch.min(next_q_values, dim=1, keepdim=True)
            next_q_values = next_q_values - ent_coef * next_log_prob.reshape(-1, 1)
            return rewards + (1 - dones) * discounts * next_q_values

    def _critic_loss(self, obs, actions, target_q_values):
        current_q_values = self.critic(obs, actions)
        return 0.5 * sum(F.mse_loss(current_q, target_q_values) for current_q in current_q_values)

    def _actor_loss(self, obs, actions_pi, log_prob, ent_coef):
        q_values_pi = torch.cat(self.critic(obs, actions_pi), dim=1)
        min_qf_pi, _ = torch.min(q_values_pi, dim=1, keepdim=True)
        return (ent_coef * log_prob - min_qf_pi).mean()

    def _passes(self) -> dict:
        if self._passes_cache is None:
            passes = {"sample": self._sample, "target": self._target, "critic_loss": self._critic_loss,
                      "actor_loss": self._actor_loss}
            if self.compile_update:
                passes = {name: torch.compile(fn) for name, fn in passes.items()}
            self._passes_cache = passes
            LOGGER.info("SAC update: %s", "torch.compile" if self.compile_update else "eager")
        return self._passes_cache

    # ---------------------------------------------------------------- CUDA graph

    def _capturable_optimizers(self) -> None:
        """Rebuild the Adam optimizers with capturable=True (their step counters live on the GPU),
        keeping their state, so their steps can be captured."""
        for owner, name in ((self.actor, "optimizer"), (self.critic, "optimizer"), (self, "ent_coef_optimizer")):
            optimizer = getattr(owner, name)
            if optimizer is None:
                continue
            defaults = {**optimizer.defaults, "capturable": True, "foreach": False, "fused": None}
            rebuilt = type(optimizer)(optimizer.param_groups[0]["params"], **{
                k: v for k, v in defaults.items() if k in ("lr", "betas", "eps", "weight_decay", "amsgrad", "capturable")
            })
            rebuilt.load_state_dict(optimizer.state_dict())
            setattr(owner, name, rebuilt)

    def _replay(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        if self._graph is None:
            self._capture(batch)
        static_inputs, static_outputs, graph = self._graph
        for static, value in zip(static_inputs, batch):
            static.copy_(value, non_blocking=True)
        graph.replay()
        return tuple(out.clone() for out in static_outputs)

    def _capture(self, batch: tuple[torch.Tensor, ...]) -> None:
        self._capturable_optimizers()
        static_inputs = tuple(t.clone() for t in batch)
        # Capture needs warm-up steps (they allocate the optimizer state); they must not count as
        # training, so the weights and optimizer state are put back afterwards.
        weights = [(t, t.detach().clone()) for t in self.policy.parameters()]
        if self.log_ent_coef is not None:
            weights.append((self.log_ent_coef, self.log_ent_coef.detach().clone()))
        optimizers = [o for o in (self.actor.optimizer, self.critic.optimizer, self.ent_coef_optimizer) if o is not None]
        states = [{p: {k: v.clone() for k, v in o.state[p].items()} for p in o.state} for o in optimizers]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up steps on a side stream, as CUDA graph capture requires
            for _ in range(3):
                self._gradient_step(*static_inputs)
        torch.cuda.current_stream().wait_stream(side)
        with torch.no_grad():
            for tensor, saved in weights:
                tensor.copy_(saved)
            for optimizer, before in zip(optimizers, states):
                for param, state in optimizer.state.items():
                    for key, value in state.items():
                        if param in before:
                            value.copy_(before[param][key])
                        else:
                            value.zero_()  # a fresh optimizer: as if it had never stepped
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_outputs = self._gradient_step(*static_inputs)
        self._graph = (static_inputs, static_outputs, graph)
        LOGGER.info("SAC update captured in a CUDA graph (batch %d)", len(batch[0]))

