"""benchmarks/gpu_full_run.sh, the GPU benchmark of issue 12, run here on CPU in the self-check mode
its --help names: no GPU has been lent to this project, so this is where its parsing, its runs, its
table and its exit codes are shown to work. Timings are not asserted (benchmarks report them)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_full_run.sh"

pytestmark = pytest.mark.slow


def run_script(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHON": sys.executable, "TRAINER": f"{venv_bin}/trainer"}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def table_rows(stdout: str) -> dict[str, list[str]]:
    """{run name: its columns} of the printed table."""
    return {line.split()[0]: line.split() for line in stdout.splitlines() if re.match(r"(hier|plain)-\w+\s", line)}


def test_both_agents_run_and_every_figure_is_printed_with_the_extrapolation_labelled(tmp_path):
    done = run_script("--device", "cpu", "--steps", "400", "--paths", "sb3", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "device: CPU (no CUDA device)" in done.stdout
    assert "500k (extrapolated)" in done.stdout
    rows = table_rows(done.stdout)
    assert set(rows) == {"hier-sb3", "plain-sb3"}
    for name, (_, status, wall, rate, updates, gpu_mb, minutes, unit) in rows.items():
        assert status == "completed", name
        assert float(rate) > 0 and unit == "min" and float(minutes) == pytest.approx(500_000 / float(rate) / 60, rel=0.05)


def test_a_failed_run_is_shown_with_its_log_and_fails_the_invocation(tmp_path):
    """sac.cuda_graphs on a CPU run is refused by the trainer: the script says so and exits 1."""
    done = run_script("--device", "cpu", "--steps", "400", "--only", "plain", "--paths", "cuda_graphs", tmp_path=tmp_path)
    assert done.returncode == 1
    assert "failed (exit" in done.stderr and "sac.cuda_graphs needs training.device cuda" in done.stderr
    assert "1 run(s) failed" in done.stderr


def test_runs_that_no_longer_fit_the_budget_are_reported_as_skipped(tmp_path):
    done = run_script("--device", "cpu", "--budget", "10", "--paths", "sb3", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("skipped") == 2 and "of the 10s budget left" in done.stderr
    assert table_rows(done.stdout) == {}


def test_usage_errors_exit_2_with_a_message(tmp_path):
    unknown = run_script("--steps", "400", "--nope", tmp_path=tmp_path)
    assert unknown.returncode == 2 and "unknown argument --nope (see --help)" in unknown.stderr
    usage = run_script("--help", tmp_path=tmp_path)
    assert usage.returncode == 0 and "--steps N" in usage.stdout and "set -euo" not in usage.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_a_cuda_run_on_a_machine_without_one_is_refused_before_training(tmp_path):
    done = run_script("--steps", "400", tmp_path=tmp_path)
    assert done.returncode == 2 and "torch sees no CUDA device here" in done.stderr
    assert "==" not in done.stderr  # no run started
