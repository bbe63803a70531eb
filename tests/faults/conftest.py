"""The fault suite's stack: a real broker, the gateway sandbox, an MES database and Airflow connections.

Every case builds its stack with :func:`make_stack` on a fresh topic prefix (or its own broker),
breaks something, and then checks what happened to the data: the sandbox's ledger, the MES
tables, the request topics. Every ledger a case writes is registered in :data:`LEDGERS`;
``test_ledger_integrity.py`` runs last and verifies them all.
"""

from __future__ import annotations

import gc
import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from gateway_sandbox import wire
from gateway_sandbox.faults import Faults
from gateway_sandbox.ledger import Ledger
from gateway_sandbox.server import GatewayServer
from include.day_report_keys import DAY_REPORT_RECORD_TYPE, day_report_keys
from include.mes.db import engine_from_url
from tests import sandbox_process
from tests.conftest import (
    create_mes_schema,
    mes_agent_ledger,
    set_mes_connections,
    use_fernet_key,
    wait_until,
)
from tests.dags.conftest import ROOT

#: Request topics (protocol names): nothing else than the MES writes to them.
REQUEST_TOPICS = (
    *wire.TOKEN_TOPICS,
    *(wire.record_topic(name) for name in ("Unit", "DayReportIndicator", "ProductionUnit")),
    wire.AGENTS,
)

#: Every ledger written by a case of this suite, verified at the end (test_ledger_integrity.py).
LEDGERS: list[Path] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the ledger integrity case after every other case of the suite, whatever the selection."""
    last = [item for item in items if item.nodeid.startswith("tests/faults/test_ledger_integrity.py")]
    if last:
        items[:] = [item for item in items if item not in last] + last


@dataclass
class FaultStack:
    """What a case runs against; ``server`` is ``None`` when the gateway is a subprocess or absent."""

    bootstrap: str
    prefix: str
    ledger_path: Path
    mes_path: Path
    mes_public_key: str
    mes_token: str
    agent_password: str
    server: GatewayServer | None = None
    servers: list[GatewayServer] = field(default_factory=list)

    def ledger(self) -> Ledger:
        return Ledger(str(self.ledger_path))

    def mes(self):
        from include.mes.db import mes_engine
        from include.mes.repository import MesRepository

        return MesRepository(mes_engine("mes_db"))

    def topic(self, name: str) -> str:
        return self.prefix + name

    def assert_day_reports_written_once(self, reports: Sequence[Any]) -> None:
        """The ledger holds the 28 records of each of the MES's day *reports*, each written by one
        transaction with the report's value."""
        with self.ledger() as ledger:
            assert ledger.count_records(DAY_REPORT_RECORD_TYPE) == 28 * len(reports)
            for report in reports:
                for key in day_report_keys(report.report_id):
                    record = ledger.record(key.record_id)
                    assert len(record["transaction_ids"]) == 1, key.record_id  # written once
                    assert record["properties"]["Value"] == pytest.approx(
                        report.value(key.shift, key.indicator)
                    )

    def serve(self, **kwargs: Any) -> GatewayServer:
        """Start (another) in-process sandbox on this stack's ledger and topics."""
        kwargs.setdefault("topic_prefix", self.prefix)
        kwargs.setdefault("log_requests", False)
        server = GatewayServer(self.bootstrap, str(self.ledger_path), **kwargs).start()
        self.server = server
        self.servers.append(server)
        return server

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        self.servers.clear()


@pytest.fixture
def make_stack(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kafka_bootstrap: str
) -> Iterator[Callable[..., FaultStack]]:
    """Build a stack: a fresh topic prefix, a ledger with the MES agent, connections, and (unless
    ``serve=False``) an in-process sandbox. Everything started is stopped at teardown."""
    from airflow.sdk.crypto import get_fernet

    from gateway_sandbox.broker import DEFAULT_TOPICS, ensure_topics

    use_fernet_key(monkeypatch)
    stacks: list[FaultStack] = []

    def make(
        *,
        echo: bool = False,
        faults: Faults | None = None,
        timeout: float = 10.0,
        encoding: str = "python-literal",
        serve: bool = True,
        bootstrap: str | None = None,
        prefix: str | None = None,
        kafka_extra: dict[str, Any] | None = None,
        late_answer_grace: float | None = None,
    ) -> FaultStack:
        bootstrap = bootstrap or kafka_bootstrap
        prefix = prefix or f"f{secrets.token_hex(4)}_"
        ensure_topics(bootstrap, [prefix + name for name in {*DEFAULT_TOPICS, *REQUEST_TOPICS}])
        directory = tmp_path / f"stack{len(stacks)}"
        directory.mkdir()
        ledger_path = directory / "ledger.sqlite3"
        public_key, token, agent_password = mes_agent_ledger(ledger_path)
        LEDGERS.append(ledger_path)
        mes_path = directory / "mes.sqlite3"
        set_mes_connections(
            monkeypatch,
            bootstrap,
            prefix,
            (public_key, token, agent_password),
            {"conn_type": "sqlite", "host": str(mes_path)},
            echo_request_id=echo,
            timeout=timeout,
            kafka_extra=kafka_extra,
            **({} if late_answer_grace is None else {"late_answer_grace": late_answer_grace}),
        )
        create_mes_schema(engine_from_url(f"sqlite:///{mes_path}"))
        stack = FaultStack(bootstrap, prefix, ledger_path, mes_path, public_key, token, agent_password)
        stacks.append(stack)
        if serve:
            stack.serve(echo=echo, faults=faults, encoding=encoding)
        return stack

    yield make
    for stack in stacks:
        stack.stop()
    get_fernet.cache_clear()


def erp_agent(ledger: Ledger, name: str = "ERP") -> str:
    public_key, _token = ledger.create_agent(name, secrets.token_urlsafe(16))
    return public_key


# ------------------------------------------------------------------------------ observing
@dataclass(frozen=True)
class Seen:
    topic: str
    key: bytes | None
    value: bytes | None


def read_topics(bootstrap: str, topics: list[str], timeout: float = 15.0) -> list[Seen]:
    """Every message of *topics*, read from their beginning with an assign-only consumer."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "fault-suite-inspector",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
        }
    )
    seen: list[Seen] = []
    try:
        metadata = consumer.list_topics(timeout=10)
        assignment = []
        for topic in topics:
            info = metadata.topics.get(topic)
            assert info is not None and info.error is None, f"topic {topic} does not exist"
            for partition in info.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                if high > low:  # tansu counts a batch as one offset: read to the end, never subtract
                    assignment.append(TopicPartition(topic, partition, low))
        consumer.assign(assignment)
        pending = {(tp.topic, tp.partition) for tp in assignment}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            if message.error() is not None:
                pending.discard((message.topic(), message.partition()))  # end of the partition
                continue
            seen.append(Seen(message.topic(), message.key(), message.value()))
        assert not pending, f"could not read {sorted(pending)} to their end within {timeout:.0f} s"
    finally:
        consumer.close()
    return seen


def requests_sent(stack: FaultStack) -> dict[str, list[Seen]]:
    """The messages on each of the stack's request topics, keyed by protocol name."""
    seen = read_topics(stack.bootstrap, [stack.topic(name) for name in REQUEST_TOPICS])
    return {name: [s for s in seen if s.topic == stack.topic(name)] for name in REQUEST_TOPICS}


def kafka_client_threads() -> list[str]:
    """Names of this process's librdkafka threads (each live Kafka client owns a few)."""
    gc.collect()
    names = []
    for comm in Path(f"/proc/{os.getpid()}/task").glob("*/comm"):
        try:
            name = comm.read_text().strip()
        except OSError:  # the thread ended meanwhile
            continue
        if name.startswith("rdk:"):
            names.append(name)
    return sorted(names)


wait_for = wait_until


# ------------------------------------------------------------------------------- DAG runs
#: Each failed try of the DAG :func:`load_dag` loaded last, in order: ``task try n: error``, so
#: that an assertion on a run says why its tries failed (:func:`run_outcome`).
FAILED_TRIES: list[str] = []


def _note_failed_try(context: dict[str, Any]) -> None:
    ti = context["ti"]
    error = context.get("exception")
    FAILED_TRIES.append(f"{ti.task_id} try {ti.try_number}: {type(error).__name__}: {error}"[:500])


def _callbacks(value: Any) -> list[Any]:
    """A task's callbacks as a list (Airflow takes one callable, a list, or None)."""
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def load_dag(dag_id: str, *, retries: int = 0, retry_delay: float = 1.0):
    """The DAG from ``dags/``, its tasks' retries set for a test (the defaults wait minutes); each
    failed try is noted in :data:`FAILED_TRIES` (a test may set callbacks of its own instead)."""
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(str(ROOT / "dags")).dags[dag_id]
    # dag.test() on Airflow 3.3.2 cannot look deadline alerts up (see tests/dags/conftest.py).
    dag.deadline = None
    FAILED_TRIES.clear()
    for task in dag.tasks:
        task.retries = retries
        task.retry_delay = timedelta(seconds=retry_delay)
        task.retry_exponential_backoff = False
        task.on_retry_callback = [*_callbacks(task.on_retry_callback), _note_failed_try]
        task.on_failure_callback = [*_callbacks(task.on_failure_callback), _note_failed_try]
    return dag


def run_outcome(dag_run) -> dict[str, Any]:
    """For an assertion's message: every try's state (:func:`task_tries`) and why each failed."""
    return {"tries": task_tries(dag_run), "failed": list(FAILED_TRIES)}


def task_tries(dag_run) -> dict[str, list[str]]:
    """Every try of every task of *dag_run*, from the metadata database: ``task -> [state, ...]``."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskinstancehistory import TaskInstanceHistory
    from airflow.utils.session import create_session

    tries: dict[str, list[tuple[int, str]]] = {}
    with create_session() as session:
        for model in (TaskInstanceHistory, TaskInstance):
            rows = session.query(model).filter(model.dag_id == dag_run.dag_id, model.run_id == dag_run.run_id)
            for row in rows:
                name = row.task_id + (f"[{row.map_index}]" if row.map_index >= 0 else "")
                tries.setdefault(name, []).append((row.try_number, str(row.state)))
    return {name: [state for _, state in sorted(states)] for name, states in tries.items()}


# ------------------------------------------------------------------ a sandbox in its own process
class SandboxProcess(sandbox_process.SandboxProcess):
    """``python -m gateway_sandbox serve`` on a stack's ledger and topics, to be killed like a process.

    :param args: extra ``serve`` options (``--echo``, ``--delay-ms 1500``...).
    """

    def __init__(self, stack: FaultStack, log_path: Path, *args: str) -> None:
        super().__init__(stack.bootstrap, stack.ledger_path, stack.prefix, log_path, *args)
