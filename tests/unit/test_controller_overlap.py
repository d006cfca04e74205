"""Controller updates overlapped with SAC (`options.overlap_update`): the gradient step runs in the
update process or on a worker thread (`options.overlap_worker`), and nothing the rollout or a
checkpoint sees differs from running it in place. The process itself: tests/unit/test_update_process.py."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import DummyVecEnv
from support.options_learner import (
    STATE_DIM,
    add_choices,
    assert_same_learner_state,
    cfg,
)

from trainer.config import load_config
from trainer.errors import NonFiniteError
from trainer.hierarchy import controller as controller_module
from trainer.hierarchy.controller import OptionsLearner
from trainer.hierarchy.option_buffer import OptionReplayBuffer

B1 = Path(__file__).resolve().parents[2] / "configs" / "phase_b1_options.yaml"

pytestmark = pytest.mark.usefixtures("one_torch_thread_on_two_cores")


WORKERS = ("process", "thread")


def rollout(overlap: bool, rounds: int = 12, worker: str = "process") -> tuple[OptionsLearner, list[np.ndarray], list]:
    """Choices and updates interleaved as in training: an update starts, the rollout chooses, the next one starts."""
    learner = OptionsLearner(cfg(overlap_update=overlap, overlap_worker=worker), seed=4)
    buffer, rng = OptionReplayBuffer(1000, STATE_DIM, 6), np.random.default_rng(0)
    chosen, stats = [add_choices(learner, buffer, rng)], []
    for _ in range(rounds):
        learner.start_update(learner.sample_batch(buffer))
        chosen.append(add_choices(learner, buffer, rng))
        stats.append(learner.finish_update())
    return learner, chosen, stats


def test_dropout_leaves_torchs_global_rng_alone():
    """The controller's dropout draws from its own generator: SAC's stream (torch's global RNG) is the
    same whether or not the controller trained, so a worker thread cannot reorder either stream."""
    learner, _, _ = rollout(overlap=False, rounds=2)
    learner._controller.train()
    before = torch.get_rng_state()
    learner._controller(torch.ones(4, STATE_DIM))
    assert torch.equal(torch.get_rng_state(), before)


def test_dropout_masks_come_from_the_learners_seed():
    a = OptionsLearner(cfg(), seed=1)
    b = OptionsLearner(cfg(), seed=1)
    for learner in (a, b):
        learner._controller.train()
    torch.manual_seed(123)
    first = a._controller(torch.ones(64, STATE_DIM))[1]
    torch.manual_seed(999)  # another global stream changes nothing
    second = b._controller(torch.ones(64, STATE_DIM))[1]
    assert torch.equal(first, second)
    assert not torch.equal(first, a._controller(torch.ones(64, STATE_DIM))[1])  # dropout is on


@pytest.mark.parametrize("worker", WORKERS)
def test_overlapped_updates_are_bit_identical_to_updates_in_place(worker):
    """Same choices (the rollout reads the count, the temperature and the behaviour snapshot while an
    update is in flight), same stats, same weights and optimizer state; refreshes included (every 3)."""
    overlapped, chosen_overlapped, stats_overlapped = rollout(overlap=True, worker=worker)
    in_place, chosen_in_place, stats_in_place = rollout(overlap=False)
    assert overlapped.overlaps_updates and not in_place.overlaps_updates
    assert overlapped.last_overlap == worker and in_place.last_overlap is None  # the worker really ran updates
    assert all(np.array_equal(a, b) for a, b in zip(chosen_overlapped, chosen_in_place))
    assert stats_overlapped == stats_in_place
    assert overlapped.num_updates == in_place.num_updates == 12
    assert overlapped.current_temperature == in_place.current_temperature
    assert_same_learner_state(overlapped.state_dict(), in_place.state_dict())


def test_an_overlapped_update_runs_on_the_worker_thread_while_the_rollout_goes_on(monkeypatch):
    learner = OptionsLearner(cfg(overlap_update=True, overlap_worker="thread"), seed=0)
    buffer, rng = OptionReplayBuffer(1000, STATE_DIM, 6), np.random.default_rng(0)
    add_choices(learner, buffer, rng)
    release, seen = threading.Event(), {}
    step = learner._gradient_step

    def held_step(*args):
        seen["released"] = release.wait(timeout=5)  # False if start_update waited for this step
        seen["thread"] = threading.current_thread().name
        return step(*args)

    monkeypatch.setattr(learner, "_gradient_step", held_step)
    learner.start_update(learner.sample_batch(buffer))
    assert learner.num_updates == 1  # settled before the step finishes
    add_choices(learner, buffer, rng)  # the rollout chooses while the step is held
    release.set()
    stats = learner.finish_update()
    assert seen == {"released": True, "thread": seen["thread"]}
    assert seen["thread"].startswith("options-controller")
    assert stats is not None and learner.last_stats is stats


@pytest.mark.parametrize("worker", WORKERS)
def test_the_update_that_refreshes_the_behaviour_runs_in_place(worker):
    learner = OptionsLearner(cfg(overlap_update=True, overlap_worker=worker, behaviour_refresh_updates=1), seed=0)
    buffer, rng = OptionReplayBuffer(1000, STATE_DIM, 6), np.random.default_rng(0)
    add_choices(learner, buffer, rng)
    learner.start_update(learner.sample_batch(buffer))
    assert learner._pending is None  # nothing left in flight: the next choice uses the new snapshot
    behaviour, controller = learner.behaviour.state_dict(), learner._controller.state_dict()
    assert all(torch.equal(behaviour[name], controller[name]) for name in controller)


@pytest.mark.parametrize("worker", WORKERS)
def test_a_workers_non_finite_loss_surfaces_when_the_update_is_collected(worker):
    learner = OptionsLearner(cfg(overlap_update=True, overlap_worker=worker), seed=0)
    buffer, rng = OptionReplayBuffer(1000, STATE_DIM, 6), np.random.default_rng(0)
    add_choices(learner, buffer, rng)
    batch = learner.sample_batch(buffer)
    batch.rewards[0] = np.nan
    before = [p.detach().clone() for p in learner._controller.parameters()]
    learner.start_update(batch)  # returns: the step is on the worker
    assert learner._pending is not None and learner.last_overlap == worker
    with pytest.raises(NonFiniteError, match="update 1"):
        learner.finish_update()
    # nothing was stepped, counted or annealed
    assert all(torch.equal(p.detach(), b) for p, b in zip(learner._controller.parameters(), before))
    assert learner.num_updates == 0 and learner.current_temperature == learner.cfg.temperature
    assert learner.finish_update() is None  # collected once; the learner is usable again


@pytest.mark.parametrize("worker", WORKERS)
def test_abandon_update_drops_the_workers_error_for_the_callers_own(worker):
    learner = OptionsLearner(cfg(overlap_update=True, overlap_worker=worker), seed=0)
    buffer, rng = OptionReplayBuffer(1000, STATE_DIM, 6), np.random.default_rng(0)
    add_choices(learner, buffer, rng)
    batch = learner.sample_batch(buffer)
    batch.rewards[:] = np.inf
    learner.start_update(batch)
    learner.abandon_update()
    assert learner._pending is None and learner.num_updates == 0


@pytest.mark.parametrize("overrides", [{"overlap_update": False}, {"policy_loss": "seed"}])
def test_updates_stay_in_place_where_the_rollout_reads_the_trained_network(overrides):
    """The seed's loss chooses with the controller itself, so its updates cannot overlap the rollout."""
    learner = OptionsLearner(cfg(**overrides), seed=0)
    assert not learner.overlaps_updates
    buffer, rng = OptionReplayBuffer(1000, STATE_DIM, 6), np.random.default_rng(0)
    add_choices(learner, buffer, rng)
    learner.start_update(learner.sample_batch(buffer))
    assert learner._pending is None and learner.last_overlap is None


@pytest.mark.slow
@pytest.mark.parametrize("worker", WORKERS)
def test_a_real_run_with_overlap_is_the_run_without(worker):
    """HierarchicalSAC.learn on the bundled SPY bars: SAC's weights, the controller's, the option
    usage and every monitor record agree bit for bit with overlap_update on and off."""
    from trainer.data.features import compute_features
    from trainer.data.loaders import bundled_path, load_ohlcv
    from trainer.envs.trading_env import TradingEnv
    from trainer.hierarchy.hierarchical_sac import HierarchicalSAC

    features = compute_features(load_ohlcv(bundled_path("SPY")).iloc[:300])

    def run(overlap: bool) -> HierarchicalSAC:
        config = load_config(B1, {
            "sac.net_arch": [32, 32], "sac.learning_starts": 50, "sac.buffer_size": 2000, "sac.batch_size": 32,
            "options.hidden_dim": 32, "options.warmup_steps": 50, "options.batch_size": 8,
            "options.train_freq": 2, "options.behaviour_refresh_updates": 5,
            "options.monitor.window_steps": 50, "options.monitor.collapse_patience": 100,
            "environment.window_size": 10, "environment.episode_length": 60, "options.state_dim": 108,
            "training.device": "cpu", "options.overlap_update": overlap, "options.overlap_worker": worker,
        })
        venv = DummyVecEnv([lambda: TradingEnv(features, config.environment) for _ in range(2)])
        return HierarchicalSAC(config, venv, seed=0).learn(300)

    overlapped, in_place = run(True), run(False)
    assert overlapped.learner.last_overlap == worker and overlapped.learner.num_updates >= 50
    assert overlapped.learner._pending is None  # learn() collected the last update
    assert overlapped.monitor.records == in_place.monitor.records
    assert np.array_equal(overlapped.option_env.totals.steps, in_place.option_env.totals.steps)
    for left, right in ((overlapped.model.policy, in_place.model.policy), (overlapped.learner.controller, in_place.learner.controller)):
        theirs = right.state_dict()
        assert all(torch.equal(tensor, theirs[name]) for name, tensor in left.state_dict().items())


@pytest.mark.parametrize(("threads", "cores", "overlapped"), [(1, 2, True), (2, 2, False), (2, 4, True), (1, 1, False)])
def test_updates_overlap_only_where_sac_leaves_cores_idle(monkeypatch, threads, cores, overlapped):
    """A worker at torch's intra-op width beside SAC needs 2 x threads cores; with fewer it only
    contends with SAC (two threads on two cores: 54 env steps/s overlapped, 75 in place)."""
    monkeypatch.setattr(controller_module, "available_cores", lambda: cores)
    torch.set_num_threads(threads)  # the autouse fixture restores it
    learner = OptionsLearner(cfg(overlap_update=True), seed=0)
    buffer, rng = OptionReplayBuffer(1000, STATE_DIM, 6), np.random.default_rng(0)
    add_choices(learner, buffer, rng)
    learner.start_update(learner.sample_batch(buffer))
    assert (learner.last_overlap == "process") is overlapped
    assert learner.finish_update() is not None
