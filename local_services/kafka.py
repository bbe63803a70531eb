"""Apache Kafka in KRaft mode on loopback, for the tests, the benchmarks and ``KAFKA=apache make run``.

The release is the one ``kafka/pom.xml`` pins: its jars come from Maven Central through
``mvn dependency:copy-dependencies`` into a cache outside the work tree
(``~/.cache/mes-blockchain/kafka-<version>/libs``, or ``$MES_KAFKA_CACHE``), fetched once. A
:class:`KafkaCluster` formats the storage of each node and runs ``kafka.Kafka`` from that class
path:

* one node: a combined broker and controller (``KafkaCluster(1)``);
* three nodes: three combined nodes forming the controller quorum, topics created with
  replication factor 3 and ``min.insync.replicas=2`` (``KafkaCluster(3)``).

Every node listens on free ``127.0.0.1`` ports. Apache Kafka's defaults are kept, except what a
single node cannot hold (the internal topics' replication factors) and the JVM heap, which is
small because the machines have two cores and several brokers. Every process a cluster starts is
stopped by :meth:`KafkaCluster.stop`, at interpreter exit, or when the cluster object is
collected; the fault tests use :meth:`KafkaCluster.kill`, :meth:`~KafkaCluster.pause`,
:meth:`~KafkaCluster.resume`, :meth:`~KafkaCluster.restart` and :meth:`~KafkaCluster.leader`.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path

from local_services.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
#: The Maven project that pins the release.
POM = ROOT / "kafka" / "pom.xml"
#: The JVM heap of one node (Apache Kafka's scripts default to 1 GiB).
DEFAULT_HEAP = os.environ.get("MES_KAFKA_HEAP", "384m")
#: JVM options of Apache Kafka's ``kafka-run-class.sh`` (KAFKA_JVM_PERFORMANCE_OPTS).
JVM_OPTIONS = (
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)
MIN_JAVA = 17

LOG4J2_CONFIG = """\
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = INFO
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


class KafkaError(RuntimeError):
    """Java or Maven is missing, the release could not be fetched, or a node did not start."""


def kafka_version() -> str:
    """The Apache Kafka version ``kafka/pom.xml`` pins."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    if not match:
        raise KafkaError(f"{POM} does not set <kafka.version>")
    return match.group(1).strip()


def cache_dir() -> Path:
    """Where the release's jars are kept: ``$MES_KAFKA_CACHE`` or ``~/.cache/mes-blockchain/kafka-<version>``."""
    explicit = os.environ.get("MES_KAFKA_CACHE")
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mes-blockchain" / f"kafka-{kafka_version()}"


def java_major(java: str = "java") -> int | None:
    """The major version of *java*, or ``None`` when there is none."""
    path = shutil.which(java)
    if path is None:
        return None
    try:
        out = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def missing_prerequisites(need_maven: bool = False) -> list[str]:
    """What Apache Kafka needs here and is missing: ``java`` (>= 17) and ``mvn`` (Maven; with
    *need_maven* false only while the jars are not cached yet). An empty list when nothing is."""
    missing = []
    major = java_major()
    if major is None:
        missing.append(f"java (>= {MIN_JAVA})")
    elif major < MIN_JAVA:
        missing.append(f"java >= {MIN_JAVA} (found {major})")
    if (need_maven or not _jars_ready()) and shutil.which("mvn") is None:
        missing.append("mvn (Maven, to fetch the Apache Kafka jars from Maven Central)")
    return missing


def _stamp() -> str:
    return POM.read_text()


def _jars_ready() -> bool:
    stamp = cache_dir() / ".pom"
    return (
        stamp.is_file()
        and stamp.read_text() == _stamp()
        and any((cache_dir() / "libs").glob("kafka_2.13-*.jar"))
    )


_FETCH_LOCK = threading.Lock()


def ensure_jars() -> Path:
    """Fetch the pinned release's jars into :func:`cache_dir` unless they are there; return the
    folder of the jars."""
    with _FETCH_LOCK:
        libs = cache_dir() / "libs"
        if _jars_ready():
            return libs
        missing = missing_prerequisites()
        if missing:
            raise KafkaError("Apache Kafka needs " + " and ".join(missing) + "; install them (see README)")
        cache = cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="libs-", dir=cache))
        cmd = ["mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies", "-DincludeScope=runtime"]
        result = subprocess.run(
            [*cmd, f"-DoutputDirectory={staging}"],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise KafkaError(
                f"mvn could not fetch Apache Kafka {kafka_version()} ({POM}): "
                f"{(result.stdout + result.stderr).strip()[-2000:]}"
            )
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        (cache / "log4j2.properties").write_text(LOG4J2_CONFIG)
        (cache / ".pom").write_text(_stamp())
        return libs


def _cluster_id() -> str:
    """A random cluster id, as Kafka's ``Uuid.randomUuid`` makes them: never starting with "-",
    which ``kafka-storage format -t`` would read as an option."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass
class KafkaNode:
    """One combined broker and controller of a cluster."""

    node_id: int
    port: int
    controller_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    #: Where this run's output starts in :attr:`log_path`.
    log_offset: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.directory / "server.properties"

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None


# Processes of every cluster still running, stopped at interpreter exit whatever happened.
_LIVE: weakref.WeakSet[KafkaCluster] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for cluster in list(_LIVE):
        cluster.stop(timeout=5)


class KafkaCluster:
    """Apache Kafka nodes (combined broker and controller) on loopback, started and stopped by
    their owner.

    :param nodes: 1 (a single node) or 3 (a cluster: replication factor 3, ``min.insync.replicas=2``).
    :param base_dir: where the nodes' data and logs go; a new temporary folder when ``None``
        (removed on stop; a given folder is kept, so a stack can restart on its data).
    :param heap: the JVM heap of each node.
    :param ports: the broker ports of the nodes; free ones when ``None``.
    """

    def __init__(
        self,
        nodes: int = 1,
        base_dir: str | os.PathLike[str] | None = None,
        heap: str = DEFAULT_HEAP,
        ports: list[int] | None = None,
    ) -> None:
        if nodes < 1:
            raise ValueError(f"A cluster needs at least one node, not {nodes}")
        if ports is not None and len(ports) != nodes:
            raise ValueError(f"{len(ports)} ports given for {nodes} nodes")
        self._owns_dir = base_dir is None
        self.base_dir = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="kafka-cluster-"))
        self.heap = heap
        self.nodes = [
            KafkaNode(
                i + 1, (ports[i] if ports else free_port()), free_port(), self.base_dir / f"node-{i + 1}"
            )
            for i in range(nodes)
        ]
        self._finalizer = weakref.finalize(self, _kill_processes, [])

    # ------------------------------------------------------------------ settings
    @property
    def size(self) -> int:
        return len(self.nodes)

    @property
    def replication_factor(self) -> int:
        """The replication factor of the topics created on this cluster."""
        return min(self.size, 3)

    @property
    def min_insync_replicas(self) -> int:
        return 2 if self.size >= 3 else 1

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.address for node in self.nodes)

    def node(self, node_id: int) -> KafkaNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(f"No node {node_id} in this cluster (nodes {[n.node_id for n in self.nodes]})")

    def _properties(self, node: KafkaNode) -> dict[str, str]:
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        rf = str(self.replication_factor)
        return {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(node.directory / "data"),
            # What the cluster's size allows (the defaults assume three brokers).
            "default.replication.factor": rf,
            "min.insync.replicas": str(self.min_insync_replicas),
            "offsets.topic.replication.factor": rf,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": str(self.min_insync_replicas),
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": str(self.min_insync_replicas),
        }

    def _write_config(self, node: KafkaNode) -> None:
        node.directory.mkdir(parents=True, exist_ok=True)
        lines = [f"{key}={value}" for key, value in self._properties(node).items()]
        node.config_path.write_text("\n".join(lines) + "\n")

    def _java(self, main: str, *args: str, heap: str) -> list[str]:
        libs = ensure_jars()
        return [
            "java",
            f"-Xmx{heap}",
            f"-Xms{heap}",
            *JVM_OPTIONS,
            f"-Dlog4j2.configurationFile={cache_dir() / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.base_dir}",
            "-cp",
            f"{libs}/*",
            main,
            *args,
        ]

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 180.0) -> KafkaCluster:
        """Format the nodes' storage when new, start every node and wait until the cluster is ready."""
        ensure_jars()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        cluster_id_file = self.base_dir / "cluster.id"
        if not cluster_id_file.exists():
            cluster_id_file.write_text(_cluster_id())
        cluster_id = cluster_id_file.read_text().strip()
        for node in self.nodes:
            self._write_config(node)
            if not (node.directory / "data" / "meta.properties").exists():
                self._format(node, cluster_id)
        _LIVE.add(self)
        try:
            for node in self.nodes:
                self._spawn(node)
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _format(self, node: KafkaNode, cluster_id: str) -> None:
        cmd = self._java(
            "kafka.tools.StorageTool",
            "format", "-t", cluster_id, "-c", str(node.config_path), "--ignore-formatted",
            heap="128m",
        )  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise KafkaError(
                f"Formatting node {node.node_id}'s storage failed: {(result.stdout + result.stderr).strip()[-2000:]}"
            )

    def _spawn(self, node: KafkaNode) -> None:
        if node.pid is not None:
            return
        cmd = self._java("kafka.Kafka", str(node.config_path), heap=self.heap)
        node.log_offset = node.log_path.stat().st_size if node.log_path.exists() else 0
        with open(node.log_path, "ab") as out:
            node.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self._finalizer.detach()
        self._finalizer = weakref.finalize(
            self, _kill_processes, [n.process for n in self.nodes if n.process]
        )

    def _admin(self, bootstrap: str | None = None):
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": bootstrap or self.bootstrap_servers, "logger": _QUIET})

    def live_brokers(self, timeout: float = 5.0) -> set[int]:
        """The ids of the brokers the cluster's metadata lists as live."""
        running = [node.address for node in self.nodes if node.pid is not None]
        if not running:
            return set()
        metadata = self._admin(",".join(running)).list_topics(timeout=timeout)
        return set(metadata.brokers)

    def _started(self, node: KafkaNode) -> bool:
        """Whether the node's current run has logged that its server started."""
        try:
            with open(node.log_path, "rb") as log:
                log.seek(node.log_offset)
                return b"Kafka Server started" in log.read()
        except OSError:
            return False

    def wait_ready(self, timeout: float = 180.0, nodes: list[int] | None = None) -> None:
        """Block until every running node (or *nodes*) has started and the metadata lists it as a
        live broker."""
        wanted = set(nodes) if nodes is not None else {n.node_id for n in self.nodes if n.process}
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            for node in self.nodes:
                if node.process is not None and node.process.poll() is not None and node.node_id in wanted:
                    raise KafkaError(
                        f"Kafka node {node.node_id} exited with code {node.process.returncode}; "
                        f"see {node.log_path}: {_tail(node.log_path)}"
                    )
            try:
                live = self.live_brokers(timeout=2)
                if wanted <= live and all(self._started(self.node(i)) for i in wanted):
                    return
                last = f"live brokers {sorted(live)}, waiting for {sorted(wanted)}"
            except Exception as exc:  # KafkaException while the listeners come up
                last = exc
            if time.monotonic() > deadline:
                raise KafkaError(
                    f"Kafka cluster {self.bootstrap_servers} not ready within {timeout:.0f} s: {last}"
                )
            time.sleep(0.2)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every node this cluster started and remove a temporary folder. Nodes whose data
        is kept get SIGTERM (a clean shutdown) and SIGKILL after *timeout*; a temporary cluster's
        data is thrown away, so its nodes are killed at once."""
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.process.pid, signal.SIGCONT)
                    os.killpg(node.process.pid, signal.SIGKILL if self._owns_dir else signal.SIGTERM)
        for node in self.nodes:
            self._reap(node, timeout)
        _LIVE.discard(self)
        self._finalizer.detach()
        if self._owns_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    @staticmethod
    def _reap(node: KafkaNode, timeout: float) -> None:
        if node.process is None:
            return
        try:
            node.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signal.SIGKILL)
            node.process.wait(10)
        node.process = None

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ faults
    def kill(self, node_id: int) -> None:
        """SIGKILL one node (broker and controller): no shutdown, no flush."""
        node = self.node(node_id)
        if node.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.process.pid, signal.SIGKILL)
        node.process.wait(30)
        node.process = None

    def pause(self, node_id: int) -> None:
        """SIGSTOP one node: its sockets stay open and nothing answers."""
        os.killpg(self._running(node_id).pid, signal.SIGSTOP)

    def resume(self, node_id: int) -> None:
        """SIGCONT a paused node."""
        os.killpg(self._running(node_id).pid, signal.SIGCONT)

    def start_node(self, node_id: int, timeout: float = 120.0) -> None:
        """Start a node that was killed or stopped again, on its ports and data, and wait until
        it is a live broker."""
        node = self.node(node_id)
        self._spawn(node)
        self.wait_ready(timeout, nodes=[node_id])

    def stop_node(self, node_id: int, timeout: float = 60.0) -> None:
        """Stop one node cleanly (SIGTERM: controlled shutdown, leadership moved away)."""
        node = self.node(node_id)
        if node.process is not None and node.process.poll() is None:
            node.process.terminate()
        self._reap(node, timeout)

    def restart(self, node_id: int, timeout: float = 120.0) -> None:
        """A rolling-restart step: stop one node cleanly, start it again, wait until it is live."""
        self.stop_node(node_id)
        self.start_node(node_id, timeout)

    def _running(self, node_id: int) -> subprocess.Popen[bytes]:
        node = self.node(node_id)
        if node.process is None or node.process.poll() is not None:
            raise KafkaError(f"Kafka node {node_id} is not running")
        return node.process

    def leader(
        self, topic: str, partition: int = 0, timeout: float = 10.0, other_than: int | None = None
    ) -> int:
        """The node id leading *partition* of *topic* (from the cluster's metadata); with
        *other_than*, wait until a node other than that one leads it (after a kill)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                running = ",".join(
                    n.address for n in self.nodes if n.pid is not None and n.node_id != other_than
                )
                metadata = self._admin(running).list_topics(topic, timeout=5)
                meta = metadata.topics[topic].partitions.get(partition)
                if meta is not None and meta.leader >= 0 and meta.leader != other_than:
                    return meta.leader
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise KafkaError(f"No leader for {topic}[{partition}] within {timeout:.0f} s")
            time.sleep(0.2)

    def in_sync_replicas(self, topic: str, partition: int = 0) -> list[int]:
        """The in-sync replicas of *partition* of *topic*."""
        metadata = self._admin().list_topics(topic, timeout=10)
        return list(metadata.topics[topic].partitions[partition].isrs)


def _kill_processes(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class _QuietLogger:
    """Keeps librdkafka's connection errors of the admin probes out of the caller's log."""

    def log(self, *args: object) -> None:
        return None

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


_QUIET = _QuietLogger()


def replication_factor(bootstrap_servers: str) -> int:
    """The replication factor for new topics on *bootstrap_servers*: 3 on a cluster of three or
    more brokers, else the number of brokers."""
    from confluent_kafka.admin import AdminClient

    metadata = AdminClient({"bootstrap.servers": bootstrap_servers, "logger": _QUIET}).list_topics(timeout=10)
    return max(1, min(3, len(metadata.brokers)))


def main(argv: list[str] | None = None) -> int:
    """``python -m local_services.kafka check|fetch|run``: what ``make test`` and ``make kafka`` call."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m local_services.kafka", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="exit 1 naming what is missing when Java >= 17 or Maven is")
    commands.add_parser("fetch", help="fetch the pinned release's jars into the cache (Maven Central)")
    run = commands.add_parser("run", help="run a cluster in the foreground until Ctrl-C")
    run.add_argument("--nodes", type=int, default=1, choices=(1, 3))
    args = parser.parse_args(argv)

    missing = missing_prerequisites(need_maven=True)
    if missing:
        print(
            f"Apache Kafka {kafka_version()} (the tests' broker) needs {' and '.join(missing)}: "
            "install them (Debian: apt-get install openjdk-17-jre-headless maven), see README.md",
            file=sys.stderr,
        )
        return 1
    if args.command == "check":
        return 0
    try:
        libs = ensure_jars()
    except KafkaError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.command == "fetch":
        print(f"Apache Kafka {kafka_version()}: {len(list(libs.glob('*.jar')))} jars in {libs}")
        return 0
    with KafkaCluster(args.nodes) as cluster:
        print(f"Apache Kafka {kafka_version()} on {cluster.bootstrap_servers} (Ctrl-C stops it)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
