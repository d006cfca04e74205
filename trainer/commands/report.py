"""`trainer report`: write a run's review report (Markdown + self-contained HTML) and log it.

Exit 0 written, 2 error. With MLflow (default) the files go under `report/` in the run's artifacts
and the run's registered versions get a `report_uri` tag. The pipeline runs it before the approval
question, so the reviewer has the report in front of them; with `--gates` the report shows (and the
result carries) the promotion policy the same file gives `trainer promote`.
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
        "the verdict of every gate and the tier promotion requires; candidate vs champion vs Phase A vs "
        "buy-and-hold on the same test bars (equity, drawdown, metrics, Sharpe with confidence intervals and "
        "the Lo (2002) annualisation, Sharpe by year, turnover and costs paid); test-split option usage and "
        "durations; statistics with caveats; training plots; provenance. Missing inputs become "
        "'not available' sections.",
    )
    parser.add_argument("--run", required=True, metavar="DIR", help="run directory")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: <run>/report)")
    parser.add_argument(
        "--gates", metavar="YAML", default=None,
        help="gates file whose promotion policy the report shows (the one promote uses); default: not shown",
    )
    parser.add_argument("--no-mlflow", action="store_true", help="only write the files; do not log them to MLflow")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from trainer.evaluation.report import build_report, load_promotion_terms, log_report

    files = build_report(args.run, args.out, gates_file=args.gates)
    args.result = {"report_md": str(files.markdown), "report_html": str(files.html)}
    if args.gates:
        terms = load_promotion_terms(args.gates)
        args.result.update(
            {"gates": args.gates, "required_tier": terms.required_tier, "require_human_approval": terms.require_human_approval}
        )
    logged = None
    if not args.no_mlflow:
        logged = log_report(args.run, files)
        args.result["report_uri"] = logged.uri
        if logged.url:
            args.result["report_url"] = logged.url
    print(f"report: {files.markdown} and {files.html}" + (f" (logged as {logged.uri})" if logged else ""))
    return EXIT_OK
