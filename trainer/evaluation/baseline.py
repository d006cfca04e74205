"""The Phase A baseline a candidate is compared with: found in the registry, or trained once.

A baseline counts for a candidate only when it was trained on the same data (same data digest),
so the comparison is like with like. When the registry holds none, one is trained with
configs/phase_a_baseline.yaml on the candidate's data, step count and env count, and registered
as a version of `phase-a-baseline-<SYMBOL>` tagged with the data digest; later candidates on the
same data reuse it.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from trainer.errors import TrainerError

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


def find_registered_baseline(symbol: str, data_digest: str, shared: str) -> tuple[str, Path] | None:
    """(model URI, local model dir) of the newest Phase A version on this data and setup, if any."""
    from trainer.registry import model_name, registry_client, registry_errors

    client = registry_client()
    name = model_name(symbol, "sac")
    with registry_errors(f"search {name}"):
        versions = client.search_model_versions(f"name='{name}'")
    matching = [
        v for v in versions
        if (v.tags or {}).get("data_digest") == data_digest and (v.tags or {}).get("shared_config_hash") == shared
    ]
    if not matching:
        return None
    newest = max(matching, key=lambda v: int(v.version))
    import mlflow

    target = Path(tempfile.mkdtemp(prefix="baseline-"))
    with registry_errors(f"download {name} v{newest.version}"):
        local = mlflow.artifacts.download_artifacts(run_id=newest.run_id, artifact_path="model", dst_path=str(target))
    return f"models:/{name}/{newest.version}", Path(local)


def register_baseline(run_dir: Path, summary: dict, shared: str) -> str:
    """Register a finished Phase A run as a baseline version; returns its models:/ URI."""
    from trainer.registry import model_name, registry_client, registry_errors

    client = registry_client()
    symbol = summary["symbol"]
    name = model_name(symbol, "sac")
    with registry_errors(f"register {name}"):
        try:
            client.get_registered_model(name)
        except Exception:  # noqa: BLE001 - not found: create it (a race with another creator is fine)
            try:
                client.create_registered_model(name, tags={"symbol": symbol, "kind": "phase_a_baseline"})
            except Exception:  # noqa: BLE001
                client.get_registered_model(name)
        version = client.create_model_version(
            name,
            source=f"runs:/{summary['mlflow_run_id']}/model",
            run_id=summary["mlflow_run_id"],
            tags={
                "data_digest": summary["data_digest"],
                "config_hash": summary["config_hash"],
                "code_version": summary["code_version"],
                "profile": summary.get("profile", ""),
                "kind": "phase_a_baseline",
                "shared_config_hash": shared,
            },
            description=f"Phase A baseline for {symbol}, {summary['total_timesteps']} steps",
        )
    return f"models:/{name}/{version.version}"


# Sections the baseline copies from the candidate, so the comparison is on the same data,
# environment, network and budget (only the options layer differs).
SHARED_SECTIONS = ("environment", "sac", "training", "evaluation", "checkpoints")


def baseline_overrides(candidate_config) -> list[str]:
    """`--set KEY=VALUE` arguments that make Phase A match the candidate's shared sections."""
    import json

    dumped = candidate_config.model_dump(mode="json")
    pairs = [("data.splits", dumped["data"]["splits"]), ("data.validation", dumped["data"]["validation"])]
    pairs += [(section, dumped[section]) for section in SHARED_SECTIONS]
    argv: list[str] = []
    for prefix, block in pairs:
        for key, value in block.items():
            argv += ["--set", f"{prefix}.{key}={json.dumps(value)}"]
    return argv


def train_baseline(
    candidate_summary: dict, candidate_config, data_source: str | None, runs_root: Path
) -> tuple[str, Path]:
    """Train Phase A on the candidate's data, environment, network and step count; register it."""
    import json

    from trainer.cli import main as trainer_main

    symbol = candidate_summary["symbol"]
    key = f"{candidate_summary['data_digest'][:12]}-{candidate_config.config_hash()[:8]}"
    output = runs_root / symbol / f"phase_a_baseline-{key}"
    argv = [
        "train", "--config", str(BASELINE_CONFIG), "--symbol", symbol,
        "--total-timesteps", str(candidate_summary["total_timesteps"]),
        "--output-dir", str(output), "--resume",
        "--profile", candidate_summary.get("profile", "adhoc"), "--stage", "baseline",
        *baseline_overrides(candidate_config),
    ]
    if data_source:
        argv += ["--data", data_source]
    LOGGER.info("no Phase A baseline on this data in the registry: training one (%s steps)", candidate_summary["total_timesteps"])
    code = trainer_main(argv)
    if code != 0:
        raise TrainerError(f"training the Phase A baseline failed (exit {code}); see the log above")
    summary = json.loads((output / "summary.json").read_text())
    uri = register_baseline(output, summary, shared_hash(candidate_config))
    model_dir = output / "best_model" if (output / "best_model").exists() else output / "model"
    return uri, model_dir
