"""Settings, run keys, spec builders and the local backend's exit-code mapping (real subprocesses)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from trainer import __version__
from trainer.orchestration import specs
from trainer.orchestration.settings import REPO_ROOT, SettingsError, load_settings

DIGEST = "abcdef0123456789abcdef"


def test_settings_defaults_and_env_overrides(tmp_path):
    settings = load_settings(env={})
    assert settings.backend == "local"
    assert settings.schedule == "30 22 * * 1-5"
    assert settings.runs_root() == str(REPO_ROOT / "state" / "runs")
    assert settings.profile("production").full.total_timesteps == 500_000
    assert settings.profile("production").smoke.total_timesteps == 10_000
    assert settings.profile("production").full.n_envs == 16

    env = {"TRAINER_BACKEND": "kubernetes", "TRAINER_SCHEDULE": "none", "TRAINER_STATE_DIR": str(tmp_path)}
    k8s = load_settings(env=env)
    assert k8s.backend == "kubernetes" and k8s.schedule is None
    assert k8s.runs_root() == "s3://trainer-runs/runs"
    assert k8s.step_config_path("demo") == "/app/configs/phase_b1_options.yaml"
    assert load_settings(env={"TRAINER_STATE_DIR": str(tmp_path)}).runs_root() == str(tmp_path.resolve() / "runs")


def test_settings_errors_name_the_problem(tmp_path):
    with pytest.raises(SettingsError, match="TRAINER_BACKEND='docker'"):
        load_settings(env={"TRAINER_BACKEND": "docker"})
    bad = tmp_path / "pipeline.yaml"
    bad.write_text((REPO_ROOT / "configs" / "pipeline.yaml").read_text().replace("backend: local", "backnd: local"))
    with pytest.raises(SettingsError, match="backnd"):
        load_settings(bad, env={})


def test_run_key_layout_and_validation():
    key = specs.RunKey("SPY", DIGEST, "0011223344556677", "demo", "full")
    assert key.relpath == f"SPY/abcdef012345-00112233-v{__version__}/demo/full"
    assert key.under("s3://b/runs/") == f"s3://b/runs/{key.relpath}"
    assert specs.RunKey("SPY", "sha256:" + DIGEST, "0011223344556677", "demo", "full").relpath == key.relpath
    for bad in ("../../etc", "", "abc", None, "x" * 7 + "/" + "y" * 10):
        with pytest.raises(ValueError):
            specs.RunKey("SPY", bad, "0011223344556677", "demo", "full")
    with pytest.raises(ValueError):
        specs.RunKey("../x", DIGEST, "0011223344556677", "demo", "full")
    assert specs.safe_run_id("manual__2025-01-01T00:00:00+00:00") == "manual__2025-01-01T00_00_00_00_00"


def test_config_hash_includes_step_counts():
    settings = load_settings(env={})
    smoke = specs.stage_steps(settings, "demo", "smoke")
    full = specs.stage_steps(settings, "demo", "full")
    h_smoke = specs.compute_config_hash(settings, "SPY", "demo", smoke)
    h_full = specs.compute_config_hash(settings, "SPY", "demo", full)
    assert h_smoke != h_full
    assert h_smoke == specs.compute_config_hash(settings, "SPY", "demo", smoke)  # deterministic
    bigger = specs.stage_steps(settings, "demo", "smoke", total_timesteps=smoke.total_timesteps + 1)
    assert specs.compute_config_hash(settings, "SPY", "demo", bigger) != h_smoke
    assert specs.compute_config_hash(settings, "QQQ", "demo", smoke) != h_smoke
    with pytest.raises(ValueError):
        specs.stage_steps(settings, "demo", "smoke", total_timesteps=0)


def test_local_train_argv(tmp_path):
    settings = load_settings(env={"TRAINER_STATE_DIR": str(tmp_path)})
    key = specs.RunKey("SPY", DIGEST, "0011223344556677", "demo", "smoke")
    spec = specs.train_spec("SPY", "demo", settings, key, data="/data/spy.csv")
    assert spec.argv == (
        "train",
        "--config", str(REPO_ROOT / "configs" / "phase_b1_options.yaml"),
        "--symbol", "SPY",
        "--profile", "demo",
        "--stage", "smoke",
        "--total-timesteps", "2000",
        "--n-envs", "2",
        "--eval-freq", "1000",
        "--output-dir", str(tmp_path.resolve() / "runs" / key.relpath),
        "--data", "/data/spy.csv",
        "--resume",
        # the demo profile's config overrides, each part of the config hash
        "--set", "options.warmup_steps=500",
        "--set", "options.monitor.window_steps=250",
        "--set", "sac.learning_starts=250",
        "--set", "sac.buffer_size=20000",
        "--set", "checkpoints.freq=1000",
    )
    assert spec.accelerator == "cpu" and spec.resources.gpu == 0
    assert specs.promote_spec("SPY", 3, "why", settings).argv == (
        "promote", "--symbol", "SPY", "--version", "3", "--reason", "why"
    )
    with pytest.raises(ValueError):
        specs.promote_spec("SPY", "3; rm", "why", settings)


# ------------------------------------------------------------------------------------------------
# Local backend: real `trainer` subprocesses
# ------------------------------------------------------------------------------------------------


def test_outcome_mapping():
    from airflow.sdk.exceptions import AirflowFailException

    from trainer.orchestration.outcome import StepCrashed, StepError, StepPreempted, StepVerdictNo, outcome

    assert outcome("s", 0, {"a": 1}) == {"a": 1}
    with pytest.raises(StepVerdictNo) as verdict:
        outcome("s", 1, {"failures": ["close has NaN"]})
    assert isinstance(verdict.value, AirflowFailException) and "close has NaN" in str(verdict.value)
    with pytest.raises(StepError) as error:
        outcome("s", 2, {"error": "config missing"})
    assert isinstance(error.value, AirflowFailException)
    with pytest.raises(StepPreempted) as preempted:
        outcome("s", 75, {})
    assert not isinstance(preempted.value, AirflowFailException)  # retried
    with pytest.raises(StepCrashed):
        outcome("s", -9, None)


def test_local_backend_exit_2_is_an_error_with_the_message(tmp_path):
    from trainer.orchestration.local import run_step
    from trainer.orchestration.outcome import StepError

    settings = load_settings(env={"TRAINER_STATE_DIR": str(tmp_path)})
    spec = specs.validate_spec("SPY", "demo", settings, str(tmp_path / "report"), data=str(tmp_path / "missing.csv"))
    if command_missing("validate"):
        pytest.skip("`trainer validate` is not registered yet")
    with pytest.raises(StepError) as err:
        run_step(spec, {}, settings)
    assert err.value.result.get("command") == "validate"


def command_missing(command: str) -> bool:
    """True when `trainer <command> --help` fails (the subcommand is not built yet)."""
    import subprocess

    trainer = Path(sys.executable).parent / "trainer"
    return subprocess.run([str(trainer), command, "--help"], capture_output=True).returncode != 0


def test_local_backend_streams_and_returns_the_result(tmp_path, caplog):
    import logging

    from trainer.orchestration.local import run_step

    if command_missing("validate"):
        pytest.skip("`trainer validate` is not registered yet")
    settings = load_settings(env={"TRAINER_STATE_DIR": str(tmp_path)})
    spec = specs.validate_spec("SPY", "demo", settings, str(tmp_path / "report"))
    with caplog.at_level(logging.INFO, logger="trainer.orchestration.local"):
        result = run_step(spec, {}, settings)
    assert result["passed"] is True and result["command"] == "validate"
    specs.clean_digest(result["data_digest"], "data digest")
    assert any("[validate_data]" in r.getMessage() for r in caplog.records)


def test_local_backend_invalid_data_is_a_verdict(tmp_path):
    from trainer.orchestration.local import run_step
    from trainer.orchestration.outcome import StepVerdictNo

    if command_missing("validate"):
        pytest.skip("`trainer validate` is not registered yet")
    lines = (REPO_ROOT / "trainer" / "data" / "bundled" / "SPY.csv").read_text().splitlines()
    header = lines[0].split(",")
    row = lines[100].split(",")
    row[[h.lower() for h in header].index("close")] = "nan"
    lines[100] = ",".join(row)
    corrupted = tmp_path / "SPY_nan.csv"
    corrupted.write_text("\n".join(lines) + "\n")
    settings = load_settings(env={"TRAINER_STATE_DIR": str(tmp_path)})
    spec = specs.validate_spec("SPY", "demo", settings, str(tmp_path / "report"), data=str(corrupted))
    with pytest.raises(StepVerdictNo) as verdict:
        run_step(spec, {}, settings)
    assert verdict.value.result.get("passed") is False


def test_relative_paths_resolve_against_the_settings_files_root(tmp_path):
    """In the Airflow image the package sits in site-packages: a relative run config must resolve
    next to the pipeline file (/opt/airflow/configs/...), not next to the installed package."""
    root = tmp_path / "opt-airflow"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "pipeline.yaml").write_text((REPO_ROOT / "configs" / "pipeline.yaml").read_text())
    settings = load_settings(root / "configs" / "pipeline.yaml", env={})
    assert settings.local_config_path("demo") == root / "configs" / "phase_b1_options.yaml"
    assert settings.runs_root() == str((root / "state" / "runs").resolve())
