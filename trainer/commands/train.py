"""`trainer train`: Phase A or Phase B.1 training, resumable, logged to MLflow.

The command parses its arguments into a config; trainer.training.runner.train_run trains it."""

from __future__ import annotations

from trainer.errors import EXIT_FAILED, EXIT_OK


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train Phase A (plain SAC) or Phase B.1 (hierarchical options SAC)",
        description=(
            "Train on the train split, evaluate on the eval split every --eval-freq steps (keeping the best "
            "model), checkpoint every checkpoints.freq steps, and log everything to MLflow. "
            "Example (the seed's smoke test): trainer train --config configs/phase_b1_options.yaml "
            "--symbol SPY --total-timesteps 10000 --n-envs 4 --eval-freq 5000"
        ),
    )
    parser.add_argument("--config", required=True, help="run config (configs/phase_b1_options.yaml or configs/phase_a_baseline.yaml)")
    parser.add_argument("--symbol", help="ticker (overrides data.symbol)")
    parser.add_argument("--data", help="CSV/Parquet path or s3://bucket/key (default: the bundled data for the symbol)")
    parser.add_argument("--total-timesteps", type=int, help="env steps over all envs (overrides training.total_timesteps)")
    parser.add_argument("--n-envs", type=int, help="parallel environments (overrides training.n_envs)")
    parser.add_argument("--eval-freq", type=int, help="env steps between evaluations (overrides training.eval_freq)")
    parser.add_argument("--seed", type=int, help="global seed (overrides training.seed)")
    parser.add_argument("--output-dir", help="run directory, local path or s3://bucket/prefix (default: state/runs/<symbol>/<name>)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint, exactly where it stopped (refused when "
                        "--n-envs, sac.buffer_size or options.option_buffer_size differ from the checkpoint's); "
                        "no-op when the run already completed")
    parser.add_argument("--profile", default="adhoc",
                        help="pipeline profile recorded on the run (demo, production, ...; default: adhoc)")
    parser.add_argument("--stage", default="full", choices=["smoke", "full", "baseline"],
                        help="pipeline stage recorded on the run (default: full)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override any config key, e.g. --set options.entropy_bonus=0.02 (repeatable)")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow (local experiments)")
    parser.set_defaults(handler=run)


def _overrides(args) -> dict:
    from trainer.config import parse_override

    overrides = dict(parse_override(text) for text in args.overrides)
    for flag, key in (
        ("symbol", "data.symbol"),
        ("total_timesteps", "training.total_timesteps"),
        ("n_envs", "training.n_envs"),
        ("eval_freq", "training.eval_freq"),
        ("seed", "training.seed"),
    ):
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = value
    return overrides


def run(args) -> int:
    from trainer.config import load_config
    from trainer.symbols import validate_symbol
    from trainer.tracking import state_dir
    from trainer.training.runner import train_run

    if args.symbol:
        validate_symbol(args.symbol)
    config = load_config(args.config, _overrides(args))
    output = args.output_dir or str(state_dir() / "runs" / config.data.symbol / config.name)
    outcome = train_run(
        config,
        output,
        data_source=args.data,
        resume=args.resume,
        profile=args.profile,
        stage=args.stage,
        log_to_mlflow=not args.no_mlflow,
    )
    args.result = outcome.result()
    return EXIT_OK if outcome.completed else EXIT_FAILED
