"""How big the production checkpoint is, and how long writing and uploading it take.

The step pods' terminationGracePeriodSeconds (configs/pipeline.yaml) must cover writing one
checkpoint on SIGTERM and uploading it to the run key in S3. This builds the production full
training session (configs/phase_b1_options.yaml, 16 envs) on the bundled SPY data, fills its SAC
replay buffer and option buffer to capacity (a late checkpoint: the largest one), writes a
checkpoint with the trainer's own code and pushes it with RunStorage to a real S3 server
(SeaweedFS on loopback, so the upload figure is this machine's disk and CPU, not a network; the
script prints the time at a few network rates too).

    .venv/bin/python benchmarks/checkpoint_upload.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the SeaweedFS launcher of the test suite


def fill_buffers(session, seed: int = 0) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    buffer = session.sac.replay_buffer
    for name in ("observations", "next_observations", "actions", "rewards"):
        array = getattr(buffer, name, None)
        if array is not None:
            array[...] = rng.standard_normal(array.shape, dtype=np.float32)
    buffer.pos, buffer.full = 0, True
    options = session.hierarchy.option_buffer
    options.states[...] = rng.standard_normal(options.states.shape, dtype=np.float32)
    options.next_states[...] = rng.standard_normal(options.next_states.shape, dtype=np.float32)
    options.pos, options.full = 0, True


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "phase_b1_options.yaml"))
    parser.add_argument("--n-envs", type=int, default=16)
    args = parser.parse_args(argv)

    from support.seaweedfs import seaweedfs_server
    from trainer.config import load_config
    from trainer.envs.factory import load_market_data
    from trainer.storage import RunStorage
    from trainer.training.session import TrainingSession

    work = Path(tempfile.mkdtemp(prefix="ckpt-bench-"))
    os.environ["TRAINER_STATE_DIR"] = str(work / "state")
    config = load_config(args.config, overrides={"training.n_envs": args.n_envs})
    data = load_market_data(config, None)
    session = TrainingSession(config, data, work / "run", config.training.seed)
    fill_buffers(session)
    replay = session.sac.replay_buffer
    print(f"replay buffer: {replay.buffer_size * replay.n_envs} transitions, obs {replay.obs_shape}; "
          f"option buffer: {session.hierarchy.option_buffer.capacity} transitions")

    started = time.perf_counter()
    session.write_checkpoint()
    write_s = time.perf_counter() - started
    checkpoint = sorted(session.checkpoint_root.glob("ckpt-*"))[-1]
    size = du(checkpoint)
    print(f"checkpoint: {size / 1e6:.0f} MB written in {write_s:.1f} s ({checkpoint.name})")

    with seaweedfs_server(work / "s3") as s3:
        os.environ.update(s3.env_vars())
        s3.client().create_bucket(Bucket="bench-runs")
        storage = RunStorage("s3://bench-runs/runs/SPY/bench/full")
        storage.local = work / "run"  # the session wrote straight into the run dir
        started = time.perf_counter()
        storage.push()
        upload_s = time.perf_counter() - started
    print(f"upload to S3 on loopback (SeaweedFS): {upload_s:.1f} s ({size / 1e6 / upload_s:.0f} MB/s)")
    for rate in (50, 20, 10):
        print(f"  at {rate} MB/s: {size / 1e6 / rate:.0f} s upload, {write_s + size / 1e6 / rate:.0f} s write + upload")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
