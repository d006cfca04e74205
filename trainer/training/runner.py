"""One training run from a resolved config to a finished run directory: what `trainer train` does.

`train_run` is the function behind the `train` command and the one other steps call when they need
a run trained (the Phase A baseline of `trainer evaluate`): load the data, build or resume the
session, log to MLflow, write the run directory (trainer/run_dir.py) and push it to its storage.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from trainer.config import TrainerConfig
from trainer.errors import PreemptedError, TrainerError
from trainer.run_dir import RunDir

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOutcome:
    """:param summary: the run's summary.json; :param output: where the run directory lives (a
    local path or s3:// prefix); :param run_dir: its local copy; :param reused: an earlier
    completed run with the same config was found and nothing was trained"""

    summary: dict[str, Any]
    output: str
    run_dir: RunDir
    reused: bool = False

    @property
    def status(self) -> str:
        return str(self.summary["status"])

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    def result(self) -> dict[str, Any]:
        """The small result the CLI prints and the DAG passes on (XCom)."""
        summary = self.summary
        return {
            "status": summary["status"],
            "output_dir": self.output,
            "mlflow_run_id": summary.get("mlflow_run_id"),
            "config_hash": summary.get("config_hash"),
            "data_digest": summary.get("data_digest"),
            "total_timesteps": summary.get("total_timesteps"),
        }


def train_run(
    config: TrainerConfig,
    output: str,
    *,
    data_source: str | None = None,
    resume: bool = False,
    profile: str = "adhoc",
    stage: str = "full",
    log_to_mlflow: bool = True,
) -> TrainOutcome:
    """Train `config` into the run directory `output` (local path or s3:// prefix).

    :param config: the resolved config (trainer.config.load_config, overrides applied)
    :param output: run directory; an s3:// prefix is mirrored by a local staging copy
    :param data_source: CSV/Parquet path or s3:// key (default: the config's, else the bundled data)
    :param resume: continue from the newest complete checkpoint; a run already completed with this
        config is reused as it is
    :param profile: pipeline profile recorded on the run (demo, production, ...)
    :param stage: pipeline stage recorded on the run (smoke, full, baseline)
    :param log_to_mlflow: create (or reattach to) the run's MLflow run
    Raises PreemptedError after writing a checkpoint when SIGTERM arrived, TrainerError on failure
    (the run directory then says `failed: <reason>`).
    """
    from trainer.lease import run_key_lease
    from trainer.storage import RunStorage

    storage = RunStorage(output)
    storage.check_access()
    # One trainer per run key, from before the pull to after the last push (trainer/lease.py).
    with run_key_lease(output, storage.local) as lease:
        if resume:
            storage.pull()
        run_dir = RunDir(storage.local)
        if resume and run_dir.summary_path.exists():
            previous = run_dir.read_summary()
            if previous.get("status") == "completed" and previous.get("config_hash") == config.config_hash():
                LOGGER.info("run already completed with this config at %s; reusing it", output)
                return TrainOutcome(previous, output, run_dir, reused=True)

        def push() -> None:
            lease.assert_held()  # never overwrite the run of a trainer that took the lease over
            storage.push()

        return _train(config, storage.local, push, output, data_source, resume, profile, stage, log_to_mlflow)


def _train(config, out, push, output: str, data_source, resume: bool, profile: str, stage: str,
           log_to_mlflow: bool) -> TrainOutcome:
    from trainer.envs.factory import load_market_data
    from trainer.training import checkpoints
    from trainer.training.session import TrainingSession
    from trainer.training.tracker import RunTracker
    from trainer.versioning import code_version, image_digest

    data = load_market_data(config, data_source)
    LOGGER.info(
        "%s on %s: %d bars (%s .. %s), digest %s; train/eval/test = %d/%d/%d featurised bars",
        config.algorithm, data.symbol, len(data.frame), data.frame.index[0].date(), data.frame.index[-1].date(),
        data.digest[:12], len(data.features["train"]), len(data.features["eval"]), len(data.features["test"]),
    )
    if not data.has_sentiment or not data.has_sl_confidence:
        LOGGER.info("no sentiment / sl_confidence columns: options read the neutral values from environment config")
    session = TrainingSession(config, data, out, config.training.seed)
    session.after_checkpoint = push
    latest = checkpoints.latest_checkpoint(session.checkpoint_root) if resume else None
    if latest is not None:
        session.restore(latest)
    identity = {
        "symbol": config.data.symbol,
        "algorithm": config.algorithm,
        "name": config.name,
        "profile": profile,
        "stage": stage,
        "config_hash": config.config_hash(),
        "data_digest": data.digest,
        "data_end": str(data.frame.index[-1]),
        "code_version": code_version(),
        "image_digest": image_digest(),
    }
    if log_to_mlflow:
        tracker = RunTracker(session.state.mlflow_run_id)
        session.state.mlflow_run_id = tracker.start(config, data, identity)
        session.tracker = tracker
    try:
        status = session.train(config.training.total_timesteps)
    except TrainerError as err:
        session.write_outputs(f"failed: {err}", identity)
        if session.tracker:
            session.tracker.finish(out, "failed")
        push()
        raise
    if status == "preempted":
        push()
        steps = session.last_checkpoint_steps
        where = f"checkpoint of step {steps} written" if steps is not None else "no new checkpoint written"
        raise PreemptedError(
            f"preempted at step {steps if steps is not None else session.sac.num_timesteps}; {where} under "
            f"{output}/checkpoints; run again with --resume"
        )
    summary = session.write_outputs(status, identity)
    if session.tracker:
        session.tracker.finish(out, status)
    push()
    LOGGER.info("%s: %d steps in %.0f s (%.1f steps/s); outputs in %s",
                status, summary["total_timesteps"], summary["wall_seconds"], summary["steps_per_second"] or 0, output)
    return TrainOutcome(summary, output, RunDir(out))
