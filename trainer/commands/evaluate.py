"""`trainer evaluate`: the held-out backtest of a trained run, against buy-and-hold and Phase A."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from trainer.errors import EXIT_OK, TrainerError

LOGGER = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="deterministic backtest on the test split vs buy-and-hold and the Phase A baseline",
        description=(
            "Backtest the run's best model (chosen on the eval split; the test split stays unseen) on the "
            "held-out test split, deterministically, next to buy-and-hold and the Phase A baseline on the "
            "same bars (the registered baseline for this data, or one trained and registered now). Writes "
            "<run>/evaluation.json (metrics, statistics) and <run>/backtest.csv (per bar)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--run", required=True, help="run directory written by `trainer train`")
    parser.add_argument("--data", help="data source (default: the one the run trained on)")
    parser.add_argument("--include-eval-split", action="store_true", help="also backtest the eval split")
    parser.add_argument("--no-baseline", action="store_true", help="skip Phase A (statistics vs baseline are then missing)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    import numpy as np
    import pandas as pd

    from trainer.agent import load_agent
    from trainer.config import OPTION_NAMES, load_config
    from trainer.envs.factory import load_market_data
    from trainer.evaluation import baseline as baseline_mod
    from trainer.evaluation.metrics import (
        backtest_metrics,
        option_usage,
        option_usage_metrics,
        persistence_metrics,
    )
    from trainer.evaluation.statistics import sharpe_summary
    from trainer.io import read_json_object, write_json_atomic, write_text_atomic
    from trainer.tracking import state_dir

    run_dir = Path(args.run)
    summary = read_json_object(run_dir / "summary.json", "summary.json (is this a run directory written by `trainer train`?)")
    if summary.get("status") != "completed":
        raise TrainerError(f"{run_dir}: the run's status is {summary.get('status')!r}; only completed runs are evaluated")
    model_dir = run_dir / "best_model" if (run_dir / "best_model" / "meta.json").exists() else run_dir / "model"
    agent = load_agent(model_dir)
    config = load_config(run_dir / "config.resolved.yaml")
    source = args.data or summary["data"]["source"]
    data = load_market_data(config, source)
    if data.digest != summary["data_digest"]:
        raise TrainerError(
            f"{source}: data digest {data.digest[:12]} differs from the run's {summary['data_digest'][:12]}; "
            "evaluate on the data the run was trained on"
        )

    splits = ["test"] + (["eval"] if args.include_eval_split or config.evaluation.include_eval_split else [])
    metrics: dict = {}
    baseline_info = {"source": None, "model_uri": None}
    baseline_agent = None
    if not args.no_baseline:
        found = baseline_mod.find_registered_baseline(data.symbol, data.digest, baseline_mod.shared_hash(config))
        if found:
            baseline_info = {"source": "registry", "model_uri": found[0]}
            baseline_agent = load_agent(found[1])
        else:
            uri, path = baseline_mod.train_baseline(summary, config, source, state_dir() / "runs")
            baseline_info = {"source": "trained", "model_uri": uri}
            baseline_agent = load_agent(path)

    frames = []
    interpretation = ""
    selections_from = None
    min_durations = {name: float(config.options.option_block(i).min_duration) for i, name in enumerate(OPTION_NAMES)}
    for split in splits:
        prefix = "test" if split == "test" else "eval_split"
        features = data.features[split]
        result = agent.backtest(features, seed=config.training.seed)
        candidate = backtest_metrics(result.returns, result.positions, data.periods_per_year)
        metrics.update({f"{prefix}.{k}": v for k, v in candidate.items()})
        hold = backtest_metrics(result.bar_returns, np.ones_like(result.bar_returns), data.periods_per_year)
        metrics.update({f"{'buy_and_hold' if split == 'test' else 'eval_split.buy_and_hold'}.{k}": v for k, v in hold.items()})
        frame = pd.DataFrame(
            {
                "timestamp": result.timestamps,
                "candidate_return": result.returns,
                "candidate_position": result.positions,
                "candidate_option": [OPTION_NAMES[i] for i in result.options] if result.options is not None else "",
                "buy_and_hold_return": result.bar_returns,
            }
        )
        base_returns = None
        if baseline_agent is not None:
            base = baseline_agent.backtest(features, seed=config.training.seed)
            base_returns = base.returns
            base_metrics = backtest_metrics(base.returns, base.positions, data.periods_per_year)
            metrics.update({f"{'baseline' if split == 'test' else 'eval_split.baseline'}.{k}": v for k, v in base_metrics.items()})
            frame["baseline_return"] = base.returns
            frame["baseline_position"] = base.positions
        if result.options is not None:
            # A selection is a bar where an option starts. With the backtest's per-bar step within
            # the option (option_steps, 0 where chosen) a re-selection of the option that just
            # ended counts; without it only option changes can be seen (see metrics.option_usage).
            option_steps = getattr(result, "option_steps", None)
            selections_from = "option_changes" if option_steps is None else "option_steps"
            usage = option_usage(result.options, OPTION_NAMES, option_steps=option_steps)
            flat = option_usage_metrics(usage, config.options.monitor.used_option_min_pct, prefix=f"{prefix}.options")
            metrics.update(flat)
            metrics.update(persistence_metrics(usage, min_durations, prefix=f"{prefix}.options"))
        if split == "test":
            n_trials = _trials_count(data.symbol)
            stats = sharpe_summary(result.returns, base_returns, data.periods_per_year, n_trials=n_trials)
            interpretation = str(stats.pop("interpretation", ""))
            metrics.update(stats)
            metrics["stats.n_trials"] = float(n_trials)
            frames.append(frame)
        else:
            frame.to_csv(run_dir / "backtest_eval_split.csv", index=False)

    evaluation = {
        "metrics": metrics,
        "split": "test",
        "splits": splits,
        "periods_per_year": data.periods_per_year,
        "bars": len(frames[0]),
        "first": str(frames[0]["timestamp"].iloc[0]),
        "last": str(frames[0]["timestamp"].iloc[-1]),
        "model": str(model_dir.name),
        "baseline": baseline_info,
        "interpretation": interpretation,
        # how option selections were counted on the backtest: option_steps | option_changes
        "option_selections_from": selections_from,
    }
    write_text_atomic(run_dir / "backtest.csv", frames[0].to_csv(index=False))
    write_json_atomic(run_dir / "evaluation.json", evaluation)
    _log_to_mlflow(summary, run_dir, metrics)
    LOGGER.info(
        "test split %s .. %s: sharpe %.2f (buy-and-hold %.2f, Phase A %s); %s",
        evaluation["first"][:10], evaluation["last"][:10], metrics["test.sharpe"], metrics["buy_and_hold.sharpe"],
        f"{metrics['baseline.sharpe']:.2f}" if "baseline.sharpe" in metrics else "n/a", interpretation,
    )
    args.result = {
        "run": str(run_dir),
        "evaluation": str(run_dir / "evaluation.json"),
        "test_sharpe": metrics["test.sharpe"],
        "baseline_sharpe": metrics.get("baseline.sharpe"),
        "baseline": baseline_info,
    }
    return EXIT_OK


def _trials_count(symbol: str) -> int:
    """Candidates the registry holds for the symbol, this one included (the DSR's N)."""
    from trainer.registry import model_name, registry_client, registry_errors

    client = registry_client()
    with registry_errors("count candidate versions"):
        versions = client.search_model_versions(f"name='{model_name(symbol)}'")
    return len(versions) + 1


def _log_to_mlflow(summary: dict, run_dir: Path, metrics: dict) -> None:
    run_id = summary.get("mlflow_run_id")
    if not run_id:
        return
    import math

    from trainer.registry import registry_client, registry_errors

    client = registry_client()
    with registry_errors("log evaluation metrics"):
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                client.log_metric(run_id, key, float(value))
        for name in ("evaluation.json", "backtest.csv"):
            client.log_artifact(run_id, str(run_dir / name))
