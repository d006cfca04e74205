"""`trainer report`: write a run's review report (Markdown + self-contained HTML) and log it.

Exit 0 written, 2 error. With MLflow (default) the files go under `report/` in the run's artifacts
and the run's registered versions get a `report_uri` tag.
"""

from __future__ import annotations

import argparse
from typing import Any

from trainer.errors import EXIT_OK


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write the review report of a run",
        description="Build <run>/report/report.md (PNG plots alongside) and report.html (plots embedded): "
        "verdict, gate table, equity/drawdown/option plots, statistics with caveats, provenance. "
        "Missing inputs become 'not available' sections.",
    )
    parser.add_argument("--run", required=True, metavar="DIR", help="run directory")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: <run>/report)")
    parser.add_argument("--no-mlflow", action="store_true", help="only write the files; do not log them to MLflow")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from trainer.evaluation.report import build_report, log_report

    files = build_report(args.run, args.out)
    args.result = {"report_md": str(files.markdown), "report_html": str(files.html)}
    if not args.no_mlflow:
        args.result["report_uri"] = log_report(args.run, files)
    print(f"report: {files.markdown} and {files.html}" + (f" (logged as {args.result['report_uri']})" if not args.no_mlflow else ""))
    return EXIT_OK
