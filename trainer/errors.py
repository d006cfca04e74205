"""Errors the CLI turns into one clear message and an exit code (never a bare traceback)."""

from __future__ import annotations

# Exit codes shared by every `trainer` subcommand and read by the Airflow backends.
EXIT_OK = 0
EXIT_FAILED = 1  # the step ran and its verdict is "no": data invalid, gate failed, collapse abort
EXIT_ERROR = 2  # bad input or an environment problem: config, file, S3, registry
EXIT_BUSY = 73  # the run key is being trained by another trainer (trainer/lease.py): retry later
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: SIGTERM received, checkpoint written, retry resumes


class TrainerError(Exception):
    """A problem the user can fix; `str(err)` is the whole message."""

    exit_code = EXIT_ERROR


class DataError(TrainerError):
    """Market data that is missing, unreadable or not a table (a source problem, not a validation verdict)."""


class NonFiniteError(TrainerError):
    """A NaN or infinity in an observation, action or loss; the message names where it appeared."""


class PreemptedError(TrainerError):
    """SIGTERM arrived; a checkpoint was written and the step can be retried with --resume."""

    exit_code = EXIT_PREEMPTED
