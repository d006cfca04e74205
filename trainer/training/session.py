"""One training run, start or resume to finish: envs, model, periodic evaluation, checkpoints,
progress, preemption and the run directory's outputs (docs/contracts.md).

Phase A (algorithm `sac`) and Phase B.1 (`hierarchical_sac`) share everything here except the
options layer, so both are trained, evaluated and checkpointed the same way.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

from trainer import faults
from trainer.agent import Agent
from trainer.config import OPTION_NAMES, TrainerConfig
from trainer.envs.factory import MarketData, check_observation, make_vec_env
from trainer.errors import NonFiniteError
from trainer.evaluation.metrics import backtest_metrics, option_usage, option_usage_metrics
from trainer.hierarchy.monitor import COLLAPSE_STATUS, average_durations
from trainer.hierarchy.hierarchical_sac import HierarchicalSAC, build_sac
from trainer.io import write_json_atomic, write_text_atomic
from trainer.run_dir import RunDir
from trainer.training import checkpoints

LOGGER = logging.getLogger(__name__)

SAC_LOSS_KEYS = ("train/actor_loss", "train/critic_loss", "train/ent_coef_loss")


@dataclass
class RunState:
    """What a checkpoint carries besides the networks and buffers."""

    eval_history: list = field(default_factory=list)
    best_eval_sharpe: float = -math.inf
    mlflow_run_id: str | None = None
    wall_seconds: float = 0.0


def gpu_max_memory_mb() -> float | None:
    """Peak GPU memory torch allocated in this process (None without CUDA)."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


class TrainingSession:
    """:param config: resolved config; :param data: loaded market data; :param output_dir: local run dir
    :param seed: global seed; :param tracker: optional MLflow logger (trainer.training.mlflow_log)"""

    def __init__(self, config: TrainerConfig, data: MarketData, output_dir: Path, seed: int, tracker=None):
        check_observation(config)
        self.config = config
        self.data = data
        self.output_dir = output_dir
        self.run_dir = RunDir(output_dir)
        self.seed = seed
        self.tracker = tracker
        self.state = RunState()
        training = config.training
        self.train_env = make_vec_env(data.features["train"], config, training.n_envs, seed)
        if config.hierarchical:
            self.hierarchy: HierarchicalSAC | None = HierarchicalSAC(config, self.train_env, seed)
            self.sac = self.hierarchy.model
        else:
            self.hierarchy = None
            self.sac = build_sac(config, self.train_env, seed)
        self.preempted = False
        self.aborted_reason: str | None = None
        self.after_checkpoint = None  # e.g. RunStorage.push, so S3 holds every checkpoint
        self.last_checkpoint_steps: int | None = None
        self._train_started: float | None = None

    @property
    def agent(self) -> Agent:
        """The agent as evaluated and saved: with the run's fitted signal model (so a served model
        computes the same signals) and the last bars of the data as its serving input example."""
        from trainer.agent import example_bars

        return Agent(
            self.config,
            self.sac,
            self.hierarchy.learner if self.hierarchy else None,
            signals=self.data.signals,
            example_bars=example_bars(self.data, self.config.environment.window_size),
        )

    @property
    def checkpoint_root(self) -> Path:
        return self.run_dir.checkpoint_dir

    # ---------------------------------------------------------------- resume

    def restore(self, checkpoint: Path) -> None:
        """Load a complete checkpoint into this freshly built session, so training continues as if
        it had never stopped: same envs mid-episode, same options mid-way, same observations, same
        RNG streams. A resume that changes n_envs or a buffer size is refused (TrainerError)."""
        import torch

        saved = checkpoints.read_state(checkpoint)
        checkpoints.check_resume_settings(checkpoint, saved.get("settings"), self.config)
        env = self.hierarchy.option_env if self.hierarchy else self.train_env
        # force_reset=False keeps the saved _last_obs / _last_episode_starts, so learn() continues
        # the open episodes instead of resetting every env.
        # The same class (FastSAC), with this run's update flags (a resume may switch compile on).
        self.sac = type(self.sac).load(checkpoint / "sac.zip", env=env, device=self.sac.device, force_reset=False,
                                       compile_update=self.config.sac.compile, cuda_graphs=self.config.sac.cuda_graphs)
        if (checkpoint / "replay_buffer.npz").exists():
            checkpoints.load_replay(self.sac.replay_buffer, checkpoint / "replay_buffer.npz")
        else:
            LOGGER.warning("%s holds no replay buffer (checkpoints.save_replay_buffer false): SAC resumes with "
                           "an empty one, so the run will not match an uninterrupted one", checkpoint)
        if self.hierarchy:
            self.hierarchy.model = self.sac
            self.hierarchy.load_controller(checkpoint / "controller.pt")
            self.hierarchy.option_buffer.load(checkpoint / "option_buffer.npz")
        rollout_path = checkpoint / "rollout.pt"
        if rollout_path.exists():
            rollout = torch.load(rollout_path, weights_only=False)
            checkpoints.restore_env_state(self.train_env, rollout["envs"])
            if self.hierarchy:
                self.hierarchy.load_rollout_state(rollout["options"])
        else:  # written before rollout.pt existed: the envs restart their episodes
            LOGGER.warning("%s has no rollout.pt (older trainer): every env starts a new episode", checkpoint)
            self.sac._last_obs = None
        # Last: SAC.load seeded the global RNGs and the action space with the run's seed.
        checkpoints.restore_rng_state(
            torch.load(checkpoint / "rng.pt", weights_only=False),
            self.hierarchy.option_env.rng if self.hierarchy else None,
            self.sac.action_space,
        )
        self.state = RunState(
            eval_history=saved["eval_history"],
            best_eval_sharpe=saved["best_eval_sharpe"] if saved["best_eval_sharpe"] is not None else -math.inf,
            mlflow_run_id=saved["mlflow_run_id"],
            wall_seconds=saved["wall_seconds"],
        )
        if self.hierarchy:
            self.hierarchy.load_state_dict(saved["hierarchy"])
        LOGGER.info("resumed from %s at step %d", checkpoint, self.sac.num_timesteps)

    def checkpoint_state(self) -> dict:
        elapsed = time.monotonic() - self._train_started if self._train_started is not None else 0.0
        state = {
            "eval_history": self.state.eval_history,
            "best_eval_sharpe": None if math.isinf(self.state.best_eval_sharpe) else self.state.best_eval_sharpe,
            "mlflow_run_id": self.state.mlflow_run_id,
            "wall_seconds": self.state.wall_seconds + elapsed,
            "hierarchy": self.hierarchy.state_dict() if self.hierarchy else None,
            "settings": checkpoints.resume_settings(self.config),
        }
        return state

    # ---------------------------------------------------------------- training

    def train(self, total_timesteps: int) -> str:
        """Train until total_timesteps env steps (counting resumed ones); returns the status."""
        done = int(self.sac.num_timesteps)
        remaining = total_timesteps - done
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        started = self._train_started = time.monotonic()
        try:
            if remaining > 0:
                periodic = PeriodicCallback(self)
                progress = ProgressCallback(total_timesteps, done)
                extra = CallbackList([periodic, progress])
                if self.hierarchy:
                    self.hierarchy.learn(remaining, callback=extra, reset_num_timesteps=done == 0)
                else:
                    self.sac.learn(remaining, callback=extra, reset_num_timesteps=done == 0)
                progress.close()
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.state.wall_seconds += time.monotonic() - started
            self._train_started = None
        if self.preempted:
            return "preempted"
        if self.hierarchy and self.hierarchy.monitor.aborted_reason:
            self.aborted_reason = self.hierarchy.monitor.aborted_reason
            return COLLAPSE_STATUS
        self.evaluate(final=True)
        return "completed"

    def _on_sigterm(self, signum, frame) -> None:
        LOGGER.warning("SIGTERM received: finishing the step, writing a checkpoint and stopping "
                       "(exit 75, retry with --resume)")
        self.preempted = True

    def write_checkpoint(self) -> None:
        """A checkpoint of the session as it is now; call it only between two SB3 rollouts
        (PeriodicCallback does), where every stored step is complete."""
        cfg = self.config.checkpoints
        steps = int(self.sac.num_timesteps)
        checkpoints.write_checkpoint(
            self.checkpoint_root,
            steps,
            self,
            self.checkpoint_state(),
            cfg.keep_last,
            cfg.save_replay_buffer,
        )
        self.last_checkpoint_steps = steps
        if self.after_checkpoint:
            self.after_checkpoint()
        faults.fault_point(f"train.checkpoint.{steps}")

    # ---------------------------------------------------------------- evaluation

    def evaluate(self, final: bool = False) -> dict:
        """Deterministic pass over the eval split; keeps the best model by eval Sharpe."""
        steps = int(self.sac.num_timesteps)
        if not final or not self.state.eval_history or self.state.eval_history[-1]["timesteps"] != steps:
            result = self.agent.backtest(self.data.features["eval"], seed=self.seed)
            metrics = backtest_metrics(result.returns, result.positions, self.data.periods_per_year)
            record = {"timesteps": steps, **{f"eval/{k}": v for k, v in metrics.items()}}
            if result.options is not None:
                usage = option_usage(result.options, OPTION_NAMES)
                for name in OPTION_NAMES:
                    record[f"eval/usage_pct/{name}"] = usage["usage_pct"][name]
            self.state.eval_history.append(record)
            LOGGER.info(
                "eval @ %d: sharpe %.3f, return %.2f%%, max drawdown %.2f%%",
                steps, metrics["sharpe"], metrics["total_return"] * 100, metrics["max_drawdown"] * 100,
            )
            if self.tracker:
                self.tracker.log_metrics(record, steps)
            if metrics["sharpe"] > self.state.best_eval_sharpe:
                self.state.best_eval_sharpe = metrics["sharpe"]
                self.agent.save(self.run_dir.best_model_dir, {"timesteps": steps, "eval_sharpe": metrics["sharpe"]})
        return self.state.eval_history[-1]

    # ---------------------------------------------------------------- outputs

    def run_metrics(self) -> dict[str, float | None]:
        """The flat metrics of summary.json (docs/contracts.md names)."""
        from trainer.evaluation.training_health import late_training_metrics, losses_finite, policy_loss_converged

        metrics: dict[str, float | None] = {}
        best = max(self.state.eval_history, key=lambda r: r["eval/sharpe"], default=None)
        for key in ("sharpe", "total_return", "max_drawdown"):
            metrics[f"eval.{key}"] = best[f"eval/{key}"] if best else None
        if not self.hierarchy:
            return metrics
        monitor, totals, learner = self.hierarchy.monitor, self.hierarchy.option_env.totals, self.hierarchy.learner
        usage = totals.steps / max(1, totals.steps.sum())
        durations = average_durations(totals.durations, len(OPTION_NAMES))
        per_option = {
            "selections": {n: float(totals.selections[i]) for i, n in enumerate(OPTION_NAMES)},
            "usage_pct": {n: float(usage[i]) for i, n in enumerate(OPTION_NAMES)},
            "avg_duration": {n: (0.0 if np.isnan(durations[i]) else float(durations[i])) for i, n in enumerate(OPTION_NAMES)},
        }
        metrics.update(option_usage_metrics(per_option, self.config.options.monitor.used_option_min_pct))
        # The gates judge the late stretch (last 20% of the steps), not the totals above (warmup included).
        options_cfg = self.config.options
        metrics.update(
            late_training_metrics(
                monitor.records,
                OPTION_NAMES,
                {n: float(options_cfg.option_block(i).min_duration) for i, n in enumerate(OPTION_NAMES)},
                options_cfg.monitor.used_option_min_pct,
                total_timesteps=int(self.sac.num_timesteps),
            )
        )
        stats = learner.last_stats
        converged = policy_loss_converged(
            monitor.records,
            loss=options_cfg.policy_loss,
            clip_range=options_cfg.clip_range,
            normalized_advantages=options_cfg.normalize_advantages,
        )
        metrics.update(
            {
                "options.temperature": learner.current_temperature,
                "options.entropy": stats.entropy if stats else None,
                "monitor.collapse_warnings": float(monitor.collapse_warnings),
                "monitor.short_duration_warnings": float(monitor.short_duration_warnings),
                "train.losses_finite": 1.0 if losses_finite(monitor.records) else 0.0,
                "train.policy_loss_converged": None if converged is None else float(converged),
                "train.policy_loss_final": stats.policy_loss if stats else None,
                "train.value_loss_final": stats.value_loss if stats else None,
                "train.option_updates": float(learner.num_updates),
            }
        )
        # Which termination rule ended each option (trainer/options/trading_options.py names them).
        for option, counts in self.hierarchy.option_env.terminations.items():
            for rule, count in counts.items():
                metrics[f"options.terminations.{option}.{rule}"] = float(count)
        return metrics

    def write_outputs(self, status: str, summary_extra: dict) -> dict:
        """Final model, histories, resolved config and summary.json (all atomic)."""
        run = self.run_dir
        if status == "completed" or status == COLLAPSE_STATUS:
            self.agent.save(run.model_dir, {"timesteps": int(self.sac.num_timesteps), "status": status})
        write_text_atomic(run.config_path, yaml.safe_dump(self.config.model_dump(mode="json"), sort_keys=False))
        write_json_atomic(run.monitor_path, self.hierarchy.monitor.records if self.hierarchy else [])
        write_json_atomic(run.eval_history_path, self.state.eval_history)
        steps = int(self.sac.num_timesteps)
        summary = {
            "status": status,
            "reason": self.aborted_reason,
            "total_timesteps": steps,
            "wall_seconds": round(self.state.wall_seconds, 2),
            "steps_per_second": round(steps / self.state.wall_seconds, 2) if self.state.wall_seconds else None,
            "sac_updates": int(self.sac._n_updates),  # SAC gradient steps (benchmarks/gpu_full_run.sh)
            "updates_per_second": (round(self.sac._n_updates / self.state.wall_seconds, 2)
                                   if self.state.wall_seconds else None),
            "gpu_max_memory_mb": gpu_max_memory_mb(),
            "mlflow_run_id": self.state.mlflow_run_id,
            "data": self.data.describe(),
            "metrics": self.run_metrics(),
            **summary_extra,
        }
        run.write_summary(summary)
        return summary


class PeriodicCallback(BaseCallback):
    """Every step: finite SAC losses, SIGTERM. On schedule: evaluation, checkpoints, monitor logging.

    SB3 calls `on_step` right after `env.step`, before the step's transition is stored and
    `_last_obs` moves on (OffPolicyAlgorithm.collect_rollouts), and the gradient step comes after
    the rollout. A checkpoint taken in `on_step` would miss that step, so `on_step` only marks a
    checkpoint due (on schedule, or on SIGTERM) and it is written at the next point where SB3's
    state is whole: the start of the next rollout, or the end of training. After a SIGTERM
    checkpoint the next step's `on_step` stops training.

    Fault points (trainer/faults.py, for the resume tests): `train.step.<n>` inside step n,
    `train.checkpoint.<n>` once checkpoint n is complete and pushed.
    """

    def __init__(self, session: TrainingSession):
        super().__init__()
        self.session = session
        cfg = session.config
        self.eval_freq = cfg.training.eval_freq
        self.checkpoint_freq = cfg.checkpoints.freq
        self._logged_windows = 0
        self._checkpoint_due = False
        self._stop = False  # a SIGTERM checkpoint was written
        self._rollout_whole = False  # the last rollout ran to its end (no callback stopped it)

    def _init_callback(self) -> None:
        # SB3 sets the callback's own num_timesteps only at the first step; the model's is current
        # (the resumed count), so the schedule continues where the checkpoint left it.
        done = self.model.num_timesteps
        self._next_eval = (done // self.eval_freq + 1) * self.eval_freq
        self._next_ckpt = (done // self.checkpoint_freq + 1) * self.checkpoint_freq
        if self.session.hierarchy:
            self._logged_windows = len(self.session.hierarchy.monitor.records)

    def _on_step(self) -> bool:
        if self._stop:
            return False
        faults.fault_point(f"train.step.{self.num_timesteps}")
        session = self.session
        values = self.model.logger.name_to_value
        for key in SAC_LOSS_KEYS:
            if key in values and not math.isfinite(values[key]):
                raise NonFiniteError(f"SAC {key} is {values[key]} at step {self.num_timesteps}")
        if session.hierarchy and session.tracker:
            records = session.hierarchy.monitor.records
            for record in records[self._logged_windows :]:
                session.tracker.log_metrics(record, record["timesteps"])
            self._logged_windows = len(records)
        if self.num_timesteps >= self._next_eval:
            self._next_eval += self.eval_freq
            session.evaluate()
        if self.num_timesteps >= self._next_ckpt:
            self._next_ckpt += self.checkpoint_freq
            self._checkpoint_due = True
        if session.preempted:
            self._checkpoint_due = True
        return True

    def _on_rollout_start(self) -> None:
        self._rollout_whole = False
        self._write_due_checkpoint()

    def _on_rollout_end(self) -> None:
        self._rollout_whole = True

    def _on_training_end(self) -> None:
        # The last step's rollout ended and its gradient step ran; a rollout another callback
        # stopped (collapse abort) is not whole, and its run ends without a checkpoint.
        if self._rollout_whole:
            if self.session.preempted:  # SIGTERM during the last gradient step
                self._checkpoint_due = True
            self._write_due_checkpoint()

    def _write_due_checkpoint(self) -> None:
        if not self._checkpoint_due:
            return
        self._checkpoint_due = False
        self.session.write_checkpoint()
        if self.session.preempted:
            self._stop = True


class ProgressCallback(BaseCallback):
    """A rich progress bar on a terminal; a log line every 10% elsewhere (Airflow task logs)."""

    def __init__(self, total: int, already_done: int):
        super().__init__()
        self.total = total
        self.already_done = already_done
        self._bar = None
        self._next_log = 0.1

    def _on_training_start(self) -> None:
        if sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self._bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), transient=False)
            self._bar.start()
            self._task = self._bar.add_task("training", total=self.total, completed=self.already_done)

    def _on_step(self) -> bool:
        if self._bar is not None:
            self._bar.update(self._task, completed=self.num_timesteps)
        elif self.num_timesteps / self.total >= self._next_log:
            LOGGER.info("training: %d/%d steps (%.0f%%)", self.num_timesteps, self.total, 100 * self.num_timesteps / self.total)
            while self.num_timesteps / self.total >= self._next_log:
                self._next_log += 0.1
        return True

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
