"""helm/airflow-values.yaml: the values for the official Apache Airflow chart, checked against this repo's chart."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path, PurePosixPath

import helm_python
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_VALUES = REPO / "helm" / "airflow-values.yaml"
CHART = REPO / "helm" / "hierarchical-options"


@pytest.fixture(scope="module")
def values() -> dict:
    data = yaml.safe_load(AIRFLOW_VALUES.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def our_objects() -> dict[str, dict]:
    rendered = helm_python.Chart.load(str(CHART)).render({}, name="hierarchical-options", namespace="mlops")
    objects = {}
    for path, text in rendered.items():
        if not path.endswith("NOTES.txt"):
            for doc in yaml.safe_load_all(text):
                if doc:
                    objects[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return objects


def test_executor_image_and_backend(values):
    assert values["executor"] == "KubernetesExecutor"
    assert values["airflowVersion"] == "3.3.2"
    assert values["images"]["airflow"]["repository"].endswith("/hierarchical-options-airflow")
    assert values["defaultAirflowRepository"] == values["images"]["airflow"]["repository"]
    assert {"name": "TRAINER_BACKEND", "value": "kubernetes"} in values["env"]
    assert values["dags"]["gitSync"]["enabled"] is False and values["dags"]["persistence"]["enabled"] is False


def test_connections_come_from_references(values):
    env_from = yaml.safe_load(values["extraEnvFrom"])
    assert [e["secretRef"]["name"] for e in env_from if "secretRef" in e] == ["airflow-connections"]
    assert not [e for e in env_from if "configMapRef" in e], "pipeline settings arrive as a mounted file, not as env"
    for key in ("fernetKeySecretName", "apiSecretKeySecretName", "jwtSecretName"):
        assert values[key], f"{key} must name an existing Secret"
    assert values["data"]["metadataSecretName"]
    assert values["postgresql"]["enabled"] is False


def test_every_airflow_container_mounts_the_pipeline_file_the_env_names(values, our_objects, tmp_path):
    """TRAINER_PIPELINE_CONFIG points at pipeline.yaml inside the mounted ConfigMap of our chart, and that file loads."""
    from trainer.orchestration.settings import load_settings

    env = {e["name"]: e["value"] for e in values["env"]}
    assert env["TRAINER_BACKEND"] == "kubernetes"
    config_path = PurePosixPath(env["TRAINER_PIPELINE_CONFIG"])
    # Top-level volumes/volumeMounts reach every Airflow container, the KubernetesExecutor pod template included.
    mount = next(m for m in values["volumeMounts"] if m["mountPath"] == str(config_path.parent))
    assert mount.get("readOnly") is True and "subPath" not in mount, "a directory mount follows ConfigMap updates"
    volume = next(v for v in values["volumes"] if v["name"] == mount["name"])
    config_map = our_objects[f"ConfigMap/{volume['configMap']['name']}"]
    assert config_map["metadata"]["namespace"] == "airflow"
    assert list(config_map["data"]) == [config_path.name]
    local = tmp_path / config_path.name
    local.write_text(config_map["data"][config_path.name])
    settings = load_settings(env={"TRAINER_PIPELINE_CONFIG": str(local), "TRAINER_BACKEND": env["TRAINER_BACKEND"]})
    assert settings.backend == "kubernetes" and settings.kubernetes is not None
    assert not [v for v in values["workers"].get("extraVolumes", []) if "trainer-pod-template" in str(v)]


def test_workers_use_the_bound_service_account(values, our_objects):
    binding = our_objects["RoleBinding/hierarchical-options-pod-launcher"]
    subject = {"kind": "ServiceAccount", "name": values["workers"]["serviceAccount"]["name"], "namespace": "airflow"}
    assert subject in binding["subjects"]


def test_the_triggerer_uses_a_bound_service_account_for_deferrable_pods(values, our_objects):
    """The training steps' KubernetesPodOperator defers (pipeline.yaml kubernetes.deferrable_steps): the
    triggerer then reads their pods and logs in the trainer namespace, so its service account is bound too."""
    assert values["triggerer"]["enabled"] is True
    assert values["triggerer"]["serviceAccount"] == {"create": True, "name": "airflow-triggerer"}
    pipeline = yaml.safe_load(our_objects["ConfigMap/hierarchical-options-pipeline"]["data"]["pipeline.yaml"])
    assert pipeline["kubernetes"]["deferrable_steps"], "the default DAG defers its training steps"
    binding = our_objects["RoleBinding/hierarchical-options-pod-launcher"]
    subject = {"kind": "ServiceAccount", "name": values["triggerer"]["serviceAccount"]["name"], "namespace": "airflow"}
    assert subject in binding["subjects"]


def _official_schema() -> dict | None:
    """The official chart's values.schema.json, from AIRFLOW_CHART_SCHEMA (a values.schema.json, the
    unpacked chart directory, or the chart .tgz from `helm pull apache-airflow/airflow`)."""
    location = os.environ.get("AIRFLOW_CHART_SCHEMA")
    if not location:
        return None
    path = Path(location)
    if path.is_dir():
        path = path / "values.schema.json"
    if path.suffix == ".tgz":
        with tarfile.open(path) as archive:
            member = next(m for m in archive.getmembers() if m.name.endswith("/values.schema.json"))
            return json.load(archive.extractfile(member))
    return json.loads(path.read_text())


def _resolve(schema: dict, root: dict) -> dict:
    while isinstance(schema, dict) and "$ref" in schema and "properties" not in schema:
        target = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        schema = target
    return schema


def _missing_keys(node, schema: dict, root: dict, where: str) -> list[str]:
    schema = _resolve(schema, root)
    if not isinstance(node, dict) or not isinstance(schema, dict) or "properties" not in schema:
        return []  # free-form (config sections, Kubernetes objects): nothing to check by key
    missing = []
    for key, value in node.items():
        if key in schema["properties"]:
            missing += _missing_keys(value, schema["properties"][key], root, f"{where}.{key}")
        elif schema.get("additionalProperties", True) is False:
            missing.append(f"{where}.{key}")
    return missing


def test_keys_exist_in_the_official_chart(values):
    schema = _official_schema()
    if schema is None:
        pytest.skip(
            "set AIRFLOW_CHART_SCHEMA to the official chart's values.schema.json (or chart dir / .tgz) "
            "to check every key; it is not vendored in this repository"
        )
    assert _missing_keys(values, schema, schema, "values") == []


def test_key_walker_flags_a_typo_and_follows_refs():
    """The official-schema check itself can fail: a misspelt key under a closed object is reported."""
    schema = {
        "definitions": {"sa": {"type": "object", "additionalProperties": False, "properties": {"name": {"type": "string"}}}},
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "workers": {"type": "object", "additionalProperties": False,
                        "properties": {"serviceAccount": {"$ref": "#/definitions/sa"}}},
            "config": {"type": "object"},
        },
    }
    good = {"workers": {"serviceAccount": {"name": "a"}}, "config": {"core": {"anything": 1}}}
    assert _missing_keys(good, schema, schema, "values") == []
    bad = {"workers": {"serviceAcount": {}}, "executr": "x", "config": {}}
    bad2 = {"workers": {"serviceAccount": {"nmae": "a"}}}
    assert _missing_keys(bad, schema, schema, "values") == ["values.workers.serviceAcount", "values.executr"]
    assert _missing_keys(bad2, schema, schema, "values") == ["values.workers.serviceAccount.nmae"]
