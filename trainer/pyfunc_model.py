"""The trained agent as an MLflow pyfunc model: raw bars in, the gated backtest's decisions out.

What a registered version serves. The model directory of a run (meta.json, sac.zip, controller.pt,
signals.json, example_bars.csv) travels as the pyfunc artifact `model_dir`; `load_context`
rebuilds the agent with `trainer.agent.load_agent`, and `predict` is `Agent.replay`: the bars are
featurised as training featurised each split (compute_features, then the run's fitted
SignalModel) and walked by `Agent.backtest`'s own deterministic loop, option persistence
included (min_duration, termination rules, option memory). So `models:/...@champion` serves,
bar for bar, the positions and options of the backtest its gates judged.

    model = mlflow.pyfunc.load_model("models:/hierarchical-options-SPY@champion")
    model.predict(bars)   # bars: timestamp, open, high, low, close, volume (+ signal columns)

Input (the signature): a DataFrame, one row per bar, oldest first, timestamps strictly increasing
and tz-naive; `open, high, low, close, volume` as float64 (cast integer volumes); `sentiment` /
`sl_confidence` in [0, 1], required where the run took them from the data's column or a signals
file (then pass the value as of each bar), ignored where it derived them (they are recomputed
from the bars by the saved SignalModel) or used the neutral value. At least
FEATURE_WARMUP_BARS + window_size bars (34 + 57 = 91 with the shipped config).

Output: one row per input row, in input order. `timestamp`; `exposure`, the target exposure
(fraction of equity, negative = short) set at the close of that bar and held over the next one;
for Phase B.1 also `option` (name), `option_index` (OPTION_NAMES order) and `option_step` (steps
already spent in that option when the bar's decision is made; 0 = chosen at this bar). Rows
before FEATURE_WARMUP_BARS + window_size - 1 have no decision: exposure NaN, option "",
option_index -1, option_step -1. The walk starts flat at the first decided row, so pass the same
history to get the same decisions (the decision at bar t depends on the frame's first bar). In
backtest terms: row t's exposure is `positions` of the backtest row stamped with bar t + 1.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd

MODEL_NAME_IN_RUN = "agent"
"""The LoggedModel name used for the agent inside a training run."""


class AgentPyfunc(mlflow.pyfunc.PythonModel):
    """Wraps `trainer.agent.Agent.replay`; stateless between calls (each call replays its frame)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from trainer.agent import load_agent

        self._agent = load_agent(Path(context.artifacts["model_dir"]))

    # No type hints here on purpose: MLflow 3 turns predict() hints into a schema and warns on Any.
    def predict(self, context, model_input, params=None):
        return replay_frame(self._agent.replay(model_input))


def replay_frame(replay) -> pd.DataFrame:
    """A trainer.agent.Replay as the served DataFrame (columns as in `agent_signature`)."""
    out = pd.DataFrame({"timestamp": replay.timestamps, "exposure": replay.exposure})
    if replay.option_index is not None:
        out["option"] = replay.option_names
        out["option_index"] = replay.option_index
        out["option_step"] = replay.option_step
    return out.reset_index(drop=True)


def agent_signature(agent) -> mlflow.models.ModelSignature:
    """Input and output schema of a served agent (see the module docstring)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    from trainer.agent import BAR_COLUMNS, TIME_COLUMN
    from trainer.data.signals import SIGNALS

    required, read = agent.signal_columns
    inputs = [ColSpec("datetime", TIME_COLUMN), *(ColSpec("double", c) for c in BAR_COLUMNS)]
    # A signal the model does not read is still accepted (and ignored), so one frame fits both phases.
    inputs += [ColSpec("double", s, required=s in required) for s in SIGNALS]
    outputs = [ColSpec("datetime", TIME_COLUMN), ColSpec("double", "exposure")]
    if agent.hierarchical:
        outputs += [ColSpec("string", "option"), ColSpec("long", "option_index"), ColSpec("long", "option_step")]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def _pip_requirements() -> list[str]:
    """Pinned from the running environment, so logging skips MLflow's slow requirement inference
    (it would load the model in a subprocess)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for dist in ("mlflow", "stable-baselines3", "torch", "gymnasium", "numpy", "pandas", "pydantic", "pyyaml"):
        try:
            pins.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            pins.append(dist)
    return pins


def log_agent_model(model_dir: str | Path, run_id: str) -> mlflow.models.model.ModelInfo:
    """Log `model_dir` as the pyfunc model `agent` of MLflow run `run_id` (a LoggedModel), with
    its signature and, when the model directory has example_bars.csv, that input example (MLflow
    then checks at logging time that the example replays).

    The `trainer` package goes along as code, so a loader without the package installed
    still finds `trainer.agent` and this class.
    """
    import trainer
    from trainer.agent import load_agent

    model_dir = Path(model_dir)
    if not (model_dir / "meta.json").is_file():
        from trainer.errors import TrainerError

        raise TrainerError(f"{model_dir}: not a model directory (meta.json missing)")
    agent = load_agent(model_dir)
    package_dir = Path(trainer.__file__).parent
    with mlflow.start_run(run_id=run_id):
        return mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=AgentPyfunc(),
            artifacts={"model_dir": str(model_dir)},
            code_paths=[str(package_dir)],
            pip_requirements=_pip_requirements(),
            signature=agent_signature(agent),
            input_example=agent.example_bars,
        )
