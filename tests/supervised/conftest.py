"""The project deployed as production runs it, for the supervised modules: the project's DAGs
(plus the test-only probe DAG), a sample MES, the gateway sandbox in a process of its own and the
Airflow services on a PostgreSQL metadata database of their own."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import NamedTuple

import pytest

from gateway_sandbox.broker import free_port
from gateway_sandbox.ledger import Ledger
from include.mes.db import engine_from_url
from include.sample_data import generate_plant
from tests.conftest import PostgresServer, needs, prefixed_topics
from tests.dags.conftest import PRODUCT_DAG_IDS
from tests.sandbox_process import SandboxProcess
from tests.supervised.deployment import AirflowDeployment

ROOT = Path(__file__).resolve().parents[2]
DAY = date(2026, 11, 27)
DAG_IDS = PRODUCT_DAG_IDS | {"blockchain_secret_probe"}


class Deployed(NamedTuple):
    airflow: AirflowDeployment
    ledger: Ledger
    mes_path: Path
    sandbox_log: Path
    sandbox: SandboxProcess


def dags_folder(tmp: Path) -> Path:
    """The project's DAGs plus the test-only probe DAG."""
    folder = tmp / "dags"
    folder.mkdir()
    for entry in (ROOT / "dags").iterdir():
        if entry.name != "__pycache__":
            (folder / entry.name).symlink_to(entry)
    (folder / "blockchain_secret_probe.py").symlink_to(
        Path(__file__).parent / "probe_dags/blockchain_secret_probe.py"
    )
    return folder


def failed_task_logs(airflow: AirflowDeployment, details: dict[str, dict[str, str]]) -> str:
    """The ends of the stored logs of every task in *details* that did not succeed."""
    failed = {
        (dag_id, task.split("[")[0])
        for dag_id, tasks in details.items()
        for task, state in tasks.items()
        if state != "success"
    }
    return "\n".join(
        f"--- {path}\n{text[-3000:]}"
        for path, text in airflow.task_logs().items()
        if any(f"dag_id={d}" in str(path) and f"task_id={t}" in str(path) for d, t in failed)
    )


@pytest.fixture(scope="module")
@needs("airflow_db")
def metadata_database(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh PostgreSQL database for Airflow's metadata: several services write it at once,
    which SQLite serialises with 'database is locked' errors under load."""
    server = postgres_server
    with server.fresh_database("airflow_sv") as name:
        yield f"postgresql+psycopg2://{server.user}@{server.host}:{server.port}/{name}"


@contextmanager
def project_deployment(
    tmp: Path, kafka_bootstrap: str, metadata_database: str, *sandbox_args: str, units: int = 2
) -> Iterator[Deployed]:
    """Deploy the project in *tmp*: a MES of *units* sample units (SQLite), the sandbox started
    with the ``serve`` options *sandbox_args*, ``blockchain_master`` created by the
    provider's ``token create`` command, the pools ensured, every DAG parsed. Stopped at the end."""
    prefix = f"sv{os.getpid()}_{tmp.name}_"  # topics of their own for each deployment
    mes_path = tmp / "mes.sqlite3"
    engine = engine_from_url(f"sqlite:///{mes_path}")
    generate_plant(engine, units=units, weeks=1, end_date=DAY)
    engine.dispose()

    ledger_path = tmp / "ledger.sqlite3"
    sandbox_log = tmp / "sandbox.log"
    sandbox = SandboxProcess(kafka_bootstrap, ledger_path, prefix, sandbox_log, *sandbox_args).start()
    env = {
        "AIRFLOW_CONN_KAFKA_DEFAULT": json.dumps(
            {"conn_type": "kafka", "extra": {"bootstrap.servers": kafka_bootstrap}}
        ),
        "AIRFLOW_CONN_MES_DB": json.dumps({"conn_type": "sqlite", "host": str(mes_path)}),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_database,
        # only the runs a test triggers: a scheduled sync or check would add requests to the ones
        # a test counts at the gateway
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
    }
    airflow = AirflowDeployment(tmp / "airflow-home", dags_folder(tmp), env, free_port())
    try:
        airflow.migrate()
        topics_only = {"blockchain_master": {"conn_type": "blockchain_token", "extra": {
            "topics": json.dumps(prefixed_topics(prefix)), "timeout": 30}}}  # fmt: skip
        (tmp / "conn.json").write_text(json.dumps(topics_only))
        airflow.airflow("connections", "import", str(tmp / "conn.json"))
        created = airflow.command("blockchain-provider", "token", "create", "--name", "MES", check=False)
        assert created.returncode == 0, created.stderr
        assert airflow.command("blockchain-provider", "pools", "ensure").returncode == 0
        airflow.start()
        airflow.wait_for_dags(DAG_IDS)
        yield Deployed(airflow, Ledger(str(ledger_path)), mes_path, sandbox_log, sandbox)
    finally:
        airflow.stop()
        sandbox.stop()
