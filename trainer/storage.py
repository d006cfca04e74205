"""Where a run directory lives: a local folder, or an s3:// prefix mirrored by a local staging copy.

Training always writes locally (atomic renames need a filesystem); with an s3:// output the
staging folder is pushed after every checkpoint and at the end, and `--resume` first pulls the
remote summary and newest complete checkpoint, so a retried pod continues where the last one
stopped. Objects are uploaded marker-last: a checkpoint's COMPLETE object appears only after all
of its files.

S3 keeps the checkpoints `checkpoints.keep_last` keeps: after its uploads, push deletes the remote
checkpoints that local pruning (trainer.training.checkpoints.write_checkpoint) removed from the
staging folder, marker-first (see `prune_checkpoints`). Checkpoint objects carry the tag
CHECKPOINT_TAG, so an S3 lifecycle rule can expire the checkpoints of finished runs (helm/README.md).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from trainer.errors import TrainerError
from trainer.run_dir import CHECKPOINT_DIR, MODEL_DIR, SUMMARY_FILE
from trainer.s3 import parse_s3_uri, s3_client, s3_errors
from trainer.tracking import state_dir

LOGGER = logging.getLogger(__name__)

# The names trainer.training.checkpoints gives (not imported: that module imports torch).
_COMPLETE = "COMPLETE"
_CHECKPOINT_PREFIX = "ckpt-"
_DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes
# The object tag of every checkpoint file, for a lifecycle rule that expires the checkpoints of
# finished runs (helm/README.md); tagging on upload needs s3:PutObjectTagging besides s3:PutObject.
CHECKPOINT_TAG = "trainer-object=checkpoint"


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

    def _list(self, client, bucket: str, prefix: str) -> list[str]:
        with s3_errors(f"s3://{bucket}/{prefix}"):
            keys: list[str] = []
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys

    def push(self) -> None:
        """Upload new or changed files (COMPLETE markers last), then delete the S3 checkpoints that
        are no longer kept locally (`prune_checkpoints`); no-op for local runs."""
        if not self.remote:
            return
        files = [p for p in self.local.rglob("*") if p.is_file() and ".partial" not in str(p)]
        changed = [p for p in files if self._pushed.get(str(p.relative_to(self.local))) != p.stat().st_mtime]
        changed.sort(key=lambda p: p.name == "COMPLETE")
        client = s3_client()
        for path in changed:
            rel = str(path.relative_to(self.local))
            bucket, key = self._key(rel)
            extra = {"Tagging": CHECKPOINT_TAG} if rel.startswith(f"{CHECKPOINT_DIR}/") else None
            with s3_errors(f"s3://{bucket}/{key}"):
                client.upload_file(str(path), bucket, key, ExtraArgs=extra)
            self._pushed[rel] = path.stat().st_mtime
        if changed:
            LOGGER.info("pushed %d files to %s", len(changed), self.remote)
        self.prune_checkpoints()

    def prune_checkpoints(self) -> list[str]:
        """Delete from S3 the checkpoints the staging folder no longer holds; returns their names.

        Called by push after its uploads, so the newest checkpoint is complete on S3 before an
        older one goes. Never deleted: a checkpoint still in the staging folder, the newest one with
        a COMPLETE marker on S3, and anything newer than that (not complete, so not taken by a
        resume). A checkpoint loses its COMPLETE marker first: a deletion cut short leaves an
        incomplete checkpoint, which pull and resume skip (never a complete-looking one with files
        missing), and the next prune removes the rest.
        """
        if not self.remote:
            return []
        bucket, prefix = parse_s3_uri(self.remote)
        root = (prefix.rstrip("/") + "/" if prefix else "") + f"{CHECKPOINT_DIR}/"
        client = s3_client()
        by_name: dict[str, list[str]] = {}
        for key in self._list(client, bucket, root):
            name = key[len(root):].split("/", 1)[0]
            if name.startswith(_CHECKPOINT_PREFIX):
                by_name.setdefault(name, []).append(key)
        complete = sorted(name for name, keys in by_name.items() if f"{root}{name}/{_COMPLETE}" in keys)
        if not complete:
            return []
        staged = self.local / CHECKPOINT_DIR
        kept = {path.name for path in staged.iterdir() if path.is_dir()} if staged.exists() else set()
        doomed = [name for name in sorted(by_name) if name < complete[-1] and name not in kept]
        for name in doomed:
            marker = f"{root}{name}/{_COMPLETE}"
            rest = [key for key in by_name[name] if key != marker]
            with s3_errors(f"s3://{bucket}/{root}{name}"):
                if marker in by_name[name]:
                    client.delete_object(Bucket=bucket, Key=marker)
                for start in range(0, len(rest), _DELETE_BATCH):
                    batch = [{"Key": key} for key in rest[start:start + _DELETE_BATCH]]
                    answer = client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
                    if answer.get("Errors"):
                        first = answer["Errors"][0]
                        raise TrainerError(
                            f"s3://{bucket}/{first.get('Key')}: S3 refused to delete it while pruning "
                            f"checkpoint {name} ({first.get('Code')}: {first.get('Message')}); "
                            f"{len(answer['Errors'])} objects left, the next push retries"
                        )
            stale = f"{CHECKPOINT_DIR}/{name}/"
            self._pushed = {rel: mtime for rel, mtime in self._pushed.items() if not rel.startswith(stale)}
        if doomed:
            LOGGER.info("pruned %d checkpoints from %s (kept %s): %s", len(doomed), self.remote,
                        ", ".join(n for n in sorted(by_name) if n not in doomed), ", ".join(doomed))
        return doomed
