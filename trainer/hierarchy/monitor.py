"""OptionsMonitorCallback: option usage, durations, controller health, and collapse detection.

Every `window_steps` env steps it closes a window of option counters and records (SB3 logger
keys under options/, and a list of plain dicts written to monitor_metrics.json):
usage % / average duration / selections per option, options/num_used_options (usage above
used_option_min_pct), options/max_usage_pct, temperature, entropy, grad norm, policy and value
loss, and the raw advantage mean/std. It logs the seed's two warnings (collapse above
collapse_threshold; an option whose average duration is below half its min_duration) and, beyond
the seed, stops training when collapse persists for collapse_patience consecutive windows after
warmup, so a doomed 500k-step GPU run ends early with status "aborted: option collapse".
"""

from __future__ import annotations

import logging

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from trainer.config import OPTION_NAMES, OptionsConfig
from trainer.hierarchy.controller import OptionsLearner
from trainer.hierarchy.option_env import OptionVecEnv

LOGGER = logging.getLogger(__name__)

COLLAPSE_STATUS = "aborted: option collapse"


def window_usage(steps: np.ndarray) -> np.ndarray:
    total = steps.sum()
    return steps / total if total > 0 else np.zeros_like(steps, dtype=float)


def average_durations(durations: list[tuple[int, int]], num_options: int) -> np.ndarray:
    """Mean length of completed options per option; NaN where none completed."""
    sums = np.zeros(num_options)
    counts = np.zeros(num_options)
    for option, duration in durations:
        sums[option] += duration
        counts[option] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


class OptionsMonitorCallback(BaseCallback):
    """:param option_env: the OptionVecEnv under SAC; :param learner: the controller
    :param cfg: `options:` config (monitor thresholds in cfg.monitor)"""

    def __init__(self, option_env: OptionVecEnv, learner: OptionsLearner, cfg: OptionsConfig, verbose: int = 0):
        super().__init__(verbose)
        self.option_env = option_env
        self.learner = learner
        self.cfg = cfg
        self.records: list[dict] = []
        self.collapse_warnings = 0
        self.short_duration_warnings = 0
        self.consecutive_collapsed = 0
        self.aborted_reason: str | None = None
        self._window_start = 0

    def _on_step(self) -> bool:
        if self.num_timesteps - self._window_start < self.cfg.monitor.window_steps:
            return True
        self._window_start = self.num_timesteps
        record = self.close_window()
        return not self._should_abort(record)

    def close_window(self) -> dict:
        """Summarise and reset the current window's counters."""
        usage_counter = self.option_env.window
        usage = window_usage(usage_counter.steps)
        durations = average_durations(usage_counter.durations, self.cfg.num_options)
        num_used = int((usage > self.cfg.monitor.used_option_min_pct).sum())
        max_usage = float(usage.max()) if usage.size else 0.0
        record: dict = {"timesteps": int(self.num_timesteps)}
        for idx, name in enumerate(OPTION_NAMES):
            record[f"options/usage_pct/{name}"] = float(usage[idx])
            record[f"options/avg_duration/{name}"] = None if np.isnan(durations[idx]) else float(durations[idx])
            record[f"options/selections/{name}"] = int(usage_counter.selections[idx])
            record[f"options/completions/{name}"] = sum(1 for option, _ in usage_counter.durations if option == idx)
        record["options/num_used_options"] = num_used
        record["options/max_usage_pct"] = max_usage
        record["options/temperature"] = self.learner.current_temperature
        record["options/num_updates"] = self.learner.num_updates
        stats = self.learner.last_stats  # waits for an update in flight, so the count below includes it
        record["options/policy_held_updates"] = self.learner.policy_held_updates  # run total, see target_kl
        for key in ("entropy", "grad_norm", "policy_loss", "value_loss", "advantage_mean", "advantage_std",
                    "clip_fraction", "approx_kl", "sample_age", "policy_held"):
            record[f"options/{key}"] = getattr(stats, key) if stats else None

        record["collapse_warning"] = max_usage > self.cfg.monitor.collapse_threshold
        if record["collapse_warning"]:
            self.collapse_warnings += 1
            LOGGER.warning(
                "⚠️  OPTION COLLAPSE DETECTED! Single option has %.1f%% usage (threshold: %.1f%%). "
                "Only %d/%d options being used.",
                max_usage * 100,
                self.cfg.monitor.collapse_threshold * 100,
                num_used,
                self.cfg.num_options,
            )
        short = []
        for idx, name in enumerate(OPTION_NAMES):
            duration = durations[idx]
            min_duration = self.cfg.option_block(idx).min_duration
            if not np.isnan(duration) and 0 < duration < min_duration * 0.5:
                short.append(name)
                LOGGER.warning(
                    "⚠️  Option %d (%s) has avg duration %.1f (min_duration: %d). Options terminating too early!",
                    idx,
                    name,
                    duration,
                    min_duration,
                )
        self.short_duration_warnings += len(short)
        record["short_duration_options"] = short

        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.logger.record(key, value)
        self.records.append(record)
        usage_counter.reset()
        return record

    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue the windows and the collapse count (JSON-able)."""
        return {
            "records": self.records,
            "collapse_warnings": self.collapse_warnings,
            "short_duration_warnings": self.short_duration_warnings,
            "consecutive_collapsed": self.consecutive_collapsed,
            "window_start": self._window_start,
        }

    def load_state_dict(self, state: dict) -> None:
        self.records = list(state["records"])
        self.collapse_warnings = int(state["collapse_warnings"])
        self.short_duration_warnings = int(state["short_duration_warnings"])
        self.consecutive_collapsed = int(state["consecutive_collapsed"])
        self._window_start = int(state["window_start"])

    def _should_abort(self, record: dict) -> bool:
        monitor = self.cfg.monitor
        if self.num_timesteps < self.cfg.warmup_steps:
            return False
        self.consecutive_collapsed = self.consecutive_collapsed + 1 if record["collapse_warning"] else 0
        if monitor.early_stop_on_collapse and self.consecutive_collapsed >= monitor.collapse_patience:
            top = max(OPTION_NAMES, key=lambda name: record[f"options/usage_pct/{name}"])
            self.aborted_reason = (
                f"option '{top}' used {record['options/max_usage_pct']:.0%} of steps for "
                f"{self.consecutive_collapsed} consecutive windows of {monitor.window_steps} steps "
                f"(collapse_threshold {monitor.collapse_threshold:.0%}) at step {self.num_timesteps}"
            )
            LOGGER.error("Stopping training: %s: %s", COLLAPSE_STATUS, self.aborted_reason)
            return True
        return False


class OptionsTrainingCallback(BaseCallback):
    """Trains the controller: after warmup_steps env steps, every train_freq vectorised steps,
    one update (HierarchicalSAC.train) on a batch of batch_size option transitions."""

    def __init__(self, hierarchy):
        super().__init__()
        self.hierarchy = hierarchy
        self.cfg = hierarchy.config.options

    def _on_step(self) -> bool:
        if self.num_timesteps < self.cfg.warmup_steps or self.n_calls % self.cfg.train_freq:
            return True
        self.hierarchy.train(wait=False)  # overlaps SAC's gradient step where the learner allows
        return True
