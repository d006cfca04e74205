"""How a step's exit code becomes an Airflow task outcome (shared by both backends).

| exit | meaning (trainer/errors.py)            | Airflow                                         |
|------|----------------------------------------|-------------------------------------------------|
| 0    | ok                                     | the result JSON is the task's XCom              |
| 1    | verdict "no" (invalid data, gate fail) | StepVerdictNo (AirflowFailException: no retry)  |
| 2    | error: bad input, config, service      | StepError (AirflowFailException: no retry)      |
| 73   | run key leased by another trainer      | StepBusy (AirflowException: retried later)      |
| 75   | preempted, checkpoint written          | StepPreempted (AirflowException: retried, and   |
|      |                                        | the retry resumes from the checkpoint)          |
| else | killed (OOM 137, signal), crash        | StepCrashed (AirflowException: retried)         |
"""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from trainer.errors import EXIT_BUSY, EXIT_ERROR, EXIT_FAILED, EXIT_OK, EXIT_PREEMPTED


def _describe(step: str, code: int | None, result: dict[str, Any] | None) -> str:
    detail = ""
    if result:
        for key in ("error", "reason", "failures"):
            if result.get(key):
                detail = f": {key}: {result[key]}"
                break
    return f"step {step} exited with code {code}{detail}"


class StepVerdictNo(AirflowFailException):
    """The step ran and said no (exit 1). `result` holds its result JSON (may be empty)."""

    def __init__(self, step: str, result: dict[str, Any] | None) -> None:
        self.step = step
        self.result = dict(result or {})
        super().__init__(_describe(step, EXIT_FAILED, result) + " (verdict: no; not retried)")


class StepError(AirflowFailException):
    """Exit 2: bad input or configuration; a retry would fail the same way."""

    def __init__(self, step: str, result: dict[str, Any] | None) -> None:
        self.step = step
        self.result = dict(result or {})
        super().__init__(_describe(step, EXIT_ERROR, result) + " (error; not retried)")


class StepBusy(AirflowException):
    """Exit 73: another trainer holds the run key's lease (trainer/lease.py); a later retry trains it."""

    def __init__(self, step: str, result: dict[str, Any] | None) -> None:
        self.step = step
        self.result = dict(result or {})
        super().__init__(_describe(step, EXIT_BUSY, result) + " (run key busy; retried later)")


class StepPreempted(AirflowException):
    """Exit 75: a checkpoint was written; the retry resumes from it."""

    def __init__(self, step: str, result: dict[str, Any] | None) -> None:
        self.step = step
        self.result = dict(result or {})
        super().__init__(_describe(step, EXIT_PREEMPTED, result) + " (preempted; the retry resumes)")


class StepCrashed(AirflowException):
    """Any other exit (OOM kill, signal, crash): retried."""

    def __init__(self, step: str, code: int | None, result: dict[str, Any] | None) -> None:
        self.step = step
        self.code = code
        self.result = dict(result or {})
        super().__init__(_describe(step, code, result) + " (crashed; retried)")


def outcome(step: str, code: int | None, result: dict[str, Any] | None) -> dict[str, Any]:
    """Return the result for exit 0, else raise the matching exception."""
    if code == EXIT_OK:
        return dict(result or {})
    if code == EXIT_FAILED:
        raise StepVerdictNo(step, result)
    if code == EXIT_ERROR:
        raise StepError(step, result)
    if code == EXIT_BUSY:
        raise StepBusy(step, result)
    if code == EXIT_PREEMPTED:
        raise StepPreempted(step, result)
    raise StepCrashed(step, code, result)
