"""The review report: both formats from real inputs, "not available" sections, MLflow logging."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest

from trainer.config import OPTION_NAMES
from trainer.evaluation.report import build_report, log_report


def write_run(run_dir, *, full: bool = True, run_id: str | None = None):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps({
        "status": "completed", "symbol": "SPY", "algorithm": "hierarchical_sac", "profile": "demo",
        "config_hash": "cfg123", "data_digest": "dig456", "code_version": "abc789", "mlflow_run_id": run_id,
        "metrics": {},
    }))
    if not full:
        return run_dir
    (run_dir / "gate_full.json").write_text(json.dumps({
        "stage": "full", "passed": True, "tier_reached": "minimum",
        "results": [{"id": "sharpe_positive", "metric": "test.sharpe", "observed": 0.42, "comparison": ">",
                     "threshold_shown": "0.0", "status": "pass", "tier": "minimum", "blocking": True},
                    {"id": "beats | baseline", "metric": "test.sharpe", "observed": 0.42, "comparison": ">",
                     "threshold_shown": "0.3", "status": "fail", "tier": "target", "blocking": True}],
    }))
    (run_dir / "evaluation.json").write_text(json.dumps({
        "metrics": {"test.sharpe": 0.42, "baseline.sharpe": 0.3, "buy_and_hold.sharpe": 0.5, "stats.dsr": 0.61,
                    "stats.psr_zero": 0.9},
        "split": "test", "periods_per_year": 252.0, "baseline": {"source": "registry", "model_uri": "models:/x@champion"},
        "interpretation": "DSR < 0.95: not significant after 3 trials.",
    }))
    rng = np.random.default_rng(0)
    n = 120
    pd.DataFrame({
        "timestamp": pd.bdate_range("2018-01-01", periods=n),
        "candidate_return": rng.normal(0, 0.01, n), "candidate_position": rng.uniform(-1, 1, n),
        "candidate_option": rng.choice(list(OPTION_NAMES) + [""], n),
        "buy_and_hold_return": rng.normal(0, 0.01, n), "baseline_return": rng.normal(0, 0.01, n),
        "baseline_position": 0.0,
    }).to_csv(run_dir / "backtest.csv", index=False)
    windows = []
    for i in range(1, 6):
        w = {"timesteps": i * 1000, "options/temperature": 1.0 * 0.9 ** i, "options/entropy": 1.7 - 0.1 * i}
        for name in OPTION_NAMES:
            w[f"options/usage_pct/{name}"] = 1 / 6
            w[f"options/avg_duration/{name}"] = 5.0 + i
        windows.append(w)
    (run_dir / "monitor_metrics.json").write_text(json.dumps(windows))
    return run_dir


def test_full_report_markdown_and_html(tmp_path):
    files = build_report(write_run(tmp_path / "run"))
    md, page = files.markdown.read_text(), files.html.read_text()
    names = {p.name for p in files.images}
    assert names == {"equity_curve.png", "drawdown.png", "option_usage.png", "temperature_entropy.png", "option_timeline.png"}
    for name in names:
        assert f"]({name})" in md  # linked, next to the .md
        assert (files.markdown.parent / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "**PASSED** (full gates), tier reached: **minimum**" in md
    assert "| beats \\| baseline | test.sharpe | 0.42 | > 0.3 | target | yes | fail |" in md
    for text in ("dig456", "cfg123", "abc789", "demo", "| evaluated split | test |", "stats.dsr", "trials", "not significant after 3 trials"):
        assert text in md
    assert "not available" not in md
    # Self-contained HTML: every image inline, nothing fetched from elsewhere.
    sources = re.findall(r'src="([^"]+)"', page)
    assert len(sources) == 5 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert base64.b64decode(sources[0].split(",", 1)[1])[:4] == b"\x89PNG"
    assert "<b>PASSED</b>" in page and "beats | baseline" in page and "http" not in page


def test_missing_inputs_render_not_available(tmp_path):
    files = build_report(write_run(tmp_path / "phase_a", full=False), tmp_path / "out")
    md = files.markdown.read_text()
    assert files.images == ()
    for title in ("Gate verdict", "Equity curve", "Drawdown", "Backtest metrics", "Option usage and durations over training",
                  "Option timeline over the backtest"):
        assert f"{title} not available" in md
    assert "not available" in files.html.read_text()
    with pytest.raises(Exception, match="summary.json not found"):
        build_report(tmp_path / "nothing")


def test_report_logged_to_the_run_and_its_model_version(tmp_path, monkeypatch):
    from trainer.cli import main
    from trainer.registry import registry_client

    monkeypatch.setenv("TRAINER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client = registry_client()
    from trainer.tracking import configure_mlflow

    run_id = client.create_run(configure_mlflow()).info.run_id
    client.create_registered_model("hierarchical-options-SPY")
    client.create_model_version("hierarchical-options-SPY", f"runs:/{run_id}/agent", run_id=run_id, description="Verdict: passed.")
    run_dir = write_run(tmp_path / "run", run_id=run_id)

    out = tmp_path / "result.json"
    assert main(["--result-json", str(out), "report", "--run", str(run_dir)]) == 0
    result = json.loads(out.read_text())
    uri = f"runs:/{run_id}/report/report.html"
    assert result["report_uri"] == uri and result["report_md"].endswith("report.md")
    logged = {a.path for a in client.list_artifacts(run_id, "report")}
    assert {"report/report.md", "report/report.html", "report/equity_curve.png"} <= logged
    mv = client.get_model_version("hierarchical-options-SPY", "1")
    assert mv.tags["report_uri"] == uri and f"Review report: {uri}" in mv.description
    # Logging again keeps one report line in the description.
    log_report(run_dir, build_report(run_dir))
    assert client.get_model_version("hierarchical-options-SPY", "1").description.count("Review report:") == 1
