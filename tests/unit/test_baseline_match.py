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
