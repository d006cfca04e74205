"""MLflow's basic-auth app on the integration stack (`auth_stack`), as the chart deploys it: reaching
the Service is not enough to move `champion`, and the trainer's steps work signed in as its user."""

from __future__ import annotations

import json

import pytest
from integration_support import Stack, as_step

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def remote(auth_stack: Stack, tmp_path_factory):
    env = auth_stack.env(tmp_path_factory.mktemp("auth-state"))
    with as_step(env):
        yield env


def _set_alias(stack: Stack, name: str, version: int, credentials: tuple[str, str] | None) -> int:
    """POST the alias move straight to the REST API; the HTTP status."""
    import base64
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/json"}
    if credentials:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
    request = urllib.request.Request(
        f"{stack.mlflow.tracking_uri}/api/2.0/mlflow/registered-models/alias",
        data=json.dumps({"name": name, "alias": "champion", "version": str(version)}).encode(),
        headers=headers, method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_only_an_authorised_user_can_move_the_champion(auth_stack, remote, tmp_path):
    from integration_support import create_mlflow_user

    from trainer.registry import registry_client

    stack = auth_stack
    # The trainer user (from the step environment) creates the model, as a register pod would.
    client = registry_client()
    name = "hierarchical-options-AUTHA"
    client.create_registered_model(name)
    version = int(client.create_model_version(name, source="s3://mlflow-artifacts/authed/none").version)
    create_mlflow_user(stack.mlflow.tracking_uri, stack.mlflow.auth, "viewer", "viewer-password-123")
    assert _set_alias(stack, name, version, None) == 401
    assert _set_alias(stack, name, version, ("viewer", "viewer-password-123")) == 403
    assert "champion" not in stack.aliases(name)
    # The trainer user may: it created the model, so it manages it.
    assert _set_alias(stack, name, version, stack.credentials) == 200
    assert stack.aliases(name) == {"champion": version}
