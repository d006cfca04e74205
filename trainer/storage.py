"""Where a run directory lives: a local folder, or an s3:// prefix mirrored by a local staging copy.

Training always writes locally (atomic renames need a filesystem); with an s3:// output the
staging folder is pushed after every checkpoint and at the end, and `--resume` first pulls the
remote summary and newest complete checkpoint, so a retried pod continues where the last one
stopped. Objects are uploaded marker-last: a checkpoint's COMPLETE object appears only after all
of its files.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from trainer.run_dir import CHECKPOINT_DIR, MODEL_DIR, SUMMARY_FILE
from trainer.s3 import parse_s3_uri, s3_client, s3_errors
from trainer.tracking import state_dir

LOGGER = logging.getLogger(__name__)


class RunStorage:
    def __init__(self, output: str):
        self.output = output
        self.remote = output.rstrip("/") if output.startswith("s3://") else None
        if self.remote:
            digest = hashlib.sha256(self.remote.encode()).hexdigest()[:16]
            self.local = state_dir() / "staging" / digest
        else:
            self.local = Path(output).resolve()
        self.local.mkdir(parents=True, exist_ok=True)
        self._pushed: dict[str, float] = {}

    def _key(self, relative: str) -> tuple[str, str]:
        bucket, prefix = parse_s3_uri(self.remote)
        return bucket, f"{prefix.rstrip('/')}/{relative}" if prefix else relative

    def check_access(self) -> None:
        """Fail before training, not at the first checkpoint, when the bucket or keys are wrong."""
        if not self.remote:
            return
        bucket, _ = parse_s3_uri(self.remote)
        with s3_errors(self.remote):
            s3_client().head_bucket(Bucket=bucket)

    def pull(self) -> None:
        """Fetch the remote summary and the newest complete checkpoint into the staging folder."""
        if not self.remote:
            return
        bucket, prefix = parse_s3_uri(self.remote)
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        client = s3_client()
        with s3_errors(self.remote):
            keys: list[str] = []
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                keys.extend(obj["Key"] for obj in page.get("Contents", []))
        relative = [k[len(prefix):] for k in keys]
        complete = sorted({r.split("/")[1] for r in relative if r.startswith(f"{CHECKPOINT_DIR}/") and r.endswith("/COMPLETE")})
        wanted = [r for r in relative if r == SUMMARY_FILE or r.startswith(f"{MODEL_DIR}/")]
        if complete:
            wanted += [r for r in relative if r.startswith(f"{CHECKPOINT_DIR}/{complete[-1]}/")]
        with s3_errors(self.remote):
            for rel in wanted:
                target = self.local / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, prefix + rel, str(target))
                self._pushed[rel] = target.stat().st_mtime
        LOGGER.info("pulled %d objects from %s", len(wanted), self.remote)

    def push(self) -> None:
        """Upload new or changed files (COMPLETE markers last); no-op for local runs."""
        if not self.remote:
            return
        files = [p for p in self.local.rglob("*") if p.is_file() and ".partial" not in str(p)]
        changed = [p for p in files if self._pushed.get(str(p.relative_to(self.local))) != p.stat().st_mtime]
        changed.sort(key=lambda p: p.name == "COMPLETE")
        client = s3_client()
        for path in changed:
            rel = str(path.relative_to(self.local))
            bucket, key = self._key(rel)
            with s3_errors(f"s3://{bucket}/{key}"):
                client.upload_file(str(path), bucket, key)
            self._pushed[rel] = path.stat().st_mtime
        if changed:
            LOGGER.info("pushed %d files to %s", len(changed), self.remote)
