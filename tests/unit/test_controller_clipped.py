"""The default controller update: PPO's clipped surrogate against the behaviour probability stored at
selection, the behaviour snapshot, recent-sample batches, noise-free ratios and separate RNG streams.
Expected values are recomputed here from the network's outputs with the issue's formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.config import OptionsConfig
from trainer.hierarchy.controller import OptionsLearner, masked_log_softmax
from trainer.hierarchy.option_buffer import OptionReplayBuffer

STATE_DIM = 12


def cfg(**overrides) -> OptionsConfig:
    base = {"state_dim": STATE_DIM, "hidden_dim": 16, "dropout": 0.0, "batch_size": 8}
    base.update(overrides)
    return OptionsConfig(**base)


def filled_buffer(learner: OptionsLearner, n: int = 64, seed: int = 0) -> OptionReplayBuffer:
    rng = np.random.default_rng(seed)
    buffer = OptionReplayBuffer(1000, STATE_DIM, 6)
    states = rng.normal(size=(n, STATE_DIM)).astype(np.float32)
    masks = np.ones((n, 6), dtype=bool)
    masks[::3, 2] = False
    options, log_probs = learner.choose(states, masks)
    for i in range(n):
        buffer.add(states[i], options[i], masks[i], rng.normal(), int(rng.integers(1, 9)), states[(i + 1) % n],
                   bool(rng.random() < 0.2), log_probs[i], learner.effective_temperature, learner.num_updates)
    return buffer


def test_behaviour_log_prob_is_the_masked_tempered_log_probability_of_the_choice():
    learner = OptionsLearner(cfg(temperature=0.5), seed=3)
    with torch.no_grad():
        learner.behaviour.option_head.weight.normal_()  # a policy far from uniform
    states = np.random.default_rng(1).normal(size=(50, STATE_DIM)).astype(np.float32)
    masks = np.ones((50, 6), dtype=bool)
    masks[:, 1] = False
    options, log_probs = learner.choose(states, masks)
    assert not (options == 1).any()
    logits, _ = learner.behaviour(torch.tensor(states))
    expected = masked_log_softmax(logits / 0.5, torch.tensor(masks))[torch.arange(50), torch.tensor(options)]
    np.testing.assert_allclose(log_probs, expected.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_clipped_policy_loss_by_hand():
    learner = OptionsLearner(cfg(clip_range=0.2), seed=0)
    buffer = filled_buffer(learner)
    batch = buffer.sample(32, np.random.default_rng(0))
    # Pretend the behaviour policy was different, so ratios spread on both sides of the clip.
    batch.behaviour_log_probs = batch.behaviour_log_probs + np.random.default_rng(5).normal(0, 0.3, 32).astype(np.float32)
    net = learner.controller
    with torch.no_grad():
        net.eval()
        logits, values = net(torch.tensor(batch.states))
        _, next_values = net(torch.tensor(batch.next_states))
        returns = torch.tensor(batch.rewards) + learner.cfg.gamma ** torch.tensor(batch.durations, dtype=torch.float32) * (
            1 - torch.tensor(batch.dones, dtype=torch.float32)) * next_values
        adv = returns - values
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        logp = masked_log_softmax(logits / torch.tensor(batch.temperatures)[:, None], torch.tensor(batch.masks))
        ratio = torch.exp(logp[torch.arange(32), torch.tensor(batch.options)] - torch.tensor(batch.behaviour_log_probs))
        expected = -torch.min(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean().item()
        clip_fraction = ((ratio - 1).abs() > 0.2).float().mean().item()
    stats = learner.train_options_controller(batch)
    assert stats.policy_loss == pytest.approx(expected, rel=1e-5)
    assert stats.clip_fraction == pytest.approx(clip_fraction)
    assert 0 < stats.clip_fraction < 1
    assert stats.approx_kl > 0


def test_fresh_samples_have_ratio_one_whatever_the_temperature_and_dropout():
    """The ratio is taken at the selection temperature, without dropout: a sample chosen by the
    network as it is now has rho = 1 exactly, so nothing is clipped and the KL estimate is 0."""
    learner = OptionsLearner(cfg(dropout=0.5, temperature=1.0, temperature_decay=0.5, min_temperature=0.1), seed=0)
    learner.current_temperature = 0.3  # annealed since the samples were chosen below
    buffer = filled_buffer(learner)
    stats = learner.train_options_controller(buffer.sample(32, np.random.default_rng(0)))
    assert stats.clip_fraction == 0.0
    assert stats.approx_kl == pytest.approx(0.0, abs=1e-7)


def test_behaviour_snapshot_refreshes_every_k_updates():
    learner = OptionsLearner(cfg(behaviour_refresh_updates=3), seed=0)
    buffer = filled_buffer(learner)

    def same(a, b):
        return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))

    for update in range(1, 7):
        learner.train_options_controller(buffer.sample(8, learner.sample_rng))
        assert same(learner.behaviour, learner.controller) == (update % 3 == 0), update


def test_stochastic_choice_uses_the_behaviour_policy_and_deterministic_the_controller():
    learner = OptionsLearner(cfg(), seed=0)
    with torch.no_grad():
        learner.controller.option_head.bias.copy_(torch.tensor([0, 0, 0, 0, 0, 50.0]))
        learner.behaviour.option_head.bias.copy_(torch.tensor([50.0, 0, 0, 0, 0, 0]))
    states = np.zeros((20, STATE_DIM), dtype=np.float32)
    masks = np.ones((20, 6), dtype=bool)
    assert (learner.select_options(states, masks) == 0).all()
    assert (learner.select_options(states, masks, deterministic=True) == 5).all()


def test_the_seed_loss_acts_with_the_controller_itself():
    learner = OptionsLearner(cfg(policy_loss="seed"), seed=0)
    assert learner.behaviour is learner.controller


def test_recent_sampling_draws_only_recent_choices():
    buffer = OptionReplayBuffer(100, STATE_DIM, 6)
    for i in range(60):
        buffer.add(np.zeros(STATE_DIM), 0, np.ones(6, bool), 0.0, 1, np.zeros(STATE_DIM), False,
                   selected_at=i // 2)  # two choices per update: updates 0..29
    batch = buffer.sample_recent(16, np.random.default_rng(0), current_update=30, max_age=10)
    assert batch.selected_at.min() >= 20
    assert set(batch.selected_at) <= set(range(20, 30))


def test_recent_sampling_falls_back_to_the_newest_batch_size_transitions():
    buffer = OptionReplayBuffer(10, STATE_DIM, 6)  # a ring that has wrapped: newest at the end of the add order
    for i in range(25):
        buffer.add(np.full(STATE_DIM, i), 0, np.ones(6, bool), 0.0, 1, np.zeros(STATE_DIM), False, selected_at=0)
    batch = buffer.sample_recent(4, np.random.default_rng(0), current_update=100, max_age=5)
    assert set(batch.states[:, 0].astype(int)) <= {21, 22, 23, 24}


def test_batch_sampling_does_not_move_the_option_stream():
    a, b = OptionsLearner(cfg(), seed=7), OptionsLearner(cfg(), seed=7)
    buffer = filled_buffer(OptionsLearner(cfg(), seed=1))
    for _ in range(5):
        b.sample_batch(buffer)  # b draws batches, a does not
    states = np.random.default_rng(2).normal(size=(40, STATE_DIM)).astype(np.float32)
    masks = np.ones((40, 6), dtype=bool)
    assert (a.select_options(states, masks) == b.select_options(states, masks)).all()


def test_state_dict_keeps_the_behaviour_snapshot_and_both_streams():
    learner = OptionsLearner(cfg(behaviour_refresh_updates=2), seed=0)
    buffer = filled_buffer(learner)
    for _ in range(3):
        learner.train_options_controller(learner.sample_batch(buffer))
    clone = OptionsLearner(cfg(behaviour_refresh_updates=2), seed=99)
    clone.load_state_dict(learner.state_dict())
    states = np.random.default_rng(4).normal(size=(30, STATE_DIM)).astype(np.float32)
    masks = np.ones((30, 6), dtype=bool)
    assert (clone.choose(states, masks)[1] == learner.choose(states, masks)[1]).all()
    np.testing.assert_array_equal(clone.sample_batch(buffer).states, learner.sample_batch(buffer).states)


def test_the_clipped_loss_refuses_a_batch_without_behaviour_probabilities():
    learner = OptionsLearner(cfg(), seed=0)
    batch = filled_buffer(learner).sample(8, np.random.default_rng(0))
    batch.behaviour_log_probs = None
    with pytest.raises(ValueError, match="behaviour_log_probs"):
        learner.train_options_controller(batch)


def _kl_batch(learner: OptionsLearner):
    batch = filled_buffer(learner).sample(32, np.random.default_rng(0))
    # behaviour probabilities from a different policy: the batch's approx KL is well above zero
    batch.behaviour_log_probs = batch.behaviour_log_probs + np.random.default_rng(5).normal(0, 0.5, 32).astype(np.float32)
    return batch


@pytest.mark.parametrize("target_kl, held", [(None, False), (10.0, False), (1e-4, True)])
def test_past_target_kl_the_update_trains_the_value_head_only(target_kl, held):
    learner = OptionsLearner(cfg(target_kl=target_kl), seed=0)
    batch = _kl_batch(learner)
    head = learner.controller.option_head.weight.detach().clone()
    value_head = learner.controller.value_head.weight.detach().clone()
    stats = learner.train_options_controller(batch)
    assert stats.approx_kl > 1e-3
    assert stats.policy_held is held
    # the option head gets gradient from the policy and entropy terms only
    assert torch.equal(learner.controller.option_head.weight, head) is held
    assert not torch.equal(learner.controller.value_head.weight, value_head)
    assert learner.policy_held_updates == int(held)
    clone = OptionsLearner(cfg(target_kl=target_kl), seed=0)
    clone.load_state_dict(learner.state_dict())
    assert clone.policy_held_updates == int(held)


def test_the_shipped_config_limits_the_kl():
    assert OptionsConfig().target_kl == 0.02
