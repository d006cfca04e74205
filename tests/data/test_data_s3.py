"""Loading from a real S3 server (SeaweedFS on loopback, the session fixture `s3_server`)."""

from __future__ import annotations

import socket

import pytest

from support.seaweedfs import S3Server
from trainer.data.loaders import bundled_path, data_digest, load_ohlcv
from trainer.errors import DataError

BUCKET = "market-data"


@pytest.fixture(scope="module")
def uploaded(s3_server: S3Server) -> str:
    client = s3_server.client()
    if BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=BUCKET)
    client.upload_file(str(bundled_path("SPY")), BUCKET, "daily/SPY.csv")
    return f"s3://{BUCKET}/daily/SPY.csv"


@pytest.fixture
def aws_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for key, value in s3_server.env_vars().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return s3_server


def test_s3_object_loads_like_the_local_file(aws_env: S3Server, uploaded: str) -> None:
    remote = load_ohlcv(uploaded)
    local = load_ohlcv(bundled_path("SPY"))
    assert data_digest(remote) == data_digest(local)
    assert remote.equals(local)


def test_validate_command_reads_s3(aws_env: S3Server, uploaded: str, run_validate) -> None:
    run = run_validate("--symbol", "SPY", "--data", uploaded)
    assert run.code == 0, run.output
    assert run.result["source"] == uploaded
    assert run.result["data_digest"] == data_digest(load_ohlcv(bundled_path("SPY")))


def test_wrong_secret_is_refused(aws_env: S3Server, uploaded: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(DataError, match="SignatureDoesNotMatch: the secret key is wrong") as caught:
        load_ohlcv(uploaded)
    assert uploaded in str(caught.value)


def test_unknown_access_key_is_refused(aws_env: S3Server, uploaded: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    with pytest.raises(DataError, match="InvalidAccessKeyId: the access key is not known"):
        load_ohlcv(uploaded)


def test_missing_key_and_bucket(aws_env: S3Server, uploaded: str) -> None:
    with pytest.raises(DataError, match=rf"s3://{BUCKET}/daily/NOPE.csv: S3 error NoSuchKey: no object 'daily/NOPE.csv'"):
        load_ohlcv(f"s3://{BUCKET}/daily/NOPE.csv")
    with pytest.raises(DataError, match="NoSuchBucket: bucket 'no-such-bucket' does not exist"):
        load_ohlcv("s3://no-such-bucket/SPY.csv")


def test_unreachable_endpoint(aws_env: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(DataError, match="cannot reach the S3 endpoint"):
        load_ohlcv(f"s3://{BUCKET}/SPY.csv")


def test_missing_credentials(aws_env: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(DataError, match="no AWS credentials found"):
        load_ohlcv(f"s3://{BUCKET}/SPY.csv")


def test_signals_file_loads_from_s3(aws_env: S3Server, tmp_path) -> None:
    import numpy as np
    import pandas as pd

    from trainer.data.signals import load_signals

    bars = load_ohlcv(bundled_path("SPY")).index[:300]
    table = pd.DataFrame({"Date": bars.strftime("%Y-%m-%d"), "Sentiment": np.linspace(0, 1, len(bars))})
    path = tmp_path / "signals.csv"
    table.to_csv(path, index=False)
    client = aws_env.client()
    if BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=BUCKET)
    client.upload_file(str(path), BUCKET, "signals/SPY.csv")
    frame, info = load_signals(f"s3://{BUCKET}/signals/SPY.csv")
    local, _ = load_signals(str(path))
    assert frame.equals(local) and list(frame.columns) == ["sentiment"]
    assert info["uri"] == f"s3://{BUCKET}/signals/SPY.csv" and info["suite"] == "signals_v1"
    with pytest.raises(DataError, match="NoSuchKey"):
        load_signals(f"s3://{BUCKET}/signals/NOPE.csv")
