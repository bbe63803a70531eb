"""DAG runs as Airflow's REST API (``/api/v2``) shows them, for every test that drives a running
Airflow: the stack of ``make run``, the supervised deployment, the production shape."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import pytest

#: ``get(path)``: the JSON answer to ``GET /api/v2{path}``, as the caller's user.
Get = Callable[[str], Any]
K = TypeVar("K")

FINISHED = ("success", "failed")


def run_path(dag_id: str, run_id: str) -> str:
    return f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"


def task_states(get: Get, dag_id: str, run_id: str) -> dict[str, str]:
    """``task_id[map_index] -> state`` of every task instance of the run."""
    tis = get(f"{run_path(dag_id, run_id)}/taskInstances?limit=1000")["task_instances"]
    return {
        ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else ""): ti["state"] for ti in tis
    }


def wait_for_runs(
    get: Get,
    runs: Mapping[K, tuple[str, str]],
    timeout: float,
    *,
    interval: float = 2.0,
    alive: Callable[[], None] | None = None,
) -> dict[K, dict[str, Any]]:
    """Wait until every run of *runs* (``key -> (dag_id, run_id)``) has finished; return each as
    the API gives it. Fails the test after *timeout* seconds, naming the runs still going and their
    tasks' states; *alive* is called between polls to fail at once when a service died."""
    deadline = time.monotonic() + timeout
    found: dict[K, dict[str, Any]] = {}
    while True:
        found = {key: get(run_path(dag_id, run_id)) for key, (dag_id, run_id) in runs.items()}
        going = {key: run for key, run in found.items() if run["state"] not in FINISHED}
        if not going:
            return found
        if time.monotonic() >= deadline:
            break
        if alive is not None:
            alive()
        time.sleep(interval)
    details = {
        f"{run['dag_id']} {run['dag_run_id']} ({run['state']})": task_states(
            get, run["dag_id"], run["dag_run_id"]
        )
        for run in going.values()
    }
    pytest.fail(f"runs not finished within {timeout:.0f} s: {details}")
