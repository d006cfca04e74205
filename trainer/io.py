"""Atomic writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: str | Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=_jsonable) + "\n")


def read_json_object(path: str | Path, what: str) -> dict[str, Any]:
    """A JSON object from `path`, or a TrainerError naming the file and what was wrong."""
    from trainer.errors import TrainerError

    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise TrainerError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise TrainerError(f"{path}: cannot read {what} ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise TrainerError(f"{path}: {what} is not valid JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise TrainerError(f"{path}: {what} must be a JSON object")
    return payload


def _jsonable(value: Any) -> Any:
    """numpy scalars and paths in results; NaN stays NaN (json writes it as NaN)."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def replace_dir(staging: str | Path, target: str | Path) -> None:
    """Swap a fully written `staging` folder in as `target` (two renames; the old copy goes last)."""
    import shutil

    staging, target = Path(staging), Path(target)
    retired = target.with_name(f".{target.name}.old")
    if retired.exists():
        shutil.rmtree(retired)
    if target.exists():
        os.replace(target, retired)
    os.replace(staging, target)
    if retired.exists():
        shutil.rmtree(retired)
