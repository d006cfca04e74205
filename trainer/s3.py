"""S3 access shared by the data loader and run storage: one client setup, one error vocabulary.

boto3 reads AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL itself (the latter for
S3-compatible servers such as SeaweedFS or MinIO).
"""

from __future__ import annotations

import contextlib
import re
from typing import Iterator

from trainer.errors import TrainerError

_URI = re.compile(r"s3://([^/]+)/?(.*)")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key-or-prefix) of s3://bucket/key."""
    match = _URI.fullmatch(uri)
    if not match:
        from trainer.errors import DataError

        raise DataError(f"{uri}: expected s3://bucket/key")
    return match.group(1), match.group(2)


def s3_client():
    """A client on a fresh boto3 Session: the default session caches the credentials it saw
    first, so a corrected key in the environment would otherwise be ignored."""
    import boto3
    from botocore.config import Config

    # Path-style addressing: S3-compatible servers do not serve bucket subdomains. Few retries and
    # short timeouts: a wrong endpoint or a stopped server fails in seconds, not minutes.
    config = Config(
        s3={"addressing_style": "path"},
        retries={"max_attempts": 2, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
    )
    return boto3.session.Session().client("s3", config=config)


def _hint(code: str, bucket: str, key: str, message: str) -> str:
    hints = {
        "NoSuchKey": f"no object {key!r} in bucket {bucket!r}",
        "NoSuchBucket": f"bucket {bucket!r} does not exist",
        "InvalidAccessKeyId": "the access key is not known to the server (check AWS_ACCESS_KEY_ID)",
        "SignatureDoesNotMatch": "the secret key is wrong (check AWS_SECRET_ACCESS_KEY)",
        "AccessDenied": f"access denied to s3://{bucket}/{key} for these credentials",
        "404": f"no object {key!r} in bucket {bucket!r}",
        "403": "access denied (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)",
    }
    return hints.get(code, message)


@contextlib.contextmanager
def s3_errors(uri: str, error: type[TrainerError] = TrainerError) -> Iterator[None]:
    """Turn boto3/botocore failures inside the block into one `error` naming `uri` and the fix."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

    bucket, key = parse_s3_uri(uri) if uri.startswith("s3://") else ("?", uri)
    try:
        try:
            yield
        except S3UploadFailedError as exc:
            # upload_file wraps the server's ClientError (wrong key, no bucket) in its own error.
            if isinstance(exc.__context__, ClientError):
                raise exc.__context__ from None
            raise error(f"{uri}: S3 upload failed: {exc}") from None
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        message = exc.response.get("Error", {}).get("Message", "") or str(exc)
        raise error(f"{uri}: S3 error {code or 'unknown'}: {_hint(code, bucket, key, message)}") from None
    except NoCredentialsError:
        raise error(
            f"{uri}: no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(and AWS_ENDPOINT_URL for an S3-compatible server)"
        ) from None
    except EndpointConnectionError as exc:
        raise error(
            f"{uri}: cannot reach the S3 endpoint {exc.kwargs.get('endpoint_url', '')} "
            "(check AWS_ENDPOINT_URL and that the server is running)"
        ) from None
    except BotoCoreError as exc:
        raise error(f"{uri}: S3 request failed: {exc}") from None
