"""What the options hierarchy costs: plain SB3 SAC vs HierarchicalSAC, same env, network,
step count and thread setting, in one process, interleaved so machine load hits both: each repeat
trains both models side by side in chunks of --chunk env steps (A B B A ...), so a few seconds of a
busy neighbour land on both; --chunk 0 times each whole run in one go (A B).

    .venv/bin/python benchmarks/wrapper_overhead.py [--steps 3000] [--n-envs 4] [--repeats 2] [--threads 1] [--chunk 1024]

Goal (issue 12): the hierarchy costs at most 3% over plain SAC at 16 envs and 5% at 4 envs.
It prints the ratio of the best rates, the median of the per-repeat (paired) ratios and the
median over all chunk pairs: the two runs of one chunk are timed back to back, so their ratio
shares that moment's load, and a few dozen chunks give a median that one busy minute cannot move.
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
from trainer.hierarchy.update_process import UpdateProcess

ROOT = Path(__file__).resolve().parents[1]


def interleaved_rates(plain, wrapper, steps: int, chunk: int) -> tuple[float, float, list[float]]:
    """Env steps/s of each model over `steps`, trained in alternating chunks (ABBA order), and
    each chunk's time ratio (hierarchical / plain, the same env steps back to back)."""
    chunk = chunk or steps
    elapsed = [0.0, 0.0]
    models = [plain, wrapper]
    chunk_ratios = []
    for index, start in enumerate(range(0, steps, chunk)):
        n = min(chunk, steps - start)
        seconds = [0.0, 0.0]
        for which in ((0, 1) if index % 2 == 0 else (1, 0)):
            begin = time.perf_counter()
            models[which].learn(n, reset_num_timesteps=start == 0)
            seconds[which] = time.perf_counter() - begin
            elapsed[which] += seconds[which]
        chunk_ratios.append(seconds[1] / seconds[0])
    return steps / elapsed[0], steps / elapsed[1], chunk_ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--n-envs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=1024, help="env steps per interleaved slice (0: whole runs)")
    parser.add_argument("--overlap", action=argparse.BooleanOptionalAction, default=True,
                        help="options.overlap_update: controller updates beside SAC's (default on, as shipped)")
    parser.add_argument("--worker", choices=("process", "thread"), default="process",
                        help="options.overlap_worker: where overlapped updates run (default process, as shipped)")
    args = parser.parse_args()
    overrides = {"sac.torch_threads": args.threads, "sac.learning_starts": 200, "options.warmup_steps": 200,
                 "training.n_envs": args.n_envs}
    hier_cfg = load_config(ROOT / "configs" / "phase_b1_options.yaml", {**overrides, "options.overlap_update": args.overlap,
                                                                              "options.overlap_worker": args.worker})
    plain_cfg = load_config(ROOT / "configs" / "phase_a_baseline.yaml",
                            {k: v for k, v in overrides.items() if not k.startswith("options.")})
    data = load_market_data(hier_cfg)
    torch.set_num_threads(args.threads)

    plain_rates, hier_rates, chunk_ratios = [], [], []
    for repeat in range(args.repeats):
        plain = build_sac(plain_cfg, make_vec_env(data.features["train"], plain_cfg, args.n_envs, seed=repeat), seed=repeat)
        wrapper = HierarchicalSAC(hier_cfg, make_vec_env(data.features["train"], hier_cfg, args.n_envs, seed=repeat), seed=repeat)
        if wrapper.learner.cfg.overlap_worker == "process" and UpdateProcess.shared() is not None:
            UpdateProcess.shared().wait_ready()  # its ~2 s start, once per trainer, overlaps warm-up in real runs
        plain_rate, hier_rate, ratios = interleaved_rates(plain, wrapper, args.steps, args.chunk)
        plain_rates.append(plain_rate)
        hier_rates.append(hier_rate)
        chunk_ratios += ratios
        print(f"repeat {repeat}: plain SAC {plain_rates[-1]:.1f} steps/s, hierarchical {hier_rates[-1]:.1f} steps/s")

    plain_best, hier_best = max(plain_rates), max(hier_rates)
    # the learner also asks for idle cores per update: with --threads 2 on 2 cores it keeps them in place
    overlapped = wrapper.learner.last_overlap or "no (in place)"
    print(f"machine: {os.cpu_count()} cores, torch threads {args.threads}, n_envs {args.n_envs}, {args.steps} steps, "
          f"net {hier_cfg.sac.net_arch}, batch {hier_cfg.sac.batch_size}, chunks of {args.chunk or args.steps} steps, "
          f"controller updates overlapped: {overlapped}")
    print(f"plain SAC:     {plain_best:8.1f} env steps/s (best of {args.repeats})")
    print(f"hierarchical:  {hier_best:8.1f} env steps/s (best of {args.repeats})")
    print(f"overhead:      {100 * (plain_best / hier_best - 1):+.1f}% time per step (goal <= 3% at 16 envs, <= 5% at 4)")
    # Each repeat times both back to back, so its ratio shares that moment's machine load; on a
    # shared VM single rates swing by 10% and more between repeats, the paired ratios less.
    paired = sorted(100 * (p / h - 1) for p, h in zip(plain_rates, hier_rates, strict=True))
    print(f"paired:        median {statistics.median(paired):+.1f}% over {args.repeats} repeats "
          f"(from {paired[0]:+.1f}% to {paired[-1]:+.1f}%)")
    per_chunk = sorted(100 * (r - 1) for r in chunk_ratios)
    quartiles = statistics.quantiles(per_chunk, n=4) if len(per_chunk) > 1 else per_chunk * 3
    print(f"chunk pairs:   median {statistics.median(per_chunk):+.1f}% over {len(per_chunk)} chunks "
          f"(quartiles {quartiles[0]:+.1f}% / {quartiles[2]:+.1f}%)")


if __name__ == "__main__":
    main()
