"""The controller's update on six-armed bandits with the shipped network: the figures behind
options.behaviour_refresh_updates / max_sample_age_updates (README, "Controller update").

    .venv/bin/python benchmarks/controller_bandit.py [--updates 1500] [--seeds 3] [--refresh 128,256,384]

For each refresh interval (and the seed's loss): mean final entropy (ln 6 = 1.792 is uniform) and
largest arm share over identical arms, and the better arm's share and entropy when one arm is
better by half a noise sd. The issue's bar: identical arms entropy >= 1.5 and shares <= 0.3;
one better arm share > 1/6 with entropy >= 1.2; the seed loss collapses on identical arms.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from trainer.config import OptionsConfig
from trainer.hierarchy.bandit import run_bandit

IDENTICAL = [0.0] * 6
ONE_BETTER = [0.5, 0.0, 0.0, 0.0, 0.0, 0.0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=1500)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--refresh", default="128,256,384", help="behaviour_refresh_updates values (comma-separated)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases = [("seed", OptionsConfig(policy_loss="seed"))] + [
        (f"clipped K={k}", OptionsConfig(behaviour_refresh_updates=k, max_sample_age_updates=k))
        for k in map(int, args.refresh.split(","))
    ]
    print(f"{'loss':<16} {'identical: entropy':>19} {'max share':>10} {'better arm: share':>18} {'entropy':>8} {'s/run':>6}")
    for label, cfg in cases:
        started = time.perf_counter()
        same = [run_bandit(cfg, IDENTICAL, args.updates, seed=s) for s in range(args.seeds)]
        better = [run_bandit(cfg, ONE_BETTER, args.updates, seed=s) for s in range(args.seeds)]
        per_run = (time.perf_counter() - started) / (2 * args.seeds)
        print(f"{label:<16} {np.mean([r.entropy for r in same]):>19.3f} {np.mean([r.shares.max() for r in same]):>10.3f}"
              f" {np.mean([r.shares[0] for r in better]):>18.3f} {np.mean([r.entropy for r in better]):>8.3f} {per_run:>6.1f}")


if __name__ == "__main__":
    main()
