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


# ------------------------------------------------------------------------------------------------
# Pod lifecycle and supply fields: grace period, deadline, priority class, scratch, pull secrets, sidecar
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def operated(tmp_path_factory):
    """configs/pipeline.yaml with priority classes, pull secrets and a sidecar image of our own."""
    from trainer.orchestration.settings import REPO_ROOT

    text = (REPO_ROOT / "configs" / "pipeline.yaml").read_text()
    replaced = (
        text.replace("image_pull_secrets: []", "image_pull_secrets: [regcred, mirror-cred]")
        .replace(
            "xcom_sidecar_image: null",
            "xcom_sidecar_image: {repository: registry.example/tools/busybox, tag: '1.37', pull_policy: Always}",
        )
        .replace("    priority_class_name: null\n    scratch_size: 10Gi", "    priority_class_name: trainer-cpu\n    scratch_size: 10Gi")
        .replace("    priority_class_name: null\n    scratch_size: 20Gi", "    priority_class_name: trainer-gpu\n    scratch_size: 20Gi")
    )
    for new in ("regcred", "busybox", "trainer-cpu", "trainer-gpu"):
        assert new in replaced, new
    path = tmp_path_factory.mktemp("pipeline") / "configs" / "pipeline.yaml"
    path.parent.mkdir()
    path.write_text(replaced)
    return load_settings(path, env={"TRAINER_BACKEND": "kubernetes"})


def _sidecar(manifest):
    (container,) = [c for c in manifest["spec"]["containers"] if c["name"] == "airflow-xcom-sidecar"]
    return container


@pytest.mark.parametrize(("stage", "deadline", "priority", "scratch"), [
    ("full", 720 * 60, "trainer-gpu", "20Gi"),
    ("smoke", 60 * 60, "trainer-cpu", "10Gi"),
])
def test_pod_lifecycle_fields(operated, stage, deadline, priority, scratch):
    spec, _ = _train(operated, stage)
    manifest = _manifest(spec, operated)
    pod = manifest["spec"]
    # SIGTERM -> checkpoint written and uploaded before SIGKILL (figure in configs/pipeline.yaml)
    assert pod["terminationGracePeriodSeconds"] == operated.kubernetes.termination_grace_period_seconds == 300
    # the try's time limit (the profile's), so a pod Airflow lost track of still ends
    assert pod["activeDeadlineSeconds"] == deadline == spec.timeout_seconds
    assert pod["priorityClassName"] == priority
    (scratch_volume,) = [v for v in pod["volumes"] if v["name"] == "tmp"]
    assert scratch_volume["emptyDir"] == {"sizeLimit": scratch}
    assert _base(manifest)["resources"]["requests"]["ephemeral-storage"] == scratch
    assert {"name": "tmp", "mountPath": "/tmp"} in _base(manifest)["volumeMounts"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror-cred"}]


@pytest.mark.parametrize("stage", ["smoke", "full"])
def test_xcom_sidecar_image_is_configurable(operated, settings, stage):
    spec, _ = _train(operated, stage)
    sidecar = _sidecar(_manifest(spec, operated))
    assert sidecar["image"] == "registry.example/tools/busybox:1.37" and sidecar["imagePullPolicy"] == "Always"
    assert sidecar["securityContext"]["runAsNonRoot"] is True
    # default (null): the trainer image itself, never the KPO's alpine from Docker Hub
    spec, _ = _train(settings, stage)
    default = _sidecar(_manifest(spec, settings))
    assert default["image"] == settings.kubernetes.image.reference == _base(_manifest(spec, settings))["image"]
    assert "alpine" not in default["image"]


def test_defaults_of_the_new_pod_fields(settings):
    """configs/pipeline.yaml as shipped: no priority class, no pull secrets, scratch sized per class."""
    manifest = _manifest(validate_spec("SPY", "production", settings, "s3://trainer-runs/runs/SPY/validation/r1"), settings)
    pod = manifest["spec"]
    assert "priorityClassName" not in pod
    assert not pod.get("imagePullSecrets")
    assert pod["activeDeadlineSeconds"] == 60 * 60
    assert [v["emptyDir"] for v in pod["volumes"] if v["name"] == "tmp"] == [{"sizeLimit": "10Gi"}]


def test_every_other_step_pod_has_the_longest_step_limit(settings):
    spec = gate_spec("s3://trainer-runs/runs/SPY/x/production/full", "full", settings)
    assert spec.timeout_seconds == max(p.step_timeout_minutes for p in settings.profiles.values()) * 60
    assert _manifest(spec, settings)["spec"]["activeDeadlineSeconds"] == spec.timeout_seconds
