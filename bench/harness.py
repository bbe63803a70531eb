"""What every benchmark shares: brokers, topics, the gateway sandbox, the hook, timers.

Nothing here measures or prints a figure; the measurements (``bench/measurements.py`` and the
standalone scripts) time their own workloads with these pieces, and ``bench/report.py`` renders.
A process's CPU time and resident size are read by ``bench/process_stats.py``.
Importing this module has no side effect: the scripts set up ``sys.path`` and Airflow's home.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: The brokers a run can measure on, and their column in the table.
BROKER_COLUMNS = {"tansu": "tansu", "apache": "Apache Kafka"}


# ------------------------------------------------------------------------------- figures
def percentile(samples: list[float], q: float) -> float:
    """The nearest-rank percentile *q* (0-100) of *samples*, which must not be empty.

    :param samples: the values, in any order.
    :param q: the percentile, 50 for the median.
    """
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def time_each(call: Callable[[int], object], count: int, warm_up: int = 0) -> list[float]:
    """Call ``call(i)`` for ``i`` in ``range(warm_up)`` untimed, then ``range(count)`` timed.

    :param call: one request; it checks its own answer.
    :param count: the timed calls.
    :param warm_up: the calls before them, default 0: clients connect, code paths get warm.
    :return: each timed call's wall time, in seconds.
    """
    for i in range(warm_up):
        call(i)
    samples = []
    for i in range(count):
        started = time.perf_counter()
        call(i)
        samples.append(time.perf_counter() - started)
    return samples


@dataclass
class Stopwatch:
    """Wall time of a ``with`` block: ``seconds`` once it ends."""

    started: float = 0.0
    seconds: float = 0.0

    def __enter__(self) -> Stopwatch:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started


# ------------------------------------------------------------------------------- brokers
@dataclass
class StartedBroker:
    """A broker a benchmark started for itself; :meth:`stop` ends it."""

    kind: str
    bootstrap: str
    description: str
    #: the broker's process (one node's, for Apache Kafka), for its CPU time
    pid: int | None
    handle: Any = field(repr=False)

    def stop(self) -> None:
        self.handle.stop()

    def __enter__(self) -> StartedBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_broker(kind: str, workdir: Path | None = None, nodes: int = 1) -> StartedBroker:
    """Start a broker of *kind*: tansu, embedded with memory storage, or Apache Kafka in KRaft mode.

    :param kind: ``tansu`` or ``apache``.
    :param workdir: where its log (tansu) or storage (Apache Kafka) goes; default a temporary place.
    :param nodes: Apache Kafka nodes, 1 or 3 (replication factor 3, ``min.insync.replicas=2``).
    """
    if kind == "tansu":
        from gateway_sandbox.broker import TansuBroker

        broker = TansuBroker(log_path=None if workdir is None else workdir / "tansu.log").start()
        assert broker.process is not None
        described = f"{tansu_version()}, embedded, memory storage"
        return StartedBroker(kind, broker.bootstrap_servers, described, broker.process.pid, broker)
    if kind != "apache":
        raise ValueError(f"unknown broker {kind!r}: expected one of {tuple(BROKER_COLUMNS)}")
    from local_services.kafka import KafkaCluster, kafka_version

    cluster = KafkaCluster(nodes, base_dir=None if workdir is None else workdir / "kafka").start()
    if nodes == 1:
        shape = "one KRaft node (broker and controller)"
    else:
        shape = f"{nodes} KRaft nodes, RF {cluster.replication_factor}, min ISR 2"
    described = f"Apache Kafka {kafka_version()}, {shape}, JVM heap {cluster.heap}"
    return StartedBroker(kind, cluster.bootstrap_servers, described, cluster.nodes[0].pid, cluster)


def tansu_version() -> str:
    """What ``tansu --version`` says, or ``tansu``."""
    from gateway_sandbox.broker import tansu_binary

    try:
        out = subprocess.run([tansu_binary(), "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "tansu"
    except (OSError, subprocess.SubprocessError):
        return "tansu"


@dataclass
class BrokerPass:
    """One pass of the benchmarks on one broker: where it listens, and a scratch directory."""

    bootstrap: str
    workdir: Path
    #: ``tansu`` or ``apache``
    broker: str = "tansu"
    #: the broker's process, when the run started it (for its CPU time)
    broker_pid: int | None = None

    def prefix(self, name: str, partitions: int = 1) -> str:
        """A fresh set of BLK topics under a new prefix: tansu's fetches cost more as a partition grows.

        :param name: part of the prefix, to tell the measurements' topics apart.
        :param partitions: partitions of each topic, default 1.
        """
        from gateway_sandbox.broker import DEFAULT_TOPICS, ensure_topics

        prefix = f"b{uuid.uuid4().hex[:6]}_{name}_"
        ensure_topics(self.bootstrap, [prefix + topic for topic in DEFAULT_TOPICS], partitions)
        return prefix


# ------------------------------------------------------------------ gateway, hook, MES
@contextmanager
def sandbox(workdir: Path, bootstrap: str, db: Path, prefix: str, *, echo: bool) -> Iterator[None]:
    """The gateway sandbox as its own process (the original gateway's encoding, python-literal).

    :param workdir: where its log goes.
    :param bootstrap: the broker.
    :param db: its ledger.
    :param prefix: the prefix of its topics.
    :param echo: copy each request's ``request_id`` into the answer.
    """
    command = [
        sys.executable, "-m", "gateway_sandbox", "serve", "--bootstrap-servers", bootstrap,
        "--db", str(db), "--topic-prefix", prefix, "--log-level", "WARNING",
    ]  # fmt: skip
    if echo:
        command.append("--echo")
    with open(workdir / f"sandbox-{prefix}log", "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def use_gateway(
    bootstrap: str, prefix: str, token: str, *, echo: bool, public_key: str | None = None
) -> None:
    """Set the ``kafka_default`` and ``blockchain_master`` connections, as Airflow reads them.

    :param bootstrap: the broker.
    :param prefix: the prefix of the BLK topics.
    :param token: the agent's token.
    :param echo: the gateway echoes ``request_id``.
    :param public_key: the agent's public key, default none.
    """
    from gateway_sandbox.broker import DEFAULT_TOPICS

    os.environ["AIRFLOW_CONN_KAFKA_DEFAULT"] = json.dumps(
        {"conn_type": "kafka", "extra": {"bootstrap.servers": bootstrap}}
    )
    os.environ["AIRFLOW_CONN_BLOCKCHAIN_MASTER"] = json.dumps(
        {
            "conn_type": "blockchain_token",
            "login": public_key,
            "password": token,
            "extra": {
                "echo_request_id": echo,
                "timeout": 60,
                "topics": json.dumps({name: prefix + name for name in DEFAULT_TOPICS}),
            },
        }
    )


def hook() -> Any:
    """A new ``KafkaBlockchainHook`` on the connections :func:`use_gateway` set."""
    from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook

    return KafkaBlockchainHook()


def cheap_password_hashes() -> None:
    """Seeding 10,000 ERP agents with the ledger's scrypt (0.1 s each) would take 17 minutes; their
    passwords are never checked here, so this process hashes them with a trivial cost."""
    from gateway_sandbox import crypto

    crypto.SCRYPT_N = 2


def mes_repository(path: Path) -> Any:
    """A new SQLite MES database at *path*, its schema created.

    :param path: the database file.
    """
    from include.mes.db import engine_from_url
    from include.mes.repository import MesRepository

    repository = MesRepository(engine_from_url(f"sqlite:///{path}"))
    repository.create_schema()
    return repository


class InstantResponder:
    """Answers every list request on the prefix's ``BLK_Part_Lst`` partitions at once, with echo.

    :param bootstrap: the broker.
    :param prefix: the prefix of the BLK topics.
    :param partitions: the partitions of ``BLK_Part_Lst``.
    """

    def __init__(self, bootstrap: str, prefix: str, partitions: int) -> None:
        from confluent_kafka import Consumer, Producer, TopicPartition

        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "bench-responder", "fetch.wait.max.ms": 5}
        )
        self._consumer.assign([TopicPartition(prefix + "BLK_Part_Lst", p, 0) for p in range(partitions)])
        self._producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        self._topic = prefix + "BLK_Res"
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop:
            first = self._consumer.poll(0.05)
            for message in [] if first is None else [first, *self._consumer.consume(200, 0)]:
                if message.error() is None:
                    header = json.loads(message.value())[0]
                    answer = [{"auth": header["auth"], "request_id": header["request_id"]}, {"data": []}]
                    self._producer.produce(self._topic, json.dumps(answer).encode())
            self._producer.poll(0)

    def __enter__(self) -> InstantResponder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._thread.join(10)
        self._consumer.close()
        self._producer.flush(5)


# ------------------------------------------------------------------------------- the run
def quiet() -> None:
    """Keep the product's per-request INFO lines out of the table's way."""
    for name in ("blockchain_provider", "blockchain_common", "gateway_sandbox", "include", "airflow"):
        logging.getLogger(name).setLevel(logging.WARNING)


def machine() -> dict[str, str]:
    """The machine and the software versions a run's figures come from."""
    import airflow
    import confluent_kafka

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    memory_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores (nproc {len(os.sched_getaffinity(0))})",
        "memory": f"{memory_kb / 1024 / 1024:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "airflow": airflow.__version__,
        "confluent-kafka": f"{confluent_kafka.__version__} (librdkafka {confluent_kafka.libversion()[0]})",
        "load": load_average(),
    }


def load_average() -> str:
    """The load averages over 1, 5 and 15 minutes, as ``uptime`` shows them."""
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
