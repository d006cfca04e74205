"""Resume is a continuation: a run stopped at step k (SIGKILL, or SIGTERM preemption) and resumed
with --resume ends with the same summary metrics, eval and monitor histories, weights and buffers
as the same run never stopped. Real `trainer train` processes on the bundled SPY data with tiny
networks and 2 envs, in the local run storage (tests/integration/test_faults.py resumes from S3).

The stop points come from TRAINER_FAULTS (trainer/faults.py) at named steps of the training loop:
`train.step.<n>=kill` SIGKILLs the process inside step n; `train.step.<n>=pause:...` holds it there
while the test sends a real SIGTERM. Both are off the checkpoint schedule (every 100 steps).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from support.seaweedfs import lease_renewed_at

ROOT = Path(__file__).resolve().parents[2]
TRAINER = str(Path(sys.executable).parent / "trainer")
CONFIGS = {"hierarchical_sac": str(ROOT / "configs" / "phase_b1_options.yaml"),
           "sac": str(ROOT / "configs" / "phase_a_baseline.yaml")}
TOTAL = 400
COMMON = ["environment.window_size=10", "sac.net_arch=[32,32]", "sac.batch_size=32", "sac.buffer_size=5000",
          "sac.learning_starts=100", "checkpoints.freq=100", "checkpoints.keep_last=10"]
OPTIONS = ["options.state_dim=108", "options.hidden_dim=32", "options.warmup_steps=100", "options.batch_size=16",
           "options.monitor.window_steps=100", "options.option_buffer_size=3000"]
# Differ between two identical runs by nature: elapsed time.
TIMING_KEYS = ("wall_seconds", "steps_per_second", "updates_per_second")

pytestmark = pytest.mark.slow


def _env(state: Path, faults: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINER_", "MLFLOW_"))}
    env["TRAINER_STATE_DIR"] = str(state)
    if faults:
        env["TRAINER_FAULTS"] = faults
    return env


def train_args(out: Path, algorithm: str, *extra: str) -> list[str]:
    sets = COMMON + (OPTIONS if algorithm == "hierarchical_sac" else [])
    return ["train", "--config", CONFIGS[algorithm], "--symbol", "SPY", "--total-timesteps", str(TOTAL),
            "--n-envs", "2", "--eval-freq", "200", "--output-dir", str(out), "--no-mlflow",
            *[arg for pair in sets for arg in ("--set", pair)], *extra]


def trainer(args: list[str], env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([TRAINER, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"trainer exited {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, Path]:
    """The uninterrupted runs, one per algorithm, built on first use."""
    runs: dict[str, Path] = {}

    def get(algorithm: str) -> Path:
        if algorithm not in runs:
            base = tmp_path_factory.mktemp(f"reference-{algorithm}")
            trainer(train_args(base / "run", algorithm), _env(base / "state"))
            runs[algorithm] = base / "run"
        return runs[algorithm]

    return get


def newest_checkpoint(run: Path) -> Path:
    return sorted((run / "checkpoints").glob("ckpt-*/COMPLETE"))[-1].parent


def assert_same_tensors(a, b, where: str) -> None:
    """Every tensor / array of two nested state dicts equal within float tolerance (and report
    whether they are bit-identical)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_tensors(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-6), where
    elif isinstance(a, np.ndarray):
        assert np.allclose(a, b, rtol=1e-5, atol=1e-6), where
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6), where
    else:
        assert a == b, where


def assert_same_run(resumed: Path, uninterrupted: Path) -> None:
    from stable_baselines3 import SAC

    a, b = json.loads((resumed / "summary.json").read_text()), json.loads((uninterrupted / "summary.json").read_text())
    assert a["status"] == b["status"] == "completed" and a["total_timesteps"] == b["total_timesteps"] == TOTAL
    assert a["metrics"].keys() == b["metrics"].keys()
    for key, value in b["metrics"].items():
        if isinstance(value, float):
            assert a["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
        else:
            assert a["metrics"][key] == value, key
    rest = [{k: v for k, v in summary.items() if k not in (*TIMING_KEYS, "metrics")} for summary in (a, b)]
    assert rest[0] == rest[1]
    for name in ("eval_history.json", "monitor_metrics.json"):
        assert json.loads((resumed / name).read_text()) == json.loads((uninterrupted / name).read_text()), name
    # The final weights: actor, critics, target critics, entropy coefficient, controller.
    policies = [SAC.load(run / "model" / "sac.zip", device="cpu") for run in (resumed, uninterrupted)]
    assert_same_tensors(policies[0].policy.state_dict(), policies[1].policy.state_dict(), "sac.policy")
    assert_same_tensors(policies[0].log_ent_coef.detach(), policies[1].log_ent_coef.detach(), "sac.log_ent_coef")
    if (uninterrupted / "model" / "controller.pt").exists():
        controllers = [torch.load(run / "model" / "controller.pt", weights_only=False) for run in (resumed, uninterrupted)]
        assert_same_tensors(controllers[0], controllers[1], "controller")
    # The last checkpoint of both: replay buffer, option buffer, optimizers, envs and options mid-episode.
    last = [run / "checkpoints" / f"ckpt-{TOTAL:010d}" for run in (resumed, uninterrupted)]
    for name in ("replay_buffer.npz", "option_buffer.npz"):
        if (last[1] / name).exists():
            with np.load(last[0] / name) as x, np.load(last[1] / name) as y:
                assert_same_tensors(dict(x), dict(y), name)
    for name in ("controller.pt", "rollout.pt"):
        if (last[1] / name).exists():
            assert_same_tensors(torch.load(last[0] / name, weights_only=False),
                                torch.load(last[1] / name, weights_only=False), name)


@pytest.mark.parametrize("algorithm", ["hierarchical_sac", "sac"])
def test_sigkill_mid_run_then_resume_ends_like_the_uninterrupted_run(tmp_path, reference, algorithm):
    """SIGKILL inside step 250: the resume starts from the checkpoint at 200, repeats 200..250 and
    ends exactly where the run that was never killed ends."""
    out = tmp_path / "run"
    killed = trainer(train_args(out, algorithm), _env(tmp_path / "state", "train.step.250=kill"), check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (out / "summary.json").exists()
    assert newest_checkpoint(out).name == "ckpt-0000000200"
    # A scheduled checkpoint is taken after SB3 stored its step too: 200 steps / 2 envs transitions.
    with np.load(newest_checkpoint(out) / "replay_buffer.npz") as replay:
        assert int(replay["pos"]) == 100 and len(replay["observations"]) == 100
    resumed = trainer([*train_args(out, algorithm), "--resume"], _env(tmp_path / "state"))
    assert "resumed from" in resumed.stderr and "at step 200" in resumed.stderr
    assert_same_run(out, reference(algorithm))


def test_sigkill_with_s3_run_storage_then_a_fresh_pod_resumes_like_the_uninterrupted_run(tmp_path, reference, s3_server):
    """The same in the S3 run storage: the killed trainer's staging folder is gone (a new pod, an
    empty state dir); the resume pulls the newest complete checkpoint from S3 and the run it pushes
    back ends like the uninterrupted local one."""
    bucket = "resume-runs"
    client = s3_server.client()
    if bucket not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=bucket)
    output = f"s3://{bucket}/SPY/resume-{tmp_path.name}/full"
    args = [*train_args(tmp_path / "unused", "hierarchical_sac")]
    args[args.index("--output-dir") + 1] = output

    # The SIGKILLed trainer cannot release its run-key lease; the next pod takes it over once it is
    # older than its TTL. 20 s, not less: a pod that starts too early must still find the lease
    # alive after its own start-up (about 10 s of imports on a slow, loaded 2-core box, where a 3 s
    # TTL had expired before the early pod asked).
    ttl = 20.0

    def pod_env(name: str, faults: str | None = None) -> dict[str, str]:
        return {**_env(tmp_path / name, faults), **s3_server.env_vars(), "TRAINER_LEASE_TTL_SECONDS": str(ttl)}

    killed = trainer(args, pod_env("first-pod", "train.step.250=kill"), check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    early = trainer([*args, "--resume"], pod_env("too-early-pod"), check=False)
    assert early.returncode == 73 and "is being trained by" in early.stderr, early.stderr[-2000:]
    time.sleep(max(0.0, lease_renewed_at(client, output) + ttl + 0.5 - time.time()))  # until the dead trainer's lease has expired
    resumed = trainer([*args, "--resume"], pod_env("second-pod"))
    assert "taking over the lease" in resumed.stderr
    assert "resumed from" in resumed.stderr and "at step 200" in resumed.stderr
    # What S3 holds now, downloaded as a run directory, against the run never killed.
    copy, prefix = tmp_path / "from-s3", output[len(f"s3://{bucket}/"):]
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            target = copy / obj["Key"][len(prefix) + 1:]
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, obj["Key"], str(target))
    assert not (copy / "lease.json").exists()  # released at the end
    assert_same_run(copy, reference("hierarchical_sac"))


@pytest.mark.parametrize("step", [50, 150], ids=["in-warmup", "after-warmup"])
def test_sigterm_at_an_unscheduled_step_checkpoints_that_step_and_resumes_exactly(tmp_path, reference, step):
    """A real SIGTERM while step `step` runs (50: random warm-up actions, no controller updates yet;
    150: SAC and the controller learning): exit 75, a checkpoint named after that step that holds
    its transition, and a resume that ends like the uninterrupted run."""
    out, release = tmp_path / "run", tmp_path / "release"
    env = _env(tmp_path / "state", f"train.step.{step}=pause:120:{release}")
    proc = subprocess.Popen([TRAINER, *train_args(out, "hierarchical_sac")], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not Path(f"{release}.reached").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert Path(f"{release}.reached").exists(), f"step {step} not reached (exit {proc.poll()})"
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the handler runs while the step is held
        release.write_text("go")
        _, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 75, stderr[-2000:]
    assert f"preempted at step {step}" in stderr and "Traceback" not in stderr
    checkpoint = newest_checkpoint(out)
    assert checkpoint.name == f"ckpt-{step:010d}"
    # Taken after SB3 stored the step: step/n_envs transitions in the replay buffer.
    with np.load(checkpoint / "replay_buffer.npz") as replay:
        assert int(replay["pos"]) == step // 2 and len(replay["observations"]) == step // 2
    resumed = trainer([*train_args(out, "hierarchical_sac"), "--resume"], _env(tmp_path / "state"))
    assert f"at step {step}" in resumed.stderr
    assert_same_run(out, reference("hierarchical_sac"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--n-envs", "1"], "training.n_envs is 2 in the checkpoint and 1 now"),
        (["--set", "sac.buffer_size=4000"], "sac.buffer_size is 5000 in the checkpoint and 4000 now"),
        (["--set", "options.option_buffer_size=2000"], "options.option_buffer_size is 3000 in the checkpoint and 2000 now"),
    ],
    ids=["n_envs", "sac.buffer_size", "options.option_buffer_size"],
)
def test_resume_that_changes_envs_or_buffer_sizes_is_refused(tmp_path, reference, change, message):
    out = tmp_path / "run"
    shutil.copytree(reference("hierarchical_sac"), out)
    before = (out / "summary.json").read_text()
    proc = trainer([*train_args(out, "hierarchical_sac"), *change, "--resume"], _env(tmp_path / "state"), check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "cannot resume from" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (out / "summary.json").read_text() == before
