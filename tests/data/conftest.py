"""Fixtures for the data tests: the real bundled bars, and `trainer validate` run in-process."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from trainer.cli import main
from trainer.data.loaders import bundled_path


@pytest.fixture(scope="session")
def spy_table() -> pd.DataFrame:
    """The bundled SPY.csv exactly as stored (cells as text, original headers)."""
    return pd.read_csv(bundled_path("SPY"), dtype=str)


@dataclass
class ValidateRun:
    code: int
    stdout: str
    stderr: str
    result: dict[str, Any]

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def run_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Callable[..., ValidateRun]:
    """Call `trainer [--result-json R] validate ARGS...` in-process (GX is imported once per session)."""

    def run(*args: str) -> ValidateRun:
        result_path = tmp_path / "result.json"
        result_path.unlink(missing_ok=True)
        capsys.readouterr()  # drop output of earlier calls
        code = main(["--result-json", str(result_path), "validate", *args])
        out, err = capsys.readouterr()
        result = json.loads(result_path.read_text()) if result_path.exists() else {}
        return ValidateRun(code, out, err, result)

    return run
