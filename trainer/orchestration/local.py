"""Local backend: run the step as a subprocess of the venv's `trainer`, stream its output into the task log."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from trainer.orchestration.outcome import outcome
from trainer.orchestration.settings import PipelineSettings
from trainer.orchestration.specs import TaskSpec

log = logging.getLogger(__name__)


def trainer_executable() -> str:
    """`trainer` next to the running interpreter (the venv's bin), so the task uses the same install."""
    candidate = Path(sys.executable).parent / "trainer"
    if not candidate.exists():
        raise FileNotFoundError(
            f"{candidate} not found: install the package into the interpreter's environment "
            "(pip install -e .) so the `trainer` console script exists"
        )
    return str(candidate)


def build_command(spec: TaskSpec, result_json: str) -> list[str]:
    return [trainer_executable(), "--result-json", result_json, *spec.argv]


def _read_result(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        log.warning("result JSON %s is not valid JSON (%s); ignoring it", path, exc)
        return {}
    return value if isinstance(value, dict) else {"value": value}


def _stop(proc: subprocess.Popen[str], grace_seconds: int) -> None:
    """SIGTERM the step's process group (training writes a checkpoint and exits 75), then SIGKILL."""
    if proc.poll() is not None:
        return
    log.warning("stopping step pid %s (SIGTERM, %s s grace)", proc.pid, grace_seconds)
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def run_step(spec: TaskSpec, context: Any, settings: PipelineSettings) -> dict[str, Any]:
    """Run `trainer --result-json TMP <argv>`; return its result (the XCom) or raise per outcome.py."""
    env = {**os.environ, **spec.env}
    # The venv's bin first, so anything the step spawns resolves to the same install.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("PYTHONUNBUFFERED", "1")
    with tempfile.TemporaryDirectory(prefix=f"trainer-{spec.step}-") as tmp:
        result_path = Path(tmp) / "result.json"
        command = build_command(spec, str(result_path))
        log.info("running step %s: %s", spec.step, " ".join(command))
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env=env,
            start_new_session=True,  # its own process group, so a stop reaches its children too
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.info("[%s] %s", spec.step, line.rstrip("\n"))
            code = proc.wait()
        except BaseException:
            # Task timeout, kill or interrupt: give training its checkpoint before we go.
            _stop(proc, settings.local.terminate_grace_seconds)
            raise
        result = _read_result(result_path)
    log.info("step %s exited with code %s; result: %s", spec.step, code, json.dumps(result, sort_keys=True))
    return outcome(spec.step, code, result)
