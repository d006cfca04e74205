"""The code version recorded on every run, model version and idempotency key."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

from trainer import __version__


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """`<package version>+g<git sha>` in a git checkout, else the package version.

    Images have no .git: the build passes the sha as TRAINER_CODE_VERSION instead.
    """
    override = os.environ.get("TRAINER_CODE_VERSION")
    if override:
        return override
    repo = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=10", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{sha}" if sha else __version__


IMAGE_DIGEST_ENV = "TRAINER_IMAGE_DIGEST"


def image_digest() -> str:
    """The trainer image this process runs in (`sha256:...` or `tag-<tag>`, set on every pod by
    trainer.orchestration.specs), `local` outside an image."""
    return os.environ.get(IMAGE_DIGEST_ENV) or "local"
