"""The promotion ledger: who moved which alias of which model, when, why, on what data.

Append-only, one JSON record per alias move (and per registration). Two copies, so both
setups can answer from what they can reach:

- local: `$TRAINER_STATE_DIR/registry/ledger.jsonl`, appended under an fcntl lock (a line per record);
- registry: numbered tags `ledger.000001`, `ledger.000002`, ... on the registered model, so a remote
  registry carries its own history and `rollback` can work from the registry alone.

The registry copy is authoritative for rollback; the local file is the audit trail that spans
every model on this machine. Numbering the registry tags is only race-free under the per-model
lock that `trainer.registry` holds around every ledger write.

Repeated promotions of the current champion are recorded with action `noop` (who asked and why is
still worth knowing); replaying the ledger ignores them.

Write-ahead intent: before an alias moves, an `intent` record (with a fresh `intent_id` and the
`operation` it announces) is written; the move's own record (`promote` / `rollback`) carries the
same `intent_id`, and so does an `abandon` record when the move never happened. An intent that no
later record closes is pending: trainer.registry reconciles it (completes or abandons it, from
where the alias actually points) before anything else touches the model.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trainer.errors import TrainerError
from trainer.tracking import state_dir

ACTIONS = ("register", "challenger", "intent", "promote", "rollback", "abandon", "noop")
MOVES = ("promote", "rollback")  # the operations an intent announces
LOGGER = logging.getLogger(__name__)
TAG_PREFIX = "ledger."
_MAX_REASON = 2000  # a tag value holds 100k characters; keep records short and readable


@dataclass(frozen=True)
class LedgerRecord:
    """One alias move. `from_version` is what the alias pointed at before (None: unset)."""

    actor: str
    action: str
    symbol: str
    model_name: str
    version: int | None
    from_version: int | None = None
    alias: str | None = None
    reason: str = ""
    verdict: str | None = None
    data_end: str | None = None
    approved_by: str | None = None
    approved_at: str | None = None
    approval_comment: str | None = None
    gates_hash: str | None = None  # sha256 of the gates file (the policy) the move was judged under
    intent_id: str | None = None
    operation: str | None = None  # intent records only: the move announced (promote | rollback)
    ts: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"ledger action must be one of {ACTIONS}, got {self.action!r}")
        if self.action == "intent" and self.operation not in MOVES:
            raise ValueError(f"an intent record announces one of {MOVES}, got {self.operation!r}")

    def to_json(self) -> str:
        payload = asdict(self)
        payload["reason"] = (payload["reason"] or "")[:_MAX_REASON]
        return json.dumps(payload, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "LedgerRecord":
        payload: dict[str, Any] = json.loads(text)
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in payload.items() if k in known})


def new_intent_id() -> str:
    return uuid.uuid4().hex


def pending_intent(records: list[LedgerRecord]) -> LedgerRecord | None:
    """The last intent no later record closes (same intent_id), if any."""
    closed = {r.intent_id for r in records if r.action != "intent" and r.intent_id}
    for record in reversed(records):
        if record.action == "intent":
            return None if record.intent_id in closed else record
    return None


def local_ledger_path() -> Path:
    return state_dir() / "registry" / "ledger.jsonl"


def append_local(record: LedgerRecord, path: Path | None = None) -> Path:
    """Append one line under an exclusive lock; fsync so a crash never leaves half a record."""
    path = path or local_ledger_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                handle.write(record.to_json() + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    except OSError as exc:
        raise TrainerError(f"{path}: cannot append to the promotion ledger ({exc.strerror})") from None
    return path


def read_local(path: Path | None = None, model_name: str | None = None) -> list[LedgerRecord]:
    """Records oldest first, optionally only those of one registered model."""
    path = path or local_ledger_path()
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = LedgerRecord.from_json(line)
                except (ValueError, TypeError) as exc:
                    raise TrainerError(f"{path}:{number}: unreadable ledger record ({exc})") from None
                if model_name is None or record.model_name == model_name:
                    records.append(record)
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return records


def _tag_key(number: int) -> str:
    return f"{TAG_PREFIX}{number:06d}"


def read_registry(client: Any, model_name: str) -> list[LedgerRecord]:
    """The ledger mirrored on the registered model, oldest first (works against any registry)."""
    tags = client.get_registered_model(model_name).tags or {}
    keys = sorted(key for key in tags if key.startswith(TAG_PREFIX))
    return [LedgerRecord.from_json(tags[key]) for key in keys]


def append_registry(client: Any, record: LedgerRecord) -> str:
    """Mirror `record` as the next numbered tag; the caller holds the model's promotion lock."""
    tags = client.get_registered_model(record.model_name).tags or {}
    numbers = [int(key[len(TAG_PREFIX):]) for key in tags if key.startswith(TAG_PREFIX)]
    key = _tag_key(max(numbers, default=0) + 1)
    client.set_registered_model_tag(record.model_name, key, record.to_json())
    return key


def append(client: Any, record: LedgerRecord) -> None:
    """Record in the registry first (authoritative: what rollback reads), then in the local file.

    The local copy is the machine's audit trail; failing to write it must not turn a recorded
    move into an error (the registry already says what happened), so it is a warning.
    """
    append_registry(client, record)
    try:
        append_local(record)
    except TrainerError as exc:
        LOGGER.warning("the registry recorded %s of %s, but the local audit copy failed: %s", record.action, record.model_name, exc)
