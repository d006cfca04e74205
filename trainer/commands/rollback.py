"""`trainer rollback`: put the previous champion back, as the registry's ledger records it.

Exit 0 rolled back, 1 nothing to roll back to, 2 error (registry unreachable, alias moved by hand).
A pending move interrupted by a crash is reconciled first.
"""

from __future__ import annotations

import argparse
from typing import Any

from trainer.commands.promote import add_model_arguments, checked_symbol, default_actor
from trainer.errors import EXIT_FAILED, EXIT_OK


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "rollback",
        help="move the champion alias back to the previous champion",
        description=(
            "Replay the ledger stored on the registered model (recorded promotions push, rollbacks pop) and "
            "move `champion` to the version that served before the current one; a `challenger` left on the "
            "rolled-back version is removed, so a plain promote does not send it back. Data-age and gate checks "
            "do not apply: a rollback is a person's decision."
        ),
    )
    add_model_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    symbol = checked_symbol(args.symbol)
    from trainer.registry import PromotionRefused, rollback

    try:
        move = rollback(
            symbol, actor=args.actor or default_actor(), reason=args.reason,
            algorithm="sac" if args.phase_a else "hierarchical_sac", profile=args.profile,
        )
    except PromotionRefused as exc:
        print(f"refused: {exc}")
        args.result = {"symbol": symbol, "rolled_back": False, "refused": str(exc)}
        return EXIT_FAILED
    if move.reconciled:
        print(f"reconciled first: {move.reconciled}")
    print(f"{move.model_name}: champion v{move.from_version} -> v{move.version} (rollback)")
    args.result = {
        "symbol": symbol, "model_name": move.model_name, "rolled_back": True,
        "version": move.version, "from_version": move.from_version, "reconciled": move.reconciled,
    }
    return EXIT_OK
