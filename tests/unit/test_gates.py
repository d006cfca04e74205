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
    "options.late.min_duration_margin": 0.3,
    "options.late.step_weighted_duration": 12.0,
    "options.late.min_selection_share": 0.12,
    "options.late.max_selection_share": 0.22,
    "test.options.min_selection_share": 0.11,
    "test.options.max_selection_share": 0.24,
    "train.policy_loss_converged": 1.0,
    "train.value_loss_late_mean": 40.0,
    "test.sharpe": 0.8,
    "test.exposure": 0.35,
    "test.turnover": 0.04,
    "test.total_return": 0.15,
    "test.max_drawdown": 0.12,
    "baseline.sharpe": 0.41,
    "stats.psr_zero": 0.97,
    "stats.sharpe_diff_pvalue": 0.03,
    # a champion exists and the candidate beats it on the same bars
    "champion.present": 1.0,
    "champion.version": 3.0,
    "champion.sharpe": 0.5,
    "stats.vs_champion.sharpe_diff": 0.3,
    "stats.vs_champion.pvalue_worse": 0.9,
}
CHAMPION_GATES = {"min_sharpe_vs_champion", "min_not_worse_than_champion"}
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
    assert len(gates) == 26
    assert {g.tier for g in gates.values() if g.stage == "smoke"} == {"smoke"}
    # diversity on the controller's selections, late in training and on the test backtest
    assert gates["min_option_diversity_training"].metric == "options.late.min_selection_share"
    assert gates["min_option_diversity_test"].metric == "test.options.min_selection_share"
    assert gates["min_option_diversity_training"].threshold == gates["min_option_diversity_test"].threshold == 0.10
    assert gates["target_usage_ceiling_test"].threshold == 0.25
    assert gates["target_collapse_resistance_training"].threshold == 0.40
    # step shares are reported beside the diversity gates, not gated
    assert gates["min_option_diversity_training"].context == ("options.late.min_usage_pct", "options.late.max_usage_pct")
    assert not any(g.metric.endswith("usage_pct") for g in gates.values() if g.stage == "full")
    # persistence: own min_duration, then the step-weighted mean > 5 (minimum) / > 10 (target)
    assert gates["min_option_persistence_own_min_duration"].metric == "options.late.min_duration_margin"
    assert gates["min_option_persistence"].metric == gates["target_option_persistence"].metric == "options.late.step_weighted_duration"
    assert (gates["min_option_persistence"].threshold, gates["target_option_persistence"].threshold) == (5, 10)
    assert gates["min_value_loss_late"].metric == "train.value_loss_late_mean"
    assert gates["min_value_loss_late"].applies_when is None
    assert gates["min_test_exposure_floor"].threshold == 0.05
    assert gates["min_test_sharpe_positive"].context == ("test.exposure", "test.turnover")
    assert gates["target_sharpe_vs_baseline"].reference == "baseline.sharpe"
    assert gates["target_sharpe_vs_baseline"].fallback == 0.3
    assert gates["target_drawdown_bound"].threshold == 0.35
    assert all(not g.blocking for g in gates.values() if g.tier == "statistical")
    assert all(g.blocking for g in gates.values() if g.tier != "statistical")
    assert {g.id for g in gates.values() if g.optional} == CHAMPION_GATES


def test_shipped_promotion_policy():
    policy = load_promotion_policy(SHIPPED)
    assert policy.required_tier == "minimum"
    assert policy.require_human_approval is False
    # the point-estimate comparison on identical digests is gone: the champion is judged by gates
    assert set(type(policy).model_fields) == {"required_tier", "require_human_approval"}


def test_the_old_champion_switch_is_refused(tmp_path):
    path = tmp_path / "gates.yaml"
    tree = yaml.safe_load(SHIPPED.read_text())
    tree["promotion"]["must_beat_champion"] = False
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(GatesError, match="promotion.must_beat_champion: Extra inputs are not permitted"):
        load_gates_file(path)


def test_the_champion_gates_block_the_tier_promotion_requires():
    gates = {g.id: g for g in load_gates(SHIPPED)}
    required = load_promotion_policy(SHIPPED).required_tier
    for gate_id in CHAMPION_GATES:
        g = gates[gate_id]
        assert g.tier == required and g.blocking and g.stage == "full"
        assert (g.applies_when.metric, g.applies_when.comparison, g.applies_when.threshold) == ("champion.present", "==", 1)
    assert gates["min_sharpe_vs_champion"].metric == "stats.vs_champion.sharpe_diff"
    assert (gates["min_sharpe_vs_champion"].comparison, gates["min_sharpe_vs_champion"].threshold) == (">=", 0.10)
    assert gates["min_not_worse_than_champion"].metric == "stats.vs_champion.pvalue_worse"
    assert (gates["min_not_worse_than_champion"].comparison, gates["min_not_worse_than_champion"].threshold) == (">=", 0.05)


def test_without_a_champion_the_comparison_gates_say_so_and_the_absolute_tiers_decide():
    first = {k: v for k, v in GOOD_FULL.items() if not k.startswith(("champion.", "stats.vs_champion."))}
    verdict = evaluate_gates(load_gates(SHIPPED), {**first, "champion.present": 0.0, "champion.version": 0.0}, "full")
    assert verdict.passed and verdict.tier_reached == "target"
    results = by_id(verdict)
    for gate_id in CHAMPION_GATES:
        assert results[gate_id].status == "not_applicable"
        assert results[gate_id].reason == "applies only when champion.present == 1 (observed 0); optional, does not block"
    # champion.present itself must be measured: an evaluation without it is not a first model
    unknown = by_id(evaluate_gates(load_gates(SHIPPED), first, "full"))
    assert {unknown[g].status for g in CHAMPION_GATES} == {"missing"}


@pytest.mark.parametrize(
    ("diff", "pvalue_worse", "failed"),
    [
        (0.10, 0.70, set()),  # exactly the hurdle
        (0.09, 0.65, {"min_sharpe_vs_champion"}),  # better, but by less than min_improvement
        (-1.49, 0.03, CHAMPION_GATES),  # the stale-check case: 0.01 against a 1.50 champion
        (-0.20, 0.30, {"min_sharpe_vs_champion"}),  # worse, not significantly: still not a replacement
    ],
)
def test_a_champion_is_replaced_only_by_a_better_candidate(diff, pvalue_worse, failed):
    metrics = {**GOOD_FULL, "stats.vs_champion.sharpe_diff": diff, "stats.vs_champion.pvalue_worse": pvalue_worse}
    verdict = evaluate_gates(load_gates(SHIPPED), metrics, "full")
    assert set(verdict.summary()["failed"]) == failed
    assert verdict.passed is (not failed)
    if failed:
        assert verdict.tier_reached == "none"  # a test Sharpe > 0 alone does not reach minimum


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
    # step-weighted duration 7 (> 5, not > 10) and one option at 30% of the selections: minimum yes, target no
    metrics = {**GOOD_FULL, "options.late.step_weighted_duration": 7.0, "options.late.max_selection_share": 0.30}
    gates = load_gates(SHIPPED)
    verdict = evaluate_gates(gates, metrics, "full")
    assert verdict.passed and verdict.tier_reached == "minimum"
    assert set(verdict.summary()["failed"]) == {"target_option_persistence", "target_usage_ceiling_training"}
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


# ------------------------------------------------------------------ the rules of section 3


def test_value_loss_is_gated_on_the_late_stretch_whatever_the_update_count():
    """The seed's "after 10k option updates" never applied (500k x 16 envs ~ 3,900 updates), so a
    value loss of 500 passed silently; now the late-training mean is gated at any update count."""
    gates = load_gates(SHIPPED)
    metrics = {**GOOD_FULL, "train.option_updates": 3_900.0, "train.value_loss_late_mean": 500.0}
    verdict = evaluate_gates(gates, metrics, "full")
    result = by_id(verdict)["min_value_loss_late"]
    assert result.status == "fail" and not verdict.passed and verdict.tier_reached == "none"
    assert verdict.summary()["not_applicable"] == []
    assert by_id(evaluate_gates(gates, {**metrics, "train.value_loss_late_mean": 99.0}, "full"))["min_value_loss_late"].status == "pass"
    # the last window's value loss is only context: a good final value does not rescue a bad late mean
    assert by_id(evaluate_gates(gates, {**metrics, "train.value_loss_final": 1.0}, "full"))["min_value_loss_late"].status == "fail"
    unknown = {k: v for k, v in metrics.items() if k != "train.value_loss_late_mean"}
    assert by_id(evaluate_gates(gates, unknown, "full"))["min_value_loss_late"].status == "missing"


def test_diversity_is_measured_on_selections_not_step_shares():
    """ClosePosition holds ~5% of the steps under a uniform controller: the step share would fail a
    10% floor, the selection share (what the controller chose) passes it."""
    gates = load_gates(SHIPPED)
    uniform = {**GOOD_FULL, "options.late.min_selection_share": 0.16, "options.late.min_usage_pct": 0.05,
               "test.options.min_selection_share": 0.15, "test.options.min_usage_pct": 0.04}
    verdict = by_id(evaluate_gates(gates, uniform, "full"))
    assert verdict["min_option_diversity_training"].status == "pass"
    assert verdict["min_option_diversity_training"].context == {
        "options.late.min_usage_pct": 0.05, "options.late.max_usage_pct": None,
    }
    assert verdict["min_option_diversity_test"].status == "pass"


@pytest.mark.parametrize(
    "metric, value, failed",
    [
        # late training collapsed onto a few options, whatever the cumulative totals with warmup say
        ("options.late.min_selection_share", 0.08, {"min_option_diversity_training"}),
        ("options.late.min_selection_share", 0.04, {"min_option_diversity_training", "target_usage_floor_training"}),
        ("options.late.max_selection_share", 0.45,
         {"target_usage_ceiling_training", "target_collapse_resistance_training"}),
        # the deterministic test backtest uses an option for < 10% of its choices
        ("test.options.min_selection_share", 0.09, {"min_option_diversity_test"}),
        ("test.options.max_selection_share", 0.30, {"target_usage_ceiling_test"}),
    ],
)
def test_diversity_gates_on_late_training_and_the_test_backtest(metric, value, failed):
    metrics = {**GOOD_FULL, "options.min_usage_pct": 0.15, "options.max_usage_pct": 0.2, metric: value}
    verdict = evaluate_gates(load_gates(SHIPPED), metrics, "full")
    assert set(verdict.summary()["failed"]) == failed


def test_persistence_accepts_close_positions_short_exits():
    """ClosePosition averages ~3.3 (min_duration 3, ends when flat): the seed's "> 5 for all
    options" would refuse every model; its own min_duration and the step-weighted mean decide."""
    gates = load_gates(SHIPPED)
    metrics = {**GOOD_FULL, "options.min_avg_duration": 3.3, "options.late.min_avg_duration": 3.3,
               "options.late.min_duration_margin": 0.3, "options.late.step_weighted_duration": 7.5}
    verdict = evaluate_gates(gates, metrics, "full")
    assert verdict.passed and verdict.tier_reached == "minimum"
    assert by_id(verdict)["target_option_persistence"].status == "fail"  # target: > 10
    # an option that ends before its own min_duration
    short = evaluate_gates(gates, {**metrics, "options.late.min_duration_margin": -0.5}, "full")
    assert short.summary()["failed"] == ["min_option_persistence_own_min_duration", "target_option_persistence"]
    # every option persists on its own, yet the options together average <= 5 steps
    brief = evaluate_gates(gates, {**metrics, "options.late.step_weighted_duration": 5.0}, "full")
    assert "min_option_persistence" in brief.summary()["failed"] and not brief.passed


def test_a_near_flat_agent_stays_out_of_the_minimum_tier():
    """The demo's QQQ candidate: mean |exposure| 1.9%, Sharpe > 0 by a handful of bars."""
    gates = load_gates(SHIPPED)
    flat = {**GOOD_FULL, "test.exposure": 0.019, "test.turnover": 0.003}
    verdict = evaluate_gates(gates, flat, "full")
    results = by_id(verdict)
    assert results["min_test_sharpe_positive"].status == "pass"
    assert results["min_test_sharpe_positive"].context == {"test.exposure": 0.019, "test.turnover": 0.003}
    assert results["min_test_exposure_floor"].status == "fail"
    assert not verdict.passed and verdict.tier_reached == "none"
    at_floor = evaluate_gates(gates, {**flat, "test.exposure": 0.05}, "full")
    assert at_floor.passed and at_floor.tier_reached == "target"


def test_a_gate_whose_precondition_does_not_hold_blocks_unless_optional():
    """No silent pass: not_applicable is never pass, and blocks its tier unless `optional: true`."""
    condition = {"metric": "n", "comparison": ">=", "threshold": 10}
    conditional = gate(id="conditional", metric="v", comparison="<", threshold=100, applies_when=condition)
    other = gate(id="other")
    metrics = {"m": 2.0, "v": 500.0, "n": 3.0}
    verdict = evaluate_gates([other, conditional], metrics, "full")
    result = by_id(verdict)["conditional"]
    assert result.status == "not_applicable" and not result.optional
    assert "applies only when n >= 10 (observed 3); not optional, so it blocks its tier" in result.reason
    assert not verdict.passed and verdict.tier_reached == "none"
    assert verdict.summary()["blocking_failed"] == ["conditional"]

    optional = conditional.model_copy(update={"optional": True})
    verdict = evaluate_gates([other, optional], metrics, "full")
    assert by_id(verdict)["conditional"].status == "not_applicable"
    assert "optional, does not block" in by_id(verdict)["conditional"].reason
    assert verdict.passed and verdict.tier_reached == "minimum"
    assert verdict.summary()["blocking_failed"] == [] and verdict.summary()["not_applicable"] == ["conditional"]
    # an optional gate is still judged when its precondition holds
    assert not evaluate_gates([other, optional], {**metrics, "n": 10.0}, "full").passed
    # a tier of optional not-applicable gates only has not passed anything
    assert not evaluate_gates([optional], metrics, "full").passed
    # the statistical tier follows the same rule when its gates are blocking
    stat = conditional.model_copy(update={"tier": "statistical", "blocking": True})
    assert not evaluate_gates([other, stat], metrics, "full").passed
    quiet = by_id(evaluate_gates([other, stat.model_copy(update={"blocking": False})], metrics, "full"))
    assert quiet["conditional"].reason.endswith("; non-blocking")
    assert evaluate_gates([other, stat.model_copy(update={"optional": True})], metrics, "full").passed


def test_optional_needs_a_precondition_and_context_is_reported():
    with pytest.raises(ValueError, match="`optional: true` needs an `applies_when`"):
        gate(optional=True)
    result = evaluate_gate(gate(context=("a", "b")), {"m": 2.0, "a": 0.5, "b": math.nan})
    assert result.status == "pass" and result.context == {"a": 0.5, "b": None}
    assert evaluate_gate(gate(), {"m": 2.0}).context == {}


@pytest.mark.parametrize("bad", [None, math.nan, "0.5"])
def test_missing_or_nan_metric_fails_as_missing(bad):
    gates = load_gates(SHIPPED)
    verdict = evaluate_gates(gates, {**GOOD_FULL, "test.sharpe": bad}, "full")
    assert by_id(verdict)["min_test_sharpe_positive"].status == "missing"
    assert not verdict.passed and verdict.tier_reached == "none"
    absent = {k: v for k, v in GOOD_FULL.items() if k != "options.late.min_selection_share"}
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
