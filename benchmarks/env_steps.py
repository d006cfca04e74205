"""Environment speed: steps per second of TradingEnv alone and under DummyVecEnv (random actions).

    .venv/bin/python benchmarks/env_steps.py [--steps 20000]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

from trainer.config import load_config
from trainer.envs.factory import load_market_data, make_vec_env
from trainer.envs.trading_env import TradingEnv

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20_000)
    args = parser.parse_args()
    config = load_config(ROOT / "configs" / "phase_b1_options.yaml")
    data = load_market_data(config)
    features = data.features["train"]
    rng = np.random.default_rng(0)

    env = TradingEnv(features, config.environment)
    env.reset(seed=0)
    start = time.perf_counter()
    for _ in range(args.steps):
        _, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, size=1))
        if terminated or truncated:
            env.reset()
    single = args.steps / (time.perf_counter() - start)

    venv = make_vec_env(features, config, n_envs=4, seed=0)
    venv.reset()
    calls = args.steps // 4
    start = time.perf_counter()
    for _ in range(calls):
        venv.step(rng.uniform(-1, 1, size=(4, 1)).astype(np.float32))
    vec = calls * 4 / (time.perf_counter() - start)

    print(f"machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores")
    print(f"observation size: {env.observation_space.shape[0]}")
    print(f"TradingEnv:                 {single:10.0f} env steps/s")
    print(f"DummyVecEnv x4 (+checks):   {vec:10.0f} env steps/s")


if __name__ == "__main__":
    main()
