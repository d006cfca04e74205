"""Render helm/hierarchical-options offline (Helm's Go SDK) and pick documents out of the result.

Shared by the chart tests; not a test module itself.
"""

from __future__ import annotations

from pathlib import Path

import helm_python
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "hierarchical-options"
PRODUCTION_VALUES = REPO / "helm" / "values-production-gpu.yaml"
AIRFLOW_VALUES = REPO / "helm" / "airflow-values.yaml"
RELEASE, NAMESPACE = "hierarchical-options", "mlops"
K8S_VERSION = "1.30.0"
PIPELINE_KEY = "pipeline.yaml"


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (Kubernetes would keep only the last one)."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        duplicates = {k for k in keys if keys.count(k) > 1}
        if duplicates:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate keys {sorted(duplicates)}", node.start_mark)
        return super().construct_mapping(node, deep)


def render(values: dict | None = None) -> dict[str, str]:
    return helm_python.Chart.load(str(CHART)).render(values or {}, name=RELEASE, namespace=NAMESPACE)


def documents(rendered: dict[str, str]) -> list[dict]:
    """Every Kubernetes object, multi-document files split."""
    docs = []
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.load_all(text, Loader=UniqueKeyLoader):
            if doc:
                docs.append(doc)
    return docs


def production_values() -> dict:
    return yaml.safe_load(PRODUCTION_VALUES.read_text())


def pipeline_configmap(docs: list[dict]) -> dict:
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == f"{RELEASE}-pipeline"]
    return config_map


def pipeline_text(docs: list[dict]) -> str:
    """The pipeline.yaml the chart renders (the only key of the pipeline ConfigMap)."""
    data = pipeline_configmap(docs)["data"]
    assert list(data) == [PIPELINE_KEY], f"the pipeline ConfigMap must hold only {PIPELINE_KEY}, got {sorted(data)}"
    yaml.load(data[PIPELINE_KEY], Loader=UniqueKeyLoader)  # no duplicate keys
    return data[PIPELINE_KEY]
