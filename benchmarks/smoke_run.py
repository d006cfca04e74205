"""The seed's smoke command on real data, with the issue's health figures (and, scaled up, the long run).

    .venv/bin/python benchmarks/smoke_run.py                       # SPY and QQQ, 10k steps, 4 envs
    .venv/bin/python benchmarks/smoke_run.py --steps 100000 --n-envs 16 --eval-freq 15000
    .venv/bin/python benchmarks/smoke_run.py --data /path/EURUSD_1h.csv --symbol EURUSD

Runs `trainer train --config configs/phase_b1_options.yaml --symbol S --total-timesteps N --n-envs E
--eval-freq F` per symbol and prints, over EVERY monitor window (not only the first 5k steps):
collapse warnings (0 expected), the final controller entropy (>= 1.0 expected), each option's
share of selections (>= 5% expected), average durations, and how often each termination rule fired.
Exit 0 when every expectation holds for every symbol.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = ("open_long", "open_short", "close_position", "trend_follow", "scalp", "wait")


def weighted_duration(records: list[dict], option: str) -> float:
    """The option's average duration over all windows (window means weighted by completions)."""
    pairs = [(r[f"options/avg_duration/{option}"], r.get(f"options/completions/{option}", 1)) for r in records
             if r[f"options/avg_duration/{option}"] is not None]
    weight = sum(n for _, n in pairs)
    return sum(d * n for d, n in pairs) / weight if weight else float("nan")


def run_symbol(symbol: str, data: str | None, args: argparse.Namespace, workdir: Path) -> bool:
    out = workdir / symbol
    env = {**os.environ, "TRAINER_STATE_DIR": str(workdir / "state")}
    cmd = [str(Path(sys.executable).parent / "trainer"), "train", "--config", "configs/phase_b1_options.yaml",
           "--symbol", symbol, "--total-timesteps", str(args.steps), "--n-envs", str(args.n_envs),
           "--eval-freq", str(args.eval_freq), "--output-dir", str(out)]
    if data:
        cmd += ["--data", data]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env)
    wall = time.perf_counter() - start
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    records = json.loads((out / "monitor_metrics.json").read_text()) if (out / "monitor_metrics.json").exists() else []
    if proc.returncode not in (0, 1) or not records:
        print(f"{symbol}: trainer exited {proc.returncode}; no monitor windows")
        return False
    selections = {o: sum(r[f"options/selections/{o}"] for r in records) for o in OPTIONS}
    total = sum(selections.values()) or 1
    shares = {o: selections[o] / total for o in OPTIONS}
    durations = {o: round(weighted_duration(records, o), 2) for o in OPTIONS}
    warnings = sum(bool(r["collapse_warning"]) for r in records)
    entropy = next((r["options/entropy"] for r in reversed(records) if r["options/entropy"] is not None), None)
    metrics = summary.get("metrics", {})
    firings = {k.removeprefix("options.terminations."): v for k, v in metrics.items() if k.startswith("options.terminations.")}
    print(f"\n== {symbol}: {summary.get('status')} in {wall:.0f} s ({args.steps / wall:.0f} env steps/s, "
          f"{os.cpu_count()} cores), {len(records)} windows, {metrics.get('train.option_updates')} controller updates")
    print(f"  collapse warnings over all windows: {warnings} (0 expected)")
    print(f"  final controller entropy: {entropy if entropy is None else round(entropy, 3)} (>= 1.0 expected; ln 6 = 1.792)")
    print("  selection shares: " + ", ".join(f"{o} {shares[o]:.1%}" for o in OPTIONS) + " (>= 5% expected)")
    print("  average durations: " + ", ".join(f"{o} {durations[o]}" for o in OPTIONS))
    print("  rule firings: " + (", ".join(f"{k} {int(v)}" for k, v in sorted(firings.items())) or "(none recorded)"))
    print(f"  eval sharpe (best): {metrics.get('eval.sharpe')}")
    never = [k for k, v in firings.items() if not v]
    if never:
        print(f"  rules that never fired: {', '.join(never)}")
    return warnings == 0 and entropy is not None and entropy >= 1.0 and min(shares.values()) >= 0.05


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbol", action="append", help="symbol(s) to run (default SPY and QQQ)")
    parser.add_argument("--data", help="CSV/Parquet path or s3:// URI for the (single) --symbol")
    parser.add_argument("--steps", type=int, default=10_000, help="total env steps (default 10000, the seed's smoke)")
    parser.add_argument("--n-envs", type=int, default=4, help="vectorised envs (default 4)")
    parser.add_argument("--eval-freq", type=int, default=5_000, help="env steps between evaluations (default 5000)")
    args = parser.parse_args()
    symbols = args.symbol or ["SPY", "QQQ"]
    if args.data and len(symbols) != 1:
        parser.error("--data needs exactly one --symbol")
    workdir = Path(tempfile.mkdtemp(prefix="smoke-"))
    results = {s: run_symbol(s, args.data, args, workdir) for s in symbols}
    print("\nexpectations: " + ", ".join(f"{s} {'met' if ok else 'NOT met'}" for s, ok in results.items()))
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
