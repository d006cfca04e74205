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
    # The webhook URL from a Secret (env), not the pipeline file; empty turns notifications off.
    hook = "https://hooks.example.com/services/T0/B0/secret"
    assert load_settings(env={"TRAINER_NOTIFY_WEBHOOK_URL": hook}).notifications.webhook_url == hook
    assert load_settings(env={"TRAINER_NOTIFY_WEBHOOK_URL": ""}).notifications.webhook_url is None
    with pytest.raises(SettingsError, match="webhook_url"):
        load_settings(env={"TRAINER_NOTIFY_WEBHOOK_URL": "ftp://x"})


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


def test_every_judging_step_gets_the_one_gates_file(tmp_path):
    """gate, register, report and promote all read the gates file of the pipeline settings."""
    settings = load_settings(env={"TRAINER_STATE_DIR": str(tmp_path)})
    gates = str(REPO_ROOT / "configs" / "gates.yaml")
    assert settings.gates_path() == gates
    assert specs.gate_spec("/r", "smoke", settings).argv == ("gate", "--run", "/r", "--stage", "smoke", "--gates", gates)
    assert specs.register_spec("/r", settings).argv == ("register", "--run", "/r", "--gates", gates)
    assert specs.report_spec("/r", settings).argv == ("report", "--run", "/r", "--gates", gates)
    # the scheduler's decision: no approver
    assert specs.promote_spec("SPY", "demo", 3, "why", settings).argv == (
        "promote", "--symbol", "SPY", "--profile", "demo", "--version", "3", "--reason", "why", "--gates", gates,
    )
    # inside the image: the copy next to the run configs
    k8s = load_settings(env={"TRAINER_BACKEND": "kubernetes"})
    assert k8s.gates_path() == "/app/configs/gates.yaml"
    assert specs.register_spec("s3://b/r", k8s).argv[-2:] == ("--gates", "/app/configs/gates.yaml")
    # a pipeline file may name another gates file (relative to the repository root, or absolute)
    custom = tmp_path / "pipeline.yaml"
    custom.write_text((REPO_ROOT / "configs" / "pipeline.yaml").read_text().replace(
        "gates: configs/gates.yaml", "gates: tests/integration/gates_integration.yaml"))
    assert load_settings(custom, env={}).gates_path() == str(tmp_path.parent / "tests/integration/gates_integration.yaml")


def test_promote_argv_carries_the_reviewers_decision(tmp_path):
    settings = load_settings(env={"TRAINER_STATE_DIR": str(tmp_path)})
    approval = specs.Approval("ana reviewer", "2025-03-04T05:06:07.5+01:00", "  report read; Sharpe CI ok  ")
    argv = specs.promote_spec("SPY", "production", "7", "why", settings, approval).argv
    assert argv[argv.index("--approved-by") + 1] == "ana reviewer"
    assert argv[argv.index("--approved-at") + 1] == "2025-03-04T04:06:07.500000+00:00"  # normalised to UTC
    assert argv[argv.index("--approval-comment") + 1] == "report read; Sharpe CI ok"
    assert argv[argv.index("--profile") + 1] == "production"
    # no comment, no flag
    bare = specs.promote_spec("SPY", "demo", 7, "why", settings, specs.Approval("ana", "2025-03-04T05:06:07Z")).argv
    assert "--approval-comment" not in bare and bare[bare.index("--approved-at") + 1] == "2025-03-04T05:06:07+00:00"
    for bad in (
        dict(approved_by="", approved_at="2025-03-04T05:06:07Z"),
        dict(approved_by="ana\n--gates=/tmp/lax.yaml", approved_at="2025-03-04T05:06:07Z"),
        dict(approved_by="ana", approved_at="yesterday"),
        dict(approved_by="ana", approved_at="2025-03-04T05:06:07"),  # no time zone
        dict(approved_by="ana", approved_at="2025-03-04T05:06:07Z", comment="x" * (specs.MAX_COMMENT_LENGTH + 1)),
    ):
        with pytest.raises(ValueError):
            specs.Approval(**bad)
    with pytest.raises(ValueError):
        specs.promote_spec("SPY", "demo", "3; rm", "why", settings)
    with pytest.raises(Exception, match="unknown profile"):
        specs.promote_spec("SPY", "turbo", 3, "why", settings)


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


# ------------------------------------------------------------------------------------------------
# The decision travels: publish_report -> approval -> promote_model (the step argv, no real steps)
# ------------------------------------------------------------------------------------------------


class _Dag:
    dag_id = "hierarchical_options_training"


class _OutletEvents(dict):
    """`context["outlet_events"]` as promote_model uses it: events[alias].add(asset, extra=...)."""

    class _Events(list):
        def add(self, asset, extra=None):
            self.append((asset.uri, extra))

    def __missing__(self, alias):
        self[alias] = events = self._Events()
        return events


def _published(passed: bool = True) -> dict:
    return {
        "symbol": "SPY", "profile": "demo", "run_dir": "/runs/SPY/x/demo/full", "run_key": "SPY/x/demo/full",
        "model_name": "demo.hierarchical-options-SPY", "version": 4, "passed": passed,
        "report_uri": "runs:/abc/report/report.html", "report_html": "/runs/SPY/x/demo/full/report/report.html",
    }


@pytest.fixture
def promote_steps(tmp_path, monkeypatch):
    """pipeline.promote_model with the step replaced by a recorder (the argv it would run)."""
    from trainer.orchestration import pipeline

    ran = []

    def fake_run_step(spec, context, settings):
        ran.append(spec.argv)
        return {"promoted": True, "action": "promote", "version": 4}

    monkeypatch.setattr(pipeline, "run_step", fake_run_step)
    settings = load_settings(env={"TRAINER_STATE_DIR": str(tmp_path)})
    context = {"dag": _Dag(), "run_id": "manual__1", "outlet_events": _OutletEvents()}

    def promote(published, decision):
        return pipeline.promote_model(published, decision, context, settings), ran

    promote.context = context
    return promote


def test_an_approval_reaches_promote_with_who_when_and_comment(promote_steps):
    decision = {"asked": True, "approved": True, "decided_by": "ana", "decided_at": "2025-03-04T05:06:07+00:00",
                "comment": "CI ok", "reason": "Approve by ana at 2025-03-04T05:06:07+00:00: CI ok"}
    result, ran = promote_steps(_published(), decision)
    (argv,) = ran
    assert argv[argv.index("--approved-by") + 1] == "ana"
    assert argv[argv.index("--approved-at") + 1] == "2025-03-04T05:06:07+00:00"
    assert argv[argv.index("--approval-comment") + 1] == "CI ok"
    assert argv[argv.index("--profile") + 1] == "demo" and argv[argv.index("--version") + 1] == "4"
    reason = argv[argv.index("--reason") + 1]
    assert "runs:/abc/report/report.html" in reason and "Approve by ana" in reason
    assert result["promoted"] is True and result["approved_by"] == "ana"
    (events,) = promote_steps.context["outlet_events"].values()
    assert [uri for uri, _ in events] == ["mlflow://models/demo.hierarchical-options-SPY@champion"]


def test_the_schedulers_decision_has_no_approver_and_a_rejection_promotes_nothing(promote_steps):
    scheduler = {"asked": False, "approved": True, "decided_by": None, "decided_at": None, "comment": "",
                 "reason": "nobody asked"}
    result, ran = promote_steps(_published(), scheduler)
    assert result["promoted"] is True and result["approved_by"] is None
    assert "--approved-by" not in ran[0] and "--approval-comment" not in ran[0]

    ran.clear()
    rejected = {"asked": True, "approved": False, "decided_by": "ana", "decided_at": "2025-03-04T05:06:07+00:00",
                "comment": "costs", "reason": "Reject by ana at 2025-03-04T05:06:07+00:00: costs"}
    result, ran = promote_steps(_published(), rejected)
    assert ran == [] and result["promoted"] is False and "Reject by ana" in result["reason"]
    result, ran = promote_steps(_published(passed=False), scheduler)
    assert ran == [] and result["promoted"] is False and "quality gates failed" in result["reason"]


# ------------------------------------------------------------------------------------------------
# The trainer image is part of the run key, and every step knows it
# ------------------------------------------------------------------------------------------------

IMAGE_A = "sha256:" + "a1" * 32
IMAGE_B = "sha256:" + "b2" * 32


def test_two_image_digests_give_two_run_keys_with_a_short_digest():
    a = specs.RunKey("SPY", DIGEST, "0011223344556677", "demo", "full", image_digest=IMAGE_A)
    b = specs.RunKey("SPY", DIGEST, "0011223344556677", "demo", "full", image_digest=IMAGE_B)
    assert a != b and a.relpath != b.relpath
    assert a.relpath == f"SPY/abcdef012345-00112233-v{__version__}-i{'a1' * 6}/demo/full"
    assert a.image_digest == "a1" * 32 and a.short_image == "a1" * 6
    local = specs.RunKey("SPY", DIGEST, "0011223344556677", "demo", "full", image_digest="local")
    assert local.relpath == f"SPY/abcdef012345-00112233-v{__version__}-ilocal/demo/full"
    assert len({a.relpath, b.relpath, local.relpath, specs.RunKey("SPY", DIGEST, "0011223344556677", "demo", "full").relpath}) == 4
    for bad in ("sha256:abc", "../x", "a/b", "", 7):
        with pytest.raises(ValueError, match="image digest"):
            specs.RunKey("SPY", DIGEST, "0011223344556677", "demo", "full", image_digest=bad)


def _kubernetes_settings(tmp_path, digest: str | None):
    custom = tmp_path / "pipeline.yaml"
    text = (REPO_ROOT / "configs" / "pipeline.yaml").read_text()
    assert "    digest: null\n" in text
    custom.write_text(text.replace("    digest: null\n", f"    digest: {digest or 'null'}\n", 1))
    settings = load_settings(custom, env={"TRAINER_BACKEND": "kubernetes"})
    assert settings.kubernetes.image.digest == digest
    return settings


def test_every_step_gets_the_trainer_image_digest(tmp_path):
    pinned = _kubernetes_settings(tmp_path, IMAGE_A)
    assert pinned.image_digest() == IMAGE_A
    tag_only = _kubernetes_settings(tmp_path, None)
    assert tag_only.image_digest() == f"tag-{tag_only.kubernetes.image.tag}"
    local = load_settings(env={"TRAINER_STATE_DIR": str(tmp_path)})
    assert local.image_digest() == "local"
    for settings, expected in ((pinned, IMAGE_A), (local, "local")):
        key = specs.RunKey("SPY", DIGEST, "0011223344556677", "demo", "full", image_digest=settings.image_digest())
        built = [
            specs.validate_spec("SPY", "demo", settings, "/r"),
            specs.train_spec("SPY", "demo", settings, key),
            specs.gate_spec("/run", "full", settings),
            specs.evaluate_spec("/run", settings),
            specs.register_spec("/run", settings),
            specs.report_spec("/run", settings),
            specs.promote_spec("SPY", "demo", 3, "why", settings),
        ]
        for spec in built:
            assert spec.env[specs.IMAGE_DIGEST_ENV] == expected, spec.step
    assert pinned.kubernetes.env.items() <= specs.gate_spec("/run", "full", pinned).env.items()


def test_pipeline_train_puts_the_image_into_the_run_key(tmp_path, monkeypatch):
    """pipeline.train with the step replaced by a recorder: a new image digest, a new run directory."""
    from trainer.orchestration import pipeline

    ran = []

    def fake_run_step(spec, context, settings):
        ran.append(spec)
        return {"status": "completed"}

    monkeypatch.setattr(pipeline, "run_step", fake_run_step)
    # The settings file sits in tmp_path, away from the run configs: the hash is not what this tests.
    monkeypatch.setattr(specs, "compute_config_hash", lambda *args: "0011223344556677")
    validated = {"symbol": "SPY", "profile": "demo", "data": None, "data_digest": DIGEST}
    context = {"params": {}, "run_id": "manual__1"}
    results = [pipeline.train(validated, "smoke", context, _kubernetes_settings(tmp_path, image))
               for image in (IMAGE_A, IMAGE_B)]
    assert results[0]["run_dir"] != results[1]["run_dir"]
    for result, spec, image in zip(results, ran, (IMAGE_A, IMAGE_B)):
        assert f"-i{image[7:19]}/demo/smoke" in result["run_key"] and result["image_digest"] == image
        assert spec.argv[spec.argv.index("--output-dir") + 1] == result["run_dir"]
        assert spec.env[specs.IMAGE_DIGEST_ENV] == image
