"""`trainer --help` and every `trainer <step> --help`: enough to use the step, nothing misleading."""

from __future__ import annotations

import argparse

import pytest

from trainer.cli import build_parser
from trainer.errors import EXIT_BUSY, EXIT_ERROR, EXIT_FAILED, EXIT_OK, EXIT_PREEMPTED


def _steps() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_the_top_level_help_names_every_exit_code_a_step_can_return():
    epilog = build_parser().epilog
    for code in (EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_BUSY, EXIT_PREEMPTED):
        assert f" {code} " in f" {epilog}", f"exit code {code} missing from `trainer --help`"


@pytest.mark.parametrize("step", sorted(_steps()))
def test_a_step_help_shows_no_default_that_is_not_one(step):
    """An option without a default (None) is not "default: None": its help says what happens instead."""
    text = _steps()[step].format_help()
    assert "default: None" not in text
    assert "(default: False)" not in text and "(default: [])" not in text


def test_train_help_names_the_defaults_that_are_real():
    text = " ".join(_steps()["train"].format_help().split())
    assert "default: adhoc)" in text
    assert "(default: full)" in text
    assert "default: the bundled data for the symbol" in text
