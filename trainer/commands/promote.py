"""`trainer promote`: move a symbol's `champion` alias to a version, if the policy allows it.

Runs automatically after the gate (default version: the current challenger) or after a reviewer's
approval (`--approved-by`). Exit 0 promoted or already champion, 1 refused by the policy (failed
gates, older data, lower Sharpe, approval missing), 2 error (registry unreachable, bad input).
"""

from __future__ import annotations

import argparse
import getpass
from typing import Any

from trainer.errors import EXIT_FAILED, EXIT_OK, TrainerError
from trainer.symbols import InvalidSymbolError, validate_symbol


def default_actor() -> str:
    """The user running the command; a pod with no passwd entry is the scheduler ("airflow")."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "airflow"


def checked_symbol(text: str) -> str:
    try:
        return validate_symbol(text)
    except InvalidSymbolError as exc:
        raise TrainerError(f"--symbol: {exc}") from None


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--symbol / --phase-a / --reason / --actor, shared by promote and rollback."""
    parser.add_argument("--symbol", required=True, help="ticker, e.g. SPY")
    parser.add_argument(
        "--phase-a", action="store_true", help="act on phase-a-baseline-<SYMBOL> instead of hierarchical-options-<SYMBOL>"
    )
    parser.add_argument("--reason", default="", help="why, for the ledger")
    parser.add_argument("--actor", default=None, help="who, for the ledger (default: the current user, else airflow)")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "promote",
        help="move the champion alias to a version (policy permitting)",
        description=(
            "Promote a registered version to `champion` under the promotion policy of the gates file: the "
            "version's gates must reach required_tier; it must not be trained on older data than the champion; "
            "with must_beat_champion its champion_metric must be >= the champion's on the same test window; "
            "with require_human_approval --approved-by is needed. Every move is recorded in the ledger."
        ),
    )
    add_model_arguments(parser)
    parser.add_argument("--version", type=int, default=None, help="version to promote (default: the current challenger)")
    parser.add_argument("--approved-by", default=None, metavar="NAME", help="the reviewer who approved this promotion")
    parser.add_argument("--gates", default="configs/gates.yaml", metavar="YAML", help="gates file with the promotion: policy")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    symbol = checked_symbol(args.symbol)
    from trainer.evaluation.gates import load_promotion_policy
    from trainer.registry import PromotionRefused, promote

    policy = load_promotion_policy(args.gates)
    actor = args.actor or default_actor()
    try:
        move = promote(
            symbol, args.version, actor=actor, reason=args.reason, policy=policy,
            approved_by=args.approved_by, algorithm="sac" if args.phase_a else "hierarchical_sac",
        )
    except PromotionRefused as exc:
        print(f"refused: {exc}")
        args.result = {"symbol": symbol, "promoted": False, "refused": str(exc)}
        return EXIT_FAILED
    if move.action == "noop":
        print(f"{move.model_name} v{move.version} is already champion (recorded as noop)")
    else:
        print(f"{move.model_name}: champion v{move.from_version} -> v{move.version}")
    args.result = {
        "symbol": symbol, "model_name": move.model_name, "promoted": move.action == "promote",
        "action": move.action, "version": move.version, "from_version": move.from_version,
    }
    return EXIT_OK
