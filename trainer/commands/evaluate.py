"""`trainer evaluate`: the held-out backtest of a trained run, against buy-and-hold, Phase A and the
champion on the same bars. The workflow is trainer/evaluation/workflow.py; this is its CLI."""

from __future__ import annotations

from trainer.errors import EXIT_OK


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="deterministic backtest on the test split vs buy-and-hold and the Phase A baseline",
        description=(
            "Backtest the run's best model (chosen on the eval split; the test split stays unseen) on the "
            "held-out test split, deterministically, next to buy-and-hold, the Phase A baseline (the "
            "registered baseline for this data, or one trained and registered now) and the symbol's current "
            "champion (registry alias `champion` of the profile's model), all on the same bars with the "
            "run's costs. Writes <run>/evaluation.json (metrics, statistics) and <run>/backtest.csv (per bar); "
            "logs the metrics to the run's MLflow run."
        ),
    )
    parser.add_argument("--run", required=True, help="run directory written by `trainer train`")
    parser.add_argument("--data", help="data source (default: the one the run trained on)")
    parser.add_argument("--include-eval-split", action="store_true", help="also backtest the eval split")
    parser.add_argument("--no-baseline", action="store_true", help="skip Phase A (statistics vs baseline are then missing)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from trainer.evaluation.workflow import evaluate_run

    result = evaluate_run(
        args.run,
        data_source=args.data,
        include_eval_split=args.include_eval_split,
        with_baseline=not args.no_baseline,
    )
    metrics = result.metrics
    champion = result.evaluation["champion"]
    print(f"evaluation: {result.run_dir.evaluation_path}")
    print(
        f"test Sharpe {metrics['test.sharpe']:.3f} on {result.evaluation['bars']} bars "
        f"({result.evaluation['first'][:10]} .. {result.evaluation['last'][:10]})"
    )
    for label, key in (("buy-and-hold", "buy_and_hold.sharpe"), ("Phase A baseline", "baseline.sharpe")):
        print(f"  {label}: {_shown(metrics.get(key))}")
    if champion is None:
        print("  champion: none (the first model of this symbol and profile is judged on the absolute tiers)")
    else:
        print(
            f"  champion {champion['model_name']} v{champion['version']}: {_shown(metrics.get('champion.sharpe'))}; "
            f"Sharpe difference {_shown(metrics.get('stats.vs_champion.sharpe_diff'))}, "
            f"p(candidate worse) {_shown(metrics.get('stats.vs_champion.pvalue_worse'))}"
        )
    args.result = result.result()
    return EXIT_OK


def _shown(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"
