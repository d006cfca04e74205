"""The SAC update, variant by variant, on this machine: which settings make it fastest.

    .venv/bin/python benchmarks/sac_update.py [--updates 300] [--repeats 3] [--device cpu]

Part 1 times SAC gradient steps alone (`FastSAC.train`, the production network and batch of
configs/phase_b1_options.yaml, a replay buffer filled with random transitions), interleaving the
variants round-robin so machine load hits them all alike: torch threads 1 vs 2, Adam per-tensor
(SB3's default) vs foreach vs fused, SB3's update vs the compiled one (`sac.compile`), float32
matmul precision highest vs high. Each is reported as gradient steps/s and as a ratio to SB3's
defaults (1 thread, Adam per-tensor, eager, highest) measured in the same rounds.

Part 2 runs whole trainings (plain SAC on bundled SPY, 16 envs) with gradient_steps/train_freq
pairs that keep the seed's sample budget (one gradient step per vectorised step): (1, 1), (2, 2)
and (4, 4), as env steps/s.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {
    "SB3 defaults (1 thread, adam, eager)": {},
    "2 torch threads": {"threads": 2},
    "adam foreach": {"sac.optimizer": "adam_foreach"},
    "adam fused": {"sac.optimizer": "adam_fused"},
    "compiled update (sac.compile)": {"sac.compile": True},
    "compiled + adam foreach": {"sac.compile": True, "sac.optimizer": "adam_foreach"},
    "matmul precision high": {"sac.matmul_precision": "high"},
}


def build(overrides: dict, device: str, data, seed: int = 0):
    from trainer.config import load_config
    from trainer.envs.factory import make_vec_env
    from trainer.hierarchy.hierarchical_sac import build_sac

    settings = {k: v for k, v in overrides.items() if k != "threads"}
    config = load_config(ROOT / "configs" / "phase_b1_options.yaml", {**settings, "training.device": device})
    model = build_sac(config, make_vec_env(data.features["train"], config, 1, seed=seed), seed=seed)
    model._setup_learn(total_timesteps=1)  # the logger train() records to
    buffer = model.replay_buffer
    rng = np.random.default_rng(seed)
    for name in ("observations", "next_observations", "actions", "rewards"):
        array = getattr(buffer, name)
        array[...] = rng.standard_normal(array.shape, dtype=np.float32).clip(-1, 1)
    buffer.full = True
    return model, config.sac.batch_size


def part1(updates: int, repeats: int, device: str) -> None:
    from trainer.config import load_config
    from trainer.envs.factory import load_market_data

    data = load_market_data(load_config(ROOT / "configs" / "phase_b1_options.yaml"))
    models = {name: build(overrides, device, data) for name, overrides in VARIANTS.items()}
    for name, (model, batch) in models.items():  # warm-up (and compilation) outside the timing
        torch.set_num_threads(VARIANTS[name].get("threads", 1))
        model.train(gradient_steps=20, batch_size=batch)
    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(repeats):
        for name, (model, batch) in models.items():
            torch.set_num_threads(VARIANTS[name].get("threads", 1))
            torch.set_float32_matmul_precision(VARIANTS[name].get("sac.matmul_precision", "highest"))
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            model.train(gradient_steps=updates, batch_size=batch)
            if device == "cuda":
                torch.cuda.synchronize()
            rates[name].append(updates / (time.perf_counter() - start))
    base = max(rates["SB3 defaults (1 thread, adam, eager)"])
    model, batch = models["SB3 defaults (1 thread, adam, eager)"]
    print(f"Part 1: SAC gradient steps on {device}, net {list(model.policy.net_arch) if hasattr(model.policy, 'net_arch') else '?'}, "
          f"batch {batch}, obs {model.observation_space.shape[0]}, best of {repeats} x {updates} updates")
    for name, values in rates.items():
        print(f"  {name:<40} {max(values):8.1f} updates/s   x{max(values) / base:.2f}")


def part2(steps: int, device: str) -> None:
    from trainer.config import load_config
    from trainer.envs.factory import load_market_data, make_vec_env
    from trainer.hierarchy.hierarchical_sac import build_sac

    print(f"Part 2: plain SAC training on SPY, 16 envs, {steps} env steps, same sample budget")
    for train_freq, gradient_steps in ((1, 1), (2, 2), (4, 4)):
        config = load_config(ROOT / "configs" / "phase_a_baseline.yaml", {
            "sac.train_freq": train_freq, "sac.gradient_steps": gradient_steps, "training.device": device})
        data = load_market_data(config)
        model = build_sac(config, make_vec_env(data.features["train"], config, 16, seed=0), seed=0)
        start = time.perf_counter()
        model.learn(steps)
        rate = steps / (time.perf_counter() - start)
        print(f"  train_freq {train_freq}, gradient_steps {gradient_steps}: {rate:7.1f} env steps/s "
              f"({model._n_updates} gradient steps)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6000, help="env steps of each part-2 training")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-part2", action="store_true")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}")
    part1(args.updates, args.repeats, args.device)
    if not args.skip_part2:
        part2(args.steps, args.device)


if __name__ == "__main__":
    main()
