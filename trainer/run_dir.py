"""The run directory (docs/contracts.md "Run directory"): its layout, readers and writers, in one place.

`trainer train` writes a run directory; `trainer evaluate` adds evaluation.json and backtest.csv,
`trainer gate` a gate_<stage>.json, `trainer report` report/. Every module that reads or writes one
of these goes through `RunDir`, so a file name lives here only, and the metrics of a run are merged
once (`RunDir.metrics`: summary.json "metrics", then evaluation.json "metrics" over them).

    run = RunDir("state/runs/SPY/abc/demo/full")
    run.metrics()["test.sharpe"]
    run.judged_model_dir()          # the model directory whose backtest the gates judged

Readers raise a TrainerError naming the file and what is wrong with it; writers are atomic
(trainer.io: a reader sees the old file or the new one, never half of one).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.errors import TrainerError
from trainer.io import read_json_object, write_json_atomic, write_text_atomic

if TYPE_CHECKING:
    import pandas as pd

SUMMARY_FILE = "summary.json"
"""Status, identity (symbol, profile, digests, MLflow run id) and the training metrics."""
EVALUATION_FILE = "evaluation.json"
"""`trainer evaluate`: test-split metrics and statistics, the judged model, baseline and champion."""
BACKTEST_FILE = "backtest.csv"
"""`trainer evaluate`: the test split per bar (candidate, buy-and-hold, baseline, champion)."""
BACKTEST_EVAL_SPLIT_FILE = "backtest_eval_split.csv"
"""`trainer evaluate --include-eval-split`: the eval split per bar."""
CONFIG_FILE = "config.resolved.yaml"
"""The validated config with the CLI overrides applied."""
MONITOR_FILE = "monitor_metrics.json"
"""Monitor windows of the options controller, oldest first."""
EVAL_HISTORY_FILE = "eval_history.json"
"""Periodic evaluations on the eval split."""
MODEL_DIR = "model"
"""The final model directory (trainer.agent layout)."""
BEST_MODEL_DIR = "best_model"
"""The best eval-Sharpe model directory, same layout."""
CHECKPOINT_DIR = "checkpoints"
"""Complete checkpoints, ckpt-<steps>/ (trainer.training.checkpoints)."""
REPORT_DIR = "report"
"""`trainer report`: report.md, report.html and the figures."""
GATE_FILE_PATTERN = "gate_{stage}.json"
"""`trainer gate --stage <stage>`: the verdict."""
MODEL_META_FILE = "meta.json"
"""Present in every complete model directory (trainer.agent.Agent.save writes it)."""

MODEL_DIRS: tuple[str, ...] = (MODEL_DIR, BEST_MODEL_DIR)
"""The model directories a run may hold; the judged one is one of them."""
TRAINING_FILES: tuple[str, ...] = (SUMMARY_FILE, MONITOR_FILE, EVAL_HISTORY_FILE, CONFIG_FILE)
"""The files `trainer train` writes (and logs to MLflow) besides the model directories."""
EVALUATION_FILES: tuple[str, ...] = (EVALUATION_FILE, BACKTEST_FILE)
"""The files `trainer evaluate` writes (and logs to MLflow)."""


def gate_file(stage: str) -> str:
    """`gate_<stage>.json`, the name of a stage's verdict file."""
    return GATE_FILE_PATTERN.format(stage=stage)


class RunDir:
    """A run directory on local disk.

    :param path: the run directory (the local copy; trainer.storage.RunStorage syncs S3 ones)
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ---------------------------------------------------------------- layout

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def evaluation_path(self) -> Path:
        return self.path / EVALUATION_FILE

    @property
    def backtest_path(self) -> Path:
        return self.path / BACKTEST_FILE

    @property
    def backtest_eval_split_path(self) -> Path:
        return self.path / BACKTEST_EVAL_SPLIT_FILE

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def monitor_path(self) -> Path:
        return self.path / MONITOR_FILE

    @property
    def eval_history_path(self) -> Path:
        return self.path / EVAL_HISTORY_FILE

    @property
    def report_dir(self) -> Path:
        return self.path / REPORT_DIR

    @property
    def model_dir(self) -> Path:
        return self.path / MODEL_DIR

    @property
    def best_model_dir(self) -> Path:
        return self.path / BEST_MODEL_DIR

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    def gate_path(self, stage: str) -> Path:
        """`gate_<stage>.json`."""
        return self.path / gate_file(stage)

    # ---------------------------------------------------------------- readers

    def read_summary(self) -> dict[str, Any]:
        """summary.json; TrainerError naming the file when it is missing or not a JSON object."""
        return _read_object(self.summary_path, "is this a run directory written by `trainer train`?")

    def read_evaluation(self, required: bool = False) -> dict[str, Any] | None:
        """evaluation.json, or None when `trainer evaluate` has not run (TrainerError if `required`)."""
        if not self.evaluation_path.exists() and not required:
            return None
        return _read_object(self.evaluation_path, "run `trainer evaluate` first")

    def read_gate_verdict(self, stage: str) -> dict[str, Any]:
        """The verdict object of gate_<stage>.json (`trainer gate` writes it at the top level; an
        older layout nested it under "verdict"). TrainerError when missing, unreadable or of
        another stage."""
        path = self.gate_path(stage)
        payload = _read_object(path, f"run `trainer gate --stage {stage}` first")
        verdict = payload.get("verdict", payload)
        if not isinstance(verdict, dict):
            raise TrainerError(f"{path}: \"verdict\" must be a JSON object")
        if verdict.get("stage", stage) != stage:
            raise TrainerError(f"{path}: stage is {verdict.get('stage')!r}, expected {stage!r}")
        return verdict

    def metrics(self) -> dict[str, Any]:
        """The run's flat metrics: summary.json "metrics", with evaluation.json "metrics" (when
        `trainer evaluate` wrote it) over them where both name a metric. The one merge."""
        merged = dict(_metrics_of(self.read_summary(), self.summary_path))
        evaluation = self.read_evaluation()
        if evaluation is not None:
            merged.update(_metrics_of(evaluation, self.evaluation_path))
        return merged

    def judged_model_dir(self) -> Path:
        """The model directory whose backtest the gates judged: evaluation.json "model" (what
        `trainer evaluate` backtested), else the rule evaluate follows: best_model when it holds a
        model (meta.json), else model."""
        evaluation = self.read_evaluation()
        judged = (evaluation or {}).get("model")
        if judged:
            if judged not in MODEL_DIRS or not (self.path / judged / MODEL_META_FILE).is_file():
                raise TrainerError(
                    f"{self.evaluation_path}: evaluated model {judged!r} is not a model directory of the run"
                )
            return self.path / judged
        return self.best_model_dir if (self.best_model_dir / MODEL_META_FILE).is_file() else self.model_dir

    def read_backtest(self) -> "pd.DataFrame | None":
        """backtest.csv as written (a `timestamp` column, parsed), or None when absent."""
        import pandas as pd

        if not self.backtest_path.exists():
            return None
        try:
            return pd.read_csv(self.backtest_path, parse_dates=["timestamp"])
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise TrainerError(f"{self.backtest_path}: cannot read {BACKTEST_FILE} ({exc})") from None

    # ---------------------------------------------------------------- writers (atomic)

    def write_summary(self, payload: dict[str, Any]) -> Path:
        write_json_atomic(self.summary_path, payload)
        return self.summary_path

    def write_evaluation(self, payload: dict[str, Any]) -> Path:
        write_json_atomic(self.evaluation_path, payload)
        return self.evaluation_path

    def write_gate_verdict(self, stage: str, payload: dict[str, Any]) -> Path:
        path = self.gate_path(stage)
        write_json_atomic(path, payload)
        return path

    def write_backtest(self, frame: "pd.DataFrame", eval_split: bool = False) -> Path:
        """backtest.csv (or backtest_eval_split.csv), one row per bar, no index column."""
        path = self.backtest_eval_split_path if eval_split else self.backtest_path
        write_text_atomic(path, frame.to_csv(index=False))
        return path


def _read_object(path: Path, hint: str) -> dict[str, Any]:
    """A JSON object from `path`; a missing file's error says what to run (`hint`)."""
    if not path.exists():
        raise TrainerError(f"{path}: {path.name} not found ({hint})")
    return read_json_object(path, path.name)


def _metrics_of(payload: dict[str, Any], path: Path) -> dict[str, Any]:
    metrics = payload.get("metrics")
    if not isinstance(metrics, dict):
        raise TrainerError(f"{path}: {path.name} has no \"metrics\" object")
    return metrics
