"""Hierarchical options SAC trainer: data, environment, options, training, gates and registry.

Importing the package is cheap on purpose: the Airflow DAG imports the orchestration helpers
(`trainer.symbols`, `trainer.orchestration`) at parse time, so nothing heavy (torch, SB3,
mlflow, great_expectations) may be imported here.
"""

__version__ = "0.1.0"
