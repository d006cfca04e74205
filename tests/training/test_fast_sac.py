"""FastSAC (trainer/training/fast_sac.py): with its flags off it is SB3's SAC bit for bit; its own
update path (the one `sac.compile` compiles and `sac.cuda_graphs` captures) computes SB3's update."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import gymnasium as gym
import pytest
import torch
from stable_baselines3 import SAC

from trainer.training.fast_sac import FastSAC

STEPS = 300


def make(cls, **kwargs):
    return cls("MlpPolicy", gym.make("Pendulum-v1"), learning_starts=100, batch_size=32,
               policy_kwargs={"net_arch": [32, 32]}, seed=3, verbose=0, device="cpu", **kwargs)


def weights(model) -> dict[str, torch.Tensor]:
    return {**model.policy.state_dict(), "log_ent_coef": model.log_ent_coef.detach()}


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    """Plain SB3 SAC after 300 steps (200 gradient steps)."""
    torch.set_num_threads(1)
    return weights(make(SAC).learn(STEPS))


def test_with_the_flags_off_it_is_sb3_sac_bit_for_bit(reference):
    model = make(FastSAC)
    assert not model.fast_path
    trained = weights(model.learn(STEPS))
    assert all(torch.equal(trained[k], reference[k]) for k in reference)


def test_its_update_path_computes_sb3s_update(reference, monkeypatch):
    """The fast path without compilation (torch.compile replaced by the identity): the same ops in
    the same order as SB3's train, so the same weights exactly."""
    monkeypatch.setattr(torch, "compile", lambda fn: fn)
    model = make(FastSAC, compile_update=True)
    trained = weights(model.learn(STEPS))
    assert model._passes_cache is not None  # the fast path ran
    assert all(torch.equal(trained[k], reference[k]) for k in reference)
    logged = model.logger.name_to_value
    assert {"train/actor_loss", "train/critic_loss", "train/ent_coef", "train/ent_coef_loss"} <= set(logged)


def test_the_update_path_never_reads_a_tensor_on_the_host(monkeypatch):
    """What `sac.cuda_graphs` captures must not sync with the host (on a GPU that fails the capture:
    "operation not permitted when stream is capturing"). On CPU: inside each gradient step of the
    fast path, reading a tensor's value (bool, item, tolist) is refused. torch.distributions'
    argument checks, on by default, read one per distribution SB3's actor builds."""
    monkeypatch.setattr(torch, "compile", lambda fn: fn)
    # Adam reads its step counter with item() unless it is capturable, as the graph path rebuilds it
    # (capturable Adam needs a GPU): here the counter stays a tensor, as it does there.
    monkeypatch.setattr(sys.modules["torch.optim.adam"], "_get_value", lambda value: value)
    model = make(FastSAC, compile_update=True)
    gradient_step, steps = model._gradient_step, []

    def refuse(*_args):
        raise AssertionError("a tensor was read on the host inside the SAC update")

    def without_host_reads(*batch):
        with monkeypatch.context() as patched:
            for method in ("__bool__", "item", "tolist"):
                patched.setattr(torch.Tensor, method, refuse)
            steps.append(gradient_step(*batch))
        return steps[-1]

    model._gradient_step = without_host_reads
    model.learn(STEPS)
    assert len(steps) == STEPS - 100  # every gradient step after learning_starts ran under the check


def test_compiled_it_trains_like_sb3_within_float_tolerance(reference, monkeypatch):
    """Real torch.compile: dynamo traces the four passes and AOT autograd builds their backward
    graphs (backend aot_eager), so graph breaks, guards and the traced losses are what is checked.
    Inductor's code generation is left to benchmarks/sac_update.py and the GPU script: on a cold
    cache its C++ compiles took 81 s of a fresh clone's suite on 2 cores, for PyTorch's own code."""
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn: compile_(fn, backend="aot_eager"))
    model = make(FastSAC, compile_update=True)
    trained = weights(model.learn(STEPS))
    for key, value in reference.items():
        assert torch.allclose(trained[key], value, rtol=1e-4, atol=1e-5), key


def test_cuda_graphs_need_a_gpu():
    with pytest.raises(ValueError, match="needs device cuda"):
        make(FastSAC, cuda_graphs=True)


def test_the_config_chooses_the_update_and_the_optimizer(tmp_path):
    from trainer.config import ConfigError, load_config
    from trainer.envs.factory import load_market_data, make_vec_env
    from trainer.hierarchy.hierarchical_sac import build_sac

    base = str(Path(__file__).resolve().parents[2] / "configs" / "phase_a_baseline.yaml")
    config = load_config(base, {"sac.optimizer": "adam_foreach", "sac.compile": True, "sac.net_arch": [16],
                                "environment.window_size": 10})
    data = load_market_data(config)
    model = build_sac(config, make_vec_env(data.features["train"], config, 1, seed=0), seed=0)
    assert isinstance(model, FastSAC) and model.compile_update and not model.cuda_graphs
    assert model.actor.optimizer.defaults["foreach"] is True and model.critic.optimizer.defaults["foreach"] is True
    with pytest.raises(ConfigError, match="sac.cuda_graphs needs training.device cuda"):
        build_sac(load_config(base, {"sac.cuda_graphs": True, "training.device": "cpu"}), model.env, seed=0)
    with pytest.raises(ConfigError, match="sac.optimizer"):
        load_config(base, {"sac.optimizer": "sgd"})


def test_torch_threads_come_from_the_environment_when_it_sets_them(monkeypatch):
    from trainer.config import ConfigError
    from trainer.demo import demo_env
    from trainer.hierarchy.hierarchical_sac import torch_threads

    monkeypatch.delenv("TRAINER_TORCH_THREADS", raising=False)
    assert torch_threads(1) == 1
    monkeypatch.setenv("TRAINER_TORCH_THREADS", "2")
    assert torch_threads(1) == 2
    monkeypatch.setenv("TRAINER_TORCH_THREADS", "zero")
    with pytest.raises(ConfigError, match="TRAINER_TORCH_THREADS='zero'"):
        torch_threads(1)
    monkeypatch.delenv("TRAINER_TORCH_THREADS")
    # The demo trains one symbol at a time: two threads on a 2-core machine.
    assert demo_env(Path("/repo"), Path("/state"))["TRAINER_TORCH_THREADS"] == str(min(2, os.cpu_count() or 1))
