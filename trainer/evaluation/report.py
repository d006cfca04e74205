"""The review report of a run: Markdown (PNG files alongside) and self-contained HTML (PNGs inline).

A reviewer approving a promotion reads this: the verdict and tier, the gate table, the plots, the
statistics with their caveats, and the provenance (data digest, config hash, code version, profile,
split). Inputs that are missing (no evaluation.json yet, a Phase A run without options) become a
"not available" note, never an error. `log_report` puts the files under `report/` in the run's
MLflow artifacts and points the run's registered versions at it (tag `report_uri`).

The document is built once as a list of blocks and rendered twice, so the two formats never drift.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from trainer.errors import TrainerError
from trainer.evaluation import plots
from trainer.io import write_bytes_atomic, write_text_atomic

REPORT_DIR = "report"

# Why each statistic must be read with care (shown next to its value).
STAT_CAVEATS = {
    "stats.psr_zero": "Probability the true Sharpe is above 0; assumes the returns are stationary and uses their skew and kurtosis.",
    "stats.psr_baseline": "Probability the true Sharpe beats the Phase A baseline's; same assumptions as PSR.",
    "stats.min_trl": "Bars of track record needed for 95% confidence that Sharpe > 0; compare with the test length.",
    "stats.sharpe_diff_pvalue": "p-value of candidate vs baseline Sharpe on the same bars; small samples make it noisy.",
    "stats.dsr": "Deflated Sharpe: PSR corrected for the number of trials (registered versions); it falls as trials grow.",
}
_TEST_METRICS = ("sharpe", "total_return", "cagr", "max_drawdown", "calmar", "sortino", "turnover", "hit_rate", "exposure")


@dataclass(frozen=True)
class Block:
    kind: str  # h2 | p | table | img | na
    text: str = ""
    headers: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    image: bytes | None = None
    filename: str = ""


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    html: Path
    images: tuple[Path, ...]


@dataclass(frozen=True)
class _Inputs:
    run_dir: Path
    summary: dict[str, Any]
    gate: dict[str, Any] | None
    gate_stage: str | None
    evaluation: dict[str, Any] | None
    backtest: pd.DataFrame | None
    monitor: list[dict[str, Any]] | None


def _optional_json(path: Path) -> Any:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise TrainerError(f"{path}: not valid JSON ({exc})") from None


def _load_inputs(run_dir: Path) -> _Inputs:
    summary = _optional_json(run_dir / "summary.json")
    if summary is None:
        raise TrainerError(f"{run_dir}: summary.json not found (is this a run directory?)")
    gate, stage = None, None
    for candidate in ("full", "smoke"):
        payload = _optional_json(run_dir / f"gate_{candidate}.json")
        if payload is not None:
            gate, stage = payload.get("verdict", payload), candidate
            break
    backtest = None
    if (run_dir / "backtest.csv").exists():
        backtest = pd.read_csv(run_dir / "backtest.csv", parse_dates=["timestamp"]).set_index("timestamp")
    return _Inputs(
        run_dir=run_dir,
        summary=summary,
        gate=gate,
        gate_stage=stage,
        evaluation=_optional_json(run_dir / "evaluation.json"),
        backtest=backtest,
        monitor=_optional_json(run_dir / "monitor_metrics.json"),
    )


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return "n/a" if isinstance(value, float) and not math.isfinite(value) else f"{value:.4g}"
    return "n/a" if value is None else str(value)


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def _verdict_section(inputs: _Inputs) -> list[Block]:
    blocks = [Block("h2", "Verdict")]
    if inputs.gate is None:
        return blocks + [Block("na", "Gate verdict not available: `trainer gate` has not run for this run.")]
    passed = "PASSED" if inputs.gate.get("passed") else "FAILED"
    blocks.append(Block("p", f"**{passed}** ({inputs.gate_stage} gates), tier reached: **{inputs.gate.get('tier_reached') or 'none'}**."))
    rows = tuple(
        (str(r.get("id")), str(r.get("metric")), _fmt(r.get("observed")), f"{r.get('comparison', '')} {r.get('threshold_shown', '')}".strip(),
         str(r.get("tier")), "yes" if r.get("blocking") else "no", str(r.get("status")))
        for r in inputs.gate.get("results") or []
    )
    blocks.append(Block("table", headers=("gate", "metric", "observed", "threshold", "tier", "blocking", "status"), rows=rows))
    return blocks


def _provenance_section(inputs: _Inputs) -> list[Block]:
    summary = inputs.summary
    split = (inputs.evaluation or {}).get("split", "n/a")
    baseline = (inputs.evaluation or {}).get("baseline") or {}
    rows = (
        ("symbol", _fmt(summary.get("symbol"))),
        ("algorithm", _fmt(summary.get("algorithm"))),
        ("status", _fmt(summary.get("status"))),
        ("profile", _fmt(summary.get("profile"))),
        ("data digest", _fmt(summary.get("data_digest"))),
        ("config hash", _fmt(summary.get("config_hash"))),
        ("code version", _fmt(summary.get("code_version"))),
        ("MLflow run", _fmt(summary.get("mlflow_run_id"))),
        ("evaluated split", _fmt(split)),
        ("baseline source", f"{_fmt(baseline.get('source'))} {baseline.get('model_uri') or ''}".strip()),
    )
    return [Block("h2", "Provenance"), Block("table", headers=("field", "value"), rows=rows)]


def _metrics_section(inputs: _Inputs) -> list[Block]:
    blocks = [Block("h2", "Backtest metrics")]
    if inputs.evaluation is None:
        return blocks + [Block("na", "Backtest metrics not available: `trainer evaluate` has not run (no evaluation.json).")]
    metrics = inputs.evaluation.get("metrics") or {}
    rows = tuple(
        (name, _fmt(metrics.get(f"test.{name}")), _fmt(metrics.get(f"baseline.{name}")), _fmt(metrics.get(f"buy_and_hold.{name}")))
        for name in _TEST_METRICS
        if any(f"{p}.{name}" in metrics for p in ("test", "baseline", "buy_and_hold"))
    )
    blocks.append(Block("table", headers=("metric", "candidate", "Phase A baseline", "buy and hold"), rows=rows))
    blocks.append(Block("h2", "Statistics and their caveats"))
    stat_rows = tuple((key, _fmt(metrics.get(key)), caveat) for key, caveat in STAT_CAVEATS.items() if key in metrics)
    if stat_rows:
        blocks.append(Block("table", headers=("statistic", "value", "caveat"), rows=stat_rows))
    else:
        blocks.append(Block("na", "Sharpe statistics not available in evaluation.json."))
    if inputs.evaluation.get("interpretation"):
        blocks.append(Block("p", f"Interpretation: {inputs.evaluation['interpretation']}"))
    return blocks


def _plot_section(title: str, filename: str, image: bytes | None, missing: str) -> list[Block]:
    if image is None:
        return [Block("h2", title), Block("na", f"{title} not available: {missing}.")]
    return [Block("h2", title), Block("img", text=title, image=image, filename=filename)]


def _option_sections(inputs: _Inputs) -> list[Block]:
    no_options = "this run has no options (Phase A) or no monitor windows were recorded"
    return (
        _plot_section("Option usage and durations over training", "option_usage.png", plots.option_usage(inputs.monitor), no_options)
        + _plot_section("Temperature and entropy over training", "temperature_entropy.png", plots.temperature_entropy(inputs.monitor), no_options)
        + _plot_section("Option timeline over the backtest", "option_timeline.png", plots.option_timeline(inputs.backtest),
                        "no backtest.csv, or the candidate ran no options")
    )


def build_blocks(inputs: _Inputs) -> list[Block]:
    no_backtest = "no backtest.csv (run `trainer evaluate`)"
    return (
        _verdict_section(inputs)
        + _plot_section("Equity curve", "equity_curve.png", plots.equity_curve(inputs.backtest), no_backtest)
        + _plot_section("Drawdown", "drawdown.png", plots.drawdown(inputs.backtest), no_backtest)
        + _metrics_section(inputs)
        + _option_sections(inputs)
        + _provenance_section(inputs)
    )


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _title(summary: dict[str, Any]) -> str:
    return f"Review report: {summary.get('symbol', '?')} {summary.get('algorithm', '?')} ({summary.get('profile', '?')})"


def render_markdown(title: str, blocks: list[Block]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [f"# {title}", ""]
    for block in blocks:
        if block.kind == "h2":
            lines += [f"## {block.text}", ""]
        elif block.kind == "p":
            lines += [block.text, ""]
        elif block.kind == "na":
            lines += [f"> _{block.text}_", ""]
        elif block.kind == "img":
            lines += [f"![{block.text}]({block.filename})", ""]
        elif block.kind == "table":
            lines.append("| " + " | ".join(block.headers) + " |")
            lines.append("|" + "---|" * len(block.headers))
            lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in block.rows]
            lines.append("")
    return "\n".join(lines)


_CSS = (
    "body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:90%}"
    "th{background:#f3f3f3}.na{color:#8a6d3b;background:#fcf8e3;padding:6px}img{max-width:100%}"
)


def _inline_bold(text: str) -> str:
    """The only Markdown the paragraphs use is **bold**; escape first, then convert it."""
    parts = html.escape(text).split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def render_html(title: str, blocks: list[Block]) -> str:
    body = [f"<h1>{html.escape(title)}</h1>"]
    for block in blocks:
        if block.kind == "h2":
            body.append(f"<h2>{html.escape(block.text)}</h2>")
        elif block.kind == "p":
            body.append(f"<p>{_inline_bold(block.text)}</p>")
        elif block.kind == "na":
            body.append(f'<p class="na">{html.escape(block.text)}</p>')
        elif block.kind == "img":
            encoded = base64.b64encode(block.image or b"").decode()
            body.append(f'<img alt="{html.escape(block.text)}" src="data:image/png;base64,{encoded}">')
        elif block.kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.headers)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            body.append(f"<table><tr>{head}</tr>{rows}</table>")
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def build_report(run_dir: str | Path, out_dir: str | Path | None = None) -> ReportFiles:
    """Write report.md, report.html and the PNGs into `out_dir` (default `<run_dir>/report`)."""
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir else run_dir / REPORT_DIR
    inputs = _load_inputs(run_dir)
    blocks = build_blocks(inputs)
    title = _title(inputs.summary)
    images = []
    for block in blocks:
        if block.kind == "img" and block.image:
            write_bytes_atomic(out_dir / block.filename, block.image)
            images.append(out_dir / block.filename)
    markdown, page = out_dir / "report.md", out_dir / "report.html"
    write_text_atomic(markdown, render_markdown(title, blocks))
    write_text_atomic(page, render_html(title, blocks))
    return ReportFiles(markdown, page, tuple(images))


def log_report(run_dir: str | Path, files: ReportFiles) -> str:
    """Log the report under `report/` in the run's MLflow run; tag the run and its model versions.

    Returns the report's URI (`runs:/<run_id>/report/report.html`).
    """
    from trainer.registry import attach_report, registry_client, registry_errors

    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    run_id = summary.get("mlflow_run_id")
    if not run_id:
        raise TrainerError(f"{run_dir / 'summary.json'}: no mlflow_run_id; use --no-mlflow to only write the files")
    client = registry_client()
    uri = f"runs:/{run_id}/{REPORT_DIR}/{files.html.name}"
    with registry_errors(f"logging the report of run {run_id}"):
        for path in (files.markdown, files.html, *files.images):
            client.log_artifact(run_id, str(path), artifact_path=REPORT_DIR)
        client.set_tag(run_id, "report_uri", uri)
    attach_report(run_id, uri)
    return uri
