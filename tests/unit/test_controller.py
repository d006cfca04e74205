"""OptionsController / OptionsLearner against the seed's Fixes 3-5: network shapes, masked selection,
temperature annealing, normalised advantages, the entropy bonus, gradient clipping, non-finite losses.

Expected losses are recomputed here with torch from the same network outputs, following the seed's
formulas (not the code under test).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from trainer.config import OptionsConfig
from trainer.errors import NonFiniteError
from trainer.hierarchy.controller import OptionsController, OptionsLearner
from trainer.hierarchy.option_buffer import OptionBatch

STATE_DIM = 12


def small_cfg(**overrides) -> OptionsConfig:
    # The seed loss: these tests pin its formulas (the clipped default has tests of its own).
    base = {"state_dim": STATE_DIM, "hidden_dim": 16, "dropout": 0.0, "policy_loss": "seed"}
    base.update(overrides)
    return OptionsConfig(**base)


def make_batch(n=8, seed=0, reward_scale=10.0, all_masks=True) -> OptionBatch:
    rng = np.random.default_rng(seed)
    masks = np.ones((n, 6), dtype=bool)
    if not all_masks:
        masks[:, 2] = False  # close_position unavailable everywhere
        masks[: n // 2, 3] = False
    options = np.array([rng.choice(np.flatnonzero(m)) for m in masks], dtype=np.int64)
    return OptionBatch(
        states=rng.normal(size=(n, STATE_DIM)).astype(np.float32),
        options=options,
        masks=masks,
        rewards=(rng.normal(size=n) * reward_scale).astype(np.float32),
        durations=rng.integers(1, 20, size=n).astype(np.int64),
        next_states=rng.normal(size=(n, STATE_DIM)).astype(np.float32),
        dones=(rng.random(n) < 0.25),
    )


def expected_terms(controller: nn.Module, cfg: OptionsConfig, batch: OptionBatch, temperature: float, normalise: bool):
    """The seed's update terms, written out from the network's outputs."""
    with torch.no_grad():
        states = torch.tensor(batch.states)
        next_states = torch.tensor(batch.next_states)
        logits, values = controller(states)
        _, next_values = controller(next_states)
        gamma_k = torch.tensor(cfg.gamma, dtype=torch.float64) ** torch.tensor(batch.durations, dtype=torch.float64)
        not_done = 1.0 - torch.tensor(batch.dones, dtype=torch.float64)
        returns = torch.tensor(batch.rewards, dtype=torch.float64) + gamma_k * not_done * next_values.double()
        adv = returns - values.double()
        raw_mean, raw_std = adv.mean().item(), adv.std().item()
        if normalise:
            adv = (adv - adv.mean()) / (adv.std() + cfg.advantage_epsilon)
        mask = torch.tensor(batch.masks)
        scaled = logits.double() / max(temperature, cfg.min_temperature)
        scaled = scaled.masked_fill(~mask, float("-inf"))
        logp = torch.log_softmax(scaled, dim=-1)
        selected = logp[torch.arange(len(batch.options)), torch.tensor(batch.options)]
        policy_loss = -(selected * adv).mean().item()
        value_loss = ((values.double() - returns) ** 2).mean().item()
        probs = logp.exp()
        entropy = -(probs * logp.masked_fill(~mask, 0.0)).sum(-1).mean().item()
    return {
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": entropy,
        "raw_mean": raw_mean,
        "raw_std": raw_std,
        "adv": adv,
    }


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------


def test_network_shapes_for_the_shipped_sizes():
    cfg = OptionsConfig()  # state_dim 578, hidden 512, dropout 0.1, 6 options
    net = OptionsLearner(cfg).controller
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    shapes = [(m.in_features, m.out_features) for m in linears]
    assert shapes == [(578, 512), (512, 512), (512, 6), (512, 1)]
    dropouts = [m.p for m in net.modules() if isinstance(m, nn.Dropout)]
    assert dropouts and all(p == pytest.approx(0.1) for p in dropouts)
    assert all(p.dtype == torch.float32 for p in net.parameters())
    logits, values = net(torch.zeros(4, 578))
    assert logits.shape == (4, 6)
    assert values.shape == (4,)
    assert logits.dtype == torch.float32 and values.dtype == torch.float32


def test_initial_policy_is_close_to_uniform():
    torch.manual_seed(0)
    net = OptionsController(STATE_DIM, 6, 16, 0.0)
    logits, _ = net(torch.randn(32, STATE_DIM))
    probs = torch.softmax(logits, dim=-1)
    assert torch.allclose(probs, torch.full_like(probs, 1 / 6), atol=0.02)


def test_acting_logits_are_the_noise_free_forwards_logits_exactly():
    """choose() takes its logits from acting_logits (no module dispatch, no value head): the same
    numbers as eval-mode forward, whatever mode the module was left in."""
    torch.manual_seed(0)
    net = OptionsController(STATE_DIM, 6, 16, 0.5)
    with torch.no_grad():
        net.option_head.weight.normal_()
        states = torch.randn(5, STATE_DIM)
        net.train()
        acting = net.acting_logits(states)
        net.eval()
        assert torch.equal(acting, net(states)[0])


def test_use_amp_refused_by_the_learner():
    cfg = small_cfg()
    object.__setattr__(cfg, "use_amp", True)  # bypass config validation on purpose
    with pytest.raises(ValueError, match="use_amp"):
        OptionsLearner(cfg)


# --------------------------------------------------------------------------------------------
# Choosing options
# --------------------------------------------------------------------------------------------


def test_select_options_never_picks_a_masked_option():
    learner = OptionsLearner(small_cfg(), seed=1)
    rng = np.random.default_rng(3)
    n = 400
    masks = rng.random((n, 6)) < 0.5
    masks[:, 4] |= ~masks.any(axis=1)  # no empty rows
    masks[0] = [False, False, False, False, False, True]  # only wait
    states = rng.normal(size=(n, STATE_DIM)).astype(np.float32)
    for _ in range(5):
        chosen = learner.select_options(states, masks)
        assert chosen.shape == (n,)
        assert masks[np.arange(n), chosen].all()
        assert chosen[0] == 5
    chosen = learner.select_options(states, masks, deterministic=True)
    assert masks[np.arange(n), chosen].all()


def test_select_options_explores_every_available_option():
    learner = OptionsLearner(small_cfg(), seed=2)
    states = np.zeros((600, STATE_DIM), dtype=np.float32)
    masks = np.ones((600, 6), dtype=bool)
    masks[:, 1] = False
    counts = np.bincount(learner.select_options(states, masks), minlength=6)
    assert counts[1] == 0
    # near-uniform over the five available options: each roughly 120 of 600
    assert all(counts[i] > 60 for i in (0, 2, 3, 4, 5))


# --------------------------------------------------------------------------------------------
# Temperature annealing (Fix 5)
# --------------------------------------------------------------------------------------------


def test_temperature_after_ten_updates():
    cfg = small_cfg(temperature=1.0, temperature_decay=0.9995, min_temperature=0.1)
    learner = OptionsLearner(cfg)
    for i in range(10):
        stats = learner.train_options_controller(make_batch(seed=i))
        assert stats.temperature == learner.current_temperature
    assert learner.num_updates == 10
    assert learner.current_temperature == pytest.approx(max(0.1, 1.0 * 0.9995**10), rel=1e-12)
    assert learner.current_temperature == pytest.approx(0.99501123, abs=1e-8)


def test_temperature_hits_the_floor():
    cfg = small_cfg(temperature=2.0, temperature_decay=0.5, min_temperature=0.1)
    learner = OptionsLearner(cfg)
    temps = [learner.train_options_controller(make_batch(seed=i)).temperature for i in range(6)]
    # 2 * 0.5**N: 1, 0.5, 0.25, 0.125, then max(0.1, 0.0625) = 0.1, and it stays there
    assert temps == pytest.approx([1.0, 0.5, 0.25, 0.125, 0.1, 0.1], rel=1e-12)
    assert learner.current_temperature == 0.1


# --------------------------------------------------------------------------------------------
# The update (Fixes 3 and 4)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalise", [True, False])
def test_policy_loss_uses_normalised_advantages(normalise):
    torch.manual_seed(0)
    cfg = small_cfg(normalize_advantages=normalise, temperature=1.5, min_temperature=0.1)
    learner = OptionsLearner(cfg)
    batch = make_batch(n=16, seed=5, reward_scale=50.0, all_masks=False)
    before = copy.deepcopy(learner.controller).eval()
    expected = expected_terms(before, cfg, batch, temperature=1.5, normalise=normalise)
    other = expected_terms(before, cfg, batch, temperature=1.5, normalise=not normalise)

    stats = learner.train_options_controller(batch)

    assert stats.policy_loss == pytest.approx(expected["policy_loss"], rel=1e-4, abs=1e-6)
    assert stats.policy_loss != pytest.approx(other["policy_loss"], rel=1e-2)  # the batch tells them apart
    assert stats.value_loss == pytest.approx(expected["value_loss"], rel=1e-4)
    assert stats.entropy == pytest.approx(expected["entropy"], rel=1e-4)
    assert stats.advantage_mean == pytest.approx(expected["raw_mean"], rel=1e-4, abs=1e-5)
    assert stats.advantage_std == pytest.approx(expected["raw_std"], rel=1e-4)
    if normalise:
        adv = expected["adv"]
        assert adv.mean().item() == pytest.approx(0.0, abs=1e-6)
        assert adv.std().item() == pytest.approx(1.0, abs=1e-6)


def test_entropy_of_masked_uniform_policy():
    cfg = small_cfg()
    learner = OptionsLearner(cfg)
    with torch.no_grad():
        learner.controller.option_head.weight.zero_()
        learner.controller.option_head.bias.zero_()
    batch = make_batch(n=8, all_masks=False)
    stats = learner.train_options_controller(batch)
    # rows 0-3: 4 options available -> log 4; rows 4-7: 5 available -> log 5
    assert stats.entropy == pytest.approx((math.log(4) + math.log(5)) / 2, rel=1e-6)


def _entropy_after_one_step(entropy_bonus: float) -> tuple[float, float]:
    """A skewed policy, no policy or value signal (equal advantages, value weight 0): only the
    entropy term moves the logits. Returns (entropy before, entropy after) on the batch's states."""
    torch.manual_seed(0)
    cfg = small_cfg(entropy_bonus=entropy_bonus, value_loss_weight=0.0, options_lr=0.05)
    learner = OptionsLearner(cfg)
    with torch.no_grad():
        learner.controller.option_head.bias.copy_(torch.tensor([3.0, 0.0, 0.0, 0.0, 0.0, -1.0]))
        learner.controller.value_head.weight.zero_()
        learner.controller.value_head.bias.zero_()
    batch = make_batch(n=8)
    batch.rewards[:] = 1.0
    batch.dones[:] = True  # returns = 1 and values = 0 everywhere: advantages all equal -> normalised to 0
    states = torch.tensor(batch.states)

    def entropy() -> float:
        with torch.no_grad():
            logp = torch.log_softmax(learner.controller(states)[0], -1)
            return float(-(logp.exp() * logp).sum(-1).mean())

    before = entropy()
    stats = learner.train_options_controller(batch)
    assert stats.policy_loss == pytest.approx(0.0, abs=1e-6)
    return before, entropy()


def test_entropy_bonus_raises_entropy():
    before, after = _entropy_after_one_step(0.5)
    assert after > before + 1e-3


def test_no_entropy_bonus_leaves_policy_unchanged():
    before, after = _entropy_after_one_step(0.0)
    assert after == pytest.approx(before, abs=1e-7)


def test_higher_entropy_bonus_lowers_the_loss_for_a_uniform_policy():
    """total = policy + w * value - bonus * H; with a uniform policy H = log 6, so the loss the
    optimizer sees drops by (bonus_b - bonus_a) * log 6. Captured from the backward call."""
    losses = {}
    for bonus in (0.0, 0.1):
        torch.manual_seed(0)
        learner = OptionsLearner(small_cfg(entropy_bonus=bonus))
        with torch.no_grad():
            learner.controller.option_head.weight.zero_()
            learner.controller.option_head.bias.zero_()
        seen = []
        original = torch.Tensor.backward

        def spy(self, *args, **kwargs):
            seen.append(self.item())
            return original(self, *args, **kwargs)

        torch.Tensor.backward = spy
        try:
            learner.train_options_controller(make_batch(n=8, seed=1))
        finally:
            torch.Tensor.backward = original
        assert len(seen) == 1
        losses[bonus] = seen[0]
    assert losses[0.1] < losses[0.0]
    assert losses[0.0] - losses[0.1] == pytest.approx(0.1 * math.log(6), rel=1e-4)


# --------------------------------------------------------------------------------------------
# Gradient clipping
# --------------------------------------------------------------------------------------------


def _total_loss(controller, cfg, batch, temperature):
    """The seed's total loss as a differentiable torch expression (float32, like the learner)."""
    states = torch.tensor(batch.states)
    with torch.no_grad():
        _, next_values = controller(torch.tensor(batch.next_states))
        returns = torch.tensor(batch.rewards) + (cfg.gamma ** torch.tensor(batch.durations, dtype=torch.float32)) * (
            1.0 - torch.tensor(batch.dones, dtype=torch.float32)
        ) * next_values
    logits, values = controller(states)
    adv = returns - values.detach()
    adv = (adv - adv.mean()) / (adv.std() + cfg.advantage_epsilon)
    mask = torch.tensor(batch.masks)
    scaled = (logits / max(temperature, cfg.min_temperature)).masked_fill(~mask, float("-inf"))
    logp = torch.log_softmax(scaled, -1)
    policy = -(logp.gather(1, torch.tensor(batch.options)[:, None]).squeeze(1) * adv).mean()
    value = ((values - returns) ** 2).mean()
    entropy = -(logp.exp() * logp.masked_fill(~mask, 0.0)).sum(-1).mean()
    return policy + cfg.value_loss_weight * value - cfg.entropy_bonus * entropy


@pytest.mark.parametrize("grad_clip", [0.5, 1e-3])
def test_gradient_is_clipped_and_grad_norm_is_the_pre_clip_norm(grad_clip):
    torch.manual_seed(0)
    cfg = small_cfg(grad_clip=grad_clip)
    learner = OptionsLearner(cfg)
    batch = make_batch(n=16, seed=7, reward_scale=100.0)

    reference = copy.deepcopy(learner.controller)
    _total_loss(reference, cfg, batch, cfg.temperature).backward()
    pre_clip = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in reference.parameters()))
    assert pre_clip > grad_clip  # the batch's gradient really needs clipping

    # plain SGD with lr 1: the parameter change is exactly minus the (clipped) gradient
    learner.optimizer = torch.optim.SGD(learner.controller.parameters(), lr=1.0)
    before = [p.detach().clone() for p in learner.controller.parameters()]
    stats = learner.train_options_controller(batch)

    assert stats.grad_norm == pytest.approx(pre_clip, rel=1e-4)
    step = math.sqrt(sum(float(((p.detach() - b).double() ** 2).sum()) for p, b in zip(learner.controller.parameters(), before)))
    assert step == pytest.approx(grad_clip, rel=1e-4)
    # and in the direction of the unclipped gradient
    for p, b, r in zip(learner.controller.parameters(), before, reference.parameters()):
        torch.testing.assert_close(b - p.detach(), r.grad * (grad_clip / pre_clip), rtol=1e-3, atol=1e-7)


def test_tiny_grad_clip_gives_a_tiny_update_with_sgd():
    torch.manual_seed(0)
    learner = OptionsLearner(small_cfg(grad_clip=1e-6))
    learner.optimizer = torch.optim.SGD(learner.controller.parameters(), lr=1.0)
    before = [p.detach().clone() for p in learner.controller.parameters()]
    learner.train_options_controller(make_batch(n=16, seed=7, reward_scale=100.0))
    biggest = max(float((p.detach() - b).abs().max()) for p, b in zip(learner.controller.parameters(), before))
    assert 0 < biggest <= 1e-6 + 1e-12


# --------------------------------------------------------------------------------------------
# Non-finite batches
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["rewards", "states", "next_states"])
def test_nan_in_the_batch_raises_non_finite_error(field):
    learner = OptionsLearner(small_cfg())
    batch = make_batch()
    getattr(batch, field)[0] = np.nan
    before = [p.detach().clone() for p in learner.controller.parameters()]
    with pytest.raises(NonFiniteError):
        learner.train_options_controller(batch)
    # nothing was stepped or annealed
    assert all(torch.equal(p.detach(), b) for p, b in zip(learner.controller.parameters(), before))
    assert learner.num_updates == 0
    assert learner.current_temperature == 1.0


def test_state_dict_round_trip_keeps_temperature_and_updates():
    learner = OptionsLearner(small_cfg(temperature_decay=0.9))
    for i in range(3):
        learner.train_options_controller(make_batch(seed=i))
    clone = OptionsLearner(small_cfg(temperature_decay=0.9))
    clone.load_state_dict(learner.state_dict())
    assert clone.current_temperature == pytest.approx(0.9**3)
    assert clone.num_updates == 3
    states = np.random.default_rng(0).normal(size=(5, STATE_DIM)).astype(np.float32)
    masks = np.ones((5, 6), dtype=bool)
    assert (clone.select_options(states, masks) == learner.select_options(states, masks)).all()
