"""The review report: what a reviewer reads before approving, from real inputs, in both formats.

The numbers in the report are checked against the statistics functions run on the same returns,
so a section that silently shows the wrong series, or nothing, fails here.
"""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from trainer.config import OPTION_NAMES
from trainer.evaluation import plots, statistics
from trainer.evaluation.metrics import sharpe_ratio
from trainer.evaluation.report import build_report, log_report

REPO = Path(__file__).resolve().parents[2]
GATES = REPO / "configs" / "gates.yaml"
PPY = 252.0
N = 300  # business days from 2018-01-01: 2018 and part of 2019
COST_BPS = (3.0, 2.0)  # transaction, slippage: 5 bps per unit of exposure traded


def _series(seed: int, drift: float) -> np.ndarray:
    return np.random.default_rng(seed).normal(drift, 0.01, N)


def backtest_frame(champion: bool = True) -> pd.DataFrame:
    positions = np.tile([0.0, 0.5, 0.5, -0.25, 0.0, 1.0], N // 6)
    frame = pd.DataFrame({
        "timestamp": pd.bdate_range("2018-01-01", periods=N),
        "candidate_return": _series(1, 0.001), "candidate_position": positions,
        "candidate_option": np.resize(list(OPTION_NAMES), N),
        "buy_and_hold_return": _series(2, 0.0005), "baseline_return": _series(3, 0.0),
        "baseline_position": 1.0,
    })
    if champion:
        frame["champion_return"] = _series(4, 0.0002)
        frame["champion_position"] = np.tile([0.0, 1.0], N // 2)
    return frame


def write_run(run_dir: Path, *, full: bool = True, run_id: str | None = None, champion: dict | None | str = "v3",
              config: bool = True) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps({
        "status": "completed", "symbol": "SPY", "algorithm": "hierarchical_sac", "profile": "demo",
        "config_hash": "cfg123", "data_digest": "dig456", "code_version": "abc789", "mlflow_run_id": run_id,
        "metrics": {},
    }))
    if not full:
        return run_dir
    if config:
        tree = yaml.safe_load((REPO / "configs" / "phase_b1_options.yaml").read_text())
        tree["environment"].update(transaction_cost_bps=COST_BPS[0], slippage_bps=COST_BPS[1])
        (run_dir / "config.resolved.yaml").write_text(yaml.safe_dump(tree))
    (run_dir / "gate_full.json").write_text(json.dumps({
        "stage": "full", "passed": True, "tier_reached": "minimum", "required_tier": "minimum",
        "results": [{"id": "sharpe_positive", "metric": "test.sharpe", "observed": 0.42, "comparison": ">",
                     "threshold_shown": "0.0", "status": "pass", "tier": "minimum", "blocking": True, "reason": "ok"},
                    {"id": "beats | baseline", "metric": "test.sharpe", "observed": 0.42, "comparison": ">",
                     "threshold_shown": "0.3", "status": "fail", "tier": "target", "blocking": True,
                     "reason": "0.42 is not > 0.3"}],
    }))
    (run_dir / "gate_smoke.json").write_text(json.dumps({
        "stage": "smoke", "passed": True, "tier_reached": "smoke",
        "results": [{"id": "smoke_losses_finite", "metric": "train.losses_finite", "observed": 1.0, "comparison": "==",
                     "threshold_shown": "1", "status": "pass", "tier": "smoke", "blocking": True}],
    }))
    frame = backtest_frame(champion=champion not in (None, "absent"))
    options = {}
    for i, name in enumerate(OPTION_NAMES):
        options.update({f"test.options.usage_pct.{name}": 0.1 + 0.01 * i, f"test.options.selections.{name}": 10.0 + i,
                        f"test.options.selection_share.{name}": 1 / 6, f"test.options.avg_duration.{name}": 5.5 + i})
    evaluation = {
        "metrics": {"test.sharpe": 0.42, "baseline.sharpe": 0.3, "buy_and_hold.sharpe": 0.5, "champion.sharpe": 0.17,
                    "champion.max_drawdown": 0.21, "stats.dsr": 0.61, "stats.dsr_trials": 3.0, "stats.psr_zero": 0.9,
                    "stats.sharpe_lo": 0.39, "stats.vs_champion.sharpe_diff": 0.25,
                    "stats.vs_champion.pvalue_worse": 0.83, **options},
        "split": "test", "periods_per_year": PPY, "bars": N, "first": "2018-01-01", "last": "2019-02-22",
        "baseline": {"source": "registry", "model_uri": "models:/x@champion"},
        "interpretation": "DSR < 0.95: not significant after 3 trials.",
        "option_selections_from": "option_steps",
    }
    if champion == "v3":
        evaluation["champion"] = {"version": 3, "model_name": "hierarchical-options-SPY", "run_id": "r" * 32,
                                  "data_end": "2017-12-29"}
    else:
        evaluation["metrics"] = {k: v for k, v in evaluation["metrics"].items() if "champion" not in k}
        if champion is None:
            evaluation["champion"] = None
    (run_dir / "evaluation.json").write_text(json.dumps(evaluation))
    frame.to_csv(run_dir / "backtest.csv", index=False)
    windows = []
    for i in range(1, 6):
        w = {"timesteps": i * 1000, "options/temperature": 1.0 * 0.9 ** i, "options/entropy": 1.7 - 0.1 * i}
        for name in OPTION_NAMES:
            w[f"options/usage_pct/{name}"] = 1 / 6
            w[f"options/avg_duration/{name}"] = 5.0 + i
        windows.append(w)
    (run_dir / "monitor_metrics.json").write_text(json.dumps(windows))
    return run_dir


def table_row(md: str, first_cell: str) -> list[str]:
    """The cells of the Markdown table row that starts with `first_cell`."""
    for line in md.splitlines():
        if line.startswith(f"| {first_cell} |"):
            return [c.strip() for c in line.strip("|").split(" | ")]
    raise AssertionError(f"no table row {first_cell!r} in the report")


def g(x: float) -> str:
    return f"{x:.4g}"


@pytest.fixture
def report(tmp_path, monkeypatch):
    """A full report, with the series each equity/drawdown plot was drawn from recorded."""
    drawn = {}
    for name in ("equity_curve", "drawdown"):
        real = getattr(plots, name)

        def spy(series, _real=real, _name=name):
            drawn[_name] = sorted(series)
            return _real(series)

        monkeypatch.setattr(plots, name, spy)
    files = build_report(write_run(tmp_path / "run"), gates_file=GATES)
    return files, files.markdown.read_text(), drawn


def test_both_formats_with_every_plot_inline(report):
    files, md, drawn = report
    page = files.html.read_text()
    names = {p.name for p in files.images}
    assert names == {"equity_curve.png", "drawdown.png", "option_usage.png", "temperature_entropy.png", "option_timeline.png"}
    for name in names:
        assert f"]({name})" in md  # linked, next to the .md
        assert (files.markdown.parent / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # equity and drawdown: all four strategies on the same bars
    assert drawn == {k: ["Phase A baseline", "buy and hold", "candidate", "champion"] for k in ("equity_curve", "drawdown")}
    sources = re.findall(r'src="([^"]+)"', page)
    assert len(sources) == 5 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert base64.b64decode(sources[0].split(",", 1)[1])[:4] == b"\x89PNG"
    assert "<b>PASSED</b>" in page and "beats | baseline" in page and "http" not in page
    assert "not available" not in md


def test_verdict_of_every_gate_with_the_tier_promotion_requires(report):
    _, md, _ = report
    assert "**PASSED** (full gates), tier reached: **minimum**; promotion requires **minimum**." in md
    assert f"Promotion policy ({GATES}): required tier **minimum**; human approval required: no." in md
    # the minimum gate is needed for promotion, the target one is not (policy: minimum); its reason is shown
    assert table_row(md, "sharpe_positive") == ["sharpe_positive", "test.sharpe", "0.42", "> 0.0", "minimum", "yes", "yes", "pass", ""]
    assert table_row(md, "beats \\| baseline")[4:] == ["target", "yes", "no", "fail", "0.42 is not > 0.3"]
    assert table_row(md, "smoke_losses_finite")[-2] == "pass"


def test_champion_candidate_phase_a_and_buy_and_hold_side_by_side(report):
    _, md, _ = report
    assert "Current champion: **hierarchical-options-SPY v3** (MLflow run " + "r" * 32 + ", data to 2017-12-29)" in md
    assert "Candidate minus champion Sharpe: 0.25; one-sided paired test that the candidate is worse: p = 0.83." in md
    assert table_row(md, "metric") == ["metric", "candidate", "champion", "Phase A baseline", "buy and hold"]
    assert table_row(md, "sharpe") == ["sharpe", "0.42", "0.17", "0.3", "0.5"]
    assert table_row(md, "max_drawdown") == ["max_drawdown", "n/a", "0.21", "n/a", "n/a"]


def test_each_sharpe_with_its_interval_and_lo_annualisation(report):
    _, md, _ = report
    frame = backtest_frame()
    for label, column in (("candidate", "candidate_return"), ("champion", "champion_return"),
                          ("Phase A baseline", "baseline_return"), ("buy and hold", "buy_and_hold_return")):
        r = frame[column].to_numpy()
        lo, hi = statistics.sharpe_confidence_interval(r, PPY, level=0.95)
        per_bar = sharpe_ratio(r, 1.0)
        eta = statistics.lo_annualisation_factor(r, PPY)
        row = table_row(md, label)
        assert row == [label, g(per_bar * math.sqrt(252)), g(lo), g(hi), g(per_bar * eta), str(N)], label
        assert lo < per_bar * math.sqrt(252) < hi
    assert "q = 252 bars per year" in md


def test_sharpe_by_year(report):
    _, md, _ = report
    frame = backtest_frame()
    expected = {
        column: {label: sharpe for label, sharpe, _ in statistics.sharpe_by_period(frame["timestamp"], frame[column], PPY)}
        for column in ("candidate_return", "champion_return", "baseline_return", "buy_and_hold_return")
    }
    bars_2018 = int((frame["timestamp"].dt.year == 2018).sum())
    for year, bars in (("2018", bars_2018), ("2019", N - bars_2018)):
        assert table_row(md, year) == [year, *(g(expected[c][year]) for c in expected), str(bars)]


def test_turnover_and_costs_paid_derived_from_positions_and_the_cost_config(report):
    _, md, _ = report
    frame = backtest_frame()
    rate = sum(COST_BPS) / 1e4
    traded = np.abs(np.diff(frame["candidate_position"].to_numpy(), prepend=0.0))
    section = md.split("## Turnover and costs paid")[1].split("##")[0]
    row = table_row(section, "candidate")
    assert row == ["candidate", g(traded.mean()), g(traded.mean() * PPY), f"{traded.sum() * rate:.2%}",
                   f"{traded.mean() * rate * PPY:.2%}", str(int((traded > 1e-9).sum()))]
    assert "(3 + 2) / 1e4" in section
    assert "Derived here from backtest.csv's positions for: candidate, champion, Phase A baseline" in section
    assert "| buy and hold | 0.003333 | 0.84 | 0.00% | 0.00% | 1 |" in section  # fully invested from bar 1, charged nothing


def test_test_split_option_usage_and_durations(report):
    _, md, _ = report
    section = md.split("## Option usage and durations on the test split")[1].split("##")[0]
    name = OPTION_NAMES[2]
    assert f"| {name} | 12.00% | 12 | 16.67% | 7.5 | 3 |" in section  # min_duration 3 from the run config
    assert "From evaluation.json (test.options.*); a selection is a bar where an option starts" in section


def test_statistics_with_caveats(report):
    _, md, _ = report
    for key in ("stats.dsr", "stats.dsr_trials", "stats.sharpe_lo", "stats.vs_champion.pvalue_worse"):
        assert f"| {key} |" in md
    for text in ("dig456", "cfg123", "abc789", "demo", "| evaluated split | test |", "not significant after 3 trials",
                 "2018-01-01 .. 2019-02-22 (300 bars, 252 per year)"):
        assert text in md


def test_first_model_has_no_champion_and_says_so(tmp_path):
    md = build_report(write_run(tmp_path / "run", champion=None)).markdown.read_text()
    assert "No champion: this is the first model of SPY" in md
    assert table_row(md, "metric") == ["metric", "candidate", "champion", "Phase A baseline", "buy and hold"]
    assert table_row(md, "sharpe")[2] == "n/a"
    assert "Promotion policy not available: no gates file given" in md  # no --gates


def test_missing_inputs_render_not_available(tmp_path):
    md = build_report(write_run(tmp_path / "old", champion="absent", config=False)).markdown.read_text()
    assert "Champion comparison not available: evaluation.json has no champion entry." in md
    assert "Costs paid not available: no config.resolved.yaml" in md
    # the option table still renders, without the configured min_duration
    assert f"| {OPTION_NAMES[0]} | 10.00% | 10 | 16.67% | 5.5 | n/a |" in md

    files = build_report(write_run(tmp_path / "phase_a", full=False), tmp_path / "out")
    md = files.markdown.read_text()
    assert files.images == ()
    for title in ("Full-stage gate verdict", "Champion comparison", "Equity curve", "Drawdown", "Backtest metrics",
                  "Sharpe confidence intervals", "Sharpe by year", "Turnover and costs", "Test-split option usage",
                  "Option usage and durations over training", "Option timeline over the backtest"):
        assert f"{title} not available" in md, title
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
    assert main(["--result-json", str(out), "report", "--run", str(run_dir), "--gates", str(GATES)]) == 0
    result = json.loads(out.read_text())
    uri = f"runs:/{run_id}/report/report.html"
    assert result["report_uri"] == uri and result["report_md"].endswith("report.md")
    # the policy the approval step reads, from the same gates file promote gets
    assert result["required_tier"] == "minimum" and result["require_human_approval"] is False
    assert "report_url" not in result  # a local store has no web page
    logged = {a.path for a in client.list_artifacts(run_id, "report")}
    assert {"report/report.md", "report/report.html", "report/equity_curve.png"} <= logged
    mv = client.get_model_version("hierarchical-options-SPY", "1")
    assert mv.tags["report_uri"] == uri and f"Review report: {uri}" in mv.description
    # Logging again keeps one report line in the description.
    assert log_report(run_dir, build_report(run_dir)).uri == uri
    assert client.get_model_version("hierarchical-options-SPY", "1").description.count("Review report:") == 1


def test_run_page_url_only_for_a_web_server():
    from trainer.evaluation.report import run_page_url

    assert run_page_url("http://mlflow:5000/", "7", "abc") == "http://mlflow:5000/#/experiments/7/runs/abc/artifacts"
    assert run_page_url("sqlite:///x.db", "7", "abc") is None
