"""Real gated run directories for registry tests: a tiny SB3 agent, an MLflow run with its metrics
logged, and the gate_full.json that `trainer gate` would write for those metrics.

The verdict is computed from the logged metrics with the real gates code (tests/support/gates_registry.yaml),
so a test that wants a forged verdict has to forge it on purpose.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

SUPPORT = Path(__file__).resolve().parent
GATES = SUPPORT / "gates_registry.yaml"
WINDOW = 2
OBS_SIZE = WINDOW * 10 + 8  # ObservationLayout: 10 market features per bar + 8 portfolio values


def tiny_model_dir(out: Path) -> Path:
    """A tiny real Phase A agent (SB3 SAC, 50 steps) saved by trainer.agent in the model layout."""
    import gymnasium as gym
    import torch
    from stable_baselines3 import SAC

    from trainer.agent import Agent
    from trainer.config import TrainerConfig

    torch.set_num_threads(1)
    config = TrainerConfig(name="tiny", algorithm="sac", environment={"window_size": WINDOW})

    class Toy(gym.Env):
        observation_space = gym.spaces.Box(-1.0, 1.0, (OBS_SIZE,), np.float32)
        action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return self.np_random.uniform(-1, 1, OBS_SIZE).astype(np.float32), {}

        def step(self, action):
            obs = self.np_random.uniform(-1, 1, OBS_SIZE).astype(np.float32)
            return obs, float(action[0] * obs[0]), False, False, {}

    sac = SAC("MlpPolicy", Toy(), learning_starts=10, batch_size=16, policy_kwargs={"net_arch": [16]}, seed=0)
    sac.learn(50)
    agent = Agent(config, sac)
    assert agent.observation_size == OBS_SIZE
    agent.save(out)
    return out


def make_run(root: Path, model_dir: Path, symbol: str, *, sharpe: float = 0.5, data_end: str = "2018-12-31",
             digest: str = "digest-1", algorithm: str = "sac", profile: str = "production",
             judged_against: int | None = None, sharpe_diff: float = 0.1, gates: Path = GATES) -> Path:
    """A gated, evaluated run directory whose MLflow run (in the configured store) holds its metrics.

    `sharpe` decides the tier under gates_registry.yaml: <= 0 fails, (0, 0.3] minimum, > 0.3 target.
    `judged_against` is the champion version the evaluation compared it with (None: no champion);
    `sharpe_diff` its Sharpe minus that champion's on the candidate's bars.
    """
    from trainer.registry import load_policy, registry_client
    from trainer.tracking import configure_mlflow

    client = registry_client()
    run_id = client.create_run(configure_mlflow()).info.run_id
    metrics = {
        "test.sharpe": sharpe, "test.total_return": 0.1, "buy_and_hold.sharpe": 0.4, "eval.sharpe": 0.2,
        "champion.present": 0.0 if judged_against is None else 1.0,
        "champion.version": 0.0 if judged_against is None else float(judged_against),
    }
    if judged_against is not None:
        metrics["stats.vs_champion.sharpe_diff"] = sharpe_diff
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    client.set_terminated(run_id)

    run_dir = root / f"run-{symbol}-{run_id[:8]}"
    shutil.copytree(model_dir, run_dir / "model")
    (run_dir / "summary.json").write_text(json.dumps({
        "status": "completed", "symbol": symbol, "algorithm": algorithm, "profile": profile,
        "config_hash": "cfg-1", "data_digest": digest, "data_end": data_end, "code_version": "abc123",
        "mlflow_run_id": run_id, "metrics": {"eval.sharpe": 0.2},
    }))
    verdict = load_policy(gates).judge(metrics)
    (run_dir / "gate_full.json").write_text(json.dumps({"gates_file": str(gates), **verdict.to_dict()}))
    (run_dir / "evaluation.json").write_text(json.dumps({
        "metrics": metrics, "split": "test", "periods_per_year": 252.0,
        "baseline": {"source": "trained", "model_uri": None}, "interpretation": "PSR is an estimate.",
    }))
    stamps = pd.bdate_range(end=data_end, periods=5)
    pd.DataFrame({"timestamp": stamps, "candidate_return": 0.0}).to_csv(run_dir / "backtest.csv", index=False)
    return run_dir


def policy_file(directory: Path, name: str, **promotion: object) -> Path:
    """gates_registry.yaml with its `promotion:` section changed (a stricter or laxer policy file)."""
    import yaml

    tree = yaml.safe_load(GATES.read_text())
    tree["promotion"] = {**tree.get("promotion", {}), **promotion}
    path = directory / name
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path
