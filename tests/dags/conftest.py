"""The whole integration for DAG runs: broker, gateway sandbox, MES database, Airflow database."""

from __future__ import annotations

import copy
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from gateway_sandbox.ledger import Ledger
from gateway_sandbox.profiles import profile as gateway_profile
from gateway_sandbox.server import GatewayServer
from tests.conftest import create_mes_schema, mes_agent_ledger, set_mes_connections, use_fernet_key
from tests.include.conftest import postgres_url

ROOT = Path(__file__).resolve().parents[2]

#: The DAGs that dags/ defines.
PRODUCT_DAG_IDS = frozenset(
    {
        "blockchain_day_report",
        "blockchain_partner_sync",
        "blockchain_order_sync",
        "blockchain_partner_answer",
        "blockchain_order_answer",
        "blockchain_production_unit_update",
        "blockchain_token_check",
    }
)


def product_dag_confs(
    *, day: date, partner_request_id: str, order_id: str, production_unit_id: int
) -> dict[str, dict | None]:
    """A run conf for each of :data:`PRODUCT_DAG_IDS` (``None``: the DAG takes none), as an operator
    triggers them: accept the partner request, reject the order, set the unit RUNNING.

    :param day: the day the day report is submitted for.
    :param partner_request_id: the pending partner request to accept.
    :param order_id: the pending order to reject.
    :param production_unit_id: the MES id of the unit to update.
    """
    return {
        "blockchain_day_report": {"day": day.isoformat()},
        "blockchain_partner_sync": None,
        "blockchain_order_sync": None,
        "blockchain_partner_answer": {"request_id": partner_request_id, "decision": "accept"},
        "blockchain_order_answer": {"request_id": order_id, "decision": "reject"},
        "blockchain_production_unit_update": {
            "production_unit_id": production_unit_id,
            "status": "RUNNING",
            "process_name": "Stamping",
        },
        "blockchain_token_check": None,
    }


@dataclass
class Stack:
    bootstrap: str
    prefix: str
    ledger_path: Path
    server: GatewayServer
    mes_public_key: str
    mes_token: str
    mes_conn: dict

    def ledger(self) -> Ledger:
        return Ledger(str(self.ledger_path))

    def mes(self):
        from include.mes.db import mes_engine
        from include.mes.repository import MesRepository

        return MesRepository(mes_engine("mes_db"))


def mes_connection(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict:
    if kind == "sqlite":
        return {"conn_type": "sqlite", "host": str(tmp_path / "mes.sqlite3")}
    database = request.getfixturevalue("postgres_database")
    server = request.getfixturevalue("postgres_server")
    from include.mes import schema
    from include.mes.db import engine_from_url

    engine = engine_from_url(postgres_url(server, database))
    schema.metadata.drop_all(engine)
    engine.dispose()
    return {
        "conn_type": "postgres",
        "host": server.host,
        "port": server.port,
        "login": server.user,
        "schema": database,
    }


def start_stack(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    bootstrap: str,
    prefix: str,
    mes_conn: dict,
    *,
    echo: bool = False,
    encoding: str = "python-literal",
    page_cap: int | None = None,
    profile: str = "sandbox",
    ignore_start: bool = False,
    write_delay_ms: float | None = None,
    trace_path: str | None = None,
) -> Stack:
    ledger_path = tmp_path / "ledger.sqlite3"
    public_key, token, agent_password = mes_agent_ledger(ledger_path)
    server = GatewayServer(
        bootstrap,
        str(ledger_path),
        topic_prefix=prefix,
        echo=echo,
        encoding=encoding,
        page_cap=page_cap,
        profile=gateway_profile(profile, ignore_start=ignore_start, write_delay_ms=write_delay_ms),
        trace_path=trace_path,
    )
    server.start()
    agent = (public_key, token, agent_password)
    set_mes_connections(monkeypatch, bootstrap, prefix, agent, mes_conn, echo_request_id=echo, timeout=20)
    from include.mes.db import mes_engine

    create_mes_schema(mes_engine("mes_db"))
    use_fernet_key(monkeypatch)
    return Stack(bootstrap, prefix, ledger_path, server, public_key, token, mes_conn)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def stack(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_prefix: str,
    airflow_db: str,
) -> Iterator[Stack]:
    """Broker + sandbox (original gateway behaviour: no echo, Python-literal answers) + MES DB."""
    mes_conn = mes_connection(request.param, tmp_path, request)
    running = start_stack(monkeypatch, tmp_path, kafka_bootstrap, topic_prefix, mes_conn)
    try:
        yield running
    finally:
        running.server.stop()
        from airflow.sdk.crypto import get_fernet

        get_fernet.cache_clear()  # the next test's key, not this one's


def erp_agent(ledger: Ledger, name: str = "ERP") -> str:
    public_key, _token = ledger.create_agent(name, secrets.token_urlsafe(16))
    return public_key


def refused_by_params(dag: Any, conf: dict[str, Any]) -> bool:
    """Whether triggering *dag* with *conf* is refused, as a trigger validates it."""
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dag.params)
    try:
        for key, value in conf.items():
            params[key] = value
        params.validate()
    except ParamValidationError:
        return True
    return False


def run_dag(dag_id: str, conf: dict | None = None):
    """Run a DAG in this process with ``dag.test()``; return the finished DagRun."""
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(str(ROOT / "dags")).dags[dag_id]
    # dag.test() on Airflow 3.3.2 looks deadline alerts up by the SDK objects instead of their
    # stored ids and fails after the tasks ran; deadlines are exercised by the scheduled run.
    dag.deadline = None
    return dag.test(run_conf=conf)


def task_states(dag_run) -> dict[str, str]:
    return {
        ti.task_id + (f"[{ti.map_index}]" if ti.map_index >= 0 else ""): ti.state
        for ti in dag_run.get_task_instances()
    }
