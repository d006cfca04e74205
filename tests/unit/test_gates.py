"""Gates: the YAML models, the shipped configs/gates.yaml and the verdict rules."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from trainer.evaluation.gates import (
    Gate,
    GatesError,
    evaluate_gate,
    evaluate_gates,
    load_gates,
    load_gates_file,
    load_promotion_policy,
)

SHIPPED = Path(__file__).resolve().parents[2] / "configs" / "gates.yaml"

# Metrics that clear every shipped gate of the full stage, with margin.
GOOD_FULL = {
    "options.min_avg_duration": 12.0,
    "options.min_usage_pct": 0.12,
    "options.max_usage_pct": 0.22,
    "train.policy_loss_converged": 1.0,
    "train.value_loss_final": 40.0,
    "train.option_updates": 25_000.0,
    "test.sharpe": 0.8,
    "test.total_return": 0.15,
    "test.max_drawdown": 0.12,
    "baseline.sharpe": 0.41,
    "stats.psr_zero": 0.97,
    "stats.sharpe_diff_pvalue": 0.03,
}
GOOD_SMOKE = {
    "options.min_selections": 3.0,
    "options.min_avg_duration": 4.0,
    "monitor.collapse_warnings": 0.0,
    "train.losses_finite": 1.0,
}


def gate(**overrides) -> Gate:
    fields = dict(id="g", description="d", metric="m", comparison=">", threshold=1.0, tier="minimum", stage="full")
    fields.update(overrides)
    return Gate(**fields)


def by_id(verdict):
    return {r.id: r for r in verdict.results}


# ------------------------------------------------------------------ the shipped file


def test_shipped_gates_load_with_the_seed_thresholds():
    gates = {g.id: g for g in load_gates(SHIPPED)}
    assert len(gates) == 18
    assert {g.tier for g in gates.values() if g.stage == "smoke"} == {"smoke"}
    assert gates["min_option_diversity"].metric == "options.min_usage_pct"
    assert gates["min_option_diversity"].threshold == 0.10
    assert gates["min_value_loss"].applies_when.metric == "train.option_updates"
    assert gates["min_value_loss"].applies_when.threshold == 10_000
    assert gates["target_sharpe_vs_baseline"].reference == "baseline.sharpe"
    assert gates["target_sharpe_vs_baseline"].fallback == 0.3
    assert gates["target_drawdown_bound"].threshold == 0.35
    assert all(not g.blocking for g in gates.values() if g.tier == "statistical")
    assert all(g.blocking for g in gates.values() if g.tier != "statistical")


def test_shipped_promotion_policy():
    policy = load_promotion_policy(SHIPPED)
    assert policy.required_tier == "minimum"
    assert policy.must_beat_champion is True
    assert policy.require_human_approval is False


def test_shipped_smoke_stage():
    gates = load_gates(SHIPPED)
    assert evaluate_gates(gates, GOOD_SMOKE, "smoke").passed
    collapsed = evaluate_gates(gates, {**GOOD_SMOKE, "monitor.collapse_warnings": 2.0}, "smoke")
    assert not collapsed.passed and collapsed.tier_reached == "none"
    assert by_id(collapsed)["smoke_no_collapse_warning"].status == "fail"
    # an option never selected
    assert not evaluate_gates(gates, {**GOOD_SMOKE, "options.min_selections": 0.0}, "smoke").passed
    # average duration exactly 3 is not > 3
    assert not evaluate_gates(gates, {**GOOD_SMOKE, "options.min_avg_duration": 3.0}, "smoke").passed


def test_shipped_full_stage_reaches_target():
    verdict = evaluate_gates(load_gates(SHIPPED), GOOD_FULL, "full")
    assert verdict.passed and verdict.tier_reached == "target"
    assert all(r.status == "pass" for r in verdict.results)
    assert {r.tier for r in verdict.results} == {"minimum", "target", "statistical"}


def test_minimum_only_run():
    # durations 7 (> 5, not > 10) and one option at 30% usage: minimum yes, target no
    metrics = {**GOOD_FULL, "options.min_avg_duration": 7.0, "options.max_usage_pct": 0.30}
    gates = load_gates(SHIPPED)
    verdict = evaluate_gates(gates, metrics, "full")
    assert verdict.passed and verdict.tier_reached == "minimum"
    assert set(verdict.summary()["failed"]) == {"target_option_persistence", "target_usage_ceiling"}
    strict = evaluate_gates(gates, metrics, "full", required_tier="target")
    assert not strict.passed and strict.tier_reached == "minimum"


def test_sharpe_vs_baseline_and_the_fallback():
    gates = load_gates(SHIPPED)
    with_baseline = by_id(evaluate_gates(gates, {**GOOD_FULL, "test.sharpe": 0.35}, "full"))
    assert with_baseline["target_sharpe_vs_baseline"].status == "fail"
    assert with_baseline["target_sharpe_vs_baseline"].threshold_shown == "baseline.sharpe = 0.41"
    no_baseline = {k: v for k, v in GOOD_FULL.items() if k != "baseline.sharpe"}
    fallback = by_id(evaluate_gates(gates, {**no_baseline, "test.sharpe": 0.35}, "full"))
    assert fallback["target_sharpe_vs_baseline"].status == "pass"
    assert fallback["target_sharpe_vs_baseline"].threshold_shown == "0.3 (no baseline)"
    nan_baseline = by_id(evaluate_gates(gates, {**GOOD_FULL, "baseline.sharpe": math.nan, "test.sharpe": 0.29}, "full"))
    assert nan_baseline["target_sharpe_vs_baseline"].status == "fail"


def test_value_loss_gate_is_not_applicable_before_10k_updates():
    gates = load_gates(SHIPPED)
    metrics = {**GOOD_FULL, "train.option_updates": 9_999.0, "train.value_loss_final": 500.0}
    verdict = evaluate_gates(gates, metrics, "full")
    result = by_id(verdict)["min_value_loss"]
    assert result.status == "not_applicable"
    assert "applies only when train.option_updates >= 10000 (observed 9999)" in result.reason
    assert verdict.passed  # not applicable does not block, and is never reported as pass
    assert verdict.summary()["not_applicable"] == ["min_value_loss"]
    after = evaluate_gates(gates, {**metrics, "train.option_updates": 10_000.0}, "full")
    assert by_id(after)["min_value_loss"].status == "fail" and not after.passed
    unknown = {k: v for k, v in metrics.items() if k != "train.option_updates"}
    assert by_id(evaluate_gates(gates, unknown, "full"))["min_value_loss"].status == "missing"


@pytest.mark.parametrize("bad", [None, math.nan, "0.5"])
def test_missing_or_nan_metric_fails_as_missing(bad):
    gates = load_gates(SHIPPED)
    verdict = evaluate_gates(gates, {**GOOD_FULL, "test.sharpe": bad}, "full")
    assert by_id(verdict)["min_test_sharpe_positive"].status == "missing"
    assert not verdict.passed and verdict.tier_reached == "none"
    absent = {k: v for k, v in GOOD_FULL.items() if k != "options.min_usage_pct"}
    assert not evaluate_gates(gates, absent, "full").passed


def test_statistical_gates_do_not_block_unless_configured():
    gates = load_gates(SHIPPED)
    metrics = {**GOOD_FULL, "stats.psr_zero": 0.70, "stats.sharpe_diff_pvalue": None}
    verdict = evaluate_gates(gates, metrics, "full")
    assert verdict.passed and verdict.tier_reached == "target"
    assert by_id(verdict)["stat_psr_zero"].status == "fail"
    assert by_id(verdict)["stat_beats_baseline"].status == "missing"
    blocking = [g.model_copy(update={"blocking": True}) if g.tier == "statistical" else g for g in gates]
    assert not evaluate_gates(blocking, metrics, "full").passed


def test_a_stage_without_any_passing_gate_does_not_pass():
    assert not evaluate_gates([gate()], {}, "full").passed
    assert not evaluate_gates([gate(tier="smoke", stage="smoke")], {}, "smoke").passed


@pytest.mark.parametrize(
    "comparison, threshold, observed, status",
    [
        (">", 1.0, 1.0, "fail"),
        (">=", 1.0, 1.0, "pass"),
        ("<", 1.0, 0.999, "pass"),
        ("<=", 1.0, 1.001, "fail"),
        ("==", 0.3, 0.1 + 0.2, "pass"),  # 0.30000000000000004
        ("==", 0.0, 1.0, "fail"),
        ("between", (0.05, 0.25), 0.05, "pass"),
        ("between", (0.05, 0.25), 0.25, "pass"),
        ("between", (0.05, 0.25), 0.2501, "fail"),
    ],
)
def test_comparisons(comparison, threshold, observed, status):
    result = evaluate_gate(gate(comparison=comparison, threshold=threshold), {"m": observed})
    assert result.status == status


# ------------------------------------------------------------------ invalid files


def write(tmp_path, tree) -> Path:
    path = tmp_path / "gates.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


BASE = {"id": "value_gate", "description": "d", "metric": "m", "comparison": ">", "threshold": 1, "tier": "minimum", "stage": "full"}


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"thresold": 2}, "gate 'value_gate': thresold: Extra inputs are not permitted"),
        ({"comparison": "between"}, "gate 'value_gate': `between` needs `threshold: [low, high]`"),
        ({"reference": "baseline.sharpe"}, "exactly one of `threshold` and `reference`"),
        ({"tier": "smoke"}, "tier 'smoke' belongs to stage 'smoke'"),
        ({"comparison": "!="}, "gate 'value_gate': comparison"),
    ],
)
def test_invalid_gate_names_file_and_gate(tmp_path, changes, message):
    path = write(tmp_path, {"gates": [{**BASE, **changes}]})
    with pytest.raises(GatesError) as err:
        load_gates(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_duplicate_ids_and_missing_file(tmp_path):
    with pytest.raises(GatesError, match="'value_gate' appears more than once"):
        load_gates(write(tmp_path, {"gates": [BASE, BASE]}))
    with pytest.raises(GatesError, match="gates file not found"):
        load_gates_file(tmp_path / "nope.yaml")
    with pytest.raises(GatesError, match="promotion.required_tier"):
        load_promotion_policy(write(tmp_path, {"gates": [BASE], "promotion": {"required_tier": "smoke"}}))
