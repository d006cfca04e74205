"""Static checks that catch real bugs cheaply: undefined names, unused imports and variables,
syntax errors, mutable default arguments (ruff's pyflakes rules plus B006/B008)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    ruff = Path(sys.executable).parent / "ruff"
    proc = subprocess.run(
        [str(ruff), "check", "--select", "F,E9,B006,B008", "--output-format", "concise",
         "trainer", "dags", "tests", "benchmarks", "docker"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
