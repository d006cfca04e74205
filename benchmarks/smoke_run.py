"""The seed's 10k-step smoke test, timed, with its expectations for the first 5k steps checked.

    .venv/bin/python benchmarks/smoke_run.py

Runs exactly: trainer train --config configs/phase_b1_options.yaml --symbol SPY
--total-timesteps 10000 --n-envs 4 --eval-freq 5000, then reads monitor_metrics.json:
all six options selected, average durations > 3, no collapse warning, temperature by the formula.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = ("open_long", "open_short", "close_position", "trend_follow", "scalp", "wait")


def average_duration(records: list[dict], option: str) -> float:
    """The option's average duration over several windows (window means weighted by selections)."""
    pairs = [(r[f"options/avg_duration/{option}"], r[f"options/selections/{option}"]) for r in records
             if r[f"options/avg_duration/{option}"] is not None]
    weight = sum(n for _, n in pairs)
    return sum(d * n for d, n in pairs) / weight if weight else float("nan")


def main() -> int:
    out = Path(tempfile.mkdtemp(prefix="smoke-"))
    env = {**os.environ, "TRAINER_STATE_DIR": str(out / "state")}
    cmd = [str(Path(sys.executable).parent / "trainer"), "train", "--config", "configs/phase_b1_options.yaml",
           "--symbol", "SPY", "--total-timesteps", "10000", "--n-envs", "4", "--eval-freq", "5000",
           "--output-dir", str(out / "run")]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    wall = time.perf_counter() - start
    records = json.loads((out / "run" / "monitor_metrics.json").read_text())
    first = [r for r in records if r["timesteps"] <= 5000]
    selections = {o: sum(r[f"options/selections/{o}"] for r in first) for o in OPTIONS}
    durations = [average_duration(first, o) for o in OPTIONS]
    collapse = sum(r["collapse_warning"] for r in first)
    last = first[-1]
    expected_t = max(0.1, 0.9995 ** last["options/num_updates"])
    print(f"wall time: {wall:.0f} s for 10000 steps ({10000 / wall:.1f} steps/s, {os.cpu_count()} cores)")
    print(f"first 5k steps: selections {selections}")
    print(f"  avg durations {dict(zip(OPTIONS, (round(d, 2) for d in durations)))} (> 3 expected), "
          f"collapse warnings {collapse} (0 expected)")
    print(f"  temperature {last['options/temperature']:.4f} after {last['options/num_updates']} updates "
          f"(formula {expected_t:.4f})")
    ok = min(selections.values()) >= 1 and min(durations) > 3 and collapse == 0 and np.isclose(last["options/temperature"], expected_t)
    print("seed expectations:", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
