"""The kubernetes backend's pods, rendered offline (no cluster) and validated against the 1.30 schema."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
from kubernetes.client import ApiClient

from trainer.orchestration.kubernetes import XCOM_RESULT_PATH, build_operator
from trainer.orchestration.settings import load_settings
from trainer.orchestration.specs import RunKey, gate_spec, train_spec, validate_spec

DIGEST = "0123456789abcdef0123456789abcdef"
CONFIG_HASH = "fedcba9876543210"


@pytest.fixture(scope="module")
def settings():
    return load_settings(env={"TRAINER_BACKEND": "kubernetes"})


def _manifest(spec, settings):
    op = build_operator(spec, settings)
    pod = op.build_pod_request_obj(dry_run=True)
    manifest = ApiClient().sanitize_for_serialization(pod)
    kubernetes_validate.validate(manifest, "1.30.0", strict=True)
    return manifest


def _train(settings, stage):
    key = RunKey("SPY", DIGEST, CONFIG_HASH, "production", stage)
    return train_spec("SPY", "production", settings, key), key


def _base(manifest):
    (container,) = [c for c in manifest["spec"]["containers"] if c["name"] == "base"]
    return container


def test_full_training_pod_asks_for_a_gpu(settings):
    spec, key = _train(settings, "full")
    manifest = _manifest(spec, settings)
    container = _base(manifest)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert manifest["spec"]["nodeSelector"]["workload"] == "gpu"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in manifest["spec"]["tolerations"]
    run_dir = f"s3://trainer-runs/runs/SPY/{DIGEST[:12]}-{CONFIG_HASH[:8]}-v{key.code_version}/production/full"
    assert container["command"] == ["trainer"]
    assert container["args"] == [
        "--result-json", XCOM_RESULT_PATH,
        "train",
        "--config", "/app/configs/phase_b1_options.yaml",
        "--symbol", "SPY",
        "--profile", "production",
        "--stage", "full",
        "--total-timesteps", "500000",
        "--n-envs", "16",
        "--eval-freq", "15000",
        "--output-dir", run_dir,
        "--resume",
    ]


def test_smoke_training_pod_has_no_gpu(settings):
    spec, key = _train(settings, "smoke")
    manifest = _manifest(spec, settings)
    container = _base(manifest)
    for section in ("limits", "requests"):
        assert not any("gpu" in name for name in container["resources"].get(section, {})), section
    assert manifest["spec"]["nodeSelector"] == {"workload": "cpu"}
    assert not manifest["spec"].get("tolerations")
    assert container["args"][container["args"].index("--total-timesteps") + 1] == "10000"
    assert container["args"][container["args"].index("--output-dir") + 1].endswith("/production/smoke")
    assert "--resume" in container["args"]


@pytest.mark.parametrize("stage", ["smoke", "full"])
def test_pods_run_as_non_root_with_secrets_by_reference(settings, stage):
    spec, _ = _train(settings, stage)
    manifest = _manifest(spec, settings)
    pod_ctx = manifest["spec"]["securityContext"]
    assert pod_ctx["runAsNonRoot"] is True and pod_ctx["runAsUser"] != 0
    for container in manifest["spec"]["containers"]:  # the trainer and the xcom sidecar
        ctx = container["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] != 0, container["name"]
        assert ctx["allowPrivilegeEscalation"] is False, container["name"]
        assert ctx["capabilities"]["drop"] == ["ALL"], container["name"]
    assert manifest["spec"]["serviceAccountName"] == "trainer-runner"
    assert manifest["metadata"]["namespace"] == "trainer"

    env = {e["name"]: e for e in _base(manifest)["env"]}
    for name, secret in [
        ("AWS_ACCESS_KEY_ID", "trainer-s3-credentials"),
        ("AWS_SECRET_ACCESS_KEY", "trainer-s3-credentials"),
        ("MLFLOW_TRACKING_USERNAME", "trainer-mlflow-credentials"),
        ("MLFLOW_TRACKING_PASSWORD", "trainer-mlflow-credentials"),
    ]:
        assert "value" not in env[name], name
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == secret
    assert env["MLFLOW_TRACKING_URI"]["value"].startswith("http")


def test_no_secret_values_anywhere_in_the_manifest(settings, monkeypatch):
    """Credentials in the Airflow worker's environment must not leak into the pod spec."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value-from-worker")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "mlflow-pw-from-worker")
    spec, _ = _train(settings, "full")
    text = json.dumps(_manifest(spec, settings))
    assert "s3cr3t-value-from-worker" not in text
    assert "mlflow-pw-from-worker" not in text
    # every env var with a credential-looking name is a reference
    for entry in _base(json.loads(text))["env"]:
        if any(word in entry["name"] for word in ("SECRET", "PASSWORD", "ACCESS_KEY", "TOKEN")):
            assert "value" not in entry and "secretKeyRef" in entry["valueFrom"], entry


def test_other_steps_render_and_validate(settings):
    run_dir = "s3://trainer-runs/runs/SPY/x/production/full"
    for spec in (
        validate_spec("SPY", "production", settings, "s3://trainer-runs/runs/SPY/validation/r1"),
        gate_spec(run_dir, "full", settings),
    ):
        manifest = _manifest(spec, settings)
        assert _base(manifest)["args"][:2] == ["--result-json", XCOM_RESULT_PATH]
        assert "nvidia.com/gpu" not in json.dumps(manifest)


def test_operator_settings(settings):
    spec, _ = _train(settings, "full")
    op = build_operator(spec, settings)
    assert op.on_finish_action.value == "delete_succeeded_pod"
    assert op.startup_timeout_seconds == 900
    assert op.do_xcom_push is True
    assert op.image == "ghcr.io/example/hierarchical-options-trainer:0.1.0"
