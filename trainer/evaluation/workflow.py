"""The evaluation of a trained run: the held-out backtest, and everything it is compared with on
exactly the same bars.

`evaluate_run` backtests the run's judged model (best_model, chosen on the eval split; the test
split stays unseen) deterministically on the test split, and beside it, on the same test bars,
with the candidate's costs and calendar (its periods_per_year):
- buy-and-hold;
- the Phase A baseline of the same setup (trainer/evaluation/baseline.py: found in the registry or
  trained now), which shares the candidate's data, splits, signals and environment, so it walks
  the candidate's own test features;
- the symbol's current champion (trainer/evaluation/champion.py), which may have been trained with
  other feature or signal settings: its own pipeline (compute_features, its fitted SignalModel) is
  run over the candidate's whole data frame, so rolling windows are warm, and the candidate's test
  bars are then taken by timestamp. Its first decision is on the candidate's first decision bar, so
  both return series cover the same bars. If its observation cannot be built from the candidate's
  data, evaluation stops with a TrainerError naming the champion version and why.

Outputs (trainer/run_dir.py): evaluation.json (metrics, statistics, the judged model, the
baseline and champion used), backtest.csv (one row per test bar), and every metric logged to the
candidate's MLflow run (the registry recomputes verdicts from those run metrics).

Metric names added here (docs/contracts.md): `champion.present` (1.0 / 0.0), `champion.version`
(0.0 when none), `champion.<metric>` for every backtest metric, `test.sharpe_per_bar` (what later
trials read for the deflated Sharpe), `stats.n_trials`, and from trainer.evaluation.statistics
`stats.vs_champion.*`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.errors import TrainerError
from trainer.run_dir import EVALUATION_FILES, RunDir

if TYPE_CHECKING:
    from trainer.agent import Agent, BacktestResult
    from trainer.config import TrainerConfig
    from trainer.data.features import FeatureFrame
    from trainer.envs.factory import MarketData
    from trainer.evaluation.champion import Champion

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationResult:
    """:param run_dir: the evaluated run; :param evaluation: what evaluation.json holds;
    :param metrics: its flat metrics; :param champion: the champion compared with, or None"""

    run_dir: RunDir
    evaluation: dict[str, Any]
    metrics: dict[str, Any]
    champion: "Champion | None"

    def result(self) -> dict[str, Any]:
        """The small result the CLI prints and the DAG passes on (XCom)."""
        metrics = self.metrics
        return {
            "run": str(self.run_dir.path),
            "evaluation": str(self.run_dir.evaluation_path),
            "test_sharpe": metrics["test.sharpe"],
            "baseline_sharpe": metrics.get("baseline.sharpe"),
            "baseline": self.evaluation["baseline"],
            "champion_sharpe": metrics.get("champion.sharpe"),
            "champion": self.evaluation["champion"],
        }


# --------------------------------------------------------------------------------------------
# Backtests on the candidate's bars
# --------------------------------------------------------------------------------------------


def with_costs(agent: "Agent", config: "TrainerConfig") -> "Agent":
    """`agent` acting under `config`'s trading costs (commission and slippage), everything else its own."""
    from trainer.agent import Agent

    env = agent.config.environment
    costs = {"transaction_cost_bps": config.environment.transaction_cost_bps, "slippage_bps": config.environment.slippage_bps}
    if all(getattr(env, key) == value for key, value in costs.items()):
        return agent
    own = agent.config.model_copy(update={"environment": env.model_copy(update=costs)})
    return Agent(own, agent.sac, agent.learner, signals=agent.signals, example_bars=agent.example_bars)


def _rows(features: "FeatureFrame", start: int, stop: int) -> "FeatureFrame":
    return replace(
        features,
        window=features.window[start:stop],
        close=features.close[start:stop],
        trend_strength=features.trend_strength[start:stop],
        sentiment=features.sentiment[start:stop],
        sl_confidence=features.sl_confidence[start:stop],
        index=features.index[start:stop],
    )


def features_on_candidate_bars(agent: "Agent", data: "MarketData", bars: "FeatureFrame", window_size: int, what: str) -> "FeatureFrame":
    """`agent`'s own features over the candidate's data frame, cut so that its backtest decides on
    the same bars as the candidate's backtest of `bars` (whose env window is `window_size`).

    The candidate's first decision is at bars.index[window_size - 1]; the cut starts
    agent.window_size - 1 bars before that bar and ends at the last bar of `bars`.
    """
    required, _ = agent.signal_columns
    missing = [name for name in required if name not in data.frame.columns]
    if missing:
        raise TrainerError(
            f"{what}: its observation cannot be built from the candidate's data: it reads "
            f"{', '.join(missing)} from the data (signal source column/file), and {data.source} has no such column"
        )
    try:
        full = agent.featurise(data.frame)
    except TrainerError as exc:
        raise TrainerError(f"{what}: its features cannot be computed on the candidate's data: {exc}") from None
    first_decision = bars.index[window_size - 1]
    own_window = agent.config.environment.window_size
    if first_decision not in full.index or bars.index[-1] not in full.index:
        raise TrainerError(f"{what}: its features do not cover the candidate's test bars {bars.index[0]} .. {bars.index[-1]}")
    decide_at = int(full.index.get_loc(first_decision))
    start = decide_at - (own_window - 1)
    stop = int(full.index.get_loc(bars.index[-1])) + 1
    if start < 0:
        raise TrainerError(
            f"{what}: its window of {own_window} bars needs {-start} more bar(s) of history before the candidate's "
            f"first test decision at {first_decision} than the data holds"
        )
    if not full.index[decide_at:stop].equals(bars.index[window_size - 1 :]):
        raise TrainerError(f"{what}: its feature bars and the candidate's test bars differ between {first_decision} and {bars.index[-1]}")
    return _rows(full, start, stop)


def backtest_on_candidate_bars(
    agent: "Agent", data: "MarketData", bars: "FeatureFrame", config: "TrainerConfig", seed: int, what: str
) -> "BacktestResult":
    """Backtest another model (`what`, e.g. "champion hierarchical-options-SPY v3") on the bars of
    the candidate's backtest of `bars`, with the candidate's costs; same timestamps, same length."""
    features = features_on_candidate_bars(agent, data, bars, config.environment.window_size, what)
    result = with_costs(agent, config).backtest(features, seed=seed)
    expected = [str(t) for t in bars.index[config.environment.window_size :]]
    if list(result.timestamps) != expected:
        raise TrainerError(
            f"{what}: its backtest covers {len(result.timestamps)} bars, the candidate's {len(expected)}; "
            "they must be the same bars"
        )
    return result


# --------------------------------------------------------------------------------------------
# The workflow
# --------------------------------------------------------------------------------------------


def evaluate_run(
    path: str | Path,
    *,
    data_source: str | None = None,
    include_eval_split: bool = False,
    with_baseline: bool = True,
) -> EvaluationResult:
    """Evaluate the completed run at `path` (see the module docstring); writes evaluation.json and
    backtest.csv and logs the metrics to the run's MLflow run.

    :param path: run directory written by `trainer train`
    :param data_source: data to evaluate on (default: the one the run trained on; its digest must match)
    :param include_eval_split: also backtest the eval split (backtest_eval_split.csv, `eval_split.*`)
    :param with_baseline: compare with the Phase A baseline (found in the registry or trained now)
    The champion comparison cannot be switched off: a candidate judged without it would reach the
    absolute tiers alone, and a point estimate must never replace an existing champion.
    """
    import numpy as np
    import pandas as pd

    from trainer.agent import load_agent
    from trainer.config import OPTION_NAMES, load_config
    from trainer.envs.factory import load_market_data
    from trainer.evaluation.metrics import (
        backtest_metrics,
        option_usage,
        option_usage_metrics,
        persistence_metrics,
        sharpe_ratio,
    )

    run = RunDir(path)
    summary = run.read_summary()
    if summary.get("status") != "completed":
        raise TrainerError(f"{run.path}: the run's status is {summary.get('status')!r}; only completed runs are evaluated")
    model_dir = run.judged_model_dir()
    agent = load_agent(model_dir)
    config = load_config(run.config_path)
    source = data_source or summary["data"]["source"]
    data = load_market_data(config, source)
    if data.digest != summary["data_digest"]:
        raise TrainerError(
            f"{source}: data digest {data.digest[:12]} differs from the run's {summary['data_digest'][:12]}; "
            "evaluate on the data the run was trained on"
        )
    profile = summary.get("profile") or "adhoc"
    algorithm = summary.get("algorithm") or config.algorithm
    seed = config.training.seed
    ppy = data.periods_per_year

    baseline_info: dict[str, Any] = {"source": None, "model_uri": None}
    baseline_agent = None
    if with_baseline:
        baseline_info, baseline_agent = _baseline(summary, config, source, profile)
    champion = _champion(data.symbol, profile, algorithm, summary)
    champion_agent = load_agent(champion.model_dir) if champion is not None else None

    splits = ["test"] + (["eval"] if include_eval_split or config.evaluation.include_eval_split else [])
    metrics: dict[str, Any] = {}
    frames: dict[str, pd.DataFrame] = {}
    interpretation = ""
    selections_from = None
    min_durations = {name: float(config.options.option_block(i).min_duration) for i, name in enumerate(OPTION_NAMES)}
    for split in splits:
        prefix = "test" if split == "test" else "eval_split"
        other = "" if split == "test" else "eval_split."  # buy_and_hold.*, baseline.* vs eval_split.baseline.*
        features = data.features[split]
        result = agent.backtest(features, seed=seed)
        metrics.update({f"{prefix}.{k}": v for k, v in backtest_metrics(result.returns, result.positions, ppy).items()})
        hold = backtest_metrics(result.bar_returns, np.ones_like(result.bar_returns), ppy)
        metrics.update({f"{other}buy_and_hold.{k}": v for k, v in hold.items()})
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
            # The baseline shares the candidate's data, splits, signals and env (baseline.shared_hash),
            # so it walks the candidate's own test features; the costs are the candidate's by construction.
            base = with_costs(baseline_agent, config).backtest(features, seed=seed)
            base_returns = base.returns
            base_metrics = backtest_metrics(base.returns, base.positions, ppy)
            metrics.update({f"{other}baseline.{k}": v for k, v in base_metrics.items()})
            frame["baseline_return"] = base.returns
            frame["baseline_position"] = base.positions
        if result.options is not None:
            # A selection is a bar where an option starts. With the backtest's per-bar step within
            # the option (option_steps, 0 where chosen) a re-selection of the option that just
            # ended counts; without it only option changes can be seen (see metrics.option_usage).
            option_steps = getattr(result, "option_steps", None)
            selections_from = "option_changes" if option_steps is None else "option_steps"
            usage = option_usage(result.options, OPTION_NAMES, option_steps=option_steps)
            metrics.update(option_usage_metrics(usage, config.options.monitor.used_option_min_pct, prefix=f"{prefix}.options"))
            metrics.update(persistence_metrics(usage, min_durations, prefix=f"{prefix}.options"))
        if split == "test":
            champion_returns = None
            metrics["champion.present"] = 1.0 if champion is not None else 0.0
            metrics["champion.version"] = float(champion.version) if champion is not None else 0.0
            if champion is not None:
                champ = backtest_on_candidate_bars(champion_agent, data, features, config, seed, champion.label)
                champion_returns = champ.returns
                metrics.update({f"champion.{k}": v for k, v in backtest_metrics(champ.returns, champ.positions, ppy).items()})
                frame["champion_return"] = champ.returns
                frame["champion_position"] = champ.positions
            metrics["test.sharpe_per_bar"] = sharpe_ratio(result.returns, periods_per_year=1.0)
            stats, n_trials = _statistics(result.returns, base_returns, champion_returns, ppy, data.symbol, profile,
                                          algorithm, summary)
            interpretation = str(stats.pop("interpretation", ""))
            metrics.update(stats)
            metrics["stats.n_trials"] = float(n_trials)
        frames[split] = frame

    first, last = frames["test"]["timestamp"].iloc[0], frames["test"]["timestamp"].iloc[-1]
    evaluation = {
        "metrics": metrics,
        "split": "test",
        "splits": splits,
        "periods_per_year": ppy,
        "bars": len(frames["test"]),
        "first": str(first),
        "last": str(last),
        "model": model_dir.name,
        "baseline": baseline_info,
        "champion": champion.describe() if champion is not None else None,
        "interpretation": interpretation,
        # how option selections were counted on the backtest: option_steps | option_changes
        "option_selections_from": selections_from,
    }
    run.write_backtest(frames["test"])
    if "eval" in frames:
        run.write_backtest(frames["eval"], eval_split=True)
    run.write_evaluation(evaluation)
    _log_to_mlflow(summary, run, metrics)
    LOGGER.info(
        "test split %s .. %s: sharpe %.2f (buy-and-hold %.2f, Phase A %s, champion %s); %s",
        evaluation["first"][:10], evaluation["last"][:10], metrics["test.sharpe"], metrics["buy_and_hold.sharpe"],
        _shown(metrics.get("baseline.sharpe")),
        f"v{champion.version} {_shown(metrics.get('champion.sharpe'))}" if champion is not None else "none",
        interpretation,
    )
    return EvaluationResult(run, evaluation, metrics, champion)


def _shown(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _baseline(summary: dict, config, source: str, profile: str) -> tuple[dict[str, Any], "Agent"]:
    from trainer.agent import load_agent
    from trainer.evaluation import baseline as baseline_mod
    from trainer.tracking import state_dir

    found = baseline_mod.find_registered_baseline(
        summary["symbol"], summary["data_digest"], baseline_mod.shared_hash(config), profile
    )
    if found:
        return {"source": "registry", "model_uri": found[0]}, load_agent(found[1])
    uri, path = baseline_mod.train_baseline(summary, config, source, state_dir() / "runs")
    return {"source": "trained", "model_uri": uri}, load_agent(path)


def _champion(symbol: str, profile: str, algorithm: str, summary: dict) -> "Champion | None":
    from trainer.evaluation.champion import find_champion

    champion = find_champion(symbol, profile, algorithm)
    if champion is None:
        LOGGER.info("no champion for %s (profile %s): the candidate is judged on the absolute tiers", symbol, profile)
        return None
    if champion.run_id and champion.run_id == summary.get("mlflow_run_id"):
        # Re-evaluating the champion's own run: comparing it with itself would decide nothing.
        LOGGER.info("%s is this run; no champion comparison", champion.label)
        return None
    return champion


def _statistics(returns, base_returns, champion_returns, ppy: float, symbol: str, profile: str, algorithm: str,
                summary: dict) -> tuple[dict[str, Any], int]:
    """sharpe_summary with the champion's returns and the comparable trials' per-bar Sharpes (the DSR's)."""
    from trainer.evaluation.champion import comparable_trial_sharpes
    from trainer.evaluation.statistics import sharpe_summary

    trial_sharpes, unrecorded = comparable_trial_sharpes(
        symbol, profile, summary.get("stage"), summary.get("mlflow_run_id"), algorithm
    )
    n_trials = len(trial_sharpes) + unrecorded + 1  # this candidate included
    stats = sharpe_summary(
        returns, base_returns, ppy, n_trials=n_trials, champion_returns=champion_returns, trial_sharpes=trial_sharpes
    )
    return dict(stats), n_trials


def _log_to_mlflow(summary: dict, run: RunDir, metrics: dict) -> None:
    run_id = summary.get("mlflow_run_id")
    if not run_id:
        return
    import time

    from mlflow.entities import Metric

    from trainer.registry import registry_client, registry_errors

    client = registry_client()
    now = int(time.time() * 1000)
    # At the run's last training step and a later time, so these are the latest values of their
    # keys: the registry recomputes the gates from them.
    step = int(summary.get("total_timesteps") or 0)
    batch = [
        Metric(key, float(value), now, step)
        for key, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ]
    with registry_errors("log evaluation metrics"):
        for start in range(0, len(batch), 500):
            client.log_batch(run_id, metrics=batch[start : start + 500])
        for name in EVALUATION_FILES:
            client.log_artifact(run_id, str(run.path / name))
