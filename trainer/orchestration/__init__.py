"""Orchestration of the pipeline: task specs, run keys, settings and the local / kubernetes backends.

Cheap to import (no torch, SB3, mlflow, great_expectations, pandas, and no KubernetesPodOperator):
the DAG file imports it at parse time. Modules:
- settings.py: configs/pipeline.yaml -> PipelineSettings (`load_settings`)
- specs.py: `TaskSpec`, `RunKey`, one spec builder per step
- outcome.py: exit code -> Airflow outcome
- local.py / kubernetes.py: the two backends; backends.py: `run_step(spec, context)`
- pipeline.py: the body of each DAG task; approval.py: the human approval step
"""
