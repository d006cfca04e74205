"""The chart and the DAG agree: the pipeline.yaml the chart renders is loaded by the DAG's own settings
loader, and the trainer pods are built from it by the DAG's own code, then validated against Kubernetes 1.30.

No cluster: `build_pod_request_obj(dry_run=True)` builds the V1Pod offline (see tests/dags/test_kubernetes_pods.py).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import helm_python
import kubernetes_validate
import pytest
import yaml
from chart_render import (
    CHART,
    K8S_VERSION,
    REPO,
    documents,
    pipeline_text,
    production_values,
    render,
)
from kubernetes.client import ApiClient

from trainer.orchestration.kubernetes import APP_LABEL, SCRATCH_VOLUME, build_operator
from trainer.orchestration.settings import (
    PipelineSettings,
    SettingsError,
    load_settings,
)
from trainer.orchestration.specs import RunKey, train_spec, validate_spec

DIGEST = "0123456789abcdef0123456789abcdef"
CONFIG_HASH = "fedcba9876543210"
STEPS = {"totalTimesteps": 10, "nEnvs": 1, "evalFreq": 5}
CHART_VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
VALUE_SETS = {"default": {}, "production-gpu": production_values()}


def _settings_from(values: dict, tmp_path: Path, env: dict | None = None) -> PipelineSettings:
    """Render with `values`, write the ConfigMap's pipeline.yaml to disk and load it like the DAG does."""
    path = tmp_path / "pipeline.yaml"
    path.write_text(pipeline_text(documents(render(values))))
    return load_settings(path, env={} if env is None else env)


def _pod(settings: PipelineSettings, spec) -> dict:
    """The pod the KubernetesPodOperator would create, as a manifest, validated strictly against 1.30."""
    pod = build_operator(spec, settings).build_pod_request_obj(dry_run=True)
    manifest = ApiClient().sanitize_for_serialization(pod)
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    return manifest


def _train_pod(settings: PipelineSettings, stage: str, profile: str = "production") -> tuple[dict, RunKey]:
    key = RunKey("SPY", DIGEST, CONFIG_HASH, profile, stage)
    return _pod(settings, train_spec("SPY", profile, settings, key)), key


def _base(manifest: dict) -> dict:
    (container,) = [c for c in manifest["spec"]["containers"] if c["name"] == "base"]
    return container


def _merged(values: dict) -> dict:
    """values.yaml overlaid with `values` (maps merge, lists and scalars replace), as Helm does."""
    def merge(base, over):
        if isinstance(base, dict) and isinstance(over, dict):
            return {k: merge(base[k], over[k]) if k in base and k in over else copy.deepcopy(over.get(k, base.get(k)))
                    for k in {**base, **over}}
        return copy.deepcopy(over)

    return merge(CHART_VALUES, values)


@pytest.fixture(scope="module", params=list(VALUE_SETS))
def rendered(request, tmp_path_factory) -> tuple[str, dict, PipelineSettings]:
    values = VALUE_SETS[request.param]
    settings = _settings_from(values, tmp_path_factory.mktemp(request.param))
    return request.param, _merged(values), settings


def test_the_rendered_file_validates_and_selects_kubernetes(rendered):
    _, values, settings = rendered
    assert settings.backend == "kubernetes"
    k8s = settings.kubernetes
    trainer = values["trainer"]
    assert k8s.namespace == trainer["namespace"]["name"] == "trainer"
    assert k8s.service_account == trainer["serviceAccount"]["name"]
    assert k8s.image.reference == f"{trainer['image']['repository']}:{trainer['image']['tag'] or '0.1.0'}"
    assert k8s.image.pull_policy == trainer["image"]["pullPolicy"]
    assert k8s.runs_root == trainer["runsRoot"] and settings.runs_root() == trainer["runsRoot"]
    assert k8s.startup_timeout_seconds == trainer["startupTimeoutSeconds"]
    assert k8s.on_finish_action == trainer["onFinishAction"]
    assert [s.model_dump() for s in k8s.secret_env] == trainer["secretEnv"]
    for cls in ("cpu", "gpu"):
        given, got = trainer["placement"][cls], getattr(k8s, cls)
        assert got.resources.model_dump() == given["resources"], cls
        assert got.node_selector == given.get("nodeSelector", {}), cls
        assert [t.model_dump(exclude_none=True) for t in got.tolerations] == given.get("tolerations", []), cls
    assert k8s.env["MLFLOW_TRACKING_URI"] == k8s.env["MLFLOW_REGISTRY_URI"] == (
        "http://hierarchical-options-mlflow.mlops.svc.cluster.local:5000"
    )
    assert settings.schedule == values["pipeline"]["schedule"]
    assert settings.defaults.symbols == values["pipeline"]["defaults"]["symbols"]


def test_the_airflow_environment_selects_the_same_file(rendered, tmp_path):
    """What the Airflow containers do: TRAINER_PIPELINE_CONFIG names the mounted file, TRAINER_BACKEND=kubernetes."""
    name, _, settings = rendered
    path = tmp_path / "pipeline.yaml"
    path.write_text(pipeline_text(documents(render(VALUE_SETS[name]))))
    via_env = load_settings(env={"TRAINER_PIPELINE_CONFIG": str(path), "TRAINER_BACKEND": "kubernetes"})
    assert via_env == settings


def test_profiles_match_configs_pipeline_yaml(rendered):
    """The chart's profiles keep the step counts of configs/pipeline.yaml (the local backend's file),
    and its defaults of every other setting it renders are that file's too."""
    name, _, settings = rendered
    local = load_settings(REPO / "configs" / "pipeline.yaml", env={})
    assert set(settings.profiles) == set(local.profiles)
    for profile_name, profile in settings.profiles.items():
        ours = profile.model_dump(exclude={"config"})
        theirs = local.profiles[profile_name].model_dump(exclude={"config"})
        assert ours == theirs, profile_name
        assert Path(profile.config).name == Path(local.profiles[profile_name].config).name, profile_name
    assert settings.retries == local.retries
    assert settings.defaults == local.defaults
    assert settings.schedule == local.schedule
    for section in ("concurrency", "approval", "priority", "notifications"):
        assert getattr(settings, section) == getattr(local, section), section
    ours_k8s, theirs_k8s = settings.kubernetes, local.kubernetes
    for field in ("termination_grace_period_seconds", "xcom_sidecar_image", "deferrable_steps", "gpu_pool", "cpu_pool"):
        assert getattr(ours_k8s, field) == getattr(theirs_k8s, field), field
    if name == "default":  # production pulls the trainer image with its registry Secret
        assert ours_k8s.image_pull_secrets == theirs_k8s.image_pull_secrets == []
    for cls in ("cpu", "gpu"):
        for field in ("priority_class_name", "scratch_size"):
            assert getattr(getattr(ours_k8s, cls), field) == getattr(getattr(theirs_k8s, cls), field), (cls, field)
    assert settings.pools() == local.model_copy(update={"backend": "kubernetes"}).pools()


def test_secret_references_match_configs_pipeline_yaml():
    """The chart's default trainer.secretEnv is configs/pipeline.yaml's kubernetes.secret_env: the same
    Secrets, keys and variables (the MLflow user of the trainer included), so one set of Secrets serves both."""
    local = load_settings(REPO / "configs" / "pipeline.yaml", env={})
    assert CHART_VALUES["trainer"]["secretEnv"] == [s.model_dump() for s in local.kubernetes.secret_env]
    env = {ref["env"]: ref for ref in CHART_VALUES["trainer"]["secretEnv"]}
    assert {k: (env[k]["secret"], env[k]["key"]) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")} == {
        "MLFLOW_TRACKING_USERNAME": ("trainer-mlflow-credentials", "username"),
        "MLFLOW_TRACKING_PASSWORD": ("trainer-mlflow-credentials", "password"),
    }


def test_run_configs_are_where_the_images_put_them(rendered):
    """The DAG hashes the Airflow image's copy of the run config; the pod reads the trainer image's copy."""
    _, values, settings = rendered
    airflow_copy = str(Path(settings.local_config_path("production")).parent)
    trainer_copy = str(Path(settings.step_config_path("production")).parent)
    assert airflow_copy == values["pipeline"]["runConfigDir"] == _copy_destination("airflow", "configs/")
    assert trainer_copy == values["trainer"]["configDir"] == _copy_destination("trainer", "configs/")
    assert Path(settings.step_config_path("production")).name == "phase_b1_options.yaml"
    assert (REPO / "configs" / "phase_b1_options.yaml").is_file()


def _copy_destination(image: str, source: str) -> str:
    """Where docker/<image>/Dockerfile COPYs `source` to (without the trailing slash)."""
    for line in (REPO / "docker" / image / "Dockerfile").read_text().splitlines():
        words = [w for w in line.split() if not w.startswith("--")]
        if words[:1] == ["COPY"] and words[1:2] == [source]:
            return words[-1].rstrip("/")
    raise AssertionError(f"docker/{image}/Dockerfile does not COPY {source}")


def test_full_training_pod_from_the_chart_validates_and_carries_the_gpu_placement(rendered):
    _, values, settings = rendered
    manifest, key = _train_pod(settings, "full")
    gpu = values["trainer"]["placement"]["gpu"]
    container = _base(manifest)
    limits = container["resources"]["limits"]
    if gpu["resources"]["gpu"]:
        assert limits["nvidia.com/gpu"] == str(gpu["resources"]["gpu"])
    else:
        assert "nvidia.com/gpu" not in limits
    requests = {"cpu": gpu["resources"]["cpu"], "memory": gpu["resources"]["memory"]}
    if gpu.get("scratchSize"):  # the scratch emptyDir's size is requested as ephemeral storage
        requests["ephemeral-storage"] = gpu["scratchSize"]
    assert container["resources"]["requests"] == requests
    assert (manifest["spec"].get("nodeSelector") or {}) == gpu["nodeSelector"]
    assert (manifest["spec"].get("tolerations") or []) == gpu["tolerations"]
    assert manifest["metadata"]["namespace"] == values["trainer"]["namespace"]["name"]
    assert manifest["spec"]["serviceAccountName"] == values["trainer"]["serviceAccount"]["name"]
    assert container["image"] == settings.kubernetes.image.reference
    args = container["args"]
    assert args[args.index("--config") + 1] == "/app/configs/phase_b1_options.yaml"
    assert args[args.index("--output-dir") + 1] == key.under(values["trainer"]["runsRoot"])
    assert args[args.index("--total-timesteps") + 1] == str(values["pipeline"]["profiles"]["production"]["full"]["totalTimesteps"])


def test_production_full_training_asks_for_one_gpu_on_the_tainted_pool(tmp_path):
    settings = _settings_from(production_values(), tmp_path)
    manifest, _ = _train_pod(settings, "full")
    assert _base(manifest)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert manifest["spec"]["nodeSelector"] == {"workload": "gpu", "nvidia.com/gpu.present": "true"}
    assert manifest["spec"]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    smoke, _ = _train_pod(settings, "smoke")
    assert "nvidia.com/gpu" not in json.dumps(smoke)
    assert smoke["spec"]["nodeSelector"] == {"workload": "cpu"}


def test_default_values_ask_for_no_gpu(tmp_path):
    settings = _settings_from({}, tmp_path)
    for stage in ("smoke", "full"):
        manifest, _ = _train_pod(settings, stage)
        assert "nvidia.com/gpu" not in json.dumps(manifest), stage


@pytest.mark.parametrize("stage", ["smoke", "full"])
def test_trainer_pods_reference_secrets_and_run_as_non_root(rendered, stage):
    _, values, settings = rendered
    manifest, _ = _train_pod(settings, stage)
    env = {e["name"]: e for e in _base(manifest)["env"]}
    for ref in values["trainer"]["secretEnv"]:
        assert "value" not in env[ref["env"]], ref
        assert env[ref["env"]]["valueFrom"]["secretKeyRef"] == {"name": ref["secret"], "key": ref["key"]}
    for entry in env.values():
        if re.search(r"(SECRET|PASSWORD|TOKEN|ACCESS_KEY)", entry["name"]):
            assert "value" not in entry and "secretKeyRef" in entry["valueFrom"], entry
    pod_ctx = manifest["spec"]["securityContext"]
    assert pod_ctx["runAsNonRoot"] is True and pod_ctx["runAsUser"] == values["trainer"]["runAsUser"]
    for container in manifest["spec"]["containers"]:
        ctx = container["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["allowPrivilegeEscalation"] is False, container["name"]
        assert ctx["capabilities"]["drop"] == ["ALL"], container["name"]


def test_every_chart_setting_reaches_the_pod(tmp_path):
    """Non-default values for every trainer key, end to end: values -> pipeline.yaml -> load_settings -> V1Pod."""
    digest = "sha256:" + "c" * 64
    values = production_values()
    values["trainer"].update({
        "namespace": {"name": "ml-train", "create": False},
        "image": {"repository": "r.example/trainer", "tag": "1.10", "digest": digest, "pullPolicy": "Always"},
        "serviceAccount": {"create": True, "name": "runner-x"},
        "configDir": "/opt/configs",
        "runsRoot": "s3://other-bucket/prefix",
        "secretEnv": [
            {"env": "AWS_ACCESS_KEY_ID", "secret": "s3-creds", "key": "access_key_id"},
            {"env": "MLFLOW_TRACKING_PASSWORD", "secret": "mlflow-creds", "key": "password"},
        ],
        "mlflowTrackingUri": "https://mlflow.example.com",
        "s3EndpointUrl": "http://minio.storage.svc:9000",
        "extraEnv": [{"name": "OMP_NUM_THREADS", "value": "4"}],
        "startupTimeoutSeconds": 1800,
        "onFinishAction": "keep_pod",
        "runAsUser": 20001,
        "runAsGroup": 20002,
        "gpuPool": {"name": "trainer_gpu", "slots": 2},  # at least one full-training pod's GPUs
    })
    values["trainer"]["placement"]["gpu"]["resources"] = {"cpu": 12, "memory": "64Gi", "gpu": 2}
    values["trainer"]["placement"]["gpu"]["tolerations"] = [
        {"key": "dedicated", "operator": "Equal", "value": "training", "effect": "NoExecute"}]
    values["pipeline"] = {"schedule": "", "defaults": {"symbols": ["IWM"], "profile": "demo"}}
    settings = _settings_from(values, tmp_path)
    assert settings.schedule is None and settings.defaults.symbols == ["IWM"] and settings.defaults.profile == "demo"
    manifest, key = _train_pod(settings, "full", profile="demo")
    container = _base(manifest)
    assert container["image"] == f"r.example/trainer@{digest}" and container["imagePullPolicy"] == "Always"
    assert manifest["metadata"]["namespace"] == "ml-train" and manifest["spec"]["serviceAccountName"] == "runner-x"
    assert container["resources"] == {"requests": {"cpu": "12", "memory": "64Gi", "ephemeral-storage": "20Gi"},
                                      "limits": {"memory": "64Gi", "nvidia.com/gpu": "2"}}
    assert manifest["spec"]["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "training", "effect": "NoExecute"}]
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"]["value"] == env["MLFLOW_REGISTRY_URI"]["value"] == "https://mlflow.example.com"
    assert env["AWS_ENDPOINT_URL"]["value"] == env["MLFLOW_S3_ENDPOINT_URL"]["value"] == "http://minio.storage.svc:9000"
    assert env["OMP_NUM_THREADS"]["value"] == "4"
    assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-creds", "key": "password"}
    assert manifest["spec"]["securityContext"]["runAsUser"] == 20001
    assert manifest["spec"]["securityContext"]["runAsGroup"] == 20002
    args = container["args"]
    assert args[args.index("--config") + 1] == "/opt/configs/phase_b1_options.yaml"
    assert args[args.index("--output-dir") + 1] == key.under("s3://other-bucket/prefix")
    assert args.count("--set") == 5, "the demo profile's overrides reach the pod"
    op = build_operator(train_spec("SPY", "demo", settings, key), settings)
    assert op.startup_timeout_seconds == 1800 and op.on_finish_action.value == "keep_pod"
    validate = _pod(settings, validate_spec("SPY", "demo", settings, "s3://other-bucket/prefix/SPY/validation/r1"))
    assert validate["spec"]["nodeSelector"] == {"workload": "cpu"}


def test_every_pipeline_and_pod_setting_the_chart_wires_reaches_the_settings(tmp_path):
    """Non-default values for the pool, grace, pull-secret, sidecar, deferral, priority-class and scratch
    settings and the top-level sections: values -> pipeline.yaml -> load_settings (-> V1Pod)."""
    sidecar_digest = "sha256:" + "d" * 64
    values = production_values()
    values["trainer"].update({
        "terminationGracePeriodSeconds": 600,
        "imagePullSecrets": ["regcred", "mirror-creds"],
        "xcomSidecarImage": {"repository": "r.example/busybox", "tag": "1.37", "digest": sidecar_digest,
                             "pullPolicy": "Always"},
        "deferrableSteps": ["full_train"],
        "gpuPool": {"name": "gpu_a100", "slots": 4},
        "cpuPool": {"name": "cpu.steps", "slots": 12},
    })
    values["trainer"]["placement"]["gpu"].update({"priorityClassName": "training-high", "scratchSize": "50Gi"})
    values["trainer"]["placement"]["cpu"].update({"priorityClassName": "batch-low", "scratchSize": "2Gi"})
    values["pipeline"] = {
        "concurrency": {"maxSymbols": 50, "maxActiveRuns": 5, "maxActiveTasks": 16, "maxActiveTisPerDagrun": 4,
                        "mlflowWriters": 2},
        "approval": {"responseTimeoutHours": 12.5},
        "priority": {"gpu": 7, "cpu": 3},
        "notifications": {"webhookUrl": "https://hooks.example.com/services/trainer", "timeoutSeconds": 2.5},
    }
    settings = _settings_from(values, tmp_path)
    k8s = settings.kubernetes
    assert k8s.termination_grace_period_seconds == 600
    assert k8s.image_pull_secrets == ["regcred", "mirror-creds"]
    assert k8s.xcom_sidecar_image.model_dump() == {"repository": "r.example/busybox", "tag": "1.37",
                                                   "digest": sidecar_digest, "pull_policy": "Always"}
    assert k8s.deferrable_steps == ["full_train"]
    assert k8s.gpu_pool.model_dump() == {"name": "gpu_a100", "slots": 4}
    assert k8s.cpu_pool.model_dump() == {"name": "cpu.steps", "slots": 12}
    assert {cls: pool.name for cls, pool in settings.pools().items()} == {"gpu": "gpu_a100", "cpu": "cpu.steps"}
    assert (k8s.gpu.priority_class_name, k8s.gpu.scratch_size) == ("training-high", "50Gi")
    assert (k8s.cpu.priority_class_name, k8s.cpu.scratch_size) == ("batch-low", "2Gi")
    assert settings.concurrency.model_dump() == {"max_symbols": 50, "max_active_runs": 5, "max_active_tasks": 16,
                                                 "max_active_tis_per_dagrun": 4, "mlflow_writers": 2}
    assert settings.approval.response_timeout_hours == 12.5
    assert (settings.priority.gpu, settings.priority.cpu) == (7, 3)
    assert settings.notifications.webhook_url == "https://hooks.example.com/services/trainer"
    assert settings.notifications.timeout_seconds == 2.5

    manifest, _ = _train_pod(settings, "full")
    spec = manifest["spec"]
    assert spec["terminationGracePeriodSeconds"] == 600
    assert spec["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror-creds"}]
    assert spec["priorityClassName"] == "training-high"
    assert _base(manifest)["resources"]["requests"]["ephemeral-storage"] == "50Gi"
    (scratch,) = [v for v in spec["volumes"] if v["name"] == SCRATCH_VOLUME]
    assert scratch["emptyDir"]["sizeLimit"] == "50Gi"
    (sidecar,) = [c for c in spec["containers"] if c["name"] != "base"]
    assert sidecar["image"] == f"r.example/busybox@{sidecar_digest}" and sidecar["imagePullPolicy"] == "Always"
    smoke, _ = _train_pod(settings, "smoke")
    assert smoke["spec"]["priorityClassName"] == "batch-low"
    assert _base(smoke)["resources"]["requests"]["ephemeral-storage"] == "2Gi"


def test_optional_settings_can_be_turned_off(tmp_path):
    """null pools (default_pool), empty priority class / scratch size / webhook: settings.py's None."""
    values = {
        "trainer": {"gpuPool": None, "cpuPool": None, "xcomSidecarImage": None, "deferrableSteps": [],
                    "placement": {"gpu": {"priorityClassName": "", "scratchSize": None},
                                  "cpu": {"priorityClassName": None, "scratchSize": ""}}},
        "pipeline": {"notifications": {"webhookUrl": ""}},
    }
    settings = _settings_from(values, tmp_path)
    k8s = settings.kubernetes
    assert k8s.gpu_pool is None and k8s.cpu_pool is None and settings.pools() == {}
    assert k8s.xcom_sidecar_image is None and k8s.deferrable_steps == []
    for cls in ("cpu", "gpu"):
        assert getattr(k8s, cls).priority_class_name is None and getattr(k8s, cls).scratch_size is None, cls
    assert settings.notifications.webhook_url is None
    manifest, _ = _train_pod(settings, "full")
    assert "priorityClassName" not in manifest["spec"]
    assert "ephemeral-storage" not in _base(manifest)["resources"]["requests"]
    (sidecar,) = [c for c in manifest["spec"]["containers"] if c["name"] != "base"]
    assert sidecar["image"] == k8s.image.reference, "no sidecar image: the trainer image, never Docker Hub's alpine"


def test_a_sidecar_image_by_tag_renders_like_the_trainer_image(tmp_path):
    settings = _settings_from({"trainer": {"xcomSidecarImage": {"repository": "r/sh", "tag": "2.0", "digest": ""}}},
                              tmp_path)
    assert settings.kubernetes.xcom_sidecar_image.model_dump() == {
        "repository": "r/sh", "tag": "2.0", "digest": None, "pull_policy": "IfNotPresent"}


def test_an_approval_timeout_past_the_schedule_gap_is_refused_when_the_dag_loads_it(tmp_path):
    """The chart cannot compare a timeout with a cron schedule's gaps; settings.py does, at load time."""
    with pytest.raises(SettingsError, match="response_timeout_hours"):
        _settings_from({"pipeline": {"approval": {"responseTimeoutHours": 30}}}, tmp_path)
    manual = _settings_from({"pipeline": {"schedule": "", "approval": {"responseTimeoutHours": 30}}}, tmp_path)
    assert manual.approval.response_timeout_hours == 30


def test_network_policy_selects_the_pods_the_dag_builds(tmp_path):
    docs = documents(render(production_values()))
    settings = _settings_from(production_values(), tmp_path)
    manifest, _ = _train_pod(settings, "full")
    assert manifest["metadata"]["labels"]["app.kubernetes.io/name"] == APP_LABEL
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["namespace"] == "trainer")
    assert policy["metadata"]["namespace"] == manifest["metadata"]["namespace"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= manifest["metadata"]["labels"].items(), "the trainer NetworkPolicy must select trainer pods"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"trainer": {"extraEnv": [{"name": "MLFLOW_TRACKING_URI", "value": "http://x"}]}}, "set by the chart"),
        ({"trainer": {"secretEnv": [{"env": "MLFLOW_TRACKING_URI", "secret": "s", "key": "k"}]}}, "one place only"),
        ({"pipeline": {"defaults": {"profile": "nightly"}}}, "is not one of pipeline.profiles"),
        ({"trainer": {"cpuPool": {"name": "trainer_gpu", "slots": 8}}}, "must be different Airflow pools"),
        ({"trainer": {"gpuPool": {"name": "trainer_gpu", "slots": 1},
                      "placement": {"gpu": {"resources": {"cpu": "8", "memory": "32Gi", "gpu": 2}}}}},
         "would never be scheduled"),
        ({"pipeline": {"priority": {"gpu": 10, "cpu": 10}}}, "must be above pipeline.priority.cpu"),
        ({"pipeline": {"concurrency": {"maxSymbols": 1}}}, "more than pipeline.concurrency.maxSymbols"),
    ],
    ids=["extraEnv-shadows-chart-env", "secretEnv-shadows-plain-env", "unknown-default-profile",
         "one-pool-for-both", "gpu-pool-below-one-pod", "gpu-priority-not-above-cpu", "symbols-above-max"],
)
def test_contradictory_values_fail_at_render_time(values, message):
    with pytest.raises(helm_python.HelmError, match=message):
        render(values)


@pytest.mark.parametrize(
    "values",
    [
        {"trainer": {"runsRoot": "/local/path"}},
        {"trainer": {"placement": {"gpu": {"resources": {"cpu": "8", "memory": "32 GB", "gpu": 1}}}}},
        {"trainer": {"placement": {"gpu": {"tolerations": [{"key": "k", "operator": "Equal"}]}}}},
        {"trainer": {"placement": {"gpu": {"tolerations": [{"key": "k", "tolerationSeconds": 60}]}}}},
        {"trainer": {"secretEnv": [{"env": "X", "secret": "Not_A_Name", "key": "k"}]}},
        {"trainer": {"onFinishAction": "delete"}},
        {"pipeline": {"retries": {"count": 1}}},
        {"pipeline": {"profiles": {"Nightly": {"config": "a.yaml", "smoke": STEPS, "full": STEPS}}}},
        {"pipeline": {"profiles": {"demo": {"overrides": {"sac.buffer_size": {"nested": 1}}}}}},
        {"pipeline": {"profiles": {"demo": {"config": "../elsewhere.yaml"}}}},
        {"trainer": {"terminationGracePeriodSeconds": 10}},
        {"trainer": {"terminationGracePeriodSeconds": "300"}},
        {"trainer": {"imagePullSecrets": ["Reg_Cred"]}},
        {"trainer": {"imagePullSecrets": ["regcred", "regcred"]}},
        {"trainer": {"xcomSidecarImage": {"repository": "r/sh", "tag": "", "digest": ""}}},
        {"trainer": {"xcomSidecarImage": {"repository": "r/sh", "tag": "1", "pullPolicy": "Sometimes"}}},
        {"trainer": {"deferrableSteps": ["full_training"]}},
        {"trainer": {"gpuPool": {"name": "trainer_gpu", "slots": 0}}},
        {"trainer": {"cpuPool": {"name": "trainer cpu", "slots": 4}}},
        {"trainer": {"gpuPool": {"name": ""}}},
        {"trainer": {"placement": {"gpu": {"priorityClassName": "High_Priority"}}}},
        {"trainer": {"placement": {"cpu": {"scratchSize": "10 GB"}}}},
        {"pipeline": {"concurrency": {"maxActiveRuns": 0}}},
        {"pipeline": {"approval": {"responseTimeoutHours": 0}}},
        {"pipeline": {"priority": {"gpu": 0}}},
        {"pipeline": {"notifications": {"webhookUrl": "ftp://hooks.example.com/x"}}},
        {"pipeline": {"notifications": {"timeoutSeconds": 31}}},
    ],
    ids=["runs-root-not-s3", "memory-quantity", "equal-without-value", "toleration-seconds", "secret-name",
         "on-finish-action", "retries-below-two", "profile-name", "override-not-scalar", "config-path",
         "grace-below-30", "grace-not-integer", "pull-secret-name", "pull-secret-twice", "sidecar-no-tag-or-digest",
         "sidecar-pull-policy", "deferrable-unknown-step", "pool-no-slots", "pool-name", "pool-name-empty",
         "priority-class-name", "scratch-quantity", "max-active-runs", "approval-timeout", "priority-weight",
         "webhook-scheme", "webhook-timeout"],
)
def test_values_settings_py_would_refuse_fail_at_install_time(values):
    """What load_settings (or Kubernetes) would refuse at DAG parse time is refused by the schema first."""
    with pytest.raises(helm_python.HelmValuesError):
        render(values)


def test_a_grace_period_below_the_minimum_fails_lint():
    """`helm lint` (and install) refuses it: the schema's minimum is settings.py's ge=30."""
    report = helm_python.lint(str(CHART), {"trainer": {"terminationGracePeriodSeconds": 10}}, strict=True)
    assert report["errors"], report
    assert "terminationGracePeriodSeconds" in json.dumps(report)


def test_settings_loader_is_strict_so_the_chart_must_be_exact(tmp_path):
    """The check above can fail: an unknown key in the rendered file is refused by load_settings."""
    text = pipeline_text(documents(render())) + "extra_key: 1\n"
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    with pytest.raises(SettingsError, match="extra_key"):
        load_settings(path, env={})
