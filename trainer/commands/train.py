"""`trainer train`: Phase A or Phase B.1 training, resumable, logged to MLflow."""

from __future__ import annotations

import argparse
import json
import logging

from trainer.errors import EXIT_FAILED, EXIT_OK, PreemptedError, TrainerError

LOGGER = logging.getLogger(__name__)


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
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="run config (configs/phase_b1_options.yaml or configs/phase_a_baseline.yaml)")
    parser.add_argument("--symbol", help="ticker (overrides data.symbol)")
    parser.add_argument("--data", help="CSV/Parquet path or s3://bucket/key (default: the bundled data for the symbol)")
    parser.add_argument("--total-timesteps", type=int, help="env steps over all envs (overrides training.total_timesteps)")
    parser.add_argument("--n-envs", type=int, help="parallel environments (overrides training.n_envs)")
    parser.add_argument("--eval-freq", type=int, help="env steps between evaluations (overrides training.eval_freq)")
    parser.add_argument("--seed", type=int, help="global seed (overrides training.seed)")
    parser.add_argument("--output-dir", help="run directory, local path or s3://bucket/prefix (default: state/runs/<symbol>/<name>)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint; no-op when the run already completed")
    parser.add_argument("--profile", default="adhoc", help="pipeline profile recorded on the run (demo, production, ...)")
    parser.add_argument("--stage", default="full", choices=["smoke", "full", "baseline"], help="pipeline stage recorded on the run")
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
    from trainer.storage import RunStorage
    from trainer.symbols import validate_symbol
    from trainer.tracking import state_dir

    if args.symbol:
        validate_symbol(args.symbol)
    config = load_config(args.config, _overrides(args))
    output = args.output_dir or str(state_dir() / "runs" / config.data.symbol / config.name)
    storage = RunStorage(output)
    storage.check_access()
    if args.resume:
        storage.pull()
    out = storage.local
    summary_path = out / "summary.json"
    if args.resume and summary_path.exists():
        previous = json.loads(summary_path.read_text())
        if previous.get("status") == "completed" and previous.get("config_hash") == config.config_hash():
            LOGGER.info("run already completed with this config at %s; reusing it", output)
            args.result = _result(previous, output)
            return EXIT_OK
    return _train(args, config, storage, output)


def _result(summary: dict, output: str) -> dict:
    return {
        "status": summary["status"],
        "output_dir": output,
        "mlflow_run_id": summary.get("mlflow_run_id"),
        "config_hash": summary.get("config_hash"),
        "data_digest": summary.get("data_digest"),
        "total_timesteps": summary.get("total_timesteps"),
    }


def _train(args, config, storage, output: str) -> int:
    from trainer.envs.factory import load_market_data
    from trainer.training import checkpoints
    from trainer.training.session import TrainingSession
    from trainer.training.tracker import RunTracker
    from trainer.versioning import code_version

    data = load_market_data(config, args.data)
    out = storage.local
    LOGGER.info(
        "%s on %s: %d bars (%s .. %s), digest %s; train/eval/test = %d/%d/%d featurised bars",
        config.algorithm, data.symbol, len(data.frame), data.frame.index[0].date(), data.frame.index[-1].date(),
        data.digest[:12], len(data.features["train"]), len(data.features["eval"]), len(data.features["test"]),
    )
    if not data.has_sentiment or not data.has_sl_confidence:
        LOGGER.info("no sentiment / sl_confidence columns: options read the neutral values from environment config")
    session = TrainingSession(config, data, out, config.training.seed)
    session.after_checkpoint = storage.push
    latest = checkpoints.latest_checkpoint(session.checkpoint_root) if args.resume else None
    if latest is not None:
        session.restore(latest)
    identity = {
        "symbol": config.data.symbol,
        "algorithm": config.algorithm,
        "name": config.name,
        "profile": args.profile,
        "stage": args.stage,
        "config_hash": config.config_hash(),
        "data_digest": data.digest,
        "data_end": str(data.frame.index[-1]),
        "code_version": code_version(),
    }
    if not args.no_mlflow:
        tracker = RunTracker(session.state.mlflow_run_id)
        session.state.mlflow_run_id = tracker.start(config, data, identity)
        session.tracker = tracker
    try:
        status = session.train(config.training.total_timesteps)
    except TrainerError as err:
        session.write_outputs(f"failed: {err}", identity)
        if session.tracker:
            session.tracker.finish(out, "failed")
        storage.push()
        raise
    if status == "preempted":
        storage.push()
        raise PreemptedError(
            f"preempted at step {session.sac.num_timesteps}; checkpoint written under {output}/checkpoints; "
            "run again with --resume"
        )
    summary = session.write_outputs(status, identity)
    if session.tracker:
        session.tracker.finish(out, status)
    storage.push()
    args.result = _result(summary, output)
    LOGGER.info("%s: %d steps in %.0f s (%.1f steps/s); outputs in %s",
                status, summary["total_timesteps"], summary["wall_seconds"], summary["steps_per_second"] or 0, output)
    return EXIT_OK if status == "completed" else EXIT_FAILED
