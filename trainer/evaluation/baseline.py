"""The Phase A baseline a candidate is compared with: found in the registry, or trained once.

A baseline counts for a candidate only when it was trained on the same data (same data digest)
and setup (shared_hash: splits, signals, environment with its costs, SAC, budget), so the
comparison is like with like and its backtest walks the candidate's own test bars. When the
registry holds none, one is trained with configs/phase_a_baseline.yaml on the candidate's data,
step count and env count (trainer.training.runner.train_run, the function behind `trainer train`),
and registered as a version of the profile's `phase-a-baseline-<SYMBOL>` model
(trainer.registry.model_name(symbol, "sac", profile)) tagged with the data digest; later candidates
on the same data reuse it.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from trainer.errors import TrainerError
from trainer.run_dir import BEST_MODEL_DIR

LOGGER = logging.getLogger(__name__)

BASELINE_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "phase_a_baseline.yaml"


def shared_hash(config) -> str:
    """Hash of what a baseline must share with a candidate (data splits, option signals, env, SAC, budget).

    The signals are in the observation of both phases, so a baseline trained on other signals
    (another file, derived instead of neutral) is not comparable.
    """
    import hashlib
    import json

    dumped = config.model_dump(mode="json")
    data = dumped["data"]
    shared = {
        "splits": data["splits"],
        "signals": {k: data[k] for k in ("signals", "sentiment_source", "sl_confidence_source")},
        **{s: dumped[s] for s in SHARED_SECTIONS},
    }
    return hashlib.sha256(json.dumps(shared, sort_keys=True).encode()).hexdigest()[:16]


def find_registered_baseline(symbol: str, data_digest: str, shared: str, profile: str) -> tuple[str, Path] | None:
    """(model URI, local model dir) of the newest Phase A version of `profile` on this data and setup, if any."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from trainer.registry import model_name, registry_client, registry_errors

    client = registry_client()
    name = model_name(symbol, "sac", profile)
    with registry_errors(f"search {name}"):
        try:
            versions = client.search_model_versions(f"name='{name}'")
        except MlflowException as exc:
            if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                raise
            versions = []
    matching = [
        v for v in versions
        if (v.tags or {}).get("data_digest") == data_digest and (v.tags or {}).get("shared_config_hash") == shared
    ]
    if not matching:
        return None
    newest = max(matching, key=lambda v: int(v.version))
    target = Path(tempfile.mkdtemp(prefix="baseline-"))
    with registry_errors(f"download {name} v{newest.version}"):
        local = mlflow.artifacts.download_artifacts(artifact_uri=newest.source, dst_path=str(target))
    return f"models:/{name}/{newest.version}", Path(local)


def register_baseline(summary: dict, shared: str, model_folder: str = BEST_MODEL_DIR) -> str:
    """Register a finished Phase A run (its summary.json) as a baseline version; returns its models:/ URI.

    :param model_folder: the run's model directory the version serves (`best_model`, chosen on the
        eval split like the candidate's judged model, or `model`); logged under that name in the run
    """
    from trainer.registry import model_name, registry_client, registry_errors

    client = registry_client()
    symbol = summary["symbol"]
    profile = summary.get("profile") or "adhoc"
    name = model_name(symbol, "sac", profile)
    with registry_errors(f"register {name}"):
        try:
            client.get_registered_model(name)
        except Exception:  # noqa: BLE001 - not found: create it (a race with another creator is fine)
            try:
                client.create_registered_model(name, tags={"symbol": symbol, "kind": "phase_a_baseline", "profile": profile})
            except Exception:  # noqa: BLE001
                client.get_registered_model(name)
        version = client.create_model_version(
            name,
            source=f"runs:/{summary['mlflow_run_id']}/{model_folder}",
            run_id=summary["mlflow_run_id"],
            tags={
                "data_digest": summary["data_digest"],
                "config_hash": summary["config_hash"],
                "code_version": summary["code_version"],
                "profile": profile,
                "kind": "phase_a_baseline",
                "shared_config_hash": shared,
            },
            description=f"Phase A baseline for {symbol}, {summary['total_timesteps']} steps",
        )
    return f"models:/{name}/{version.version}"


# Sections the baseline copies from the candidate, so the comparison is on the same data,
# environment (costs included), network and budget (only the options layer differs).
SHARED_SECTIONS = ("environment", "sac", "training", "evaluation", "checkpoints")


def baseline_overrides(candidate_config) -> dict[str, Any]:
    """Config overrides (dotted key -> value) that make Phase A match the candidate's shared sections."""
    dumped = candidate_config.model_dump(mode="json")
    pairs = [("data.splits", dumped["data"]["splits"]), ("data.validation", dumped["data"]["validation"])]
    pairs += [(section, dumped[section]) for section in SHARED_SECTIONS]
    return {f"{prefix}.{key}": value for prefix, block in pairs for key, value in block.items()}


def baseline_config(candidate_summary: dict, candidate_config):
    """configs/phase_a_baseline.yaml with the candidate's symbol, signals, shared sections and step count."""
    from trainer.config import load_config

    overrides = {
        **baseline_overrides(candidate_config),
        # The signals are in the observation of both phases (see shared_hash).
        **{f"data.{k}": getattr(candidate_config.data, k) for k in ("signals", "sentiment_source", "sl_confidence_source")},
        "data.symbol": candidate_summary["symbol"],
        "training.total_timesteps": int(candidate_summary["total_timesteps"]),
    }
    return load_config(BASELINE_CONFIG, overrides)


def train_baseline(
    candidate_summary: dict, candidate_config, data_source: str | None, runs_root: Path
) -> tuple[str, Path]:
    """Train Phase A on the candidate's data, environment, network and step count; register it.
    Returns (models:/ URI, local model directory)."""
    from trainer.training.runner import train_run

    symbol = candidate_summary["symbol"]
    key = f"{candidate_summary['data_digest'][:12]}-{candidate_config.config_hash()[:8]}"
    output = runs_root / symbol / f"phase_a_baseline-{key}"
    config = baseline_config(candidate_summary, candidate_config)
    LOGGER.info("no Phase A baseline on this data in the registry: training one (%s steps)", candidate_summary["total_timesteps"])
    try:
        outcome = train_run(
            config,
            str(output),
            data_source=data_source,
            resume=True,
            profile=candidate_summary.get("profile") or "adhoc",
            stage="baseline",
        )
    except TrainerError as exc:
        raise TrainerError(f"training the Phase A baseline failed: {exc}") from exc
    if not outcome.completed:
        raise TrainerError(f"training the Phase A baseline ended {outcome.status!r} ({output}); see the log above")
    model_dir = outcome.run_dir.judged_model_dir()
    uri = register_baseline(outcome.summary, shared_hash(candidate_config), model_dir.name)
    return uri, model_dir
