"""What every blockchain DAG shares: connection ids, the plant's time zone, retries, alerts, pool,
the gateway operators' common arguments and the MES database.

Settings come from the environment (see ``.env.example``), read when a DAG file is parsed; no
connection, broker or database is touched at parse time.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pendulum

from blockchain_provider.configured import option
from blockchain_provider.notifications import failure_notifiers
from blockchain_provider.pools import pool_name, reporter_pool_name
from include.mes.db import configured_conn_id

if TYPE_CHECKING:
    from include.mes.repository import MesRepository

KAFKA_CONN_ID = os.environ.get("BLOCKCHAIN_KAFKA_CONN_ID", "kafka_default")
#: the provider's [blockchain] token_conn_id (or BLOCKCHAIN_TOKEN_CONN_ID), as its page reads it
TOKEN_CONN_ID = option("token_conn_id", "blockchain_master")
MES_CONN_ID = configured_conn_id()
PLANT_TIMEZONE = pendulum.timezone(os.environ.get("BLOCKCHAIN_PLANT_TIMEZONE", "Europe/Lisbon"))

#: One slot per token: the original gateway does not echo request ids, so a token's requests
#: must not overlap. Every task that talks to the gateway runs in it.
REQUEST_POOL = pool_name(TOKEN_CONN_ID)
#: The requests signed by the reporters the master created (a production unit's updates): they
#: need not queue behind the master's; each unit's lock keeps its reporter to one at a time.
REPORTER_POOL = reporter_pool_name(TOKEN_CONN_ID)

#: Start of every DAG's schedule, in the plant's time zone.
START_DATE = pendulum.datetime(2026, 1, 1, tz=PLANT_TIMEZONE)

TAGS = ["blockchain", "mes"]

#: The longest a task that talks to the gateway may run, its waits in the triggerer included, so
#: that no gateway (one that never ends a listing, never answers) holds a one-run-at-a-time DAG.
GATEWAY_TASK_TIMEOUT = timedelta(minutes=int(os.environ.get("BLOCKCHAIN_GATEWAY_TASK_TIMEOUT_MINUTES", "45")))


def default_args(**overrides: Any) -> dict[str, Any]:
    """Retries with exponential backoff and the configured failure alert."""
    return {
        "owner": "mes-integration",
        "retries": 3,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "on_failure_callback": failure_notifiers(),
        **overrides,
    }


def deadline_alerts_on() -> bool:
    """Whether the DAGs carry their deadline alerts: yes, unless ``BLOCKCHAIN_DEADLINE_ALERTS`` is
    ``off``. Set it to ``off`` only in the shell that runs ``airflow dags test`` (or ``dag.test()``):
    on Airflow 3.3.2 that command exits 1 after a successful run of any DAG with a deadline alert
    (apache/airflow#73428, fix proposed in apache/airflow#73430). Never in a scheduler or DAG
    processor: the DAG would then be stored without its deadline."""
    return os.environ.get("BLOCKCHAIN_DEADLINE_ALERTS", "on").strip().lower() != "off"


def gateway_args(**overrides: Any) -> dict[str, Any]:
    """What every task that talks to the gateway shares: the connections, the token's pool, a
    deferred wait (a request waiting for its answer holds no worker slot) and a time limit."""
    return {
        "kafka_config_id": KAFKA_CONN_ID,
        "token_conn_id": TOKEN_CONN_ID,
        "pool": REQUEST_POOL,
        "deferrable": True,
        "execution_timeout": GATEWAY_TASK_TIMEOUT,
        **overrides,
    }


def record_type_memory() -> Any:
    """The MES's memory of the record types it created on each gateway (a type is sent once per
    gateway), for the operators' ``record_types``; opened when the task runs."""
    from include.mes.record_types import MesRecordTypes

    return MesRecordTypes(mes_repository())


def mes_repository() -> MesRepository:
    """The MES database on the ``mes_db`` connection, one engine per task process
    (:func:`include.mes.repository.process_repository`)."""
    from include.mes.repository import process_repository

    return process_repository(MES_CONN_ID)
