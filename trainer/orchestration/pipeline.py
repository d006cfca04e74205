"""The body of each DAG task, per symbol. The DAG file only wires these together.

Every function takes the upstream results (small dicts, passed as XCom) and the Airflow context,
builds the step's TaskSpec, runs it on the configured backend and returns a small dict. Settings
are read here, at task run time, so a changed configs/pipeline.yaml or TRAINER_BACKEND applies to
the next task without re-parsing the DAG.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from trainer.orchestration import notify, specs
from trainer.orchestration.backends import run_step
from trainer.orchestration.outcome import StepVerdictNo
from trainer.orchestration.settings import PipelineSettings, load_settings
from trainer.symbols import validate_symbol

log = logging.getLogger(__name__)


def _data_source(params: Any, symbol: str) -> str | None:
    overrides = params.get("data_overrides") or {}
    return overrides.get(symbol)


def select_symbols(params: Any) -> list[str]:
    """The symbols of this run (already schema-checked at trigger time; checked again here)."""
    symbols = [validate_symbol(s) for s in params["symbols"]]
    unknown = set(params.get("data_overrides") or {}) - set(symbols)
    if unknown:
        raise AirflowFailException(f"data_overrides names symbols not in this run: {sorted(unknown)}")
    return symbols


def validate_data(symbol: str, context: Any, settings: PipelineSettings | None = None) -> dict[str, Any]:
    settings = settings or load_settings()
    params = context["params"]
    symbol = validate_symbol(symbol)
    profile = params["profile"]
    settings.profile(profile)
    data = _data_source(params, symbol)
    report_dir = specs.join_uri(settings.runs_root(), symbol, "validation", specs.safe_run_id(context["run_id"]))
    spec = specs.validate_spec(symbol, profile, settings, report_dir, data)
    try:
        result = run_step(spec, context, settings)
    except StepVerdictNo as exc:
        failures = exc.result.get("failures")
        log.error("market data for %s is invalid (%s); report: %s", symbol, failures, report_dir)
        raise AirflowFailException(
            f"data validation failed for {symbol} (source: {data or 'bundled'}): {failures}; "
            f"nothing is trained for {symbol}. Report: {report_dir}"
        ) from exc
    if result.get("passed") is not True:
        raise AirflowFailException(f"trainer validate exited 0 but did not report passed=true: {result}")
    return {
        "symbol": symbol,
        "profile": profile,
        "data": data,
        "data_digest": specs.clean_digest(result.get("data_digest"), "data digest"),
        "rows": result.get("rows"),
        "report_dir": report_dir,
    }


def train(validated: dict[str, Any], stage: specs.Stage, context: Any, settings: PipelineSettings | None = None) -> dict[str, Any]:
    """Train one stage into its run key; a retry or a re-run with the same key resumes / reuses."""
    settings = settings or load_settings()
    symbol, profile = validated["symbol"], validated["profile"]
    steps = specs.stage_steps(settings, profile, stage, context["params"].get(f"{stage}_timesteps"))
    config_hash = specs.compute_config_hash(settings, symbol, profile, steps)
    key = specs.RunKey(symbol, validated["data_digest"], config_hash, profile, stage,
                       image_digest=settings.image_digest())
    run_dir = key.under(settings.runs_root())
    log.info(
        "%s training of %s: %s steps, %s envs, eval every %s; run key %s -> %s",
        stage, symbol, steps.total_timesteps, steps.n_envs, steps.eval_freq, key.relpath, run_dir,
    )
    spec = specs.train_spec(symbol, profile, settings, key, validated.get("data"), steps)
    try:
        result = run_step(spec, context, settings)
    except StepVerdictNo as exc:
        raise AirflowFailException(
            f"{stage} training of {symbol} ended with verdict no ({exc.result.get('status') or exc.result.get('error')}); "
            f"see {run_dir}/summary.json"
        ) from exc
    status = str(result.get("status", ""))
    if status != "completed":
        raise AirflowFailException(f"{stage} training of {symbol} did not complete: status {status!r}; see {run_dir}")
    reported = result.get("config_hash")
    if reported and not str(reported).startswith(config_hash[:8]) and not config_hash.startswith(str(reported)[:8]):
        log.warning("trainer reported config hash %s, the run key uses %s", reported, config_hash)
    return {
        "symbol": symbol,
        "profile": profile,
        "stage": stage,
        "data": validated.get("data"),
        "run_key": key.relpath,
        "run_dir": run_dir,
        "config_hash": config_hash,
        "data_digest": validated["data_digest"],
        "image_digest": settings.image_digest(),
        "mlflow_run_id": result.get("mlflow_run_id"),
    }


def smoke_train(validated: dict[str, Any], context: Any) -> dict[str, Any]:
    """The 10k-step smoke test of the seed: does training run and behave at all."""
    return train(validated, "smoke", context)


def full_train(validated: dict[str, Any], smoke_verdict: dict[str, Any], context: Any) -> dict[str, Any]:
    """The full training run, after the smoke gate passed (`smoke_verdict`, for ordering only)."""
    return train(validated, "full", context)


def smoke_gate(smoke: dict[str, Any], context: Any, settings: PipelineSettings | None = None) -> dict[str, Any]:
    settings = settings or load_settings()
    spec = specs.gate_spec(smoke["run_dir"], "smoke", settings)
    try:
        run_step(spec, context, settings)
    except StepVerdictNo as exc:
        raise AirflowFailException(
            f"smoke gate failed for {smoke['symbol']}: gates not passed: "
            f"{', '.join(exc.result.get('blocking_failed') or []) or exc.result}; "
            f"no full training. Details: {smoke['run_dir']}/gate_smoke.json"
        ) from exc
    return {"symbol": smoke["symbol"], "passed": True, "run_dir": smoke["run_dir"]}


def evaluate(full: dict[str, Any], context: Any, settings: PipelineSettings | None = None) -> dict[str, Any]:
    settings = settings or load_settings()
    result = run_step(specs.evaluate_spec(full["run_dir"], settings, full.get("data")), context, settings)
    return {**full, "evaluation": {k: v for k, v in result.items() if not isinstance(v, (dict, list))}}


def quality_gates(evaluated: dict[str, Any], context: Any, settings: PipelineSettings | None = None) -> dict[str, Any]:
    """The full-stage gates. A failed gate is a result, not a task failure: the version is still registered."""
    settings = settings or load_settings()
    spec = specs.gate_spec(evaluated["run_dir"], "full", settings)
    try:
        result = run_step(spec, context, settings)
        passed = True
    except StepVerdictNo as exc:
        result, passed = exc.result, False
        log.warning(
            "quality gates FAILED for %s: %s; the version is registered with failed gate tags and not promoted",
            evaluated["symbol"],
            result.get("failures") or result,
        )
    return {
        "symbol": evaluated["symbol"],
        "profile": evaluated["profile"],
        "run_dir": evaluated["run_dir"],
        "run_key": evaluated["run_key"],
        "passed": passed,
    }


def register_model(verdict: dict[str, Any], context: Any, settings: PipelineSettings | None = None) -> dict[str, Any]:
    settings = settings or load_settings()
    result = run_step(specs.register_spec(verdict["run_dir"], settings), context, settings)
    passed = bool(result.get("passed"))
    if passed != verdict["passed"]:
        raise AirflowFailException(
            f"registry says passed={passed} but quality_gates said passed={verdict['passed']} for {verdict['run_dir']}"
        )
    return {
        "symbol": verdict["symbol"],
        "profile": verdict["profile"],
        "run_dir": verdict["run_dir"],
        "run_key": verdict["run_key"],
        "model_name": result.get("model_name"),
        "version": result.get("version"),
        "passed": passed,
        "tier_reached": result.get("tier_reached"),
    }


def publish_report(registered: dict[str, Any], context: Any, settings: PipelineSettings | None = None) -> dict[str, Any]:
    """Write the review report, log it to MLflow and link it from the model version.

    Runs before the approval, for every registered version (passed or not), so the reviewer has
    it in front of them and the approval message can link it. The result is the registration
    plus the report's locations and the promotion policy `trainer report` read from the gates file.
    """
    settings = settings or load_settings()
    result = run_step(specs.report_spec(registered["run_dir"], settings), context, settings)
    return {
        **registered,
        "report_md": result.get("report_md"),
        "report_html": result.get("report_html"),
        "report_uri": result.get("report_uri"),
        "report_url": result.get("report_url"),
        "required_tier": result.get("required_tier"),
        "require_human_approval": bool(result.get("require_human_approval")),
    }


def _approval(decision: dict[str, Any]) -> specs.Approval | None:
    """The reviewer's approval for `trainer promote`; None when the scheduler decided (nobody asked)."""
    if not decision.get("asked"):
        return None
    return specs.Approval(
        approved_by=decision.get("decided_by") or "",
        approved_at=decision.get("decided_at") or "",
        comment=decision.get("comment") or "",
    )


CHAMPION_ALIAS = "trainer-champions"
"""The AssetAlias promote_model declares as its outlet; each promotion adds its model's champion Asset.

promote_model is mapped per symbol, and a static `outlets=[Asset(...)]` would emit an event for
every listed asset on every success (promoted or not). The alias emits only what a promotion adds
(`outlet_events[alias].add(champion_asset(name))`), and Airflow records it as an event of that
Asset, so DAGs scheduled on the Asset (dags/champion_inference.py) run after the promotion."""


def champion_asset(model: str):
    """The Airflow Asset of a registered model's champion: `mlflow://models/<name>@champion`."""
    from airflow.sdk import Asset

    return Asset(uri=f"mlflow://models/{model}@champion", group="model")


def champion_alias():
    from airflow.sdk import AssetAlias

    return AssetAlias(CHAMPION_ALIAS, group="model")


def _not_promoted_verdict(published: dict[str, Any], decision: dict[str, Any]) -> str:
    """Why a version was not promoted, as a notification verdict (trainer/orchestration/notify.py)."""
    if not published.get("passed"):
        return "gates_failed"
    if decision.get("approved"):
        return "policy_refused"
    if decision.get("asked") and not decision.get("decided_by"):
        return "approval_timed_out"  # ApprovalOperator's timeout default: Reject, nobody answered
    return "rejected"


def promote_model(
    published: dict[str, Any], decision: dict[str, Any] | None, context: Any, settings: PipelineSettings | None = None
) -> dict[str, Any]:
    """Move `champion` when the gates passed and the approval step said yes; otherwise record why not.

    An approval carries the reviewer, the time and the comment to `trainer promote` (and so into
    the ledger); without one (nobody was asked) the scheduler decides. "Not promoted" is a result
    (promoted: false, reason, verdict), not a skipped or failed task; see approval.py for why no
    trigger rules are used. It sends one notification (notify.py); a promotion emits the
    model's champion Asset event through the task's AssetAlias outlet (CHAMPION_ALIAS).
    """
    settings = settings or load_settings()
    symbol, name = published["symbol"], f"{published['model_name']} v{published['version']}"
    decision = decision or {}

    def not_promoted(reason: str) -> dict[str, Any]:
        log.warning("%s NOT promoted: %s", name, reason)
        result = {
            "symbol": symbol, "version": published["version"], "promoted": False, "reason": reason,
            "verdict": _not_promoted_verdict(published, decision),
        }
        notify.notify_not_promoted(result, context, settings)
        return result

    if not published.get("passed"):
        return not_promoted("quality gates failed; registered with failed gate tags")
    if not decision.get("approved"):
        return not_promoted(f"approval: {decision.get('reason') or 'no decision recorded'}")
    approval = _approval(decision)
    reason = (
        f"airflow {context['dag'].dag_id} run {context['run_id']}: gates passed; {decision.get('reason')}; "
        f"report {published.get('report_uri') or published.get('report_html')} ({published['run_key']})"
    )
    spec = specs.promote_spec(symbol, published["profile"], published["version"], reason, settings, approval)
    try:
        result = run_step(spec, context, settings)
    except StepVerdictNo as exc:
        why = exc.result.get("refused") or exc.result.get("reason") or exc.result.get("error") or exc.result
        return not_promoted(f"promotion policy refused: {why}")
    scalars = {k: v for k, v in result.items() if not isinstance(v, (dict, list))}
    promoted = bool(result.get("promoted", True))
    log.info("%s %s: %s", name, "promoted to champion" if promoted else "not moved", scalars)
    if promoted:
        _emit_champion_event(published, result, context)
    return {
        "symbol": symbol, "version": published["version"], "promoted": promoted,
        "reason": reason, "approved_by": approval.approved_by if approval else None, **scalars,
    }


def _emit_champion_event(published: dict[str, Any], result: dict[str, Any], context: Any) -> None:
    """Add the champion Asset of the promoted model to the task's alias outlet (one event)."""
    model = str(result.get("model_name") or published["model_name"])
    extra = {
        "symbol": published["symbol"], "model_name": model, "version": int(published["version"]),
        "profile": published["profile"], "run_id": context.get("run_id"),
    }
    context["outlet_events"][champion_alias()].add(champion_asset(model), extra=extra)
    log.info("asset event: %s", champion_asset(model).uri)


# ------------------------------------------------------------------------------------------------
# champion_inference DAG: today's target exposure of a promoted champion
# ------------------------------------------------------------------------------------------------

INFERENCE_BARS = 512
"""Bars passed to predict: the latest ones of the source (at least FEATURE_WARMUP_BARS + window_size)."""


def inference_symbols(context: Any, configured: list[str]) -> list[str]:
    """The symbols whose champion moved (the triggering asset events), else the configured ones."""
    events = context.get("triggering_asset_events") or {}
    symbols = []
    for asset_events in events.values():
        for event in asset_events:
            symbol = (getattr(event, "extra", None) or {}).get("symbol")
            if symbol and symbol in configured and symbol not in symbols:
                symbols.append(validate_symbol(symbol))
    return symbols or [validate_symbol(s) for s in configured]


def write_target_exposure(
    symbol: str, model: str, context: Any, data: str | None = None, out_dir: str | None = None
) -> dict[str, Any]:
    """Load `models:/<model>@champion`, predict on the latest bars of `data` (None = bundled) and
    write the last decided row as `<state dir>/inference/<SYMBOL>/target_exposure.json`."""
    from pathlib import Path

    import mlflow

    from trainer.data.loaders import load_ohlcv, resolve_source
    from trainer.io import write_json_atomic
    from trainer.registry import CHAMPION, registry_client
    from trainer.tracking import configure_mlflow, state_dir

    configure_mlflow()
    version = registry_client().get_model_version_by_alias(model, CHAMPION)
    uri = f"models:/{model}@{CHAMPION}"
    pyfunc = mlflow.pyfunc.load_model(uri)
    source = resolve_source(symbol, data)
    bars = load_ohlcv(source).tail(INFERENCE_BARS).reset_index()
    predicted = pyfunc.predict(bars).dropna(subset=["exposure"])
    if predicted.empty:
        raise AirflowFailException(f"{uri} decided no bar of the last {len(bars)} bars of {source}")
    last = predicted.iloc[-1]
    payload = {
        "symbol": symbol,
        "model_uri": uri,
        "model_version": int(version.version),
        "as_of": str(last["timestamp"]),
        "exposure": float(last["exposure"]),
        "option": str(last["option"]) if "option" in predicted.columns else None,
        "source": source,
        "bars": len(bars),
        "dag_id": getattr(context.get("dag"), "dag_id", None),
        "run_id": context.get("run_id"),
    }
    path = Path(out_dir) if out_dir else state_dir() / "inference"
    path = path / symbol / "target_exposure.json"
    write_json_atomic(path, payload)
    log.info("%s target exposure %.4f as of %s (%s v%s) -> %s", symbol, payload["exposure"], payload["as_of"],
             model, payload["model_version"], path)
    return {**payload, "path": str(path)}
