"""Quality gates declared in YAML (configs/gates.yaml) and their evaluation against flat metrics.

A gate compares one flat metric (docs/contracts.md names) with a threshold, or with another
metric (`reference`, e.g. `baseline.sharpe`, with a `fallback` number when that one is missing).
Rules that keep a gate honest:
- a missing, None or NaN metric gives status `missing`, which fails like `fail`;
- no silent pass: a gate whose `applies_when` precondition does not hold is `not_applicable`
  (never `pass`), and a blocking `not_applicable` gate blocks its tier like `fail` unless the gate
  says `optional: true`; if the precondition's metric is missing the gate is `missing`;
- `context` names metrics reported beside the gate (in the table and the verdict JSON), never gated.

Tiers: `smoke` (stage smoke); `minimum` < `target` and `statistical` (stage full). The verdict
of stage smoke requires the blocking smoke gates; stage full requires the blocking gates of every
tier up to `required_tier` (target includes minimum) plus any statistical gate configured
`blocking: true` (statistical gates are non-blocking unless the YAML says otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trainer.errors import TrainerError

Comparison = Literal[">", ">=", "<", "<=", "==", "between"]
Tier = Literal["smoke", "minimum", "target", "statistical"]
Stage = Literal["smoke", "full"]
Status = Literal["pass", "fail", "missing", "not_applicable"]

ORDERED_TIERS: tuple[str, ...] = ("minimum", "target")
"""Full-stage tiers in increasing strictness; `tier_reached` is the highest one fully passed."""

_TIER_STAGE = {"smoke": "smoke", "minimum": "full", "target": "full", "statistical": "full"}


class GatesError(TrainerError, ValueError):
    """A gates file that cannot be used; the message names the file and the gate id."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Precondition(_Strict):
    """`applies_when`: the gate is evaluated only when `metric comparison threshold` holds."""

    metric: str = Field(min_length=1, description="Flat metric name, e.g. train.option_updates.")
    comparison: Literal[">", ">=", "<", "<=", "=="]
    threshold: float


class Gate(_Strict):
    """One quality gate (see the module docstring for the statuses)."""

    id: str = Field(min_length=1, pattern=r"^[a-z0-9_.\-]+$", description="Unique, stable identifier.")
    description: str = Field(min_length=1, description="What the gate checks, in the seed's words.")
    metric: str = Field(min_length=1, description="Flat metric name (docs/contracts.md).")
    comparison: Comparison
    threshold: float | tuple[float, float] | None = Field(
        None, description="A number; for `between` an inclusive [low, high] pair."
    )
    reference: str | None = Field(None, description="Compare with this metric instead of a fixed threshold.")
    fallback: float | None = Field(None, description="Threshold used when `reference` is missing or NaN.")
    tier: Tier
    stage: Stage
    blocking: bool | None = Field(None, description="Default: true, except for tier statistical.")
    applies_when: Precondition | None = None
    optional: bool = Field(
        False,
        description="Only with applies_when: when the precondition does not hold the gate does not block its tier.",
    )
    context: tuple[str, ...] = Field(
        (), description="Metrics reported beside the gate (table, verdict JSON); never gated."
    )

    @model_validator(mode="after")
    def _consistent(self) -> "Gate":
        if (self.threshold is None) == (self.reference is None):
            raise ValueError("give exactly one of `threshold` and `reference`")
        if self.fallback is not None and self.reference is None:
            raise ValueError("`fallback` needs a `reference`")
        if self.optional and self.applies_when is None:
            raise ValueError("`optional: true` needs an `applies_when` precondition (it says when the gate may be skipped)")
        if self.comparison == "between":
            if self.reference is not None or not isinstance(self.threshold, tuple):
                raise ValueError("`between` needs `threshold: [low, high]`")
            if self.threshold[0] > self.threshold[1]:
                raise ValueError(f"`between` threshold low {self.threshold[0]} > high {self.threshold[1]}")
        elif isinstance(self.threshold, tuple):
            raise ValueError(f"comparison {self.comparison!r} needs a single number as threshold")
        if _TIER_STAGE[self.tier] != self.stage:
            raise ValueError(f"tier {self.tier!r} belongs to stage {_TIER_STAGE[self.tier]!r}, not {self.stage!r}")
        if self.blocking is None:
            object.__setattr__(self, "blocking", self.tier != "statistical")
        return self


class PromotionPolicy(_Strict):
    """`promotion:` in gates.yaml, read by the registry step.

    The comparison with the current champion is not a policy switch: it is made by full-stage
    gates on the champion's backtest of the candidate's own test bars (`stats.vs_champion.*`,
    trainer/evaluation/workflow.py), so it is part of the verdict the registry recomputes.
    """

    required_tier: Literal["minimum", "target"] = Field(
        "minimum", description="Tier the full-stage verdict must reach before a model may be promoted."
    )
    require_human_approval: bool = Field(False, description="Stop before moving the champion alias.")


class GatesFile(_Strict):
    gates: list[Gate] = Field(min_length=1)
    promotion: PromotionPolicy = Field(default_factory=PromotionPolicy)

    @model_validator(mode="after")
    def _unique_ids(self) -> "GatesFile":
        seen: set[str] = set()
        for gate in self.gates:
            if gate.id in seen:
                raise ValueError(f"gate id {gate.id!r} appears more than once")
            seen.add(gate.id)
        return self


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _read_tree(path: Path) -> dict[str, Any]:
    try:
        tree = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise GatesError(f"{path}: gates file not found") from None
    except OSError as exc:
        raise GatesError(f"{path}: cannot read gates file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise GatesError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise GatesError(f"{path}: expected a mapping with `gates:` and `promotion:`")
    return tree


def _locate(tree: dict[str, Any], loc: tuple[Any, ...]) -> str:
    """`gates[3] (id value_loss_after_10k).threshold` from a pydantic error location."""
    if len(loc) >= 2 and loc[0] == "gates" and isinstance(loc[1], int):
        raw = tree.get("gates") or []
        gate_id = raw[loc[1]].get("id") if loc[1] < len(raw) and isinstance(raw[loc[1]], dict) else None
        rest = ".".join(str(part) for part in loc[2:])
        where = f"gate {gate_id!r}" if gate_id else f"gates[{loc[1]}]"
        return f"{where}: {rest}" if rest else where
    return ".".join(str(part) for part in loc) or "<root>"


def load_gates_file(path: str | Path) -> GatesFile:
    """Validate a gates YAML file; GatesError lists every problem as `<file>: gate '<id>': <key>: <msg>`."""
    path = Path(path)
    tree = _read_tree(path)
    try:
        return GatesFile.model_validate(tree)
    except ValidationError as exc:
        lines = []
        for item in exc.errors():
            msg = item["msg"].removeprefix("Value error, ")
            lines.append(f"{path}: {_locate(tree, tuple(item['loc']))}: {msg}")
        raise GatesError("\n".join(lines)) from None


def load_gates(path: str | Path) -> list[Gate]:
    """The gates of a gates YAML file (see load_gates_file)."""
    return load_gates_file(path).gates


def load_promotion_policy(path: str | Path) -> PromotionPolicy:
    """The `promotion:` section of a gates YAML file (defaults when the section is absent)."""
    return load_gates_file(path).promotion


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateResult:
    id: str
    description: str
    metric: str
    observed: float | None
    comparison: str
    threshold_shown: str
    status: Status
    tier: str
    blocking: bool
    reason: str
    optional: bool = False
    context: dict[str, float | None] = field(default_factory=dict)

    @property
    def clears(self) -> bool:
        """Counts as passed for its tier: `pass`, or `not_applicable` on an `optional` gate."""
        return self.status == "pass" or (self.status == "not_applicable" and self.optional)


@dataclass(frozen=True)
class Verdict:
    stage: str
    required_tier: str
    passed: bool
    tier_reached: str
    results: tuple[GateResult, ...]

    def ids_with(self, status: Status) -> list[str]:
        return [r.id for r in self.results if r.status == status]

    def summary(self) -> dict[str, Any]:
        """The small result (XCom / args.result): verdict and the ids of gates that did not pass."""
        return {
            "stage": self.stage,
            "required_tier": self.required_tier,
            "passed": self.passed,
            "tier_reached": self.tier_reached,
            "failed": self.ids_with("fail"),
            "missing": self.ids_with("missing"),
            "not_applicable": self.ids_with("not_applicable"),
            "blocking_failed": [r.id for r in self.results if r.blocking and not r.clears],
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "results": [asdict(r) for r in self.results]}


def _number(metrics: Mapping[str, Any], name: str) -> float | None:
    """The metric as a float, or None when it is absent, None, not a number or NaN."""
    value = metrics.get(name)
    if value is None or isinstance(value, str):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _compare(observed: float, comparison: str, threshold: float | tuple[float, float]) -> bool:
    if comparison == "between":
        low, high = threshold  # type: ignore[misc]
        return low <= observed <= high
    assert isinstance(threshold, float | int)
    return {
        ">": observed > threshold,
        ">=": observed >= threshold,
        "<": observed < threshold,
        "<=": observed <= threshold,
        "==": math.isclose(observed, threshold, rel_tol=1e-9, abs_tol=1e-12),
    }[comparison]


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _threshold(gate: Gate, metrics: Mapping[str, Any]) -> tuple[float | tuple[float, float] | None, str]:
    """(the threshold to compare with, how to show it); None when a reference has no value."""
    if gate.reference is None:
        if isinstance(gate.threshold, tuple):
            return gate.threshold, f"[{_fmt(gate.threshold[0])}, {_fmt(gate.threshold[1])}]"
        return gate.threshold, _fmt(gate.threshold)  # type: ignore[arg-type]
    referenced = _number(metrics, gate.reference)
    if referenced is not None:
        return referenced, f"{gate.reference} = {_fmt(referenced)}"
    prefix = gate.reference.split(".", 1)[0]
    if gate.fallback is not None:
        return gate.fallback, f"{_fmt(gate.fallback)} (no {prefix})"
    return None, f"{gate.reference} (missing)"


def evaluate_gate(gate: Gate, metrics: Mapping[str, Any]) -> GateResult:
    """Evaluate one gate against flat metrics (see the module docstring for the statuses)."""
    observed = _number(metrics, gate.metric)
    threshold, shown = _threshold(gate, metrics)

    def result(status: Status, reason: str) -> GateResult:
        return GateResult(
            id=gate.id, description=gate.description, metric=gate.metric, observed=observed,
            comparison=gate.comparison, threshold_shown=shown, status=status, tier=gate.tier,
            blocking=bool(gate.blocking), reason=reason, optional=gate.optional,
            context={name: _number(metrics, name) for name in gate.context},
        )

    condition = gate.applies_when
    if condition is not None:
        value = _number(metrics, condition.metric)
        rule = f"{condition.metric} {condition.comparison} {_fmt(condition.threshold)}"
        if value is None:
            return result("missing", f"precondition metric {condition.metric} is missing or NaN")
        if not _compare(value, condition.comparison, condition.threshold):
            if not gate.blocking:
                effect = "non-blocking"
            elif gate.optional:
                effect = "optional, does not block"
            else:
                effect = "not optional, so it blocks its tier"
            return result("not_applicable", f"applies only when {rule} (observed {_fmt(value)}); {effect}")
    if observed is None:
        return result("missing", f"metric {gate.metric} is missing or NaN")
    if threshold is None:
        return result("missing", f"reference {gate.reference} is missing and the gate has no fallback")
    if _compare(observed, gate.comparison, threshold):
        return result("pass", f"{_fmt(observed)} {gate.comparison} {shown}")
    return result("fail", f"{_fmt(observed)} is not {gate.comparison} {shown}")


def _tier_clear(results: Sequence[GateResult], tier: str) -> bool:
    """Every blocking gate of `tier` clears (passed, or optional and not applicable), and at least
    one passed."""
    blocking = [r for r in results if r.tier == tier and r.blocking]
    return any(r.status == "pass" for r in blocking) and all(r.clears for r in blocking)


def evaluate_gates(
    gates: Sequence[Gate],
    metrics: Mapping[str, float | None],
    stage: Stage,
    required_tier: Literal["minimum", "target"] = "minimum",
) -> Verdict:
    """Evaluate the gates of `stage` and decide.

    - passed: every blocking gate of the required tiers is `pass`, or `not_applicable` with
      `optional: true` (and each required tier has at least one gate that passed); a non-optional
      `not_applicable` gate blocks like `fail`. Required tiers: smoke -> {smoke};
      full -> the tiers up to `required_tier` plus statistical (whose gates block only when
      configured `blocking: true`).
    - tier_reached: stage full: the highest of minimum < target that is clear together with all
      lower tiers, else "none"; stage smoke: "smoke" or "none".
    """
    if stage not in _TIER_STAGE.values():
        raise ValueError(f"stage must be smoke or full, got {stage!r}")
    if required_tier not in ORDERED_TIERS:
        raise ValueError(f"required_tier must be one of {ORDERED_TIERS}, got {required_tier!r}")
    results = tuple(evaluate_gate(g, metrics) for g in gates if g.stage == stage)

    if stage == "smoke":
        passed = _tier_clear(results, "smoke")
        return Verdict(stage, "smoke", passed, "smoke" if passed else "none", results)

    tier_reached = "none"
    for tier in ORDERED_TIERS:
        if not _tier_clear(results, tier):
            break
        tier_reached = tier
    required = ORDERED_TIERS[: ORDERED_TIERS.index(required_tier) + 1]
    statistical_ok = all(r.clears for r in results if r.tier == "statistical" and r.blocking)
    passed = all(_tier_clear(results, tier) for tier in required) and statistical_ok
    return Verdict(stage, required_tier, passed, tier_reached, results)
