"""The review report of a run: Markdown (PNG files alongside) and self-contained HTML (PNGs inline).

A reviewer approving a promotion reads this. On the candidate's test bars it puts side by side the
candidate, the current champion, the Phase A baseline and buy-and-hold: equity and drawdown, the
backtest metrics, each Sharpe with its 95% confidence interval and its Lo (2002)
autocorrelation-adjusted annualisation, Sharpe by year, turnover and the costs paid. Then the
test-split option usage and durations, the verdict of every gate with the tier promotion requires,
the statistics with their caveats, the training plots and the provenance (data digest, config hash,
code version, profile, split).

Inputs that are missing (no evaluation.json yet, no champion, a Phase A run without options)
become a "not available" note, never an error. `log_report` puts the files under `report/` in the
run's MLflow artifacts and points the run's registered versions at it (tag `report_uri`).

The document is built once as a list of blocks and rendered twice, so the two formats never drift.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainer.errors import TrainerError
from trainer.evaluation import plots
from trainer.io import write_bytes_atomic, write_text_atomic
from trainer.run_dir import REPORT_DIR, RunDir

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Strategy:
    """One return series of the backtest: its backtest.csv columns and its evaluation.json metric prefix."""

    key: str
    label: str
    metrics_prefix: str

    @property
    def return_column(self) -> str:
        return f"{self.key}_return"

    @property
    def position_column(self) -> str:
        return f"{self.key}_position"


CANDIDATE = Strategy("candidate", "candidate", "test")
CHAMPION = Strategy("champion", "champion", "champion")
BASELINE = Strategy("baseline", "Phase A baseline", "baseline")
BUY_AND_HOLD = Strategy("buy_and_hold", "buy and hold", "buy_and_hold")
STRATEGIES = (CANDIDATE, CHAMPION, BASELINE, BUY_AND_HOLD)

# Why each statistic must be read with care (shown next to its value).
STAT_CAVEATS = {
    "stats.psr_zero": "Probability the true Sharpe is above 0; assumes the returns are stationary and uses their skew and kurtosis.",
    "stats.psr_baseline": "Probability the true Sharpe beats the Phase A baseline's; same assumptions as PSR.",
    "stats.min_trl": "Bars of track record needed for 95% confidence that Sharpe > 0; compare with the test length.",
    "stats.sharpe_diff_pvalue": "p-value of candidate vs baseline Sharpe on the same bars; small samples make it noisy.",
    "stats.vs_champion.sharpe_diff": "Candidate minus champion Sharpe on the same test bars (annualised).",
    "stats.vs_champion.pvalue_worse": "One-sided paired (Ledoit-Wolf HAC) p-value that the candidate is worse than the champion; small = worse.",
    "stats.sharpe_sqrt_q": "Candidate Sharpe annualised by sqrt(q): assumes uncorrelated returns.",
    "stats.sharpe_lo": "Lo (2002) annualisation: corrects sqrt(q) for the returns' autocorrelation; positive autocorrelation lowers it.",
    "stats.dsr": "Deflated Sharpe: PSR corrected for the number of comparable trials; it falls as trials grow.",
    "stats.dsr_trials": "Comparable trials (same symbol, profile and stage) the DSR deflates for.",
    "stats.dsr_sr_variance": "Variance of the trials' per-bar Sharpes the DSR uses (see the interpretation for its source).",
}
_TEST_METRICS = ("sharpe", "total_return", "cagr", "max_drawdown", "calmar", "sortino", "turnover", "hit_rate", "exposure")
_OPTION_FIELDS = ("usage_pct", "selections", "selection_share", "avg_duration")


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
class CostModel:
    """What the trading env charges per unit of exposure traded (trainer/envs/trading_env.py)."""

    transaction_cost_bps: float
    slippage_bps: float

    @property
    def rate(self) -> float:
        return (self.transaction_cost_bps + self.slippage_bps) / 1e4


@dataclass(frozen=True)
class PromotionTerms:
    """The gates file's `promotion:` section, as far as the report shows it."""

    source: str
    required_tier: str
    require_human_approval: bool


@dataclass(frozen=True)
class _Inputs:
    run_dir: Path
    summary: dict[str, Any]
    gates: dict[str, dict[str, Any]]  # stage (full, smoke) -> verdict
    evaluation: dict[str, Any] | None
    backtest: pd.DataFrame | None
    monitor: list[dict[str, Any]] | None
    config: Any | None  # the run's TrainerConfig (config.resolved.yaml), None when absent
    promotion: PromotionTerms | None

    @property
    def metrics(self) -> dict[str, Any]:
        return (self.evaluation or {}).get("metrics") or {}

    @property
    def periods_per_year(self) -> float | None:
        value = (self.evaluation or {}).get("periods_per_year")
        return float(value) if isinstance(value, (int, float)) and value > 0 else None

    def returns(self, strategy: Strategy) -> pd.Series | None:
        """The strategy's per-bar returns on the test bars, None when it was not backtested."""
        if self.backtest is None or strategy.return_column not in self.backtest:
            return None
        series = pd.to_numeric(self.backtest[strategy.return_column], errors="coerce")
        return series if series.notna().any() else None

    def positions(self, strategy: Strategy) -> pd.Series | None:
        if strategy is BUY_AND_HOLD and self.returns(strategy) is not None:
            return pd.Series(1.0, index=self.backtest.index)  # fully invested from the first bar
        if self.backtest is None or strategy.position_column not in self.backtest:
            return None
        series = pd.to_numeric(self.backtest[strategy.position_column], errors="coerce")
        return series if series.notna().any() else None


def _optional_json(path: Path) -> Any:
    """A JSON file that may be absent (None); one that is there but broken is an error naming it."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise TrainerError(f"{path}: not valid JSON ({exc})") from None


def _load_config(run: RunDir) -> Any | None:
    if not run.config_path.exists():
        return None
    from trainer.config import load_config

    return load_config(run.config_path)


def load_promotion_terms(gates_file: str | Path) -> PromotionTerms:
    """The promotion policy of a gates file (trainer/evaluation/gates.py reads and validates it)."""
    from trainer.evaluation.gates import load_promotion_policy

    policy = load_promotion_policy(gates_file)
    return PromotionTerms(str(gates_file), policy.required_tier, policy.require_human_approval)


def _load_inputs(run: RunDir, gates_file: str | Path | None) -> _Inputs:
    summary = run.read_summary()  # a TrainerError naming the file when this is no run directory
    gates = {stage: run.read_gate_verdict(stage) for stage in ("full", "smoke") if run.gate_path(stage).exists()}
    backtest = run.read_backtest()
    return _Inputs(
        run_dir=run.path,
        summary=summary,
        gates=gates,
        evaluation=run.read_evaluation(),
        backtest=backtest.set_index("timestamp") if backtest is not None else None,
        monitor=_optional_json(run.monitor_path),
        config=_load_config(run),
        promotion=load_promotion_terms(gates_file) if gates_file else None,
    )


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float, np.floating, np.integer)):
        return "n/a" if not math.isfinite(float(value)) else f"{float(value):.4g}"
    return "n/a" if value is None else str(value)


def _pct(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2%}"


# --------------------------------------------------------------------------------------------
# Sections: the decision
# --------------------------------------------------------------------------------------------


def _required_tiers(required_tier: str) -> tuple[str, ...]:
    from trainer.evaluation.gates import ORDERED_TIERS

    if required_tier not in ORDERED_TIERS:
        return ORDERED_TIERS[:1]
    return ORDERED_TIERS[: ORDERED_TIERS.index(required_tier) + 1]


def _gate_rows(verdict: dict[str, Any], needed: Callable[[dict[str, Any]], str]) -> tuple[tuple[str, ...], ...]:
    rows = []
    for r in verdict.get("results") or []:
        threshold = f"{r.get('comparison', '')} {r.get('threshold_shown', '')}".strip()
        note = "" if r.get("status") == "pass" else str(r.get("reason") or "")
        rows.append((
            str(r.get("id")), str(r.get("metric")), _fmt(r.get("observed")), threshold, str(r.get("tier")),
            "yes" if r.get("blocking") else "no", needed(r), str(r.get("status")), note,
        ))
    return tuple(rows)


_GATE_HEADERS = ("gate", "metric", "observed", "threshold", "tier", "blocking", "needed for promotion", "status", "note")


def _verdict_section(inputs: _Inputs) -> list[Block]:
    blocks = [Block("h2", "Verdict")]
    terms = inputs.promotion
    full = inputs.gates.get("full")
    required_tier = terms.required_tier if terms else (full or {}).get("required_tier") or "minimum"
    if terms:
        blocks.append(Block("p", (
            f"Promotion policy ({terms.source}): required tier **{terms.required_tier}**; human approval "
            f"required: {'yes' if terms.require_human_approval else 'no'}. The comparison with the champion is "
            "made by the full-stage gates below."
        )))
    else:
        blocks.append(Block("na", (
            "Promotion policy not available: no gates file given (`trainer report --gates`); the required tier "
            f"below is the one the full-stage verdict was judged against ({required_tier})."
        )))
    if full is None:
        blocks.append(Block("na", "Full-stage gate verdict not available: `trainer gate --stage full` has not run for this run."))
    else:
        passed = "PASSED" if full.get("passed") else "FAILED"
        reached = full.get("tier_reached") or "none"
        judged = full.get("required_tier")
        blocks.append(Block("p", (
            f"**{passed}** (full gates), tier reached: **{reached}**; promotion requires **{required_tier}**"
            + (f" (the verdict was judged against {judged})" if judged and judged != required_tier else "") + "."
        )))
        tiers = _required_tiers(required_tier)

        def needed(r: dict[str, Any]) -> str:
            required = bool(r.get("blocking")) and (r.get("tier") in tiers or r.get("tier") == "statistical")
            return "yes" if required else "no"

        blocks.append(Block("table", headers=_GATE_HEADERS, rows=_gate_rows(full, needed)))
    smoke = inputs.gates.get("smoke")
    if smoke is not None:
        state = "passed" if smoke.get("passed") else "failed"
        blocks.append(Block("p", f"Smoke gates ({state}; they decide whether full training runs):"))
        blocks.append(Block("table", headers=_GATE_HEADERS, rows=_gate_rows(smoke, lambda r: "before full training")))
    elif full is not None:
        blocks.append(Block("na", "Smoke-stage gate verdict not available: no gate_smoke.json in this run directory."))
    return blocks


def _champion_section(inputs: _Inputs) -> list[Block]:
    blocks = [Block("h2", "Champion")]
    if inputs.evaluation is None:
        return blocks + [Block("na", "Champion comparison not available: `trainer evaluate` has not run (no evaluation.json).")]
    if "champion" not in inputs.evaluation:
        return blocks + [Block("na", "Champion comparison not available: evaluation.json has no champion entry.")]
    champion = inputs.evaluation.get("champion")
    symbol = inputs.summary.get("symbol", "this symbol")
    if not champion:
        return blocks + [Block("p", (
            f"No champion: this is the first model of {symbol}; no comparison with a champion applies and the "
            "version is judged on the absolute tiers."
        ))]
    blocks.append(Block("p", (
        f"Current champion: **{champion.get('model_name')} v{champion.get('version')}** (MLflow run "
        f"{champion.get('run_id')}, data to {champion.get('data_end')}), backtested on the candidate's test bars "
        "with the same costs and calendar."
    )))
    metrics = inputs.metrics
    diff, pvalue = metrics.get("stats.vs_champion.sharpe_diff"), metrics.get("stats.vs_champion.pvalue_worse")
    if diff is None and pvalue is None:
        blocks.append(Block("na", "Paired test against the champion not available in evaluation.json."))
    else:
        blocks.append(Block("p", (
            f"Candidate minus champion Sharpe: {_fmt(diff)}; one-sided paired test that the candidate is worse: "
            f"p = {_fmt(pvalue)}."
        )))
    if inputs.returns(CHAMPION) is None:
        blocks.append(Block("na", "Champion returns not available in backtest.csv (no champion_return column)."))
    return blocks


# --------------------------------------------------------------------------------------------
# Sections: performance on the same bars
# --------------------------------------------------------------------------------------------


def _present(inputs: _Inputs) -> list[Strategy]:
    """The strategies with returns on the test bars (candidate first)."""
    return [s for s in STRATEGIES if inputs.returns(s) is not None]


def _plot_section(title: str, filename: str, image: bytes | None, missing: str) -> list[Block]:
    if image is None:
        return [Block("h2", title), Block("na", f"{title} not available: {missing}.")]
    return [Block("h2", title), Block("img", text=title, image=image, filename=filename)]


def _series_for_plots(inputs: _Inputs) -> dict[str, pd.Series]:
    return {s.label: inputs.returns(s) for s in _present(inputs)} if inputs.returns(CANDIDATE) is not None else {}


def _metrics_section(inputs: _Inputs) -> list[Block]:
    blocks = [Block("h2", "Backtest metrics (test split, same bars)")]
    if inputs.evaluation is None:
        return blocks + [Block("na", "Backtest metrics not available: `trainer evaluate` has not run (no evaluation.json).")]
    metrics = inputs.metrics
    rows = tuple(
        (name, *(_fmt(metrics.get(f"{s.metrics_prefix}.{name}")) for s in STRATEGIES))
        for name in _TEST_METRICS
        if any(f"{s.metrics_prefix}.{name}" in metrics for s in STRATEGIES)
    )
    blocks.append(Block("table", headers=("metric", *(s.label for s in STRATEGIES)), rows=rows))
    missing = [s.label for s in STRATEGIES if not any(f"{s.metrics_prefix}.{n}" in metrics for n in _TEST_METRICS)]
    if missing:
        blocks.append(Block("na", f"Metrics not available for: {', '.join(missing)} (n/a above)."))
    return blocks


def _sharpe_section(inputs: _Inputs) -> list[Block]:
    """Each Sharpe with its confidence interval, and Lo's (2002) annualisation beside sqrt(q)."""
    from trainer.evaluation import statistics
    from trainer.evaluation.metrics import sharpe_ratio

    blocks = [Block("h2", "Sharpe ratios and their uncertainty")]
    ppy = inputs.periods_per_year
    present = _present(inputs)
    if ppy is None or not present:
        return blocks + [Block("na", "Sharpe confidence intervals not available: needs backtest.csv and evaluation.json (periods_per_year).")]
    q = round(ppy)
    rows, problems = [], []
    for s in present:
        r = inputs.returns(s).fillna(0.0).to_numpy()
        try:
            per_bar = sharpe_ratio(r, 1.0)
            lo, hi = statistics.sharpe_confidence_interval(r, ppy, level=CONFIDENCE)
            eta = statistics.lo_annualisation_factor(r, ppy)
        except ValueError as exc:  # fewer than 3 bars, or non-finite returns: said below, not hidden
            problems.append(f"{s.label}: {exc}")
            rows.append((s.label, "n/a", "n/a", "n/a", "n/a", str(len(r))))
            continue
        rows.append((
            s.label, _fmt(per_bar * math.sqrt(q)), _fmt(lo), _fmt(hi),
            _fmt(per_bar * eta) if math.isfinite(eta) else "n/a (undefined)", str(len(r)),
        ))
    blocks.append(Block("table", headers=(
        "strategy", "Sharpe, sqrt(q) annualised", f"{CONFIDENCE:.0%} CI low", f"{CONFIDENCE:.0%} CI high",
        "Sharpe, Lo (2002) annualised", "bars",
    ), rows=tuple(rows)))
    blocks.append(Block("p", (
        f"q = {q} bars per year (the data's calendar). The interval is the non-normal iid one "
        f"(statistics.sharpe_confidence_interval, skewness and kurtosis of the returns) at {CONFIDENCE:.0%}; it "
        "does not account for autocorrelation. sqrt(q) annualisation multiplies the per-bar Sharpe by sqrt(q), "
        "which assumes uncorrelated returns; Lo (2002) multiplies by eta(q) = q / sqrt(q + 2 sum_k (q - k) rho_k) "
        "with the returns' sample autocorrelations rho_k (statistics.lo_annualisation_factor: Newey-West lag "
        "count), so a P&L that trends bar to bar is not credited with diversification over time it does not have."
    )))
    if problems:
        blocks.append(Block("na", "Sharpe statistics not computed for " + "; ".join(problems) + "."))
    return blocks


def _by_period_section(inputs: _Inputs) -> list[Block]:
    from trainer.evaluation import statistics

    blocks = [Block("h2", "Sharpe by year")]
    ppy = inputs.periods_per_year
    present = _present(inputs)
    if ppy is None or not present:
        return blocks + [Block("na", "Sharpe by year not available: needs backtest.csv and evaluation.json (periods_per_year).")]
    timestamps = inputs.backtest.index
    table: dict[str, dict[str, float]] = {}
    bars: dict[str, int] = {}
    for s in present:
        for label, sharpe, count in statistics.sharpe_by_period(timestamps, inputs.returns(s).fillna(0.0).to_numpy(), ppy, freq="YE"):
            table.setdefault(str(label), {})[s.key] = sharpe
            bars[str(label)] = int(count)
    rows = tuple(
        (label, *(_fmt(table[label].get(s.key)) if s in present else "n/a" for s in STRATEGIES), str(bars[label]))
        for label in table
    )
    blocks.append(Block("table", headers=("year", *(s.label for s in STRATEGIES), "bars"), rows=rows))
    blocks.append(Block("p", (
        "Each year's Sharpe is computed on that year's bars alone and annualised the same way as the whole test; "
        "a year with few bars is noisy (see its bar count)."
    )))
    return blocks


def trading_costs(positions: np.ndarray, rate: float) -> np.ndarray:
    """Per-bar cost as the env charges it: |p_t - p_{t-1}| * rate, starting flat (p_{-1} = 0)."""
    return np.abs(np.diff(positions, prepend=0.0)) * rate


def _costs_section(inputs: _Inputs) -> list[Block]:
    blocks = [Block("h2", "Turnover and costs paid")]
    ppy = inputs.periods_per_year
    present = _present(inputs)
    if not present:
        return blocks + [Block("na", "Turnover and costs not available: no backtest.csv (run `trainer evaluate`).")]
    env = getattr(inputs.config, "environment", None)
    costs = CostModel(env.transaction_cost_bps, env.slippage_bps) if env is not None else None
    rows, derived = [], []
    for s in present:
        positions = inputs.positions(s)
        if positions is None:
            rows.append((s.label, "n/a", "n/a", "n/a", "n/a", "n/a"))
            continue
        p = positions.fillna(0.0).to_numpy()
        traded = np.abs(np.diff(p, prepend=0.0))
        cost_column = f"{s.key}_cost"
        if inputs.backtest is not None and cost_column in inputs.backtest:
            paid = pd.to_numeric(inputs.backtest[cost_column], errors="coerce").fillna(0.0).to_numpy()
        elif s is BUY_AND_HOLD:
            paid = np.zeros_like(p)  # buy-and-hold is the bar returns themselves, charged nothing
        elif costs is not None:
            paid = trading_costs(p, costs.rate)
            derived.append(s.label)
        else:
            paid = None
        per_year = f"{traded.mean() * ppy:.4g}" if ppy else "n/a"
        rows.append((
            s.label, f"{traded.mean():.4g}", per_year,
            _pct(float(paid.sum())) if paid is not None else "n/a",
            _pct(float(paid.mean() * ppy)) if paid is not None and ppy else "n/a",
            f"{int((traded > 1e-9).sum())}",
        ))
    blocks.append(Block("table", headers=(
        "strategy", "turnover per bar", "turnover per year", "costs paid (sum over the test)", "costs per year",
        "bars with a trade",
    ), rows=tuple(rows)))
    if costs is not None:
        how = (
            f"Costs are what the trading env charges (trainer/envs/trading_env.py): each bar, the exposure traded "
            f"|p_t - p_(t-1)| (starting flat) times (transaction_cost_bps + slippage_bps) / 1e4 = "
            f"({costs.transaction_cost_bps:g} + {costs.slippage_bps:g}) / 1e4 of equity, from the run's "
            "config.resolved.yaml. "
        )
        how += (
            f"Derived here from backtest.csv's positions for: {', '.join(derived)} (backtest.csv has no cost column); "
            if derived else ""
        )
        blocks.append(Block("p", how + (
            "the returns above are already net of them. Buy-and-hold is the bar returns, charged nothing. "
            "Turnover is the mean exposure traded per bar (a round trip flat -> 1 -> flat is 2.0)."
        )))
    else:
        blocks.append(Block("na", (
            "Costs paid not available: no config.resolved.yaml in the run directory, so the cost rate is unknown "
            "(turnover is from backtest.csv's positions)."
        )))
    return blocks


# --------------------------------------------------------------------------------------------
# Sections: options, statistics, provenance
# --------------------------------------------------------------------------------------------


def _option_usage_from_metrics(metrics: dict[str, Any]) -> dict[str, dict[str, float]] | None:
    from trainer.config import OPTION_NAMES

    usage = {f: {n: metrics.get(f"test.options.{f}.{n}") for n in OPTION_NAMES} for f in _OPTION_FIELDS}
    if not any(v is not None for field in usage.values() for v in field.values()):
        return None
    return usage


def _option_usage_from_backtest(inputs: _Inputs) -> dict[str, dict[str, float]] | None:
    from trainer.config import OPTION_NAMES
    from trainer.evaluation.metrics import option_usage

    if inputs.backtest is None or "candidate_option" not in inputs.backtest:
        return None
    options = inputs.backtest["candidate_option"].fillna("").astype(str)
    index = {name: i for i, name in enumerate(OPTION_NAMES)}
    if not options.isin(list(index)).all():
        return None
    return option_usage(options.map(index).to_numpy(dtype=int), OPTION_NAMES)


def _option_test_section(inputs: _Inputs) -> list[Block]:
    from trainer.config import OPTION_NAMES

    blocks = [Block("h2", "Option usage and durations on the test split")]
    usage = _option_usage_from_metrics(inputs.metrics)
    source = "evaluation.json (test.options.*)"
    counted = (inputs.evaluation or {}).get("option_selections_from")
    if usage is None:
        usage = _option_usage_from_backtest(inputs)
        source, counted = "backtest.csv's candidate_option column", "option_changes"
    if usage is None:
        return blocks + [Block("na", "Test-split option usage not available: this run has no options (Phase A) or no backtest yet.")]
    config_options = getattr(inputs.config, "options", None)
    rows = []
    for i, name in enumerate(OPTION_NAMES):
        min_duration = config_options.option_block(i).min_duration if config_options is not None else None
        rows.append((
            name, _pct(usage["usage_pct"].get(name)), _fmt(usage["selections"].get(name)),
            _pct(usage["selection_share"].get(name)), _fmt(usage["avg_duration"].get(name)), _fmt(min_duration),
        ))
    blocks.append(Block("table", headers=(
        "option", "share of bars", "selections", "share of selections", "mean duration (bars)", "min_duration",
    ), rows=tuple(rows)))
    how = {
        "option_steps": "a selection is a bar where an option starts, re-selections of the option that just ended included",
        "option_changes": "a selection is a bar where the active option changes, so re-selecting the option that just "
        "ended counts as one longer use",
    }.get(str(counted), "selection counting method not recorded")
    blocks.append(Block("p", f"From {source}; {how}."))
    return blocks


def _statistics_section(inputs: _Inputs) -> list[Block]:
    blocks = [Block("h2", "Statistics and their caveats")]
    if inputs.evaluation is None:
        return blocks + [Block("na", "Sharpe statistics not available: `trainer evaluate` has not run (no evaluation.json).")]
    metrics = inputs.metrics
    rows = tuple((key, _fmt(metrics.get(key)), caveat) for key, caveat in STAT_CAVEATS.items() if key in metrics)
    if rows:
        blocks.append(Block("table", headers=("statistic", "value", "caveat"), rows=rows))
    else:
        blocks.append(Block("na", "Sharpe statistics not available in evaluation.json."))
    if inputs.evaluation.get("interpretation"):
        blocks.append(Block("p", f"Interpretation: {inputs.evaluation['interpretation']}"))
    return blocks


def _training_sections(inputs: _Inputs) -> list[Block]:
    no_options = "this run has no options (Phase A) or no monitor windows were recorded"
    return (
        _plot_section("Option usage and durations over training", "option_usage.png", plots.option_usage(inputs.monitor), no_options)
        + _plot_section("Temperature and entropy over training", "temperature_entropy.png", plots.temperature_entropy(inputs.monitor), no_options)
    )


def _provenance_section(inputs: _Inputs) -> list[Block]:
    summary = inputs.summary
    evaluation = inputs.evaluation or {}
    baseline = evaluation.get("baseline") or {}
    test_bars = (
        f"{evaluation.get('first', 'n/a')} .. {evaluation.get('last', 'n/a')} ({evaluation.get('bars', 'n/a')} bars, "
        f"{_fmt(evaluation.get('periods_per_year'))} per year)"
    ) if evaluation else "n/a"
    rows = (
        ("symbol", _fmt(summary.get("symbol"))),
        ("algorithm", _fmt(summary.get("algorithm"))),
        ("status", _fmt(summary.get("status"))),
        ("profile", _fmt(summary.get("profile"))),
        ("data digest", _fmt(summary.get("data_digest"))),
        ("config hash", _fmt(summary.get("config_hash"))),
        ("code version", _fmt(summary.get("code_version"))),
        ("MLflow run", _fmt(summary.get("mlflow_run_id"))),
        ("evaluated split", _fmt(evaluation.get("split", "n/a"))),
        ("test bars", test_bars),
        ("baseline source", f"{_fmt(baseline.get('source'))} {baseline.get('model_uri') or ''}".strip()),
    )
    return [Block("h2", "Provenance"), Block("table", headers=("field", "value"), rows=rows)]


def build_blocks(inputs: _Inputs) -> list[Block]:
    no_backtest = "no backtest.csv (run `trainer evaluate`)"
    series = _series_for_plots(inputs)
    return (
        _verdict_section(inputs)
        + _champion_section(inputs)
        + _plot_section("Equity curve", "equity_curve.png", plots.equity_curve(series), no_backtest)
        + _plot_section("Drawdown", "drawdown.png", plots.drawdown(series), no_backtest)
        + _metrics_section(inputs)
        + _sharpe_section(inputs)
        + _by_period_section(inputs)
        + _costs_section(inputs)
        + _option_test_section(inputs)
        + _plot_section("Option timeline over the backtest", "option_timeline.png", plots.option_timeline(inputs.backtest),
                        "no backtest.csv, or the candidate ran no options")
        + _statistics_section(inputs)
        + _training_sections(inputs)
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


def _inline(text: str) -> str:
    """The only Markdown the paragraphs use is **bold** and `code`; escape first, then convert."""
    parts = html.escape(text).split("**")
    text = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
    parts = text.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts)) if len(parts) % 2 else text


def render_html(title: str, blocks: list[Block]) -> str:
    body = [f"<h1>{html.escape(title)}</h1>"]
    for block in blocks:
        if block.kind == "h2":
            body.append(f"<h2>{html.escape(block.text)}</h2>")
        elif block.kind == "p":
            body.append(f"<p>{_inline(block.text)}</p>")
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


def build_report(run_dir: str | Path, out_dir: str | Path | None = None, gates_file: str | Path | None = None) -> ReportFiles:
    """Write report.md, report.html and the PNGs into `out_dir` (default `<run_dir>/report`).

    :param gates_file: the gates file whose promotion policy the verdict section shows (None: not shown)
    """
    run = RunDir(run_dir)
    out_dir = Path(out_dir) if out_dir else run.report_dir
    inputs = _load_inputs(run, gates_file)
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


@dataclass(frozen=True)
class LoggedReport:
    """Where the logged report lives: its artifact URI, and a web link when the tracking server has one."""

    uri: str
    url: str | None


def log_report(run_dir: str | Path, files: ReportFiles) -> LoggedReport:
    """Log the report under `report/` in the run's MLflow run; tag the run and its model versions.

    The URI is `runs:/<run_id>/report/report.html`; the URL is the run's artifacts page on an
    http(s) tracking server (None for a local store).
    """
    from trainer.registry import attach_report, registry_client, registry_errors

    run = RunDir(run_dir)
    run_id = run.read_summary().get("mlflow_run_id")
    if not run_id:
        raise TrainerError(f"{run.summary_path}: no mlflow_run_id; use --no-mlflow to only write the files")
    client = registry_client()
    uri = f"runs:/{run_id}/{REPORT_DIR}/{files.html.name}"
    with registry_errors(f"logging the report of run {run_id}"):
        for path in (files.markdown, files.html, *files.images):
            client.log_artifact(run_id, str(path), artifact_path=REPORT_DIR)
        client.set_tag(run_id, "report_uri", uri)
        experiment_id = client.get_run(run_id).info.experiment_id
    attach_report(run_id, uri)
    return LoggedReport(uri, run_page_url(str(getattr(client, "tracking_uri", "")), experiment_id, run_id))


def run_page_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's artifacts tab in the MLflow UI (the report is its `report/` folder), for an http(s)
    tracking server; None for a local store."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}/artifacts"
