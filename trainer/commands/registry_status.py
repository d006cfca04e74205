"""`trainer registry-status`: the versions of a symbol's models and the latest ledger records."""

from __future__ import annotations

import argparse
from typing import Any

from trainer.commands.promote import add_profile_argument, checked_symbol
from trainer.errors import EXIT_OK


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "registry-status",
        help="show registered versions, aliases and recent alias moves",
        description="List every version of hierarchical-options-<SYMBOL> and phase-a-baseline-<SYMBOL> with "
        "verdict, tier and aliases, and the last ledger records (from the registry itself). A pending move "
        "interrupted by a crash is reconciled first, and said so.",
    )
    parser.add_argument("--symbol", required=True, help="ticker, e.g. SPY")
    add_profile_argument(parser)
    parser.add_argument("--last", type=int, default=10, metavar="N", help="ledger records to show (default: %(default)s)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    symbol = checked_symbol(args.symbol)
    from rich.console import Console
    from rich.table import Table

    from trainer.registry import registry_status

    status = registry_status(symbol, last_records=args.last, profile=args.profile)
    console = Console()
    if not status["models"]:
        console.print(f"no registered models for {symbol}")
    for model in status["models"]:
        if model["reconciled"]:
            console.print(f"[yellow]reconciled[/]: {model['reconciled']}")
        versions = Table(title=model["model_name"])
        for column in ("version", "verdict", "tier", "test sharpe", "data end", "aliases"):
            versions.add_column(column)
        for v in model["versions"]:
            style = {"passed": "green", "baseline": "blue"}.get(v["verdict"], "red")
            sharpe = "n/a" if v["test_sharpe"] is None else f"{v['test_sharpe']:.3f}"
            versions.add_row(str(v["version"]), f"[{style}]{v['verdict']}[/]", v["tier_reached"], sharpe,
                             v["data_end"], ", ".join(v["aliases"]))
        console.print(versions)
        moves = Table(title=f"{model['model_name']}: last {len(model['ledger'])} ledger records")
        for column in ("when", "actor", "action", "alias", "from", "to", "reason"):
            moves.add_column(column)
        for r in model["ledger"]:
            moves.add_row(r["ts"], r["actor"], r["action"], r["alias"] or "", str(r["from_version"] or ""),
                          str(r["version"] or ""), r["reason"] or "")
        console.print(moves)
    args.result = status
    return EXIT_OK
