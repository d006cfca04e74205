"""What the options hierarchy costs: plain SB3 SAC vs HierarchicalSAC, same env, network,
step count and thread setting, in one process, interleaved (A B A B) so machine load hits both.

    .venv/bin/python benchmarks/wrapper_overhead.py [--steps 3000] [--n-envs 4] [--repeats 2] [--threads 1]

Goal (issue 12): the hierarchy costs at most 3% over plain SAC at 16 envs and 5% at 4 envs.
It prints the ratio of the best rates and the median of the per-repeat (paired) ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from trainer.config import load_config
from trainer.envs.factory import load_market_data, make_vec_env
from trainer.hierarchy.hierarchical_sac import HierarchicalSAC, build_sac

ROOT = Path(__file__).resolve().parents[1]


def timed(learn, steps: int) -> float:
    start = time.perf_counter()
    learn(steps)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--n-envs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    overrides = {"sac.torch_threads": args.threads, "sac.learning_starts": 200, "options.warmup_steps": 200,
                 "training.n_envs": args.n_envs}
    hier_cfg = load_config(ROOT / "configs" / "phase_b1_options.yaml", overrides)
    plain_cfg = load_config(ROOT / "configs" / "phase_a_baseline.yaml",
                            {k: v for k, v in overrides.items() if not k.startswith("options.")})
    data = load_market_data(hier_cfg)
    torch.set_num_threads(args.threads)

    plain_rates, hier_rates = [], []
    for repeat in range(args.repeats):
        plain = build_sac(plain_cfg, make_vec_env(data.features["train"], plain_cfg, args.n_envs, seed=repeat), seed=repeat)
        plain_rates.append(timed(lambda n: plain.learn(n), args.steps))
        wrapper = HierarchicalSAC(hier_cfg, make_vec_env(data.features["train"], hier_cfg, args.n_envs, seed=repeat), seed=repeat)
        hier_rates.append(timed(lambda n: wrapper.learn(n), args.steps))
        print(f"repeat {repeat}: plain SAC {plain_rates[-1]:.1f} steps/s, hierarchical {hier_rates[-1]:.1f} steps/s")

    plain_best, hier_best = max(plain_rates), max(hier_rates)
    print(f"machine: {os.cpu_count()} cores, torch threads {args.threads}, n_envs {args.n_envs}, {args.steps} steps, "
          f"net {hier_cfg.sac.net_arch}, batch {hier_cfg.sac.batch_size}")
    print(f"plain SAC:     {plain_best:8.1f} env steps/s (best of {args.repeats})")
    print(f"hierarchical:  {hier_best:8.1f} env steps/s (best of {args.repeats})")
    print(f"overhead:      {100 * (plain_best / hier_best - 1):+.1f}% time per step (goal <= 3% at 16 envs, <= 5% at 4)")
    # Each repeat times both back to back, so its ratio shares that moment's machine load; on a
    # shared VM single rates swing by 10% and more between repeats, the paired ratios less.
    paired = sorted(100 * (p / h - 1) for p, h in zip(plain_rates, hier_rates, strict=True))
    print(f"paired:        median {statistics.median(paired):+.1f}% over {args.repeats} repeats "
          f"(from {paired[0]:+.1f}% to {paired[-1]:+.1f}%)")


if __name__ == "__main__":
    main()
