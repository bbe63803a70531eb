"""What every blockchain DAG shares: connection ids, the plant's time zone, retries, alerts, pool.

Settings come from the environment (see ``.env.example``), read when a DAG file is parsed; no
connection, broker or database is touched at parse time.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pendulum

from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook
from blockchain_provider.notifications import failure_notifiers
from blockchain_provider.pools import pool_name

KAFKA_CONN_ID = os.environ.get("BLOCKCHAIN_KAFKA_CONN_ID", "kafka_default")
TOKEN_CONN_ID = os.environ.get("BLOCKCHAIN_TOKEN_CONN_ID", "blockchain_master")
MES_CONN_ID = os.environ.get("BLOCKCHAIN_MES_CONN_ID", "mes_db")
PLANT_TIMEZONE = pendulum.timezone(os.environ.get("BLOCKCHAIN_PLANT_TIMEZONE", "Europe/Lisbon"))

#: One slot per token: the original gateway does not echo request ids, so a token's requests
#: must not overlap. Every task that talks to the gateway runs in it.
REQUEST_POOL = pool_name(TOKEN_CONN_ID)

#: Start of every DAG's schedule, in the plant's time zone.
START_DATE = pendulum.datetime(2026, 1, 1, tz=PLANT_TIMEZONE)

TAGS = ["blockchain", "mes"]


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


def gateway() -> KafkaBlockchainHook:
    """The hook for the gateway, with the configured connections. Use it in a ``with`` block."""
    return KafkaBlockchainHook(KAFKA_CONN_ID, TOKEN_CONN_ID)


def mes():
    """The MES repository on the ``mes_db`` connection, its schema created if missing."""
    from include.mes.db import mes_engine
    from include.mes.repository import MesRepository

    repository = MesRepository(mes_engine(MES_CONN_ID))
    repository.create_schema()
    return repository
