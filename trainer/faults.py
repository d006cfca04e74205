"""Fault injection for the crash, race and resume tests: named points in promote, rollback and training.

Points: `promote.locked`, `promote.intent_written`, `promote.before_alias`, `promote.alias_moved`,
`promote.recorded`; `rollback.intent_written`, `rollback.challenger_dropped`, `rollback.alias_moved`,
`rollback.recorded`; `train.step.<n>` (inside env step n) and `train.checkpoint.<n>` (once
checkpoint n is complete and pushed).

`TRAINER_FAULTS` holds `point=action` pairs separated by `;`, for example
`promote.alias_moved=kill` (SIGKILL this process right after the alias moved) or
`promote.before_alias=sleep:3` (a slow call inside the critical section). Actions: `kill`,
`sleep:<seconds>`, `raise` (an OSError, as a lost connection gives), and
`pause:<seconds>:<file>`: write `<file>.reached`, then wait until `<file>` exists or the seconds
pass (a slow call whose end a test controls, so a race is decided by order, not by timing). The pseudo-point
`promotion_lock=off` disables the promotion lock, so a test can show that the race it guards
against is real. Unset in production; every fault that fires is logged as a warning first.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

ENV = "TRAINER_FAULTS"
LOGGER = logging.getLogger(__name__)


def _faults() -> dict[str, str]:
    spec = os.environ.get(ENV, "")
    pairs = (item.split("=", 1) for item in spec.split(";") if "=" in item)
    return {point.strip(): action.strip() for point, action in pairs}


def disabled(feature: str) -> bool:
    """True when TRAINER_FAULTS says `<feature>=off` (tests only)."""
    if _faults().get(feature) == "off":
        LOGGER.warning("%s: %s is DISABLED by fault injection", ENV, feature)
        return True
    return False


def fault_point(point: str) -> None:
    """Do what TRAINER_FAULTS says for `point`; nothing when it names no action for it."""
    action = _faults().get(point)
    if not action:
        return
    LOGGER.warning("%s: %s at %s", ENV, action, point)
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action.startswith("sleep:"):
        time.sleep(float(action.split(":", 1)[1]))
    elif action.startswith("pause:"):
        _, seconds, release = action.split(":", 2)
        Path(f"{release}.reached").write_text(point)
        deadline = time.monotonic() + float(seconds)
        while not Path(release).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    elif action == "raise":
        raise OSError(f"injected fault at {point}")
    else:
        raise ValueError(f"{ENV}: unknown action {action!r} for {point}")
