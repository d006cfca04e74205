"""`trainer register`: register a gated full run as a model version (passing or not).

Exit 0 when registered (or already registered: the same version comes back), 2 on error, among
them a gate_full.json that the metrics logged in the run's MLflow run do not give. A passing
version also becomes the `challenger`; promotion is `trainer promote`.
"""

from __future__ import annotations

import argparse
from typing import Any

from trainer.errors import EXIT_OK


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "register",
        help="register a gated run as a model version",
        description=(
            "Register the run directory's model (its MLflow run's pyfunc model `agent`, logged if missing) "
            "as a version of hierarchical-options-<SYMBOL> (Phase A: phase-a-baseline-<SYMBOL>; profiles other "
            "than production: <profile>.<name>). The verdict is recomputed from the metrics logged in the MLflow "
            "run under --gates and must match gate_full.json; the version is tagged with it, the gates file's "
            "sha256 (the file is logged with the run), provenance and metrics. Idempotent."
        ),
    )
    parser.add_argument("--run", required=True, metavar="DIR", help="run directory (summary.json, gate_full.json, model/)")
    parser.add_argument("--actor", default="trainer", help="who registers, for the ledger (default: %(default)s)")
    parser.add_argument(
        "--gates", default="configs/gates.yaml", metavar="YAML",
        help="the gates file the full-stage verdict was computed with (default: %(default)s)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from trainer.registry import register_run

    registered = register_run(args.run, actor=args.actor, gates=args.gates)
    args.result = {
        "model_name": registered.model_name,
        "version": registered.version,
        "passed": registered.passed,
        "tier_reached": registered.tier_reached,
        "created": registered.created,
        "data_end": registered.data_end,
    }
    state = "registered" if registered.created else "already registered as"
    print(
        f"{state} {registered.model_name} v{registered.version}: "
        f"{'passed' if registered.passed else 'failed'} (tier {registered.tier_reached})"
    )
    return EXIT_OK
