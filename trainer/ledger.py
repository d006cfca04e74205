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
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trainer.errors import TrainerError
from trainer.tracking import state_dir

ACTIONS = ("register", "challenger", "promote", "rollback", "noop")
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
    ts: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"ledger action must be one of {ACTIONS}, got {self.action!r}")

    def to_json(self) -> str:
        payload = asdict(self)
        payload["reason"] = (payload["reason"] or "")[:_MAX_REASON]
        return json.dumps(payload, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "LedgerRecord":
        payload: dict[str, Any] = json.loads(text)
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in payload.items() if k in known})


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
    """Record in the registry first (what rollback reads), then in the local file."""
    append_registry(client, record)
    append_local(record)
