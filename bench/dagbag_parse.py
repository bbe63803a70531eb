"""Time to fill a DagBag from ``dags/``, beyond importing Airflow itself. Prints one JSON object.

Usage (from the repository root): ``.venv/bin/python bench/dagbag_parse.py``

Run it in a fresh process each time (``bench/run_all.py`` does): the first import of Airflow and
of the DAGs' own modules is what a DAG processor pays. ``PYTHONPATH`` must hold the repository
root and ``dags/``; ``AIRFLOW_HOME`` should be a scratch directory.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    started = time.perf_counter()
    import airflow
    import airflow.sdk  # noqa: F401 - what every DAG file imports first
    from airflow.dag_processing.dagbag import DagBag

    imported = time.perf_counter()
    bag = DagBag(str(ROOT / "dags"))
    filled = time.perf_counter()
    print(
        json.dumps(
            {
                "import_airflow_s": imported - started,
                "fill_s": filled - imported,
                "dags": len(bag.dags),
                "import_errors": len(bag.import_errors),
                "errors": {str(k): str(v)[:300] for k, v in bag.import_errors.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
