"""The MLflow model registry: register gated runs, move the `challenger` / `champion` aliases.

One registered model per symbol and phase: `hierarchical-options-<SYMBOL>` (Phase B.1) and
`phase-a-baseline-<SYMBOL>` (Phase A). Every gated full run becomes a version, passing or not, so
the registry is also the trial count the Deflated Sharpe needs. Promotion moves aliases only
(stages are deprecated).

Invariants (each has a test in tests/unit/test_registry*.py):
1. A version whose gates did not reach the policy's required tier never becomes champion.
2. Promoting the current champion again changes no alias; the ledger records it as `noop`.
3. A version trained on older data (tag `data_end`) never replaces a champion on newer data, even
   when two promotions race: every alias move for a model happens under a per-model lock
   (fcntl file lock next to a local store; a compare-and-set on a registered-model tag for a
   remote server), and the champion is re-read right before the alias moves.
4. An error before or during the alias move leaves the previous champion in place: all reads and
   checks come first, the alias move is the commit point, and if the ledger cannot record a
   committed move the alias is put back.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import random
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from trainer import ledger
from trainer.errors import EXIT_FAILED, TrainerError
from trainer.io import read_json_object
from trainer.ledger import LedgerRecord
from trainer.symbols import validate_symbol

CHAMPION = "champion"
CHALLENGER = "challenger"
TIER_RANK = {"none": 0, "minimum": 1, "target": 2}
MODEL_PREFIX = {"hierarchical_sac": "hierarchical-options", "sac": "phase-a-baseline"}

LOCK_TAG = "promotion.lock"
METRIC_TAG = "metric."  # `metric.test.sharpe` etc.: what must_beat_champion compares
_TAGGED_METRIC_PREFIXES = ("test.", "baseline.", "buy_and_hold.", "stats.", "eval.")
_LOCK_WAIT_S = 60.0  # how long a promotion waits for another one on the same model
_LOCK_LEASE_S = 120.0  # a remote lock older than this was left by a crashed process
_LOCK_SETTLE_S = 0.5  # > one HTTP round trip: a racing writer's tag is visible by the re-read


class PromotionRefused(TrainerError):
    """The policy says no (gates, data age, Sharpe, approval); exit 1, not an error."""

    exit_code = EXIT_FAILED


class PromotionPolicyLike(Protocol):
    """The `promotion:` section of configs/gates.yaml (trainer.evaluation.gates.PromotionPolicy)."""

    required_tier: str
    must_beat_champion: bool
    require_human_approval: bool
    # champion_metric (default "test.sharpe") is read with getattr: older policies lack it.


@dataclass(frozen=True)
class RegisteredVersion:
    model_name: str
    version: int
    passed: bool
    tier_reached: str
    run_id: str
    data_end: str
    created: bool  # False when the run was registered before (idempotent re-registration)


@dataclass(frozen=True)
class VersionInfo:
    """What promotion needs from a model version, read back from its tags."""

    version: int
    passed: bool
    tier_reached: str
    metrics: dict[str, float]  # from the `metric.<name>` tags
    data_digest: str
    data_end: str
    run_id: str

    def metric(self, name: str) -> float:
        return self.metrics.get(name, math.nan)

    @classmethod
    def from_model_version(cls, mv: Any) -> "VersionInfo":
        tags = mv.tags or {}
        return cls(
            version=int(mv.version),
            passed=tags.get("verdict") == "passed",
            tier_reached=tags.get("tier_reached", "none"),
            metrics={k[len(METRIC_TAG):]: _to_float(v) for k, v in tags.items() if k.startswith(METRIC_TAG)},
            data_digest=tags.get("data_digest", ""),
            data_end=tags.get("data_end", ""),
            run_id=mv.run_id or "",
        )


@dataclass(frozen=True)
class PromotionPlan:
    """Everything checked before the alias moves; `apply_promotion` only writes."""

    model_name: str
    symbol: str
    candidate: VersionInfo
    previous_champion: int | None
    actor: str
    reason: str
    approved_by: str | None

    @property
    def is_noop(self) -> bool:
        return self.previous_champion == self.candidate.version


@dataclass(frozen=True)
class AliasMove:
    model_name: str
    action: str  # promote | rollback | noop
    version: int
    from_version: int | None
    record: LedgerRecord


# --------------------------------------------------------------------------------------------
# Client and errors
# --------------------------------------------------------------------------------------------


def model_name(symbol: str, algorithm: str = "hierarchical_sac") -> str:
    if algorithm not in MODEL_PREFIX:
        raise TrainerError(f"unknown algorithm {algorithm!r}; expected one of {sorted(MODEL_PREFIX)}")
    return f"{MODEL_PREFIX[algorithm]}-{validate_symbol(symbol)}"


def registry_client():
    """An MlflowClient on the configured tracking / registry URIs (trainer.tracking)."""
    from mlflow import MlflowClient

    from trainer.tracking import configure_mlflow, registry_uri, tracking_uri

    with registry_errors("connect"):
        configure_mlflow()
    return MlflowClient(tracking_uri=tracking_uri(), registry_uri=registry_uri())


@contextlib.contextmanager
def registry_errors(what: str) -> Iterator[None]:
    """Turn MLflow / HTTP failures into a TrainerError naming the registry URI and the step."""
    from mlflow.exceptions import MlflowException

    from trainer.tracking import registry_uri

    try:
        yield
    except TrainerError:
        raise
    except (MlflowException, OSError) as exc:
        # requests' ConnectionError is an OSError; MLflow wraps exhausted retries in MlflowException.
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TrainerError(f"model registry {registry_uri()}: {what} failed: {message}") from exc


def _is_not_found(exc: Exception) -> bool:
    return getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


def _aliases(registered_model: Any) -> dict[str, int]:
    """alias -> version; the map holds ints on sqlite and strings over REST."""
    return {alias: int(version) for alias, version in (registered_model.aliases or {}).items()}


def _to_float(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _ensure_registered_model(client: Any, name: str, symbol: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return
    except MlflowException as exc:
        if not _is_not_found(exc):
            raise
    try:
        client.create_registered_model(
            name,
            tags={"symbol": symbol},
            description=f"Gated full training runs for {symbol}; `champion` serves, `challenger` awaits review.",
        )
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise  # anything but "another process created it first"


# --------------------------------------------------------------------------------------------
# The per-model lock
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def model_lock(client: Any, name: str) -> Iterator[None]:
    """Serialise alias moves and ledger writes for one registered model, across processes."""
    from trainer.tracking import registry_uri

    uri = registry_uri()
    local_db = _local_store_path(uri)
    if local_db is not None:
        with _file_lock(local_db.parent / "locks" / f"{name}.lock"):
            yield
    else:
        with _tag_lock(client, name):
            yield


def _local_store_path(uri: str) -> Path | None:
    """The file behind a sqlite / file store (the lock lives next to it); None for a server."""
    if uri.startswith("sqlite:"):
        return Path(uri.split("sqlite:///", 1)[-1])
    if uri.startswith("file:"):
        return Path(urlparse(uri).path) / "store"
    if "://" not in uri:
        return Path(uri) / "store"
    return None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        deadline = time.monotonic() + _LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TrainerError(f"{path}: another promotion held the lock for {_LOCK_WAIT_S:.0f} s") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _read_tag_lock(client: Any, name: str) -> tuple[str, float] | None:
    value = (client.get_registered_model(name).tags or {}).get(LOCK_TAG)
    if not value:
        return None
    owner, _, expires = value.rpartition("|")
    return owner, _to_float(expires)


@contextlib.contextmanager
def _tag_lock(client: Any, name: str) -> Iterator[None]:
    """Compare-and-set on the registered-model tag `promotion.lock` (value `owner|expiry`).

    The REST API has no atomic compare-and-set, so: write our owner id only when the tag is free or
    expired, wait longer than a racing writer's read-then-write takes, re-read, and proceed only if
    our id is still there. Of two writers that both saw the tag free, the later write wins and the
    earlier one sees it at the re-read and backs off. The champion is re-read inside the lock
    anyway, so even a lost lock cannot let older data replace newer data unnoticed for long.
    """
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + _LOCK_WAIT_S
    holder = None
    while True:
        holder = _read_tag_lock(client, name)
        if holder is None or holder[1] < time.time():
            client.set_registered_model_tag(name, LOCK_TAG, f"{owner}|{time.time() + _LOCK_LEASE_S:.3f}")
            time.sleep(_LOCK_SETTLE_S)
            holder = _read_tag_lock(client, name)
            if holder is not None and holder[0] == owner:
                break
        if time.monotonic() > deadline:
            raise TrainerError(f"registered model {name}: promotion lock held by {holder[0] if holder else '?'}")
        time.sleep(0.2 + random.random() * 0.3)  # jitter so two waiters do not retry in lockstep
    try:
        yield
    finally:
        holder = _read_tag_lock(client, name)
        if holder is not None and holder[0] == owner:
            client.delete_registered_model_tag(name, LOCK_TAG)


# --------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------


def _data_end(run_dir: Path, summary: dict[str, Any]) -> str:
    """Last timestamp of the data the run trained on (summary.json `data_end`, ISO)."""
    import pandas as pd

    if not summary.get("data_end"):
        raise TrainerError(f"{run_dir}/summary.json: no data_end; was the run written by `trainer train`?")
    return pd.Timestamp(summary["data_end"]).isoformat()


@dataclass(frozen=True)
class _RunFacts:
    """The parts of a run directory the registry records."""

    summary: dict[str, Any]
    verdict: dict[str, Any]
    metrics: dict[str, Any]
    data_end: str

    @property
    def passed(self) -> bool:
        return bool(self.verdict.get("passed"))

    @property
    def tier_reached(self) -> str:
        return str(self.verdict.get("tier_reached") or "none")


def _read_run(run_dir: Path) -> _RunFacts:
    summary = read_json_object(run_dir / "summary.json", "summary.json")
    gate = read_json_object(run_dir / "gate_full.json", "gate_full.json (run `trainer gate --stage full` first)")
    verdict = gate.get("verdict", gate)  # `trainer gate` writes the verdict at the top level
    if verdict.get("stage", "full") != "full":
        raise TrainerError(f"{run_dir / 'gate_full.json'}: stage is {verdict.get('stage')!r}, expected 'full'")
    metrics = dict(summary.get("metrics") or {})
    evaluation_path = run_dir / "evaluation.json"
    if evaluation_path.exists():
        metrics.update(read_json_object(evaluation_path, "evaluation.json").get("metrics") or {})
    for key in ("symbol", "algorithm", "mlflow_run_id"):
        if not summary.get(key):
            raise TrainerError(f"{run_dir / 'summary.json'}: `{key}` is missing; the run cannot be registered")
    return _RunFacts(summary=summary, verdict=verdict, metrics=metrics, data_end=_data_end(run_dir, summary))


def _gate_tags(verdict: dict[str, Any]) -> dict[str, str]:
    """`gate.<id>` = "passed: 0.41 >= 0.3" — status first so the UI column sorts by outcome."""
    tags = {}
    for result in verdict.get("results") or []:
        observed = result.get("observed")
        shown = f"{observed:.6g}" if isinstance(observed, (int, float)) else str(observed)
        tags[f"gate.{result['id']}"] = (
            f"{result.get('status')}: {shown} {result.get('comparison', '')} {result.get('threshold_shown', '')}".strip()
        )
    return tags


def _metric_tags(metrics: dict[str, Any]) -> dict[str, str]:
    return {
        f"{METRIC_TAG}{key}": repr(float(value))
        for key, value in metrics.items()
        if key.startswith(_TAGGED_METRIC_PREFIXES) and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def _key_metrics_text(metrics: dict[str, Any]) -> str:
    keys = ("test.sharpe", "test.total_return", "test.max_drawdown", "baseline.sharpe", "buy_and_hold.sharpe", "stats.dsr")
    parts = []
    for key in keys:
        value = metrics.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            parts.append(f"{key} {value:.3f}")
    return ", ".join(parts) or "no test metrics"


def _description(facts: _RunFacts, report_uri: str | None) -> str:
    summary = facts.summary
    lines = [
        f"Verdict: {'passed' if facts.passed else 'failed'} (tier reached: {facts.tier_reached}).",
        f"Key metrics: {_key_metrics_text(facts.metrics)}.",
        f"Run {summary['mlflow_run_id']}, profile {summary.get('profile')}, data {summary.get('data_digest')} "
        f"to {facts.data_end}, config {summary.get('config_hash')}, code {summary.get('code_version')}.",
    ]
    if report_uri:
        lines.append(f"Review report: {report_uri}")
    return "\n".join(lines)


def _logged_agent_model_id(client: Any, run_id: str) -> str | None:
    from trainer.pyfunc_model import MODEL_NAME_IN_RUN

    run = client.get_run(run_id)
    models = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = '{MODEL_NAME_IN_RUN}'",
    )
    return models[0].model_id if models else None


def gated_model_dir(run_dir: Path) -> Path:
    """The model directory whose backtest the gates judged, so the version serves that one:
    evaluation.json's `model` (written by `trainer evaluate`), else the rule evaluate follows
    (best_model when it holds a model, else model)."""
    evaluation_path = run_dir / "evaluation.json"
    if evaluation_path.exists():
        judged = read_json_object(evaluation_path, "evaluation.json").get("model")
        if judged:
            if judged not in ("model", "best_model") or not (run_dir / judged / "meta.json").is_file():
                raise TrainerError(f"{evaluation_path}: evaluated model {judged!r} is not a model directory of the run")
            return run_dir / judged
    return run_dir / "best_model" if (run_dir / "best_model" / "meta.json").is_file() else run_dir / "model"


def register_run(run_dir: str | Path, actor: str = "trainer") -> RegisteredVersion:
    """Register the gated full run in `run_dir` as a new version (or return the existing one).

    The run's MLflow run (summary.json `mlflow_run_id`) gets the pyfunc model `agent` if it has
    none yet: the model directory the gates judged (`gated_model_dir`). A passing version becomes
    `challenger`; a failing one is registered too, tagged `verdict=failed`, so it counts as a trial
    but can never be promoted.
    """
    from mlflow.exceptions import MlflowException

    from trainer.pyfunc_model import log_agent_model

    run_dir = Path(run_dir)
    facts = _read_run(run_dir)
    summary = facts.summary
    symbol = validate_symbol(summary["symbol"])
    name = model_name(symbol, summary["algorithm"])
    run_id = summary["mlflow_run_id"]
    client = registry_client()
    with registry_errors(f"registering {run_dir} as {name}"):
        try:
            client.get_run(run_id)
        except MlflowException as exc:
            if _is_not_found(exc):
                raise TrainerError(f"{run_dir}: MLflow run {run_id} is not in this tracking store") from None
            raise
        _ensure_registered_model(client, name, symbol)
        # Logging the model takes seconds, so it happens before the lock; two racing registrations
        # of one run may both log it, and the version then points at whichever is found first.
        model_id = _logged_agent_model_id(client, run_id)
        if model_id is None:
            model_id = log_agent_model(gated_model_dir(run_dir), run_id).model_id
        with model_lock(client, name):
            # Idempotency: a run is registered at most once (key: its MLflow run id).
            existing = client.search_model_versions(f"name = '{name}' AND run_id = '{run_id}'")
            if existing:
                info = VersionInfo.from_model_version(existing[0])
                return RegisteredVersion(name, info.version, info.passed, info.tier_reached, run_id, info.data_end, False)

            trials = len(client.search_model_versions(f"name = '{name}'")) + 1
            report_uri = _report_uri(client, run_id)
            tags = {
                "verdict": "passed" if facts.passed else "failed",
                "tier_reached": facts.tier_reached,
                "symbol": symbol,
                "algorithm": summary["algorithm"],
                "data_digest": str(summary.get("data_digest")),
                "config_hash": str(summary.get("config_hash")),
                "code_version": str(summary.get("code_version")),
                "profile": str(summary.get("profile")),
                "trials_count": str(trials),
                "data_end": facts.data_end,
                **_metric_tags(facts.metrics),
                **_gate_tags(facts.verdict),
            }
            if report_uri:
                tags["report_uri"] = report_uri
            mv = client.create_model_version(
                name,
                source=f"models:/{model_id}",
                run_id=run_id,
                tags=tags,
                description=_description(facts, report_uri),
                model_id=model_id,
            )
            version = int(mv.version)
            verdict_text = tags["verdict"]
            ledger.append(client, LedgerRecord(
                actor=actor, action="register", symbol=symbol, model_name=name, version=version,
                reason=f"gated full run {run_dir.name}", verdict=verdict_text, data_end=facts.data_end,
            ))
            if facts.passed:
                previous = _aliases(client.get_registered_model(name)).get(CHALLENGER)
                client.set_registered_model_alias(name, CHALLENGER, str(version))
                ledger.append(client, LedgerRecord(
                    actor=actor, action="challenger", symbol=symbol, model_name=name, version=version,
                    from_version=previous, alias=CHALLENGER, reason="passed its gates",
                    verdict=verdict_text, data_end=facts.data_end,
                ))
    return RegisteredVersion(name, version, facts.passed, facts.tier_reached, run_id, facts.data_end, True)


def _report_uri(client: Any, run_id: str) -> str | None:
    """The review report logged with the run (trainer.evaluation.report), if it is there yet."""
    run = client.get_run(run_id)
    return run.data.tags.get("report_uri")


def attach_report(run_id: str, report_uri: str) -> list[tuple[str, int]]:
    """Point every registered version of `run_id` at its review report (tag + description line)."""
    client = registry_client()
    attached = []
    with registry_errors(f"attaching the report of run {run_id}"):
        for mv in client.search_model_versions(f"run_id = '{run_id}'"):
            client.set_model_version_tag(mv.name, mv.version, "report_uri", report_uri)
            description = mv.description or ""
            if report_uri not in description:
                description = "\n".join(
                    line for line in description.splitlines() if not line.startswith("Review report:")
                )
                client.update_model_version(mv.name, mv.version, description=f"{description}\nReview report: {report_uri}".strip())
            attached.append((mv.name, int(mv.version)))
    return attached


# --------------------------------------------------------------------------------------------
# Promotion and rollback
# --------------------------------------------------------------------------------------------


def _get_version(client: Any, name: str, version: int) -> VersionInfo:
    from mlflow.exceptions import MlflowException

    try:
        return VersionInfo.from_model_version(client.get_model_version(name, str(version)))
    except MlflowException as exc:
        if _is_not_found(exc):
            raise TrainerError(f"registered model {name} has no version {version}") from None
        raise


def _check_not_older(candidate: VersionInfo, champion: VersionInfo, name: str) -> None:
    if candidate.data_end and champion.data_end and candidate.data_end < champion.data_end:
        raise PromotionRefused(
            f"{name} v{candidate.version} was trained on data ending {candidate.data_end}, older than "
            f"champion v{champion.version} ({champion.data_end}); refusing to replace newer data with older"
        )


def plan_promotion(
    client: Any,
    symbol: str,
    version: int | None,
    *,
    actor: str,
    reason: str,
    policy: PromotionPolicyLike,
    approved_by: str | None = None,
    algorithm: str = "hierarchical_sac",
) -> PromotionPlan:
    """Read and check everything a promotion needs; raise PromotionRefused / TrainerError. No writes."""
    from mlflow.exceptions import MlflowException

    name = model_name(symbol, algorithm)
    try:
        aliases = _aliases(client.get_registered_model(name))
    except MlflowException as exc:
        if _is_not_found(exc):
            raise TrainerError(f"no registered model {name}; register a gated run first") from None
        raise
    if version is None:
        version = aliases.get(CHALLENGER)
        if version is None:
            raise PromotionRefused(f"{name} has no challenger to promote (no version passed its gates yet)")
    candidate = _get_version(client, name, int(version))

    required = policy.required_tier
    if not candidate.passed or TIER_RANK.get(candidate.tier_reached, 0) < TIER_RANK[required]:
        raise PromotionRefused(
            f"{name} v{candidate.version} did not pass its required gates (verdict "
            f"{'passed' if candidate.passed else 'failed'}, tier {candidate.tier_reached}, policy requires {required})"
        )
    if policy.require_human_approval and not approved_by:
        raise PromotionRefused(f"{name}: the promotion policy requires a reviewer's approval (--approved-by NAME)")

    champion_version = aliases.get(CHAMPION)
    if champion_version is not None and champion_version != candidate.version:
        champion = _get_version(client, name, champion_version)
        _check_not_older(candidate, champion, name)
        same_window = candidate.data_digest == champion.data_digest
        # Sharpe ratios on different test windows are not comparable; then newer data decides
        # (checked above) and the comparison is skipped. A tie passes (>=): an equally good model
        # on the same data may replace the champion. A missing value (NaN) never passes.
        metric = getattr(policy, "champion_metric", "test.sharpe")
        ours, theirs = candidate.metric(metric), champion.metric(metric)
        if policy.must_beat_champion and same_window and not ours >= theirs:
            raise PromotionRefused(
                f"{name} v{candidate.version} {metric} {ours:.4f} does not beat champion "
                f"v{champion.version} ({theirs:.4f}) on the same test window"
            )
    return PromotionPlan(name, validate_symbol(symbol), candidate, champion_version, actor, reason, approved_by)


def apply_promotion(client: Any, plan: PromotionPlan) -> AliasMove:
    """Move `champion` as planned and record it. The caller holds `model_lock` (promote() does).

    The champion is re-read first: if another promotion moved it since the plan was made, the
    data-age check runs again against the new champion.
    """
    current = _aliases(client.get_registered_model(plan.model_name)).get(CHAMPION)
    base = dict(
        actor=plan.actor, symbol=plan.symbol, model_name=plan.model_name, version=plan.candidate.version,
        from_version=current, alias=CHAMPION, reason=plan.reason, verdict="passed",
        data_end=plan.candidate.data_end, approved_by=plan.approved_by,
    )
    if current == plan.candidate.version:
        record = LedgerRecord(action="noop", **base)
        ledger.append(client, record)
        return AliasMove(plan.model_name, "noop", plan.candidate.version, current, record)
    if current is not None:
        _check_not_older(plan.candidate, _get_version(client, plan.model_name, current), plan.model_name)
    if plan.approved_by:
        client.set_model_version_tag(plan.model_name, str(plan.candidate.version), "approved_by", plan.approved_by)

    # The commit point: the only write that changes what serves.
    client.set_registered_model_alias(plan.model_name, CHAMPION, str(plan.candidate.version))
    record = LedgerRecord(action="promote", **base)
    _record_or_undo(client, plan.model_name, record, current)
    return AliasMove(plan.model_name, "promote", plan.candidate.version, current, record)


def _record_or_undo(client: Any, name: str, record: LedgerRecord, previous: int | None) -> None:
    """A move the ledger does not know about would break rollback: undo it if recording fails."""
    try:
        ledger.append(client, record)
    except Exception:
        with contextlib.suppress(Exception):
            if previous is None:
                client.delete_registered_model_alias(name, CHAMPION)
            else:
                client.set_registered_model_alias(name, CHAMPION, str(previous))
        raise


def promote(
    symbol: str,
    version: int | None = None,
    *,
    actor: str,
    reason: str,
    policy: PromotionPolicyLike,
    approved_by: str | None = None,
    algorithm: str = "hierarchical_sac",
) -> AliasMove:
    """Move `champion` to `version` (default: the current challenger) if the policy allows it."""
    client = registry_client()
    name = model_name(symbol, algorithm)
    with registry_errors(f"promoting {name} v{version if version is not None else CHALLENGER}"):
        with model_lock(client, name):
            plan = plan_promotion(
                client, symbol, version, actor=actor, reason=reason, policy=policy,
                approved_by=approved_by, algorithm=algorithm,
            )
            return apply_promotion(client, plan)


def champion_history(records: list[LedgerRecord]) -> list[int]:
    """Replay the ledger: promotions push, rollbacks pop. The last item is the champion."""
    stack: list[int] = []
    for record in records:
        if record.action == "promote" and record.version is not None:
            stack.append(record.version)
        elif record.action == "rollback" and stack:
            stack.pop()
    return stack


def rollback(symbol: str, *, actor: str, reason: str, algorithm: str = "hierarchical_sac") -> AliasMove:
    """Move `champion` back to the champion before it, as the registry's own ledger tells.

    A rollback is a reviewer's decision, so the data-age and Sharpe checks do not apply; the
    target must still exist.
    """
    client = registry_client()
    name = model_name(symbol, algorithm)
    with registry_errors(f"rolling back {name}"):
        with model_lock(client, name):
            history = champion_history(ledger.read_registry(client, name))
            current = _aliases(client.get_registered_model(name)).get(CHAMPION)
            if not history or history[-1] != current:
                raise TrainerError(
                    f"{name}: champion alias is v{current} but the ledger says v{history[-1] if history else None}; "
                    "someone moved the alias outside `trainer promote` — set it by hand"
                )
            if len(history) < 2:
                raise PromotionRefused(f"{name}: no previous champion to roll back to (v{current} is the first)")
            target = _get_version(client, name, history[-2])
            client.set_registered_model_alias(name, CHAMPION, str(target.version))
            record = LedgerRecord(
                actor=actor, action="rollback", symbol=validate_symbol(symbol), model_name=name,
                version=target.version, from_version=current, alias=CHAMPION, reason=reason,
                verdict="passed" if target.passed else "failed", data_end=target.data_end,
            )
            _record_or_undo(client, name, record, current)
            return AliasMove(name, "rollback", target.version, current, record)


# --------------------------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------------------------


def registry_status(symbol: str, last_records: int = 10) -> dict[str, Any]:
    """Versions (verdict, tier, aliases) and the latest ledger records of every model of `symbol`."""
    from mlflow.exceptions import MlflowException

    client = registry_client()
    models = []
    with registry_errors(f"reading the registry for {symbol}"):
        for algorithm in MODEL_PREFIX:
            name = model_name(symbol, algorithm)
            try:
                registered = client.get_registered_model(name)
            except MlflowException as exc:
                if _is_not_found(exc):
                    continue
                raise
            aliases = _aliases(registered)
            by_version: dict[int, list[str]] = {}
            for alias, version in aliases.items():
                by_version.setdefault(version, []).append(alias)
            versions = []
            for mv in sorted(client.search_model_versions(f"name = '{name}'"), key=lambda m: int(m.version)):
                info = VersionInfo.from_model_version(mv)
                versions.append({
                    "version": info.version,
                    "verdict": "passed" if info.passed else "failed",
                    "tier_reached": info.tier_reached,
                    "test_sharpe": None if math.isnan(info.metric("test.sharpe")) else info.metric("test.sharpe"),
                    "data_end": info.data_end,
                    "aliases": sorted(by_version.get(info.version, [])),
                    "run_id": info.run_id,
                })
            records = ledger.read_registry(client, name)[-last_records:]
            models.append({
                "model_name": name,
                "aliases": aliases,
                "versions": versions,
                "ledger": [json.loads(record.to_json()) for record in records],
            })
    return {"symbol": validate_symbol(symbol), "models": models}
