"""`trainer promote`: move a symbol's `champion` alias to a version, if the policy allows it.

Runs automatically after the gate (default version: the current challenger) or after a reviewer's
approval (`--approved-by`, `--approved-at`, `--approval-comment`, all recorded in the ledger).
Exit 0 promoted or already champion, 1 refused by the policy (failed gates, older data, compared
with another champion, approval missing), 2 error (registry unreachable, bad input, a verdict that
does not match the run's metrics, a gates file other than the one the version was registered under).
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


def add_profile_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile", default="production",
        help="pipeline profile whose model to act on: production is hierarchical-options-<SYMBOL>, any other "
        "profile P is P.hierarchical-options-<SYMBOL> (default: %(default)s)",
    )


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--symbol / --profile / --phase-a / --reason / --actor, shared by promote and rollback."""
    parser.add_argument("--symbol", required=True, help="ticker, e.g. SPY")
    add_profile_argument(parser)
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
            "Promote a registered version to `champion` under the promotion policy of the gates file. The gates "
            "file must be the one the version was registered under (same sha256), and the verdict is recomputed "
            "from the metrics logged in the version's MLflow run: it must reach required_tier. The version must "
            "have been compared with the current champion on its own test bars at evaluation (or with the one "
            "the current champion was compared with, on newer data), and never be trained on older data than "
            "the champion. With require_human_approval --approved-by is needed. A pending move interrupted by "
            "a crash is reconciled first. Every move is recorded in the ledger with the gates file's hash."
        ),
    )
    add_model_arguments(parser)
    parser.add_argument("--version", type=int, default=None, help="version to promote (default: the current challenger)")
    parser.add_argument("--approved-by", default=None, metavar="NAME", help="the reviewer who approved this promotion")
    parser.add_argument("--approved-at", default=None, metavar="ISO8601", help="when the reviewer decided (for the ledger)")
    parser.add_argument("--approval-comment", default=None, metavar="TEXT", help="the reviewer's comment (for the ledger)")
    parser.add_argument(
        "--gates", default="configs/gates.yaml", metavar="YAML",
        help="gates file with the promotion: policy; must be the one the version was registered under (default: %(default)s)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    symbol = checked_symbol(args.symbol)
    from trainer.registry import Approval, PromotionRefused, load_policy, promote

    policy = load_policy(args.gates)
    actor = args.actor or default_actor()
    approval = Approval(args.approved_by, args.approved_at, args.approval_comment) if args.approved_by else None
    try:
        move = promote(
            symbol, args.version, actor=actor, reason=args.reason, policy=policy, approval=approval,
            algorithm="sac" if args.phase_a else "hierarchical_sac", profile=args.profile,
        )
    except PromotionRefused as exc:
        print(f"refused: {exc}")
        args.result = {"symbol": symbol, "promoted": False, "refused": str(exc)}
        return EXIT_FAILED
    if move.reconciled:
        print(f"reconciled first: {move.reconciled}")
    if move.action == "noop":
        print(f"{move.model_name} v{move.version} is already champion (recorded as noop)")
    else:
        print(f"{move.model_name}: champion v{move.from_version} -> v{move.version}")
    args.result = {
        "symbol": symbol, "model_name": move.model_name, "promoted": move.action == "promote",
        "action": move.action, "version": move.version, "from_version": move.from_version,
        "reconciled": move.reconciled, "gates_hash": policy.sha256,
    }
    return EXIT_OK
