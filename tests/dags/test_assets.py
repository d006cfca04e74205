"""Promotion emits the champion's Asset event, and champion_inference is scheduled on it (issue 11 section 3)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.sdk import DAG, AssetAny
from airflow.sdk.execution_time.context import OutletEventAccessors

from trainer.orchestration import pipeline
from trainer.orchestration.settings import load_settings
from trainer.registry import model_name

SETTINGS = load_settings(env={})
PUBLISHED = {
    "symbol": "SPY", "profile": "production", "model_name": "hierarchical-options-SPY", "version": 4,
    "run_dir": "/runs/SPY/x", "run_key": "SPY/x", "passed": True,
}


DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def bag():
    from airflow.dag_processing.dagbag import DagBag

    dagbag = DagBag(dag_folder=str(DAGS))
    assert dagbag.import_errors == {}, dagbag.import_errors
    return dagbag


def context(events: OutletEventAccessors) -> dict:
    return {
        "dag": DAG(dag_id="hierarchical_options_training", schedule=None), "run_id": "manual__1",
        "ti": SimpleNamespace(map_index=0, log_url="http://airflow/x"), "outlet_events": events, "params": {},
    }


def alias_events(events: OutletEventAccessors) -> list:
    return events[pipeline.champion_alias()].asset_alias_events


def test_the_dagbag_imports_both_dags(bag):
    assert {"hierarchical_options_training", "champion_inference"} <= set(bag.dags)


def test_champion_inference_is_scheduled_on_any_configured_champion(bag):
    condition = bag.dags["champion_inference"].timetable.asset_condition
    assert isinstance(condition, AssetAny)
    expected = {
        f"mlflow://models/{model_name(s, 'hierarchical_sac', SETTINGS.defaults.profile)}@champion"
        for s in SETTINGS.defaults.symbols
    }
    assert {asset.uri for asset in condition.objects} == expected == {
        "mlflow://models/hierarchical-options-SPY@champion", "mlflow://models/hierarchical-options-QQQ@champion",
    }


def test_promote_model_declares_the_champion_alias(bag):
    task = bag.dags["hierarchical_options_training"].get_task("symbol_pipeline.promote_model")
    assert task.outlets == [pipeline.champion_alias()]


@pytest.mark.parametrize(
    ("published", "decision"),
    [
        ({**PUBLISHED, "passed": False}, {"asked": False, "approved": False}),
        (PUBLISHED, {"asked": True, "approved": False, "decided_by": "alice", "reason": "Reject by alice"}),
        (PUBLISHED, {"asked": True, "approved": False, "decided_by": None, "reason": "Reject by timeout default"}),
    ],
)
def test_no_asset_event_without_a_promotion(published, decision):
    events = OutletEventAccessors()
    result = pipeline.promote_model(published, decision, context(events), SETTINGS)
    assert result["promoted"] is False
    assert alias_events(events) == []


def test_a_promotion_adds_one_champion_asset_event():
    events = OutletEventAccessors()
    pipeline._emit_champion_event(PUBLISHED, {"promoted": True}, context(events))
    [event] = alias_events(events)
    assert event.source_alias_name == pipeline.CHAMPION_ALIAS
    assert event.dest_asset_key.uri == "mlflow://models/hierarchical-options-SPY@champion"
    assert event.extra["symbol"] == "SPY" and event.extra["version"] == 4


def test_inference_runs_for_the_symbols_whose_champion_moved():
    moved = {"mlflow://models/hierarchical-options-QQQ@champion": [SimpleNamespace(extra={"symbol": "QQQ"})]}
    assert pipeline.inference_symbols({"triggering_asset_events": moved}, ["SPY", "QQQ"]) == ["QQQ"]
    assert pipeline.inference_symbols({"triggering_asset_events": {}}, ["SPY", "QQQ"]) == ["SPY", "QQQ"]
