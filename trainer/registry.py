"""The MLflow model registry: register gated runs, move the `challenger` / `champion` aliases.

One registered model per symbol, phase and profile: `hierarchical-options-<SYMBOL>` (Phase B.1)
and `phase-a-baseline-<SYMBOL>` (Phase A) for the production profile, `<profile>.<name>` for any
other (a demo run never shares a model with production). Every gated full run becomes a version,
passing or not, so a model's versions are also the comparable trials the Deflated Sharpe counts.
Promotion moves aliases only (stages are deprecated).

Invariants (each has a test in tests/unit/test_registry*.py / test_promotion_trust.py):
1. No file and no tag is trusted by itself. `register` recomputes the verdict from the metrics
   logged in the candidate's MLflow run under the given gates file and refuses (exit 2) when
   gate_full.json says otherwise; it records the gates file's sha256 on the version and logs the
   file with the run. `promote` recomputes it again under its own gates file, refuses when that
   file is not the one the version was registered under, or when the version's tags disagree.
2. A version whose recomputed gates did not reach the policy's required tier never becomes champion.
3. A candidate replaces a champion only if it was compared with that champion on its own test
   bars (evaluation metric `champion.version`), or with the same champion the current one was
   compared with and on newer data; never with older data than the champion's (`data_end`).
4. Every alias move and ledger write of a model happens under its promotion lock
   (trainer.locks: a file lock next to an embedded store, a PostgreSQL advisory lock for a remote
   registry), and the champion is re-read inside it.
5. Write-ahead intent: an `intent` record precedes every champion move; a crash at any point
   leaves a pending intent that the next promote / rollback / registry-status reconciles from
   where the alias actually points. The ledger, the aliases and rollback then agree.
6. Promoting the current champion again changes no alias; the ledger records it as `noop`.
7. Rollback returns `champion` to the previous version that actually served and removes a
   `challenger` left on the rolled-back version, so a plain promote cannot send it straight back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer import faults, ledger
from trainer.errors import EXIT_FAILED, TrainerError
from trainer.ledger import LedgerRecord
from trainer.locks import PromotionLock, promotion_lock
from trainer.run_dir import RunDir
from trainer.symbols import validate_symbol
from trainer.versioning import image_digest

CHAMPION = "champion"
CHALLENGER = "challenger"
TIER_RANK = {"none": 0, "minimum": 1, "target": 2}
MODEL_PREFIX = {"hierarchical_sac": "hierarchical-options", "sac": "phase-a-baseline"}
PRODUCTION_PROFILE = "production"
DEFAULT_GATES = "configs/gates.yaml"
GATES_ARTIFACT = "registration/gates.yaml"  # the gates file a version was registered under, in its run
JUDGED_CHAMPION_METRIC = "champion.version"  # logged by evaluate: the champion the candidate was compared with (0 = none)

METRIC_TAG = "metric."  # `metric.test.sharpe` etc.: shown in the UI, never trusted
_TAGGED_METRIC_PREFIXES = ("test.", "baseline.", "buy_and_hold.", "stats.", "eval.", "champion.")
_PROFILE_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")


class PromotionRefused(TrainerError):
    """The policy says no (gates, data age, stale comparison, approval); exit 1, not an error."""

    exit_code = EXIT_FAILED


class VerdictMismatch(TrainerError):
    """A verdict file, a tag or a gates file disagrees with what the MLflow run's metrics give; exit 2."""


@dataclass(frozen=True)
class GatesPolicy:
    """A gates file as a promotion policy: its gates, its `promotion:` section and its content hash."""

    path: Path
    sha256: str
    file: Any  # trainer.evaluation.gates.GatesFile

    @property
    def promotion(self) -> Any:
        return self.file.promotion

    @property
    def required_tier(self) -> str:
        return self.file.promotion.required_tier

    def judge(self, metrics: dict[str, Any], required_tier: str | None = None) -> Any:
        """The full-stage Verdict these gates give on `metrics`."""
        from trainer.evaluation.gates import evaluate_gates

        return evaluate_gates(self.file.gates, metrics, "full", required_tier=required_tier or self.required_tier)


def load_policy(path: str | Path = DEFAULT_GATES) -> GatesPolicy:
    from trainer.evaluation.gates import load_gates_file

    path = Path(path)
    gates_file = load_gates_file(path)  # names the file and the gate on any problem
    return GatesPolicy(path, hashlib.sha256(path.read_bytes()).hexdigest(), gates_file)


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
    """What promotion needs from a model version, read back from its tags (checked, not trusted)."""

    version: int
    passed: bool
    tier_reached: str
    metrics: dict[str, float]  # from the `metric.<name>` tags: display only
    data_digest: str
    data_end: str
    run_id: str
    gates_hash: str
    tags: dict[str, str]

    def metric(self, name: str) -> float:
        return self.metrics.get(name, math.nan)

    @classmethod
    def from_model_version(cls, mv: Any) -> "VersionInfo":
        tags = dict(mv.tags or {})
        return cls(
            version=int(mv.version),
            passed=tags.get("verdict") == "passed",
            tier_reached=tags.get("tier_reached", "none"),
            metrics={k[len(METRIC_TAG):]: _to_float(v) for k, v in tags.items() if k.startswith(METRIC_TAG)},
            data_digest=tags.get("data_digest", ""),
            data_end=tags.get("data_end", ""),
            run_id=mv.run_id or "",
            gates_hash=tags.get("gates_hash", ""),
            tags=tags,
        )


@dataclass(frozen=True)
class Approval:
    """A reviewer's decision as it travels to promote and into the ledger."""

    by: str
    at: str | None = None
    comment: str | None = None


@dataclass(frozen=True)
class PromotionPlan:
    """Everything checked before the alias moves; `apply_promotion` only writes."""

    model_name: str
    symbol: str
    candidate: VersionInfo
    previous_champion: int | None
    actor: str
    reason: str
    approval: Approval | None
    gates_hash: str

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
    reconciled: str | None = None  # what a pending intent was reconciled to first, if there was one


# --------------------------------------------------------------------------------------------
# Client and errors
# --------------------------------------------------------------------------------------------


def model_name(symbol: str, algorithm: str = "hierarchical_sac", profile: str | None = PRODUCTION_PROFILE) -> str:
    """`hierarchical-options-SPY` (production), `demo.hierarchical-options-SPY` (profile demo)."""
    if algorithm not in MODEL_PREFIX:
        raise TrainerError(f"unknown algorithm {algorithm!r}; expected one of {sorted(MODEL_PREFIX)}")
    base = f"{MODEL_PREFIX[algorithm]}-{validate_symbol(symbol)}"
    profile = profile or PRODUCTION_PROFILE
    if profile == PRODUCTION_PROFILE:
        return base
    if not _PROFILE_RE.fullmatch(profile):
        raise TrainerError(f"invalid profile name {profile!r} (lowercase letters, digits, '_' and '-')")
    return f"{profile}.{base}"


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


@contextlib.contextmanager
def model_lock(client: Any, name: str) -> Iterator[PromotionLock]:  # noqa: ARG001 - client kept for callers
    """Serialise alias moves and ledger writes for one registered model, across processes (trainer.locks)."""
    from trainer.tracking import registry_uri

    with promotion_lock(name, registry_uri()) as held:
        yield held


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
# The verdict, recomputed from the run's MLflow metrics
# --------------------------------------------------------------------------------------------


def run_metrics(client: Any, run_id: str) -> dict[str, float]:
    """The latest value of every metric logged in the MLflow run (what the gates are recomputed on)."""
    return dict(client.get_run(run_id).data.metrics)


def _differences(claimed: dict[str, Any], verdict: Any) -> str:
    """`test_sharpe_min: file pass, run fail` for each gate whose status the file misstates."""
    said = {r.get("id"): r.get("status") for r in claimed.get("results") or [] if isinstance(r, dict)}
    lines = [f"{r.id}: file {said.get(r.id, 'absent')}, run {r.status}" for r in verdict.results if said.get(r.id) != r.status]
    return "; ".join(lines[:6]) + (" ..." if len(lines) > 6 else "")


def _check_verdict_file(run: RunDir, claimed: dict[str, Any], policy: GatesPolicy, metrics: dict[str, float], run_id: str) -> Any:
    """The verdict the run's MLflow metrics give; VerdictMismatch when gate_full.json claims another."""
    computed_under = claimed.get("gates_sha256")
    if computed_under and computed_under != policy.sha256:
        raise VerdictMismatch(
            f"{run.gate_path('full')}: was computed under a gates file with sha256 {str(computed_under)[:12]}, "
            f"not {policy.path} (sha256 {policy.sha256[:12]}): register with the gates file the verdict was "
            "computed with; nothing registered"
        )
    required = claimed.get("required_tier") or policy.required_tier
    recomputed = policy.judge(metrics, required_tier=required if required in ("minimum", "target") else None)
    if bool(claimed.get("passed")) != recomputed.passed or str(claimed.get("tier_reached") or "none") != recomputed.tier_reached:
        raise VerdictMismatch(
            f"{run.gate_path('full')}: says passed={bool(claimed.get('passed'))}, tier {claimed.get('tier_reached')}, but "
            f"the metrics logged in MLflow run {run_id} give passed={recomputed.passed}, tier {recomputed.tier_reached} "
            f"under {policy.path} (sha256 {policy.sha256[:12]}): {_differences(claimed, recomputed) or 'same gate statuses'}; "
            "nothing registered (re-run `trainer gate --stage full` with this gates file)"
        )
    return recomputed


def _registered_gates_hash(client: Any, run_id: str) -> str | None:
    """sha256 of the gates file logged with the run at registration (None if it is not there)."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="registered-gates-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=GATES_ARTIFACT, dst_path=tmp)
        except Exception:  # noqa: BLE001 - absent artifact: the caller refuses
            return None
        return hashlib.sha256(Path(local).read_bytes()).hexdigest()


def verify_version(client: Any, name: str, info: VersionInfo, policy: GatesPolicy) -> Any:
    """Recompute v's verdict under `policy`; VerdictMismatch when the policy is not the one it was
    registered under, or when its tags or its logged gates file disagree with the run's metrics."""
    where = f"{name} v{info.version}"
    if not info.gates_hash:
        raise VerdictMismatch(f"{where} has no gates_hash tag: it was not registered by this trainer; register its run again")
    if info.gates_hash != policy.sha256:
        raise VerdictMismatch(
            f"{policy.path} (sha256 {policy.sha256[:12]}) is not the gates file {where} was registered under "
            f"(sha256 {info.gates_hash[:12]}): promote with the policy it was judged by; nothing moved"
        )
    logged = _registered_gates_hash(client, info.run_id)
    if logged != policy.sha256:
        raise VerdictMismatch(
            f"{where}: the gates file logged with run {info.run_id} ({GATES_ARTIFACT}) "
            f"{'is missing' if logged is None else f'has sha256 {logged[:12]}'}, the version's gates_hash tag says "
            f"{info.gates_hash[:12]}: the tag was edited; nothing moved"
        )
    verdict = policy.judge(run_metrics(client, info.run_id))
    tagged = ("passed" if info.passed else "failed", info.tier_reached)
    recomputed = ("passed" if verdict.passed else "failed", verdict.tier_reached)
    if tagged != recomputed:
        raise VerdictMismatch(
            f"{where}: tags say verdict {tagged[0]}, tier {tagged[1]}, but run {info.run_id}'s metrics give "
            f"{recomputed[0]}, tier {recomputed[1]} under {policy.path}: the tags were edited; nothing moved"
        )
    return verdict


# --------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------


def _data_end(run: RunDir, summary: dict[str, Any]) -> str:
    """Last timestamp of the data the run trained on (summary.json `data_end`, ISO)."""
    import pandas as pd

    if not summary.get("data_end"):
        raise TrainerError(f"{run.summary_path}: no data_end; was the run written by `trainer train`?")
    return pd.Timestamp(summary["data_end"]).isoformat()


def _gate_tags(verdict: Any) -> dict[str, str]:
    """`gate.<id>` = "pass: 0.41 > 0.3" — status first so the UI column sorts by outcome."""
    tags = {}
    for r in verdict.results:
        shown = f"{r.observed:.6g}" if isinstance(r.observed, (int, float)) else str(r.observed)
        tags[f"gate.{r.id}"] = f"{r.status}: {shown} {r.comparison} {r.threshold_shown}".strip()
    return tags


def _metric_tags(metrics: dict[str, Any]) -> dict[str, str]:
    return {
        f"{METRIC_TAG}{key}": repr(float(value))
        for key, value in metrics.items()
        if key.startswith(_TAGGED_METRIC_PREFIXES) and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def _key_metrics_text(metrics: dict[str, Any]) -> str:
    keys = ("test.sharpe", "champion.sharpe", "baseline.sharpe", "buy_and_hold.sharpe", "test.max_drawdown", "stats.dsr")
    parts = []
    for key in keys:
        value = metrics.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            parts.append(f"{key} {value:.3f}")
    return ", ".join(parts) or "no test metrics"


def _description(summary: dict[str, Any], verdict: Any, metrics: dict[str, Any], data_end: str,
                 policy: GatesPolicy, report_uri: str | None) -> str:
    lines = [
        f"Verdict: {'passed' if verdict.passed else 'failed'} (tier reached: {verdict.tier_reached}; "
        f"promotion requires {policy.required_tier}; gates {policy.path.name} sha256 {policy.sha256[:12]}).",
        f"Key metrics: {_key_metrics_text(metrics)}.",
        f"Run {summary['mlflow_run_id']}, profile {summary.get('profile')}, data {summary.get('data_digest')} "
        f"to {data_end}, config {summary.get('config_hash')}, code {summary.get('code_version')}.",
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


def _log_gates_file(client: Any, run_id: str, policy: GatesPolicy) -> None:
    """The gates file travels with the run, so a later edit of the version's gates_hash tag shows."""
    with tempfile.TemporaryDirectory(prefix="gates-") as tmp:
        copy = Path(tmp) / Path(GATES_ARTIFACT).name
        copy.write_bytes(policy.path.read_bytes())
        client.log_artifact(run_id, str(copy), str(Path(GATES_ARTIFACT).parent))


def register_run(run_dir: str | Path, actor: str = "trainer", gates: str | Path = DEFAULT_GATES) -> RegisteredVersion:
    """Register the gated full run in `run_dir` as a new version (or return the existing one).

    The verdict is recomputed from the metrics logged in the run's MLflow run under `gates`;
    gate_full.json must agree (VerdictMismatch, exit 2, otherwise). The run's MLflow run gets the
    pyfunc model `agent` if it has none yet: the model directory the gates judged. A passing
    version becomes `challenger`; a failing one is registered too, tagged `verdict=failed`, so it
    counts as a trial but can never be promoted.
    """
    from mlflow.exceptions import MlflowException

    from trainer.pyfunc_model import log_agent_model

    run = RunDir(run_dir)
    summary = run.read_summary()
    for key in ("symbol", "algorithm", "mlflow_run_id"):
        if not summary.get(key):
            raise TrainerError(f"{run.summary_path}: `{key}` is missing; the run cannot be registered")
    claimed = run.read_gate_verdict("full")
    data_end = _data_end(run, summary)
    policy = load_policy(gates)
    symbol = validate_symbol(summary["symbol"])
    profile = summary.get("profile") or "adhoc"
    name = model_name(symbol, summary["algorithm"], profile)
    run_id = summary["mlflow_run_id"]
    client = registry_client()
    with registry_errors(f"registering {run.path} as {name}"):
        try:
            client.get_run(run_id)
        except MlflowException as exc:
            if _is_not_found(exc):
                raise TrainerError(f"{run.path}: MLflow run {run_id} is not in this tracking store") from None
            raise
        metrics = run_metrics(client, run_id)
        verdict = _check_verdict_file(run, claimed, policy, metrics, run_id)
        _ensure_registered_model(client, name, symbol)
        # Logging the model takes seconds, so it happens before the lock; two racing registrations
        # of one run may both log it, and the version then points at whichever is found first.
        model_id = _logged_agent_model_id(client, run_id)
        if model_id is None:
            model_id = log_agent_model(run.judged_model_dir(), run_id).model_id
        with model_lock(client, name):
            # Idempotency: a run is registered at most once (key: its MLflow run id).
            existing = client.search_model_versions(f"name = '{name}' AND run_id = '{run_id}'")
            if existing:
                info = VersionInfo.from_model_version(existing[0])
                return RegisteredVersion(name, info.version, info.passed, info.tier_reached, run_id, info.data_end, False)

            _log_gates_file(client, run_id, policy)
            trials = len(client.search_model_versions(f"name = '{name}'")) + 1
            report_uri = _report_uri(client, run_id)
            verdict_text = "passed" if verdict.passed else "failed"
            judged = metrics.get(JUDGED_CHAMPION_METRIC)
            tags = {
                "verdict": verdict_text,
                "tier_reached": verdict.tier_reached,
                "required_tier": policy.required_tier,
                "gates_hash": policy.sha256,
                "gates_file": str(policy.path),
                "symbol": symbol,
                "algorithm": summary["algorithm"],
                "data_digest": str(summary.get("data_digest")),
                "config_hash": str(summary.get("config_hash")),
                "code_version": str(summary.get("code_version")),
                # the trainer image that trained it (summary.json; older runs: the registering pod's)
                "image_digest": str(summary.get("image_digest") or image_digest()),
                "profile": profile,
                "trials_count": str(trials),
                "data_end": data_end,
                "judged_against_champion": "none" if not judged else f"v{int(judged)}",
                **_metric_tags(metrics),
                **_gate_tags(verdict),
            }
            if report_uri:
                tags["report_uri"] = report_uri
            mv = client.create_model_version(
                name,
                source=f"models:/{model_id}",
                run_id=run_id,
                tags=tags,
                description=_description(summary, verdict, metrics, data_end, policy, report_uri),
                model_id=model_id,
            )
            version = int(mv.version)
            ledger.append(client, LedgerRecord(
                actor=actor, action="register", symbol=symbol, model_name=name, version=version,
                reason=f"gated full run {run.path.name}", verdict=verdict_text, data_end=data_end,
                gates_hash=policy.sha256,
            ))
            if verdict.passed:
                previous = _aliases(client.get_registered_model(name)).get(CHALLENGER)
                client.set_registered_model_alias(name, CHALLENGER, str(version))
                ledger.append(client, LedgerRecord(
                    actor=actor, action="challenger", symbol=symbol, model_name=name, version=version,
                    from_version=previous, alias=CHALLENGER, reason="passed its gates",
                    verdict=verdict_text, data_end=data_end, gates_hash=policy.sha256,
                ))
    return RegisteredVersion(name, version, verdict.passed, verdict.tier_reached, run_id, data_end, True)


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
# Reconciling a pending intent
# --------------------------------------------------------------------------------------------


def reconcile(client: Any, name: str) -> str | None:
    """Close a pending intent from where `champion` points; the caller holds the model's lock.

    The alias at the intended version: the move happened and was not recorded, so record it. The
    alias still at the version it moved from: the move never happened, so record `abandon`.
    Anywhere else: someone moved the alias by hand; refuse. Returns what was done, or None.
    """
    records = ledger.read_registry(client, name)
    pending = ledger.pending_intent(records)
    if pending is None:
        return None
    aliases = _aliases(client.get_registered_model(name))
    current = aliases.get(CHAMPION)
    base = dict(
        actor=pending.actor, symbol=pending.symbol, model_name=name, version=pending.version,
        from_version=pending.from_version, alias=CHAMPION, verdict=pending.verdict, data_end=pending.data_end,
        approved_by=pending.approved_by, approved_at=pending.approved_at, approval_comment=pending.approval_comment,
        gates_hash=pending.gates_hash, intent_id=pending.intent_id,
    )
    if current == pending.version:
        if pending.operation == "rollback":
            _drop_challenger_on(client, name, pending.from_version, aliases)
        ledger.append(client, LedgerRecord(
            action=pending.operation, reason=f"reconciled: the {pending.operation} had moved the alias but was not recorded "
            f"({pending.reason})", **base,
        ))
        return f"completed an interrupted {pending.operation} of {name} to v{pending.version} (intent {pending.ts})"
    if current == pending.from_version:
        ledger.append(client, LedgerRecord(
            action="abandon", reason=f"reconciled: the {pending.operation} never moved the alias ({pending.reason})", **base,
        ))
        return f"abandoned an interrupted {pending.operation} of {name} to v{pending.version}: champion stayed v{current}"
    raise TrainerError(
        f"{name}: a {pending.operation} from v{pending.from_version} to v{pending.version} is pending (intent {pending.ts}) "
        f"but champion is v{current}: the alias was moved outside `trainer promote`; set it by hand"
    )


def reconcile_pending(symbol: str, algorithm: str = "hierarchical_sac", profile: str = PRODUCTION_PROFILE) -> str | None:
    """Reconcile the model's pending intent, if it has one (taking the lock only then)."""
    from mlflow.exceptions import MlflowException

    client = registry_client()
    name = model_name(symbol, algorithm, profile)
    with registry_errors(f"reconciling {name}"):
        try:
            records = ledger.read_registry(client, name)
        except MlflowException as exc:
            if _is_not_found(exc):
                return None
            raise
        if ledger.pending_intent(records) is None:
            return None
        with model_lock(client, name):
            return reconcile(client, name)


def _drop_challenger_on(client: Any, name: str, version: int | None, aliases: dict[str, int]) -> None:
    """A rolled-back version must not stay `challenger`, or the next plain promote re-promotes it."""
    if version is not None and aliases.get(CHALLENGER) == version:
        client.delete_registered_model_alias(name, CHALLENGER)


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


def _judged_champion(client: Any, run_id: str) -> int | None:
    """The champion version the run was compared with at evaluation (None: none, or not evaluated)."""
    value = run_metrics(client, run_id).get(JUDGED_CHAMPION_METRIC)
    return int(value) if value else None


def _check_compared_with(client: Any, name: str, candidate: VersionInfo, current: int | None) -> None:
    """The candidate's comparison gates judged it against `champion.version`; that must still be the
    champion, or the champion must be a sibling (judged against the same one) on older data."""
    if current is None or current == candidate.version:
        return
    judged = _judged_champion(client, candidate.run_id)
    if judged == current:
        return
    champion = _get_version(client, name, current)
    if judged is not None and _judged_champion(client, champion.run_id) == judged and candidate.data_end > champion.data_end:
        return  # both beat v<judged> on their own bars; the newer data wins (invariant 3)
    compared = f"compared with champion v{judged}" if judged else "not compared with any champion"
    raise PromotionRefused(
        f"{name} v{candidate.version} was {compared} at evaluation, but the champion is now v{current}: its "
        f"comparison gates do not speak about the current champion; evaluate it again"
    )


def plan_promotion(
    client: Any,
    symbol: str,
    version: int | None,
    *,
    actor: str,
    reason: str,
    policy: GatesPolicy,
    approval: Approval | None = None,
    algorithm: str = "hierarchical_sac",
    profile: str = PRODUCTION_PROFILE,
) -> PromotionPlan:
    """Read and check everything a promotion needs; raise PromotionRefused / TrainerError. No writes."""
    from mlflow.exceptions import MlflowException

    name = model_name(symbol, algorithm, profile)
    try:
        aliases = _aliases(client.get_registered_model(name))
    except MlflowException as exc:
        if _is_not_found(exc):
            raise TrainerError(f"no registered model {name}; register a gated run first") from None
        raise
    if version is None:
        version = aliases.get(CHALLENGER)
        if version is None:
            raise PromotionRefused(f"{name} has no challenger to promote (no version passed its gates since the last rollback)")
    candidate = _get_version(client, name, int(version))
    verdict = verify_version(client, name, candidate, policy)

    required = policy.required_tier
    if not verdict.passed or TIER_RANK.get(verdict.tier_reached, 0) < TIER_RANK[required]:
        raise PromotionRefused(
            f"{name} v{candidate.version} did not pass its required gates (verdict "
            f"{'passed' if verdict.passed else 'failed'}, tier {verdict.tier_reached}, policy requires {required})"
        )
    if policy.promotion.require_human_approval and not (approval and approval.by):
        raise PromotionRefused(f"{name}: the promotion policy requires a reviewer's approval (--approved-by NAME)")

    champion_version = aliases.get(CHAMPION)
    if champion_version is not None and champion_version != candidate.version:
        _check_not_older(candidate, _get_version(client, name, champion_version), name)
        _check_compared_with(client, name, candidate, champion_version)
    return PromotionPlan(name, validate_symbol(symbol), candidate, champion_version, actor, reason, approval, policy.sha256)


def apply_promotion(client: Any, plan: PromotionPlan, held: PromotionLock | None = None) -> AliasMove:
    """Move `champion` as planned and record it. The caller holds `model_lock` (promote() does).

    The champion is re-read first: if another promotion moved it since the plan was made, the
    data-age and comparison checks run again against the new champion. Then: intent record,
    alias move (the commit point), the move's record.
    """
    held = held or PromotionLock()
    current = _aliases(client.get_registered_model(plan.model_name)).get(CHAMPION)
    approval = plan.approval or Approval(by="")
    base = dict(
        actor=plan.actor, symbol=plan.symbol, model_name=plan.model_name, version=plan.candidate.version,
        from_version=current, alias=CHAMPION, reason=plan.reason, verdict="passed",
        data_end=plan.candidate.data_end, approved_by=approval.by or None, approved_at=approval.at,
        approval_comment=approval.comment, gates_hash=plan.gates_hash,
    )
    if current == plan.candidate.version:
        record = LedgerRecord(action="noop", **base)
        ledger.append(client, record)
        return AliasMove(plan.model_name, "noop", plan.candidate.version, current, record)
    if current is not None and current != plan.previous_champion:
        _check_not_older(plan.candidate, _get_version(client, plan.model_name, current), plan.model_name)
        _check_compared_with(client, plan.model_name, plan.candidate, current)
    if approval.by:
        client.set_model_version_tag(plan.model_name, str(plan.candidate.version), "approved_by", approval.by)

    intent_id = ledger.new_intent_id()
    ledger.append(client, LedgerRecord(action="intent", operation="promote", intent_id=intent_id, **base))
    faults.fault_point("promote.intent_written")
    faults.fault_point("promote.before_alias")
    held.assert_held()
    # The commit point: the only write that changes what serves.
    client.set_registered_model_alias(plan.model_name, CHAMPION, str(plan.candidate.version))
    faults.fault_point("promote.alias_moved")
    record = LedgerRecord(action="promote", intent_id=intent_id, **base)
    ledger.append(client, record)
    faults.fault_point("promote.recorded")
    return AliasMove(plan.model_name, "promote", plan.candidate.version, current, record)


def promote(
    symbol: str,
    version: int | None = None,
    *,
    actor: str,
    reason: str,
    policy: GatesPolicy,
    approval: Approval | None = None,
    algorithm: str = "hierarchical_sac",
    profile: str = PRODUCTION_PROFILE,
) -> AliasMove:
    """Move `champion` to `version` (default: the current challenger) if the policy allows it."""
    client = registry_client()
    name = model_name(symbol, algorithm, profile)
    with registry_errors(f"promoting {name} v{version if version is not None else CHALLENGER}"):
        with model_lock(client, name) as held:
            faults.fault_point("promote.locked")
            reconciled = _reconcile_existing(client, name)
            plan = plan_promotion(
                client, symbol, version, actor=actor, reason=reason, policy=policy,
                approval=approval, algorithm=algorithm, profile=profile,
            )
            move = apply_promotion(client, plan, held)
    return AliasMove(move.model_name, move.action, move.version, move.from_version, move.record, reconciled)


def _reconcile_existing(client: Any, name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return reconcile(client, name)
    except MlflowException as exc:
        if _is_not_found(exc):
            return None  # no model yet: plan_promotion names it
        raise


def champion_history(records: list[LedgerRecord]) -> list[int]:
    """Replay the ledger: promotions push, rollbacks pop. The last item is the champion.

    Only recorded moves count (an intent is not a move; an abandoned one never happened), so the
    stack holds the versions that actually served.
    """
    stack: list[int] = []
    for record in records:
        if record.action == "promote" and record.version is not None:
            stack.append(record.version)
        elif record.action == "rollback" and stack:
            stack.pop()
    return stack


def rollback(
    symbol: str, *, actor: str, reason: str, algorithm: str = "hierarchical_sac", profile: str = PRODUCTION_PROFILE
) -> AliasMove:
    """Move `champion` back to the version that served before it, as the registry's own ledger tells.

    A rollback is a reviewer's decision, so the data-age and gate checks do not apply; the target
    must still exist. A `challenger` left on the rolled-back version is removed first.
    """
    client = registry_client()
    name = model_name(symbol, algorithm, profile)
    with registry_errors(f"rolling back {name}"):
        with model_lock(client, name) as held:
            reconciled = _reconcile_existing(client, name)
            records = ledger.read_registry(client, name)
            history = champion_history(records)
            aliases = _aliases(client.get_registered_model(name))
            current = aliases.get(CHAMPION)
            if not history or history[-1] != current:
                raise TrainerError(
                    f"{name}: champion alias is v{current} but the ledger says v{history[-1] if history else None}; "
                    "someone moved the alias outside `trainer promote` — set it by hand"
                )
            if len(history) < 2:
                raise PromotionRefused(f"{name}: no previous champion to roll back to (v{current} is the first)")
            target = _get_version(client, name, history[-2])
            intent_id = ledger.new_intent_id()
            base = dict(
                actor=actor, symbol=validate_symbol(symbol), model_name=name, version=target.version,
                from_version=current, alias=CHAMPION, reason=reason, verdict="passed" if target.passed else "failed",
                data_end=target.data_end, gates_hash=target.gates_hash or None, intent_id=intent_id,
            )
            ledger.append(client, LedgerRecord(action="intent", operation="rollback", **base))
            faults.fault_point("rollback.intent_written")
            _drop_challenger_on(client, name, current, aliases)
            faults.fault_point("rollback.challenger_dropped")
            held.assert_held()
            client.set_registered_model_alias(name, CHAMPION, str(target.version))
            faults.fault_point("rollback.alias_moved")
            record = LedgerRecord(action="rollback", **base)
            ledger.append(client, record)
            faults.fault_point("rollback.recorded")
            return AliasMove(name, "rollback", target.version, current, record, reconciled)


# --------------------------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------------------------


def registry_status(symbol: str, last_records: int = 10, profile: str = PRODUCTION_PROFILE) -> dict[str, Any]:
    """Versions (verdict, tier, aliases) and the latest ledger records of every model of `symbol`.

    A pending intent is reconciled first, and said so (`reconciled`).
    """
    from mlflow.exceptions import MlflowException

    client = registry_client()
    models = []
    with registry_errors(f"reading the registry for {symbol}"):
        for algorithm in MODEL_PREFIX:
            name = model_name(symbol, algorithm, profile)
            try:
                client.get_registered_model(name)
            except MlflowException as exc:
                if _is_not_found(exc):
                    continue
                raise
            reconciled = reconcile_pending(symbol, algorithm, profile)
            registered = client.get_registered_model(name)
            aliases = _aliases(registered)
            by_version: dict[int, list[str]] = {}
            for alias, version in aliases.items():
                by_version.setdefault(version, []).append(alias)
            versions = []
            for mv in sorted(client.search_model_versions(f"name = '{name}'"), key=lambda m: int(m.version)):
                info = VersionInfo.from_model_version(mv)
                # A Phase A baseline version is a reference for evaluation, never gated or promoted.
                is_baseline = info.tags.get("kind") == "phase_a_baseline"
                versions.append({
                    "version": info.version,
                    "verdict": "baseline" if is_baseline else ("passed" if info.passed else "failed"),
                    "tier_reached": info.tier_reached,
                    "test_sharpe": None if math.isnan(info.metric("test.sharpe")) else info.metric("test.sharpe"),
                    "data_end": info.data_end,
                    "aliases": sorted(by_version.get(info.version, [])),
                    "run_id": info.run_id,
                    "gates_hash": info.gates_hash,
                })
            records = ledger.read_registry(client, name)
            models.append({
                "model_name": name,
                "aliases": aliases,
                "versions": versions,
                "ledger": [json.loads(record.to_json()) for record in records[-last_records:]],
                "champion_history": champion_history(records),
                "reconciled": reconciled,
            })
    return {"symbol": validate_symbol(symbol), "profile": profile, "models": models}
