"""The Phase A baseline is reused only for a candidate on the same setup (trainer/evaluation/baseline.py)."""

from __future__ import annotations

from pathlib import Path

from trainer.config import load_config
from trainer.evaluation.baseline import shared_hash

B1 = Path(__file__).resolve().parents[2] / "configs" / "phase_b1_options.yaml"


def test_signal_settings_are_part_of_the_shared_setup():
    base = shared_hash(load_config(B1))
    assert shared_hash(load_config(B1)) == base
    assert shared_hash(load_config(B1, {"data.sl_confidence_source": "neutral"})) != base
    assert shared_hash(load_config(B1, {"data.sentiment_source": "neutral"})) != base
    assert shared_hash(load_config(B1, {"data.signals": "/data/spy_signals.csv"})) != base


def test_controller_settings_do_not_change_the_baseline_it_is_compared_with():
    assert shared_hash(load_config(B1, {"options.clip_range": 0.1})) == shared_hash(load_config(B1))


def test_the_trained_baseline_has_the_setup_it_is_registered_under():
    """Phase A is trained on the candidate's splits, signals, environment (costs included), SAC and
    step count, so the shared_config_hash tag it is registered under describes it."""
    from trainer.evaluation.baseline import baseline_config

    candidate = load_config(B1, {
        "data.sentiment_source": "neutral", "environment.transaction_cost_bps": 7.5,
        "environment.window_size": 12, "sac.net_arch": [64, 64], "data.splits.test": 0.2, "data.splits.train": 0.65,
    })
    summary = {"symbol": "QQQ", "total_timesteps": 1234}
    phase_a = baseline_config(summary, candidate)
    assert phase_a.algorithm == "sac" and phase_a.data.symbol == "QQQ"
    assert phase_a.training.total_timesteps == 1234
    assert phase_a.environment == candidate.environment and phase_a.environment.transaction_cost_bps == 7.5
    assert phase_a.data.sentiment_source == "neutral" and phase_a.data.splits == candidate.data.splits
    assert shared_hash(phase_a) == shared_hash(load_config(B1, {
        "data.sentiment_source": "neutral", "environment.transaction_cost_bps": 7.5,
        "environment.window_size": 12, "sac.net_arch": [64, 64], "data.splits.test": 0.2, "data.splits.train": 0.65,
        "training.total_timesteps": 1234,
    }))


def test_the_evaluation_layer_does_not_call_the_cli():
    import ast

    from trainer.evaluation import baseline, champion, workflow

    for module in (baseline, champion, workflow):
        tree = ast.parse(Path(module.__file__).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not any(name and (name == "trainer.cli" or name.startswith("trainer.commands")) for name in imported), module
