"""`trainer gate`: check a run's metrics against the quality gates of configs/gates.yaml.

The run is a local run directory (its metrics as trainer.run_dir.RunDir.metrics merges them:
summary.json "metrics", evaluation.json "metrics" over them when `trainer evaluate` wrote it) or an
MLflow run id (the same two files, downloaded from the run's artifact root). Prints a table of the stage's gates and the
verdict, writes the verdict JSON atomically, exits 0 pass / 1 fail / 2 error.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from trainer.errors import EXIT_FAILED, EXIT_OK, TrainerError
from trainer.io import write_json_atomic
from trainer.run_dir import EVALUATION_FILE, SUMMARY_FILE, RunDir, gate_file

MLFLOW_RUN_ID = re.compile(r"^[0-9a-f]{32}$")

_STATUS_STYLE = {"pass": "green", "fail": "red", "missing": "red", "not_applicable": "yellow"}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "gate",
        help="check a run's metrics against the quality gates",
        description=(
            "Evaluate the smoke or full-stage quality gates (configs/gates.yaml) on a run's metrics. "
            "Exit 0 when the verdict passes, 1 when a blocking gate fails or its metric is missing, "
            "2 when the run or the gates file cannot be read."
        ),
    )
    parser.add_argument(
        "--run", required=True, metavar="RUN_ID_OR_DIR", help="local run directory or MLflow run id (32 hex characters)"
    )
    parser.add_argument("--stage", required=True, choices=("smoke", "full"), help="which gates to evaluate")
    parser.add_argument(
        "--gates", default="configs/gates.yaml", metavar="YAML", help="gates file (default: %(default)s)"
    )
    parser.add_argument(
        "--required-tier",
        choices=("minimum", "target"),
        default="minimum",
        help="full stage: tier whose blocking gates must all pass (target includes minimum; default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        metavar="PATH",
        help="verdict JSON (default: <run dir>/gate_<stage>.json; for an MLflow run id ./gate_<stage>.json)",
    )
    parser.set_defaults(handler=run)


# --------------------------------------------------------------------------------------------
# Reading the run's metrics
# --------------------------------------------------------------------------------------------


def _download_mlflow_run(run_id: str, destination: Path) -> None:
    """Copy the run's summary.json (required) and evaluation.json (if logged) into `destination`."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from trainer.tracking import configure_mlflow

    try:
        configure_mlflow()
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=SUMMARY_FILE, dst_path=str(destination))
    except (MlflowException, OSError) as exc:
        raise TrainerError(f"MLflow run {run_id}: cannot download {SUMMARY_FILE} ({exc})") from None
    try:
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=EVALUATION_FILE, dst_path=str(destination))
    except (MlflowException, OSError):
        pass  # optional: `trainer evaluate` has not run on this run yet; summary metrics alone are gated


def load_run(run: str) -> tuple[dict[str, Any], dict[str, Any], RunDir | None]:
    """(summary, merged metrics (RunDir.metrics), the run directory or None for an MLflow run id)."""
    path = Path(run)
    if path.exists():
        if not path.is_dir():
            raise TrainerError(f"--run {run}: not a directory")
        run_dir = RunDir(path)
        return run_dir.read_summary(), run_dir.metrics(), run_dir
    if MLFLOW_RUN_ID.match(run):
        with tempfile.TemporaryDirectory(prefix="trainer-gate-") as tmp:
            _download_mlflow_run(run, Path(tmp))
            downloaded = RunDir(tmp)
            return downloaded.read_summary(), downloaded.metrics(), None
    raise TrainerError(f"--run {run}: no such run directory, and not an MLflow run id (32 hex characters)")


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def _shown(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.6g}" if math.isfinite(value) else str(value)


def _context(context: dict[str, float | None]) -> str:
    """`test.exposure 0.019, test.turnover 0.042`: the metrics a gate reports beside itself."""
    return ", ".join(f"{name} {_shown(value)}" for name, value in context.items())


def _print(verdict: Any, run: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"gates: {verdict.stage} stage, run {run}", caption="* non-blocking")
    table.add_column("gate", no_wrap=True)  # ids stay whole, so logs can be searched for them
    table.add_column("tier", no_wrap=True)
    table.add_column("metric", no_wrap=True)
    table.add_column("observed", justify="right")
    table.add_column("threshold")
    table.add_column("status", no_wrap=True)
    table.add_column("beside (not gated)")
    for r in verdict.results:
        table.add_row(
            r.id,
            r.tier if r.blocking else f"{r.tier}*",
            r.metric,
            _shown(r.observed),
            f"{r.comparison} {r.threshold_shown}",
            f"[{_STATUS_STYLE[r.status]}]{r.status}[/]",
            _context(r.context),
        )
    # Logs (Airflow, CI) are not terminals: give them a width that fits the table unbroken.
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(table)
    for r in verdict.results:
        if r.status in ("missing", "not_applicable"):
            console.print(f"{r.id}: {r.status}: {r.reason}")
    not_passed = ", ".join(verdict.summary()["blocking_failed"]) or "none passed"
    if verdict.passed:
        console.print(f"[green]PASSED[/]: {verdict.stage} stage, tier reached: {verdict.tier_reached}")
    else:
        console.print(
            f"[red]FAILED[/]: {verdict.stage} stage (required: {verdict.required_tier}), tier reached: "
            f"{verdict.tier_reached}; blocking gates not passed: {not_passed}"
        )


def run(args: argparse.Namespace) -> int:
    from trainer.evaluation.gates import evaluate_gates, load_gates

    gates = load_gates(args.gates)  # a bad gates file fails before the run is read
    summary, metrics, run_dir = load_run(args.run)
    verdict = evaluate_gates(gates, metrics, args.stage, required_tier=args.required_tier)

    payload = {
        "run": args.run, "run_status": summary.get("status"), "gates_file": str(args.gates),
        # `trainer register` refuses a verdict computed under another gates file than its own
        "gates_sha256": hashlib.sha256(Path(args.gates).read_bytes()).hexdigest(),
        **verdict.to_dict(),
    }
    if args.out:
        out = Path(args.out)
        write_json_atomic(out, payload)
    elif run_dir is not None:
        out = run_dir.write_gate_verdict(args.stage, payload)
    else:
        out = Path.cwd() / gate_file(args.stage)
        write_json_atomic(out, payload)
    _print(verdict, args.run)
    if summary.get("status") not in (None, "completed"):
        print(f"note: the run's status is {summary.get('status')!r}")
    args.result = {**verdict.summary(), "run": args.run, "verdict_path": str(out)}
    return EXIT_OK if verdict.passed else EXIT_FAILED
