"""Today's target exposure of each promoted champion, run when a champion moves.

Scheduled on the champion Assets (`mlflow://models/<name>@champion`) of the configured symbols
(configs/pipeline.yaml `defaults.symbols` under `defaults.profile`): any one of them being
updated by hierarchical_options_training's promote_model starts a run. The run predicts with
`models:/<name>@champion` on the latest bars of the symbol's data (bundled, or the run param
`data_overrides`) and writes the last decided row to
$TRAINER_STATE_DIR/inference/<SYMBOL>/target_exposure.json (atomic). A run triggered by hand
covers every configured symbol; an asset-triggered run only the symbols whose champion moved.

Wiring only: the task body is trainer/orchestration/pipeline.py write_target_exposure, which
imports mlflow when it runs, never at parse time.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import AssetAny, Param, dag, task

from trainer.orchestration import pipeline
from trainer.orchestration.settings import load_settings
from trainer.registry import model_name
from trainer.symbols import SYMBOL_PATTERN

SETTINGS = load_settings()
SYMBOLS = list(SETTINGS.defaults.symbols)
MODELS = {symbol: model_name(symbol, "hierarchical_sac", SETTINGS.defaults.profile) for symbol in SYMBOLS}
CHAMPIONS = [pipeline.champion_asset(name) for name in MODELS.values()]


@dag(
    dag_id="champion_inference",
    description="Target exposure of the current champion per symbol, after each promotion",
    schedule=AssetAny(*CHAMPIONS),  # any one champion moving, not all of them
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["inference", "mlflow", "hierarchical-options"],
    params={
        "data_overrides": Param(
            {},
            type="object",
            propertyNames={"pattern": SYMBOL_PATTERN},
            additionalProperties={"type": "string", "minLength": 1, "maxLength": 1024, "pattern": r"^[^\x00-\x1f]+$"},
            description="Optional {SYMBOL: CSV/Parquet path or s3://bucket/key} instead of the bundled data.",
        ),
    },
    default_args={"owner": "ml-platform", "retries": 2, "retry_delay": timedelta(minutes=1)},
    doc_md=__doc__,
)
def champion_inference():
    @task
    def select_champions(**context) -> list[str]:
        return pipeline.inference_symbols(context, SYMBOLS)

    @task(max_active_tis_per_dagrun=SETTINGS.concurrency.mlflow_writers)
    def target_exposure(symbol: str, **context) -> dict:
        data = (context["params"].get("data_overrides") or {}).get(symbol)
        return pipeline.write_target_exposure(symbol, MODELS[symbol], context, data)

    target_exposure.expand(symbol=select_champions())


champion_inference()
