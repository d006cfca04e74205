"""Render helm/hierarchical-options offline (Helm Go SDK) and check every document it produces."""

from __future__ import annotations

import copy
import json
import re

import helm_python
import kubernetes_validate
import pytest
import yaml
from chart_render import (
    CHART,
    K8S_VERSION,
    PRODUCTION_VALUES,
    REPO,
    documents,
    pipeline_configmap,
    pipeline_text,
    render,
)


def containers(spec: dict) -> list[dict]:
    """Init containers and containers of a pod spec."""
    return spec.get("initContainers", []) + spec["containers"]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def pod_specs(docs: list[dict]) -> list[tuple[str, dict]]:
    specs = []
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "Pod":
            specs.append((name, doc["spec"]))
        elif doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            specs.append((name, doc["spec"]["template"]["spec"]))
    return specs


@pytest.fixture(scope="module")
def production_values() -> dict:
    return yaml.safe_load(PRODUCTION_VALUES.read_text())


@pytest.fixture(scope="module")
def rendered_sets(production_values) -> dict[str, list[dict]]:
    everything_on = copy.deepcopy(production_values)
    everything_on["mlflow"]["artifacts"] = {
        "destination": "s3://bucket/p", "s3EndpointUrl": "http://seaweedfs.storage:8333", "existingSecret": ""}
    everything_on["trainer"]["s3EndpointUrl"] = "http://seaweedfs.storage:8333"
    everything_on["trainer"]["extraEnv"] = [{"name": "OMP_NUM_THREADS", "value": "4"}]
    everything_on["trainer"]["image"] = {"repository": "r/trainer", "tag": "1.10", "digest": "sha256:" + "b" * 64,
                                         "pullPolicy": "Always"}
    return {
        "default": documents(render()),
        "production-gpu": documents(render(production_values)),
        "all-features": documents(render(everything_on)),
    }


def test_chart_lints_without_errors_or_warnings():
    report = helm_python.lint(str(CHART), strict=True, kube_version=f"v{K8S_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


def test_production_values_lint_too():
    report = helm_python.lint(str(CHART), yaml.safe_load(PRODUCTION_VALUES.read_text()), strict=True)
    assert report["errors"] == [] and not [m for m in report["messages"] if m["severity"] >= 2], report


@pytest.mark.parametrize("values_set", ["default", "production-gpu", "all-features"])
def test_every_manifest_validates_strictly_against_kubernetes_1_30(rendered_sets, values_set):
    docs = rendered_sets[values_set]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ServiceAccount", "Namespace", "Role", "RoleBinding", "ConfigMap",
            "Job", "PodDisruptionBudget", "NetworkPolicy"} <= kinds
    assert "Pod" not in kinds, "trainer pods are built by the DAG from pipeline.yaml, not from a chart pod template"
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{values_set}: {doc['kind']}/{doc['metadata'].get('name')} is invalid: {err}")


def _policies(docs: list[dict]) -> dict[str, dict]:
    return {p["metadata"]["name"]: p for p in by_kind(docs, "NetworkPolicy")}


def _database_cidrs(policy: dict) -> list[str]:
    rules = [rule for rule in policy["spec"]["egress"] if {p["port"] for p in rule["ports"]} == {5432}]
    return [peer["ipBlock"]["cidr"] for rule in rules for peer in rule["to"]]


@pytest.mark.parametrize(("values_set", "database_cidrs"),
                         [("default", ["0.0.0.0/0"]), ("production-gpu", ["10.30.0.0/24"])])
def test_network_policies_render_by_default_and_in_production(rendered_sets, values_set, database_cidrs):
    docs = rendered_sets[values_set]
    policies = _policies(docs)
    assert sorted(policies) == ["hierarchical-options-mlflow", "hierarchical-options-mlflow-migrate",
                                "hierarchical-options-trainer"]
    trainer = policies["hierarchical-options-trainer"]
    assert trainer["metadata"]["namespace"] == "trainer" and trainer["spec"]["ingress"] == []
    ports = {port["port"] for rule in trainer["spec"]["egress"] for port in rule.get("ports", [])}
    assert ports == {53, 5000, 443, 5432}, "trainer egress must be DNS, MLflow, S3 and the lock database only"
    assert _database_cidrs(trainer) == database_cidrs, "the promotion lock's database egress"

    # Trainer pods reach the MLflow pods (the Deployment's pod labels) on the container port ...
    deployment = by_kind(docs, "Deployment")[0]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    (to_mlflow,) = [rule for rule in trainer["spec"]["egress"] if {p["port"] for p in rule["ports"]} == {5000}]
    (peer,) = to_mlflow["to"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "mlops"}
    assert peer["podSelector"]["matchLabels"].items() <= pod_labels.items()
    # ... and MLflow admits Airflow's and the trainers' namespaces on that port, nothing else.
    mlflow = policies["hierarchical-options-mlflow"]
    assert mlflow["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    (ingress,) = mlflow["spec"]["ingress"]
    assert [p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in ingress["from"]] == [
        "trainer", "airflow"]
    assert ingress["ports"] == [{"protocol": "TCP", "port": 5000}]
    assert _database_cidrs(mlflow) == database_cidrs, "MLflow reaches its backend and auth database"

    # The migration Job: selected by its own policy, DNS and the database only.
    job_labels = by_kind(docs, "Job")[0]["spec"]["template"]["metadata"]["labels"]
    migrate = policies["hierarchical-options-mlflow-migrate"]
    assert migrate["spec"]["podSelector"]["matchLabels"].items() <= job_labels.items()
    assert not mlflow["spec"]["podSelector"]["matchLabels"].items() <= job_labels.items()
    assert migrate["spec"]["ingress"] == []
    assert {p["port"] for rule in migrate["spec"]["egress"] for p in rule["ports"]} == {53, 5432}
    assert _database_cidrs(migrate) == database_cidrs


def test_network_policies_can_be_turned_off():
    assert not by_kind(documents(render({"networkPolicy": {"enabled": False}})), "NetworkPolicy")


def test_pipeline_configmap_holds_only_pipeline_yaml_in_airflows_namespace(rendered_sets):
    """The old TRAINER_K8S_* keys (read by nothing) are gone: one file, loaded by settings.py."""
    for docs in rendered_sets.values():
        text = pipeline_text(docs)
        assert "TRAINER_K8S_" not in text
        assert pipeline_configmap(docs)["metadata"]["namespace"] == "airflow"
    assert sorted(d["metadata"]["name"] for d in rendered_sets["default"] if d["kind"] == "ConfigMap") == [
        "hierarchical-options-mlflow-auth", "hierarchical-options-pipeline",
    ], "only the pipeline settings and MLflow's non-secret auth settings (the dead pod-template ConfigMap is gone)"


@pytest.mark.parametrize("values_set", ["default", "production-gpu", "all-features"])
def test_every_pod_runs_as_non_root(rendered_sets, values_set):
    specs = pod_specs(rendered_sets[values_set])
    # The MLflow Deployment and its migration Job (trainer pods: tests/helm/test_pipeline_settings.py).
    assert sorted(name for name, _ in specs) == ["Deployment/hierarchical-options-mlflow",
                                                 "Job/hierarchical-options-mlflow-migrate"]
    for name, spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True, f"{name}: runAsNonRoot missing"
        assert spec["securityContext"]["runAsUser"] > 0, name
        for container in containers(spec):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], name
            assert container["resources"].get("requests"), f"{name}: no resource requests"


@pytest.mark.parametrize(
    "values",
    [{"trainer": {"runAsUser": 0}}, {"trainer": {"runAsGroup": 0}}, {"mlflow": {"podSecurityContext": {"runAsNonRoot": False}}}],
    ids=["trainer-uid", "trainer-gid", "mlflow"],
)
def test_root_cannot_be_configured(values):
    with pytest.raises(helm_python.HelmError):
        render(values)


def test_rbac_is_explicit_and_exactly_what_the_pod_operator_needs(rendered_sets):
    docs = rendered_sets["default"]
    roles = [d for d in docs if d["kind"] in ("Role", "ClusterRole")]
    assert [r["kind"] for r in roles] == ["Role"], "only a namespaced Role, no ClusterRole"
    rules = roles[0]["rules"]
    for rule in rules:
        for field in ("verbs", "resources", "apiGroups"):
            assert "*" not in rule[field], f"wildcard in {field}: {rule}"
    granted = {(res, verb) for rule in rules for res in rule["resources"] for verb in rule["verbs"]}
    assert granted == {
        ("pods", v) for v in ("create", "get", "list", "watch", "patch", "delete")
    } | {("pods/log", "get"), ("events", "list"), ("events", "watch"), ("pods/exec", "create"), ("pods/exec", "get")}
    binding = next(d for d in docs if d["kind"] == "RoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "airflow-worker", "namespace": "airflow"},
        # The training steps' operator runs deferrable: the triggerer watches their pods and logs.
        {"kind": "ServiceAccount", "name": "airflow-triggerer", "namespace": "airflow"},
    ]
    no_exec = documents(render({"rbac": {"create": True, "allowPodExec": False}}))
    no_exec_rules = next(d for d in no_exec if d["kind"] == "Role")["rules"]
    assert not [r for r in no_exec_rules if "pods/exec" in r["resources"]]


SENTINEL = "S3NT1NEL-do-not-render-7f3a"


@pytest.mark.parametrize(
    "inline_secret",
    [
        {"mlflow": {"backendStore": {"existingSecret": "db", "uriKey": "uri", "uri": f"postgresql://u:{SENTINEL}@db/mlflow"}}},
        {"mlflow": {"artifacts": {"destination": "s3://bucket/p", "secretAccessKey": SENTINEL}}},
        {"mlflow": {"password": SENTINEL}},
        {"mlflow": {"auth": {"adminPassword": SENTINEL}}},
        {"mlflow": {"auth": {"existingSecret": "mlflow-auth", "flaskSecretKey": SENTINEL}}},
        {"mlflow": {"auth": {"database": {"existingSecret": "auth-db", "uriKey": "uri",
                                          "uri": f"postgresql://u:{SENTINEL}@db/auth"}}}},
        {"mlflow": {"migration": {"env": [{"name": "MLFLOW_BACKEND_STORE_URI", "value": SENTINEL}]}}},
        {"trainer": {"extraEnv": [{"name": "MLFLOW_TRACKING_TOKEN", "value": SENTINEL}]}},
        {"trainer": {"extraEnv": [{"name": "AWS_SECRET_ACCESS_KEY", "value": SENTINEL}]}},
        {"trainer": {"extraEnv": [{"name": "MLFLOW_TRACKING_PASSWORD", "value": SENTINEL}]}},
        {"trainer": {"env": [{"name": "AWS_ACCESS_KEY_ID", "value": SENTINEL}]}},
        {"trainer": {"secretEnv": [{"env": "AWS_SECRET_ACCESS_KEY", "secret": "s3", "key": "k", "value": SENTINEL}]}},
        {"trainer": {"secretEnv": [{"env": "AWS_SECRET_ACCESS_KEY", "secret": SENTINEL.lower(), "key": SENTINEL,
                                    "valueFrom": SENTINEL}]}},
        {"pipeline": {"password": SENTINEL}},
        {"global": {"secrets": {"s3": SENTINEL}}},
    ],
    ids=["backend-uri", "s3-secret-key", "mlflow-password", "auth-admin-password", "auth-flask-secret-key",
         "auth-database-uri", "migration-env", "extraEnv-mlflow-token",
         "extraEnv-secret-key", "extraEnv-password", "trainer-env",
         "secretEnv-value", "secretEnv-valueFrom", "pipeline-password", "global"],
)
def test_secret_values_are_refused_and_never_rendered(inline_secret):
    """The chart takes secrets by reference only: an inline value fails schema validation, so it cannot leak."""
    with pytest.raises(helm_python.HelmError) as err:
        render(inline_secret)
    assert SENTINEL not in str(err.value), "the error message itself must not echo the secret"


def test_only_secret_references_reach_the_manifests(rendered_sets):
    names = {"backend": "sentinel-backend-secret", "s3": "sentinel-s3-secret", "trainer": "sentinel-trainer-secret",
             "auth": "sentinel-auth-secret", "auth-db": "sentinel-auth-db-secret"}
    values = {
        "mlflow": {"backendStore": {"existingSecret": names["backend"], "uriKey": "uri"},
                   "artifacts": {"destination": "s3://bucket/p", "existingSecret": names["s3"]},
                   "auth": {"existingSecret": names["auth"], "database": {"existingSecret": names["auth-db"],
                                                                          "uriKey": "auth-uri"}}},
        "trainer": {"secretEnv": [{"env": "AWS_SECRET_ACCESS_KEY", "secret": names["trainer"], "key": "secret_access_key"}]},
    }
    rendered = render(values)
    text = "\n".join(rendered.values())
    docs = documents(rendered)
    assert not [d for d in docs if d["kind"] == "Secret"], "the chart must not create Secrets"
    assert SENTINEL not in text
    mlflow = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in mlflow["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {"name": names["backend"], "key": "uri"}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"]["name"] == names["s3"] and "value" not in env[key]
    assert not [a for a in mlflow["args"] if a.startswith("--backend-store-uri")], "the URI must not be an argument"
    for var, key in (("MLFLOW_AUTH_ADMIN_USERNAME", "admin-username"), ("MLFLOW_AUTH_ADMIN_PASSWORD", "admin-password"),
                     ("MLFLOW_FLASK_SERVER_SECRET_KEY", "flask-secret-key")):
        assert env[var]["valueFrom"]["secretKeyRef"] == {"name": names["auth"], "key": key} and "value" not in env[var]
    auth_db = {"name": names["auth-db"], "key": "auth-uri"}
    (init,) = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["initContainers"]
    assert env_of(init)["MLFLOW_AUTH_DATABASE_URI"]["valueFrom"]["secretKeyRef"] == auth_db
    (migrate,) = by_kind(docs, "Job")[0]["spec"]["template"]["spec"]["containers"]
    assert env_of(migrate)["MLFLOW_AUTH_DATABASE_URI"]["valueFrom"]["secretKeyRef"] == auth_db
    assert env_of(migrate)["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {"name": names["backend"],
                                                                                        "key": "uri"}
    for config_map in by_kind(docs, "ConfigMap"):
        assert not [k for k in yaml.safe_dump(config_map["data"]).split() if "database_uri" in k or "password" in k], (
            f"ConfigMap/{config_map['metadata']['name']} must hold no credential settings")
    settings = yaml.safe_load(pipeline_text(docs))["kubernetes"]
    assert settings["secret_env"] == [{"env": "AWS_SECRET_ACCESS_KEY", "secret": names["trainer"], "key": "secret_access_key"}]
    assert not [name for name in settings["env"] if re.search(r"(SECRET|PASSWORD|TOKEN|ACCESS_KEY|STORE_URI)", name)]
    # Every secret-looking variable in every rendered object comes from a Secret reference.
    for name, spec in pod_specs(docs):
        for container in containers(spec):
            for var in container.get("env", []):
                if re.search(r"(SECRET|PASSWORD|USERNAME|TOKEN|ACCESS_KEY|_URI$)", var["name"]):
                    assert "secretKeyRef" in var.get("valueFrom", {}), f"{name}: {var['name']} is not a secret reference"


def test_mlflow_server_contract(rendered_sets):
    docs = rendered_sets["all-features"]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "server"
    assert "--artifacts-destination=s3://bucket/p" in container["args"]
    hosts = next(a for a in container["args"] if a.startswith("--allowed-hosts="))
    assert "hierarchical-options-mlflow.mlops.svc.cluster.local:*" in hosts
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == "http://seaweedfs.storage:8333"
    assert "AWS_ACCESS_KEY_ID" not in env, "no S3 Secret configured: the pod identity is used"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    default_env = {e["name"] for e in next(d for d in rendered_sets["default"] if d["kind"] == "Deployment")
                   ["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "MLFLOW_S3_ENDPOINT_URL" not in default_env, "the S3 endpoint is optional"


def _mlflow_pod(docs: list[dict]) -> dict:
    (deployment,) = by_kind(docs, "Deployment")
    return deployment["spec"]["template"]


@pytest.mark.parametrize("values_set", ["default", "production-gpu", "all-features"])
def test_mlflow_runs_the_basic_auth_app_with_credentials_from_a_secret(rendered_sets, values_set):
    docs = rendered_sets[values_set]
    pod = _mlflow_pod(docs)
    (server,) = pod["spec"]["containers"]
    assert "--app-name=basic-auth" in server["args"]
    env = env_of(server)
    for var, key in (("MLFLOW_AUTH_ADMIN_USERNAME", "admin-username"), ("MLFLOW_AUTH_ADMIN_PASSWORD", "admin-password"),
                     ("MLFLOW_FLASK_SERVER_SECRET_KEY", "flask-secret-key")):
        assert env[var]["valueFrom"] == {"secretKeyRef": {"name": "mlflow-auth", "key": key}}, var
    # The auth config file: written by the init container (database_uri from the Secret) into an
    # in-memory volume that the server mounts read-only at MLFLOW_AUTH_CONFIG_PATH.
    config_path = env["MLFLOW_AUTH_CONFIG_PATH"]["value"]
    assert config_path == "/etc/mlflow/auth/basic_auth.ini"
    (init,) = pod["spec"]["initContainers"]
    assert env_of(init)["MLFLOW_AUTH_DATABASE_URI"]["valueFrom"] == {
        "secretKeyRef": {"name": "mlflow-backend-store", "key": "uri"}}, "default: the backend store's database"
    assert config_path in init["args"][0] and "database_uri" in init["args"][0]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["auth-config"]["emptyDir"]["medium"] == "Memory"
    mounts = {m["name"]: m for m in server["volumeMounts"]}
    assert mounts["auth-config"] == {"name": "auth-config", "mountPath": "/etc/mlflow/auth", "readOnly": True}
    assert {m["name"]: m["mountPath"] for m in init["volumeMounts"]}["auth-config"] == "/etc/mlflow/auth"
    settings = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == volumes["auth-settings"][
        "configMap"]["name"])["data"]["basic_auth.ini"]
    assert "default_permission = READ" in settings
    assert not re.search(r"(database_uri|admin_password|admin_username)", settings)
    assert pod["metadata"]["annotations"]["checksum/auth-config"]


def test_the_auth_database_may_have_its_own_secret_and_auth_may_be_turned_off():
    docs = documents(render({"mlflow": {"auth": {"database": {"existingSecret": "mlflow-auth-db", "uriKey": "dsn"}}}}))
    (init,) = _mlflow_pod(docs)["spec"]["initContainers"]
    (migrate,) = by_kind(docs, "Job")[0]["spec"]["template"]["spec"]["containers"]
    for container in (init, migrate):
        assert env_of(container)["MLFLOW_AUTH_DATABASE_URI"]["valueFrom"]["secretKeyRef"] == {
            "name": "mlflow-auth-db", "key": "dsn"}, container["name"]

    off = documents(render({"mlflow": {"auth": {"enabled": False}}}))
    pod = _mlflow_pod(off)
    assert "initContainers" not in pod["spec"] and not [a for a in pod["spec"]["containers"][0]["args"]
                                                        if a.startswith("--app-name")]
    assert not [d for d in by_kind(off, "ConfigMap") if d["metadata"]["name"].endswith("-auth")]
    (migrate,) = by_kind(off, "Job")[0]["spec"]["template"]["spec"]["containers"]
    assert "mlflow.server.auth" not in migrate["args"][0] and "MLFLOW_AUTH_DATABASE_URI" not in env_of(migrate)


@pytest.mark.parametrize("values_set", ["default", "production-gpu", "all-features"])
def test_schema_migration_job_is_a_pre_install_pre_upgrade_hook(rendered_sets, values_set):
    docs = rendered_sets[values_set]
    (job,) = by_kind(docs, "Job")
    hooks = job["metadata"]["annotations"]
    assert set(hooks["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert "before-hook-creation" in hooks["helm.sh/hook-delete-policy"].split(",")
    spec = job["spec"]
    assert spec["backoffLimit"] == 2 and spec["activeDeadlineSeconds"] == 900
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (migrate,) = pod["containers"]
    assert migrate["image"] == _mlflow_pod(docs)["spec"]["containers"][0]["image"], "the server's image"
    script = migrate["args"][0]
    assert 'mlflow db upgrade "$MLFLOW_BACKEND_STORE_URI"' in script
    assert 'python -m mlflow.server.auth db upgrade --url "$MLFLOW_AUTH_DATABASE_URI"' in script
    assert script.index("mlflow db upgrade") < script.index("mlflow.server.auth")
    env = env_of(migrate)
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"] == {
        "secretKeyRef": {"name": "mlflow-backend-store", "key": "uri"}}
    assert "postgresql://" not in json.dumps(job), "no URI is inlined"
    assert migrate["resources"]["requests"] and migrate["securityContext"]["readOnlyRootFilesystem"] is True
    # Its service account exists before the Job does: a hook with a lower weight (nothing else of the
    # release exists at pre-install).
    account = next(d for d in by_kind(docs, "ServiceAccount") if d["metadata"]["name"] == pod["serviceAccountName"])
    assert account["metadata"]["annotations"]["helm.sh/hook"] == hooks["helm.sh/hook"]
    assert int(account["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(hooks["helm.sh/hook-weight"])
    assert account["automountServiceAccountToken"] is False and pod["automountServiceAccountToken"] is False
    assert not by_kind(documents(render({"mlflow": {"migration": {"enabled": False}}})), "Job")


@pytest.mark.parametrize("values_set", ["default", "production-gpu"])
def test_pod_disruption_budget_selects_the_mlflow_pods(rendered_sets, values_set):
    docs = rendered_sets[values_set]
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selector.items() <= _mlflow_pod(docs)["metadata"]["labels"].items()
    assert not selector.items() <= by_kind(docs, "Job")[0]["spec"]["template"]["metadata"]["labels"].items()
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": pdb["spec"]["selector"]}, (
        "maxUnavailable 1: a drain never hangs on a single replica; with two, one keeps serving")
    replicas = by_kind(docs, "Deployment")[0]["spec"]["replicas"]
    assert replicas == {"default": 1, "production-gpu": 2}[values_set]
    percent = by_kind(documents(render({"mlflow": {"podDisruptionBudget": {"enabled": True, "maxUnavailable": "50%"}}})),
                      "PodDisruptionBudget")[0]
    kubernetes_validate.validate(percent, K8S_VERSION, strict=True)
    assert percent["spec"]["maxUnavailable"] == "50%"
    assert not by_kind(documents(render({"mlflow": {"podDisruptionBudget": {"enabled": False,
                                                                            "maxUnavailable": 1}}})),
                       "PodDisruptionBudget")


@pytest.mark.parametrize("max_unavailable", [0, "0%", -1, "half"])
def test_a_budget_that_blocks_every_drain_is_refused(max_unavailable):
    with pytest.raises(helm_python.HelmValuesError):
        render({"mlflow": {"podDisruptionBudget": {"enabled": True, "maxUnavailable": max_unavailable}}})


def _notes(values: dict | None = None) -> str:
    return next(text for path, text in render(values).items() if path.endswith("NOTES.txt"))


def test_notes_print_the_commands_that_create_the_airflow_pools():
    """Nothing creates Airflow's pools (they live in its database): NOTES.txt prints the exact commands,
    rendered from trainer.gpuPool / trainer.cpuPool."""
    notes = _notes()
    assert 'airflow pools set trainer_gpu 1 "' in notes
    assert 'airflow pools set trainer_cpu 32 "' in notes
    custom = _notes({"trainer": {"gpuPool": {"name": "gpus.a100", "slots": 4}, "cpuPool": None}})
    assert 'airflow pools set gpus.a100 4 "' in custom and "trainer_cpu" not in custom
    assert "airflow pools set" not in _notes({"trainer": {"gpuPool": None, "cpuPool": None}})


@pytest.mark.parametrize(
    "values",
    [
        {"unknownTopLevel": True},
        {"mlflow": {"replica": 2}},
        {"trainer": {"placement": {"gpu": {"resources": {"cpu": "8", "memory": "32Gi", "gpus": 2}}}}},
        {"pipeline": {"profiles": {"production": {"smoke": {"totalTimestep": 5}}}}},
        {"networkPolicy": {"s3": {"cidr": ["10.0.0.0/8"]}}},
        {"rbac": {"allowPodExecc": False}},
        {"trainer": {"gpuPool": {"name": "trainer_gpu", "slots": 1, "size": 2}}},
        {"trainer": {"xcomSidecarImage": {"repository": "r/sh", "tag": "1", "pull_policy": "Always"}}},
        {"pipeline": {"concurrency": {"max_symbols": 10}}},
        {"pipeline": {"notifications": {"webhook": "https://hooks.example.com/x"}}},
    ],
    ids=["top-level", "mlflow", "trainer.placement.gpu", "pipeline.profiles", "networkPolicy.s3", "rbac",
         "trainer.gpuPool", "trainer.xcomSidecarImage", "pipeline.concurrency", "pipeline.notifications"],
)
def test_unknown_keys_fail_schema_validation(values):
    with pytest.raises(helm_python.HelmValuesError, match="additional propert"):
        render(values)


def test_schema_forbids_additional_properties_everywhere():
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    open_objects = []

    def walk(node, path):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and node.get("additionalProperties") is not False:
                open_objects.append(path)
            for key, child in node.items():
                walk(child, f"{path}/{key}")
        elif isinstance(node, list):
            for i, child in enumerate(node):
                walk(child, f"{path}/{i}")

    walk(schema, "#")
    assert open_objects == []


def test_every_values_key_has_a_comment_above_it():
    """House style: every key in values.yaml is documented by a comment line right above it,
    except the entries of free-form maps (requests/limits/labels) and list items."""
    free_form_parents = {"requests", "limits", "labels", "namespaceLabels", "podLabels"}
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    undocumented = []
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z0-9_.\-/]+):", line)
        if not match or line.lstrip().startswith("#"):
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1] if stack else ""
        stack.append((indent, key))
        previous = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        if parent in free_form_parents or previous.startswith("- "):
            continue
        if not previous.startswith("#"):
            undocumented.append(f"line {i + 1}: {key}")
    assert undocumented == []


def test_values_files_keep_secrets_out():
    """No secret-looking key holds a value. In a mapping that names an existingSecret, the *Key fields name
    keys inside that Secret (mlflow.auth.adminPasswordKey: admin-password) and are references, not values."""
    for path in (CHART / "values.yaml", PRODUCTION_VALUES, REPO / "helm" / "airflow-values.yaml"):
        data = yaml.safe_load(path.read_text())

        def walk(node, where):
            if isinstance(node, dict):
                for key, value in node.items():
                    if "existingSecret" in node and str(key).endswith("Key"):
                        assert re.fullmatch(r"[-._a-zA-Z0-9]+", str(value)), f"{path.name}: {where}.{key}"
                    elif re.search(r"(?i)(password|secretkey$|token|^pass$|fernetkey$|^jwtsecret$|^apisecretkey$)", str(key)):
                        assert value in (None, ""), f"{path.name}: {where}.{key} holds a secret value"
                    walk(value, f"{where}.{key}")
            elif isinstance(node, list):
                for item in node:
                    walk(item, where)

        walk(data, path.stem)
