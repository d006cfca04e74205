"""DAG parse time of dags/ for both backends (fresh interpreter each, like the DAG processor's workers).

Prints, per backend: the time to import the DAG file with Airflow already imported (what the DAG
processor pays per parse), and whether the KubernetesPodOperator module got imported at parse time.
Usage: .venv/bin/python benchmarks/dag_parse_time.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"

PROBE = """
import json, sys, time
import airflow.sdk  # the DAG processor has Airflow loaded already
from airflow.dag_processing.dagbag import DagBag
t0 = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
elapsed = time.perf_counter() - t0
print(json.dumps({"seconds": elapsed, "dags": sorted(bag.dag_ids), "errors": {k: str(v) for k, v in bag.import_errors.items()},
                  "kpo_imported": "airflow.providers.cncf.kubernetes.operators.pod" in sys.modules,
                  "heavy": [m for m in ("torch", "stable_baselines3", "mlflow", "great_expectations", "pandas") if m in sys.modules]}))
"""


def measure(backend: str, repeat: int) -> dict:
    env = {
        **os.environ,
        "TRAINER_BACKEND": backend,
        "AIRFLOW_HOME": tempfile.mkdtemp(prefix="airflow-bench-"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    samples = []
    last = {}
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", PROBE, str(DAGS)], env=env, capture_output=True, text=True, check=True)
        last = json.loads(out.stdout.strip().splitlines()[-1])
        samples.append(last["seconds"])
    return {**last, "median_s": statistics.median(samples), "min_s": min(samples), "samples": len(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for backend in ("local", "kubernetes"):
        r = measure(backend, args.repeat)
        print(
            f"backend={backend:<10} dags-folder parse: median {r['median_s'] * 1000:.0f} ms, min {r['min_s'] * 1000:.0f} ms "
            f"({r['samples']} runs); dags={r['dags']} errors={len(r['errors'])} "
            f"KPO imported at parse={r['kpo_imported']} heavy modules={r['heavy']}"
        )


if __name__ == "__main__":
    main()
