"""`trainer register`: register a gated full run as a model version (passing or not).

Exit 0 when registered (or already registered: the same version comes back), 2 on error.
A passing version also becomes the `challenger`; promotion is `trainer promote`.
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
            "as a version of hierarchical-options-<SYMBOL> (Phase A: phase-a-baseline-<SYMBOL>), tagged with "
            "the gate verdict, provenance and metrics. Needs gate_full.json. Idempotent."
        ),
    )
    parser.add_argument("--run", required=True, metavar="DIR", help="run directory (summary.json, gate_full.json, model/)")
    parser.add_argument("--actor", default="trainer", help="who registers, for the ledger (default: %(default)s)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from trainer.registry import register_run

    registered = register_run(args.run, actor=args.actor)
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
