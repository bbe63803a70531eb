"""The benchmarks' client of a running stack's REST API (as its admin user), and the production-shape
stack they run on: its scratch folder and settings, started and stopped."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy.engine import Engine

from include.mes.db import engine_from_url
from local_services.ports import free_port
from scripts.production_stack import ProductionStack
from scripts.stack.airflow_api import admin_password, api_token, http_json
from scripts.stack.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


class StackApi:
    """``api(path, body=None, method=None)`` calls ``path`` on *stack*'s API server and returns
    its JSON answer.

    :raises OSError: the API server gave no token (not up yet, or too busy to answer).
    """

    def __init__(self, stack: ProductionStack) -> None:
        self.url = stack.settings.url
        self.token = api_token(self.url, admin_password(stack.settings))

    @classmethod
    def connect(cls, stack: ProductionStack, attempts: int = 10) -> StackApi:
        """A client, once the API server hands out a token (a loaded machine answers late)."""
        for attempt in range(attempts):
            try:
                return cls(stack)
            except OSError:
                if attempt == attempts - 1:
                    raise
                time.sleep(5)
        raise AssertionError("unreachable")

    def __call__(self, path: str, body: dict[str, Any] | None = None, method: str | None = None) -> Any:
        return http_json(f"{self.url}{path}", body, self.token, method)

    def unpause_when_parsed(self, *dag_ids: str, timeout: float = 300) -> None:
        """Wait until the DAG processor has parsed *dag_ids*, then unpause them."""
        deadline = time.monotonic() + timeout
        while not set(dag_ids) <= {d["dag_id"] for d in self("/api/v2/dags?limit=100")["dags"]}:
            if time.monotonic() > deadline:
                raise SystemExit(f"{', '.join(dag_ids)} not parsed within {timeout:.0f} s")
            time.sleep(2)
        for dag_id in dag_ids:
            self(f"/api/v2/dags/{quote(dag_id)}", {"is_paused": False}, "PATCH")

    def run_states(self, dag_id: str, run_ids: set[str]) -> dict[str, str]:
        """The state of each of *run_ids* of *dag_id* that exists (among its newest 1,000 runs)."""
        runs = self(f"/api/v2/dags/{quote(dag_id)}/dagRuns?limit=1000&order_by=-id")
        return {r["dag_run_id"]: r["state"] for r in runs["dag_runs"] if r["dag_run_id"] in run_ids}

    def task_state_counts(self, dag_id: str, run_id: str) -> dict[str, int]:
        """How many of the run's task instances are in each state (``none``: no state yet)."""
        path = f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id, safe='')}/taskInstances?limit=1000"
        counts: dict[str, int] = {}
        for ti in self(path)["task_instances"]:
            counts[ti["state"] or "none"] = counts.get(ti["state"] or "none", 0) + 1
        return counts


@contextmanager
def scratch_stack_settings(prefix: str) -> Iterator[tuple[Path, Settings]]:
    """A scratch folder named from *prefix* and the settings of a production-shape stack in it
    (3 Apache Kafka brokers, a free Airflow port); the folder is removed at the end."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        settings = Settings(
            root=ROOT, stack_dir=tmp / "stack", airflow_port=free_port(), kafka="apache", timeout=600
        )
        yield tmp, settings
    finally:
        # the stack's ledger holds the agents' private keys, its Airflow home the Fernet key
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def running_stack(stack: ProductionStack, *dag_ids: str) -> Iterator[tuple[StackApi, Engine]]:
    """*stack* started and *dag_ids* unpaused once parsed: its API client and an engine on its MES
    database. The engine is disposed of and the stack stopped at the end."""
    engine = None
    try:
        stack.up()
        api = StackApi.connect(stack)
        api.unpause_when_parsed(*dag_ids)
        engine = engine_from_url(stack.mes_url())
        yield api, engine
    finally:
        if engine is not None:
            engine.dispose()
        stack.down()
