"""`trainer <step>`: one subcommand per pipeline step.

Each step lives in trainer/commands/<step>.py with `register(subparsers)`; heavy libraries are
imported inside the step's handler, so `trainer --help` and `trainer --version` stay instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from trainer import __version__
from trainer.errors import EXIT_ERROR, TrainerError
from trainer.io import write_json_atomic

# Subcommand modules in the order `--help` lists them (the order the pipeline runs them).
COMMAND_MODULES = ("validate", "train", "evaluate", "gate", "register", "promote", "rollback", "report", "registry_status")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainer",
        description=(
            "Hierarchical options SAC trading agent: validate data, train (Phase A baseline or "
            "Phase B.1 options), evaluate, gate and promote in the MLflow registry."
        ),
        epilog=(
            "Exit codes: 0 ok, 1 verdict 'no' (invalid data, failed gate, collapse abort), "
            "2 error (bad input, unreachable service), 73 busy (another trainer holds the run directory's lease; "
            "retry later), 75 preempted (checkpoint written; retry with --resume). "
            "MLflow: MLFLOW_TRACKING_URI (default: sqlite store under ./state/mlflow). "
            "S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL."
        ),
    )
    parser.add_argument("--version", action="version", version=f"trainer {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--result-json",
        metavar="PATH",
        help="write the step's small result (a JSON object) here; the Airflow backends read it as XCom",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="<step>")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"trainer.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"trainer.commands.{name}":
                continue  # a step not built yet
            raise
        module.register(subparsers)
    return parser


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # GX logs hundreds of INFO lines once Airflow or MLflow configured logging first.
    for noisy in ("great_expectations", "alembic", "urllib3", "botocore", "matplotlib", "mlflow.store"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_ERROR
    _configure_logging(args.verbose)
    args.result = {}
    try:
        code = int(args.handler(args) or 0)
    except TrainerError as err:
        print(f"trainer {args.command}: error: {err}", file=sys.stderr)
        args.result = {**args.result, "error": str(err)}
        code = err.exit_code
    except KeyboardInterrupt:
        print(f"trainer {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: keep the traceback, but end on one clear line
        import traceback

        traceback.print_exc()
        print(f"trainer {args.command}: internal error: {type(exc).__name__}: {exc} (a bug; please report it "
              "with the traceback above)", file=sys.stderr)
        args.result = {**args.result, "error": f"internal error: {type(exc).__name__}: {exc}"}
        code = EXIT_ERROR
    if args.result_json:
        write_json_atomic(args.result_json, {"command": args.command, "exit_code": code, **args.result})
    return code


if __name__ == "__main__":
    sys.exit(main())
