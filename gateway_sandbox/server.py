"""The gateway sandbox service: consumes every ``BLK_*`` request topic, answers on ``BLK_Res``.

Processing is exactly-once with respect to the ledger. For each consumed message, one SQLite
transaction holds the request's effect, its response(s) in the ``outbox`` table and the
partition's next offset. Responses are produced from the outbox and deleted once the broker
confirms them; on start, unsent outbox rows are produced first. A process killed at any point
therefore applies no request twice and loses no answer (an answer may be written twice if the
kill falls between the broker's confirmation and the deletion).

Partitions are *assigned*, never subscribed: no consumer-group join, no offsets committed to
Kafka. With no stored offset, a partition is read from its beginning. A stored offset is
trusted only if the message just before it is still the one consumed (its fingerprint, kept
with the offset, matches): otherwise the broker has lost its data (tansu keeps topics in
memory), and the partition is read from its beginning, with a warning. Comparing a fingerprint,
and not the offset with the high watermark, matters because tansu's high watermark counts a
multi-record batch as one offset.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from gateway_sandbox import handlers, wire
from gateway_sandbox.broker import ensure_topics, fetch_wait_for
from gateway_sandbox.faults import ERROR_TEXT, NO_FAULTS, Decision, FaultInjector, Faults
from gateway_sandbox.ledger import Ledger
from gateway_sandbox.profiles import PROFILES, Profile
from gateway_sandbox.validation import short

log = logging.getLogger("gateway_sandbox.server")
kafka_log = logging.getLogger("gateway_sandbox.kafka")

_ASSIGNED = re.compile(r'"idemp_state":\s*"Assigned"')

#: Seconds a record type's creation waits for its new topic to have a leader on every partition
#: before it is answered (the agent sends the type's records there next).
RECORD_TOPIC_WAIT = 10.0

OutboxRow = tuple[float, int, str, bytes | None, bytes, list[tuple[str, str]]]


def fingerprint(message: Message) -> str:
    """Identifies a consumed message: SHA-256 of its timestamp, key and value."""
    digest = hashlib.sha256()
    digest.update(str(message.timestamp()[1]).encode())
    for part in (message.key() or b"", message.value() or b""):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()[:32]


class GatewayServer:
    """The sandbox gateway over a real broker, running in a background thread.

    :param bootstrap_servers: the Kafka bootstrap servers.
    :param db_path: the SQLite ledger (created if missing).
    :param encoding: ``python-literal`` (the original gateway) or ``json``.
    :param echo: copy each request's ``request_id`` into its response header (``BLK_Agt``
        responses always do).
    :param topic_prefix: every topic read or written is this prefix + its protocol name.
    :param faults: fault knobs (:class:`~gateway_sandbox.faults.Faults`); none by default.
    :param fetch_wait_max_ms: the consumer's ``fetch.wait.max.ms``; by default by broker
        (:func:`~gateway_sandbox.broker.fetch_wait_for`): 2 on tansu, which holds every fetch that
        long, and 100 on Apache Kafka, where a fetch returns as soon as a request arrives.
    :param create_topics: create the topics that are missing.
    :param topic_partitions: the partition count of the topics it creates.
    :param probe_timeout: how long to look for the last consumed message of a partition when
        checking a stored offset.
    :param ready_timeout: how long :meth:`start` waits for the producer to be able to deliver.
    :param poll_timeout: the longest wait for a request, hence for :meth:`stop` to be noticed.
    :param batch_size: the most requests taken from the consumer at once (each is still its own
        SQLite transaction).
    :param log_requests: log one INFO line per request.
    :param page_cap: answer list requests with at most this many items, whatever their limit (a
        gateway that caps its pages); ``None``: the limit asked.
    :param discover_interval: how often to look for new record topics (``BLK_Rec_<record type>``)
        on the broker, in seconds; the topic of a record type created here is read at once.
    :param consumer_config: extra librdkafka settings of the consumer (TLS, SASL...).
    :param producer_config: extra librdkafka settings of the producer.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        db_path: str,
        *,
        encoding: str = "python-literal",
        echo: bool = False,
        topic_prefix: str = "",
        faults: Faults | None = None,
        fetch_wait_max_ms: int | None = None,
        create_topics: bool = True,
        topic_partitions: int = 1,
        probe_timeout: float = 2.0,
        ready_timeout: float = 10.0,
        poll_timeout: float = 0.1,
        batch_size: int = 500,
        log_requests: bool = True,
        page_cap: int | None = None,
        discover_interval: float = 1.0,
        consumer_config: Mapping[str, Any] | None = None,
        producer_config: Mapping[str, Any] | None = None,
        agent_requests_per_minute: int = handlers.DEFAULT_AGENT_REQUESTS_PER_MINUTE,
        hold_file: str | None = None,
        trace_path: str | None = None,
        profile: Profile | None = None,
    ) -> None:
        if encoding not in wire.ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}: one of {', '.join(wire.ENCODINGS)}")
        self.bootstrap_servers = bootstrap_servers
        self.db_path = str(db_path)
        self.encoding = encoding
        self.echo = echo
        self.topic_prefix = topic_prefix
        self.topics = wire.topic_names(topic_prefix)
        self.fetch_wait_max_ms = fetch_wait_max_ms
        self.create_topics = create_topics
        self.topic_partitions = topic_partitions
        self.probe_timeout = probe_timeout
        self.ready_timeout = ready_timeout
        self.poll_timeout = poll_timeout
        self.batch_size = batch_size
        self.log_requests = log_requests
        if page_cap is not None and page_cap < 1:
            raise ValueError(f"page_cap must be a positive integer, not {page_cap!r}")
        self.page_cap = page_cap
        self.discover_interval = discover_interval
        self._next_discovery = 0.0
        self.consumer_config = dict(consumer_config or {})
        self.producer_config = dict(producer_config or {})
        #: while this file exists, answers wait in the outbox (released when it is removed); when
        #: it names actions (``update``, ``get``... one per line), only the answers to those wait
        self.hold_file = hold_file
        #: what the gateway forgives and how fast it answers a write (:mod:`gateway_sandbox.profiles`)
        self.profile = profile or PROFILES["sandbox"]
        self._row_action: dict[int, str] = {}
        #: a JSON line per answered request: token digest, request id, when it was read (received)
        #: and when its answer was handed to the producer (answered)
        self.trace_path = trace_path
        self._traced: dict[int, dict[str, Any]] = {}
        #: whether due answers were held back in the last cycle (see _cycle)
        self._holding = False
        self._trace_file: Any = None
        self._protocol_name = {actual: name for name, actual in self.topics.items()}
        self._assigned_topics: set[str] = set()
        self.agent_limiter = handlers.AgentRateLimiter(agent_requests_per_minute, 60.0)
        self._injector = FaultInjector(faults or Faults())
        self._counters: Counter[str] = Counter()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._start_error: BaseException | None = None
        self._producer_ready = False
        self._queue: list[OutboxRow] = []
        self._delivered: list[int] = []
        self._failed_deliveries: list[int] = []
        self._in_flight: dict[int, OutboxRow] = {}
        self.ledger: Ledger | None = None
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        #: ``(topic, partition) -> offset`` the consumer started from.
        self.start_offsets: dict[tuple[str, int], int] = {}

    # ---- public --------------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self._injector.faults

    @faults.setter
    def faults(self, faults: Faults | None) -> None:
        """Replace the fault knobs of a running server (their random streams restart)."""
        self._injector = FaultInjector(faults or Faults())

    @property
    def counters(self) -> dict[str, int]:
        """A snapshot: ``requests``, ``answered``, ``errors``, ``malformed``, ``sent``, ``fault_*``..."""
        return dict(self._counters)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 60.0) -> GatewayServer:
        """Start serving in a background thread; return once the partitions are assigned."""
        if self._thread is not None:
            raise RuntimeError("this GatewayServer was already started")
        self._thread = threading.Thread(target=self._run, name="gateway-sandbox", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self._stopping.set()
            raise TimeoutError(f"the gateway sandbox did not become ready within {timeout:.0f} s")
        if self._start_error is not None:
            self._thread.join(5)
            raise self._start_error
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop consuming, write the answers that are due, and close everything."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("gateway sandbox thread did not stop within %.0f s", timeout)

    def wait_for(self, predicate: Callable[[dict[str, int]], bool], timeout: float = 10.0) -> bool:
        """Wait until ``predicate(counters)`` holds; return whether it did before *timeout*."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.counters):
                return True
            time.sleep(0.01)
        return predicate(self.counters)

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the worker thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._setup()
        except BaseException as exc:
            self._start_error = exc
            self._close()
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stopping.is_set():
                self._cycle()
        except Exception:
            log.exception("gateway sandbox stopped on an unexpected error")
        finally:
            self._shutdown()

    def _setup(self) -> None:
        self.ledger = Ledger(self.db_path)
        if self.create_topics:
            ensure_topics(
                self.bootstrap_servers,
                list(self.topics.values()),
                self.topic_partitions,
                config=self.producer_config,
            )
        self._producer = Producer(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 0,
                "socket.nagle.disable": True,
                "logger": kafka_log,
                # only to learn when the idempotent producer has its producer id (see _wait_producer)
                "statistics.interval.ms": 50,
                "stats_cb": self._on_stats,
                **self.producer_config,
            }
        )
        # ask for metadata now, so the producer id is acquired while the consumer is set up
        metadata = self._producer.list_topics(self.topics[wire.RESPONSES], timeout=10)
        if self.fetch_wait_max_ms is None:
            self.fetch_wait_max_ms = fetch_wait_for(metadata.cluster_id)
        self._consumer = Consumer(self._consumer_settings("gateway-sandbox"))
        assignment = self._start_positions()
        self._consumer.assign(assignment)
        self.start_offsets = {(tp.topic, tp.partition): tp.offset for tp in assignment}
        self._wait_producer(self.ready_timeout)
        pending = self.ledger.outbox_pending()
        if pending:
            log.info("resending %d unsent response(s) from the outbox", len(pending))
            for row_id, topic, key, value, headers, due_at in pending:
                heapq.heappush(self._queue, (due_at, row_id, topic, key, value, headers))
            self._counters["resent"] += len(pending)
            self._send_due()
            self._producer.flush(10)
            self._flush_delivered()
        log.info(
            "gateway sandbox ready: %d partition(s) of %d request topics, encoding=%s echo=%s%s",
            len(assignment),
            len(wire.REQUEST_TOPICS),
            self.encoding,
            "on" if self.echo else "off",
            f" faults={self.faults}" if self.faults.active else "",
        )

    def _on_stats(self, stats: str) -> None:
        if not self._producer_ready and _ASSIGNED.search(stats):
            self._producer_ready = True

    def _wait_producer(self, timeout: float) -> None:
        """Wait until the idempotent producer holds a producer id (about 0.5 s on tansu); until then
        nothing it produces is delivered, and the first answers would come late."""
        assert self._producer is not None
        deadline = time.monotonic() + timeout
        while not self._producer_ready and time.monotonic() < deadline:
            self._producer.poll(0.02)
        if not self._producer_ready:
            log.warning("the producer has no producer id after %.0f s; answers may be late", timeout)

    def _consumer_settings(self, group: str) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.bootstrap_servers,
            # required by the client; never joined (assign only) and nothing is committed
            "group.id": f"{group}-{self.topic_prefix or 'default'}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": self.fetch_wait_max_ms,
            "socket.nagle.disable": True,
            "logger": kafka_log,
            **self.consumer_config,
        }

    def _record_topic(self, record_type: str) -> str:
        """The actual topic of *record_type*'s records; remembered as a request topic."""
        name = wire.record_topic(record_type)
        actual = self.topic_prefix + name
        self._protocol_name[actual] = name
        return actual

    def _discover_record_topics(self, metadata: Any) -> list[str]:
        """The record topics on the broker (any ``<prefix>BLK_Rec_<name>``) not yet known."""
        found = []
        for topic in metadata.topics:
            if topic in self._protocol_name or not topic.startswith(self.topic_prefix):
                continue
            record_type = wire.record_type_of(topic[len(self.topic_prefix) :])
            if record_type is not None:
                found.append(self._record_topic(record_type))
        return found

    def _assign_new(self, topics: list[str]) -> set[str]:
        """Start reading *topics* (new record topics) where this ledger left them, else from their
        start; returns those read. A topic the consumer's metadata does not show yet, or shows
        without a leader for each partition (a topic just created on a cluster), is not read."""
        assert self._consumer is not None and self.ledger is not None
        stored = self.ledger.stored_offsets()
        metadata = self._consumer.list_topics(timeout=10)
        assignment = []
        for topic in topics:
            info = metadata.topics.get(topic)
            if info is None or info.error is not None or not info.partitions:
                continue
            if any(part.leader < 0 or part.error is not None for part in info.partitions.values()):
                continue
            for partition in sorted(info.partitions):
                low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                saved = stored.get((topic, partition))
                offset = saved[0] if saved is not None and low < saved[0] <= high else low
                assignment.append(TopicPartition(topic, partition, offset))
                self.start_offsets[(topic, partition)] = offset
        read = {tp.topic for tp in assignment}
        if assignment:
            self._consumer.incremental_assign(assignment)
            log.info("reading record topic(s) %s", ", ".join(sorted(read)))
        return read

    def _serve_record_type(self, record_type: str) -> None:
        """Make the topic of a record type just created exist and be read, before the answer goes
        out. On a cluster the topic reaches every broker's metadata a moment after its creation:
        it is waited for (at most :data:`RECORD_TOPIC_WAIT` seconds, then left to discovery)."""
        topic = self._record_topic(record_type)
        if topic in self._assigned_topics:
            return
        ensure_topics(self.bootstrap_servers, [topic], self.topic_partitions)
        deadline = time.monotonic() + RECORD_TOPIC_WAIT
        while not self._assign_new([topic]):
            if time.monotonic() >= deadline:
                log.warning("record topic %s has no leader yet: read once discovery finds it", topic)
                return
            time.sleep(0.1)
        self._assigned_topics.add(topic)

    def _discover(self) -> None:
        assert self._consumer is not None
        self._next_discovery = time.monotonic() + self.discover_interval
        try:
            metadata = self._consumer.list_topics(timeout=5)
        except Exception:  # the broker is busy or gone: look again later
            return
        new = [t for t in self._discover_record_topics(metadata) if t not in self._assigned_topics]
        # record topics known from the ledger that the broker did not have at start
        new += [
            t
            for t, name in self._protocol_name.items()
            if wire.record_type_of(name) and t not in self._assigned_topics and t in metadata.topics
        ]
        new = sorted(set(new))
        if new:
            self._assigned_topics.update(self._assign_new(new))

    def _start_positions(self) -> list[TopicPartition]:
        assert self._consumer is not None and self.ledger is not None
        wanted = [self.topics[name] for name in wire.REQUEST_TOPICS if self.profile.serves(name)]
        # the topics of the record types on the ledger: created if missing, read from where we left
        record_topics = [self._record_topic(rtype["name"]) for rtype in self.ledger.record_types()]
        if record_topics and self.create_topics:
            ensure_topics(self.bootstrap_servers, record_topics, self.topic_partitions)
        wanted += record_topics
        deadline = time.monotonic() + 10
        while True:  # a real broker may list a topic it just created only a moment later
            metadata = self._consumer.list_topics(timeout=10)
            missing = [t for t in wanted if t not in metadata.topics or metadata.topics[t].error is not None]
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        wanted += [t for t in self._discover_record_topics(metadata) if t not in wanted]
        self._assigned_topics = set(wanted)
        stored = self.ledger.stored_offsets()
        assignment: list[TopicPartition] = []
        probes: dict[tuple[str, int], tuple[int, str, int]] = {}
        for topic in wanted:
            info = metadata.topics.get(topic)
            if (info is None or info.error is not None) and topic in record_topics:
                self._assigned_topics.discard(topic)  # read once it appears (see _discover)
                continue
            if info is None or info.error is not None:
                raise RuntimeError(f"topic {topic} does not exist on {self.bootstrap_servers}")
            for partition in sorted(info.partitions):
                # explicit offsets: resolving OFFSET_BEGINNING costs tansu a slow first fetch
                low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                beginning = TopicPartition(topic, partition, low)
                saved = stored.get((topic, partition))
                if saved is None:
                    assignment.append(beginning)
                    continue
                next_offset, _ = saved
                if next_offset <= low:
                    if next_offset < low:
                        log.warning(
                            "%s[%d]: offsets %d..%d were deleted before being read",
                            topic,
                            partition,
                            next_offset,
                            low - 1,
                        )
                    assignment.append(beginning)
                elif high <= low:
                    log.warning(
                        "%s[%d]: stored offset %d but the partition is empty (broker restarted?):"
                        " reading it from the beginning",
                        topic,
                        partition,
                        next_offset,
                    )
                    assignment.append(beginning)
                else:
                    probes[(topic, partition)] = (next_offset, saved[1], low)
        if probes:
            found = self._probe({key: value[:2] for key, value in probes.items()})
            for (topic, partition), (next_offset, _, low) in probes.items():
                if found.get((topic, partition)):
                    assignment.append(TopicPartition(topic, partition, next_offset))
                else:
                    log.warning(
                        "%s[%d]: the message before stored offset %d is gone or different (broker"
                        " restarted?): reading the partition from the beginning",
                        topic,
                        partition,
                        next_offset,
                    )
                    assignment.append(TopicPartition(topic, partition, low))
        return assignment

    def _probe(self, probes: dict[tuple[str, int], tuple[int, str]]) -> dict[tuple[str, int], bool]:
        """Whether the last consumed message of each partition is still there, unchanged."""
        consumer = Consumer(self._consumer_settings("gateway-sandbox-probe") | {"auto.offset.reset": "error"})
        found: dict[tuple[str, int], bool] = {}
        try:
            consumer.assign([TopicPartition(t, p, offset - 1) for (t, p), (offset, _) in probes.items()])
            deadline = time.monotonic() + self.probe_timeout
            while len(found) < len(probes) and time.monotonic() < deadline:
                message = consumer.poll(0.05)
                if message is None:
                    continue
                key = (message.topic(), message.partition())
                if message.error() is not None:
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    if key in probes:
                        found[key] = False
                    continue
                if key in probes and key not in found:
                    offset, expected = probes[key]
                    found[key] = message.offset() == offset - 1 and fingerprint(message) == expected
        finally:
            consumer.close()
        return found

    def _cycle(self) -> None:
        assert self._consumer is not None and self._producer is not None
        timeout = self.poll_timeout
        if self._queue and not self._holding:
            # held rows stay due: waiting for them would spin, so a hold waits poll_timeout
            timeout = max(0.0, min(timeout, self._queue[0][0] - time.time()))
        if time.monotonic() >= self._next_discovery:
            self._discover()
        message = self._consumer.poll(timeout)
        if message is not None:
            batch = [message, *self._consumer.consume(self.batch_size - 1, 0)]
            for item in batch:
                self._process(item)
        self._send_due()
        self._producer.poll(0)
        self._flush_delivered()

    def _process(self, message: Message) -> None:
        assert self.ledger is not None
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error on %s[%s]: %s", message.topic(), message.partition(), error)
            return
        started = time.perf_counter()
        received = time.time()
        topic = message.topic()
        name = self._protocol_name[topic]
        injector = self._injector
        decision = injector.decide()
        self._counters["requests"] += 1
        rows: list[OutboxRow] = []
        try:
            with self.ledger.transaction():
                answer = handlers.handle(
                    self.ledger,
                    name,
                    message.value(),
                    message.headers(),
                    inject_error=ERROR_TEXT if decision.error else None,
                    page_cap=self.page_cap,
                    agent_limiter=self.agent_limiter,
                    profile=self.profile,
                )
                if answer.new_record_type is not None:
                    self._serve_record_type(answer.new_record_type)
                if decision.error and not answer.injected:
                    # nothing to refuse: the request was dropped or refused on its own
                    decision = replace(decision, error=False)
                for row in self._responses(answer, decision, injector):
                    due_at, _, out_topic, key, value, headers = row
                    row_id = self.ledger.outbox_add(out_topic, key, value, headers, due_at)
                    rows.append((due_at, row_id, out_topic, key, value, headers))
                self.ledger.store_offset(
                    topic, message.partition(), message.offset() + 1, fingerprint(message)
                )
        except Exception:
            log.exception("request at %s[%d]@%d failed", topic, message.partition(), message.offset())
            self._counters["internal_errors"] += 1
            answer, decision, rows = self._internal_error(message, name)
        for row in rows:
            heapq.heappush(self._queue, row)
            if self.hold_file:
                self._row_action[row[1]] = answer.action
        if self.trace_path and rows and answer.auth:
            answer_row = rows[-2] if decision.duplicate and len(rows) > 1 else rows[-1]
            self._traced[answer_row[1]] = {
                "token": hashlib.sha256(answer.auth.encode()).hexdigest()[:16],
                "request_id": answer.request_id,
                # whether the answer carries the request id back (echo on, and the request had one)
                "echoed": bool(answer.header(self.echo).get("request_id")),
                "topic": name,
                "action": answer.action,
                "received": received,
            }
        self._count(answer, decision)
        if self.log_requests:
            log.info(
                "%s %s request_id=%s agent=%s outcome=%s%s offset=%d latency_ms=%.1f",
                topic,
                answer.action,
                answer.request_id or "-",
                short(answer.agent) if answer.agent else "-",
                answer.kind if answer.auth is not None else f"dropped ({answer.reason})",
                f" faults={','.join(decision.names)}" if decision.names else "",
                message.offset(),
                (time.perf_counter() - started) * 1000,
            )

    def _internal_error(
        self, message: Message, name: str
    ) -> tuple[handlers.Answer, Decision, list[OutboxRow]]:
        """Answer ``error`` (when a token can be read) and move past a request that raised."""
        assert self.ledger is not None
        auth = None
        try:
            header, _ = wire.decode_request(message.value())
            auth = header.get("auth") if name != wire.AGENTS else handlers.ANONYMOUS
            request_id = wire.request_id_of(header, message.headers())
        except Exception:
            request_id = None
        answer = handlers.Answer(
            auth if isinstance(auth, str) and auth else None,
            {"error": "internal error in the gateway sandbox"},
            action="internal-error",
            request_id=request_id,
            always_echo=name == wire.AGENTS,
            reason="internal error",
        )
        rows: list[OutboxRow] = []
        with self.ledger.transaction():
            for row in self._responses(answer, NO_FAULTS, self._injector):
                due_at, _, out_topic, key, value, headers = row
                row_id = self.ledger.outbox_add(out_topic, key, value, headers, due_at)
                rows.append((due_at, row_id, out_topic, key, value, headers))
            self.ledger.store_offset(
                message.topic(), message.partition(), message.offset() + 1, fingerprint(message)
            )
        return answer, NO_FAULTS, rows

    def _responses(
        self, answer: handlers.Answer, decision: Decision, injector: FaultInjector
    ) -> list[OutboxRow]:
        """The ``BLK_Res`` messages for *answer*, noise included (ids are filled in later)."""
        if answer.auth is None or decision.drop:
            return []
        topic = self.topics[wire.RESPONSES]
        header = answer.header(self.echo)
        value = wire.encode_response(header, answer.outcome, self.encoding)
        echoed = header.get("request_id")
        key = echoed.encode("ascii") if echoed else None
        kafka_headers = [(wire.REQUEST_ID_HEADER, echoed)] if echoed else []
        delay_ms = decision.delay_ms
        if answer.action not in ("list", "get") and "error" not in answer.outcome:
            delay_ms += self.profile.write_delay_ms  # a write waits for its block
        due_at = time.time() + delay_ms / 1000.0
        rows: list[OutboxRow] = []
        if decision.garbage:
            rows.append((due_at, 0, topic, None, injector.garbage(header) or b"", []))
        if decision.foreign:
            foreign: dict[str, Any] = {"auth": injector.foreign_token()}
            if echoed:
                foreign["request_id"] = injector.foreign_request_id()
            outcome = {"data": []} if "data" in answer.outcome else {"message": "answer for another client"}
            rows.append((due_at, 0, topic, None, wire.encode_response(foreign, outcome, self.encoding), []))
        rows.append((due_at, 0, topic, key, value, kafka_headers))
        if decision.duplicate:
            rows.append((due_at, 0, topic, key, value, kafka_headers))
        return rows

    def _count(self, answer: handlers.Answer, decision: Decision) -> None:
        counters = self._counters
        if answer.auth is None:
            counters["malformed"] += 1
        elif not decision.drop:
            counters["answered"] += 1
            if "error" in answer.outcome:
                counters["errors"] += 1
        if answer.outcome.get("error") == "unknown token":
            counters["unknown_token"] += 1
        for name in decision.names:
            counters[f"fault_{name}"] += 1

    def _send_due(self) -> None:
        producer = self._producer
        assert producer is not None
        now = time.time()
        held_actions = self._held_actions()
        if held_actions is not None and not held_actions:
            self._holding = bool(self._queue)
            return  # everything waits
        held: list[OutboxRow] = []
        try:
            self._send_rows(producer, now, held_actions or set(), held)
        finally:
            self._holding = bool(held)
            for row in held:
                heapq.heappush(self._queue, row)

    def _held_actions(self) -> set[str] | None:
        """``None`` when nothing is held, an empty set when every answer is, else the held actions."""
        if not self.hold_file:
            return None
        try:
            with open(self.hold_file) as handle:
                return set(handle.read().split())
        except FileNotFoundError:
            return None

    def _send_rows(
        self, producer: Producer, now: float, held_actions: set[str], held: list[OutboxRow]
    ) -> None:
        while self._queue and self._queue[0][0] <= now:
            row = heapq.heappop(self._queue)
            _, row_id, topic, key, value, headers = row
            if held_actions and self._row_action.get(row_id) in held_actions:
                held.append(row)
                continue
            try:
                producer.produce(
                    topic,
                    value=value,
                    key=key,
                    headers=[(h, v.encode()) for h, v in headers],
                    on_delivery=lambda err, msg, row_id=row_id: self._on_delivery(err, row_id),
                )
            except BufferError:
                heapq.heappush(self._queue, row)
                producer.poll(0.05)
                return
            self._in_flight[row_id] = row
            traced = self._traced.pop(row_id, None)
            if traced is not None:
                # the earliest moment a client can read the answer: handed to the producer
                self._write_trace({**traced, "answered": time.time()})

    def _on_delivery(self, err: KafkaError | None, row_id: int) -> None:
        if err is None:
            self._delivered.append(row_id)
            self._row_action.pop(row_id, None)
        else:
            log.warning("response %d not delivered (%s); retrying", row_id, err)
            self._failed_deliveries.append(row_id)

    def _write_trace(self, entry: dict[str, Any]) -> None:
        if self._trace_file is None:
            self._trace_file = open(self.trace_path, "a")  # noqa: SIM115 (closed in _close)
        self._trace_file.write(json.dumps(entry) + "\n")
        self._trace_file.flush()

    def _flush_delivered(self) -> None:
        if self._failed_deliveries:
            for row_id in self._failed_deliveries:
                row = self._in_flight.pop(row_id, None)
                if row is not None:
                    heapq.heappush(self._queue, (time.time() + 1.0, *row[1:]))
            self._failed_deliveries = []
        if self._delivered and self.ledger is not None:
            delivered, self._delivered = self._delivered, []
            self.ledger.outbox_delete(delivered)
            for row_id in delivered:
                self._in_flight.pop(row_id, None)
            self._counters["sent"] += len(delivered)

    def _shutdown(self) -> None:
        try:
            if self._producer is not None:
                self._send_due()
                self._producer.flush(10)
                self._flush_delivered()
                if self._queue:
                    log.info("%d delayed response(s) stay in the outbox for the next start", len(self._queue))
        except Exception:
            log.exception("error while flushing responses at shutdown")
        finally:
            self._close()
            log.info("gateway sandbox stopped: %s", dict(sorted(self._counters.items())))

    def _close(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(Exception):  # already closed, or the broker is gone
                self._consumer.close()
            self._consumer = None
        if self._producer is not None:
            with contextlib.suppress(Exception):
                self._producer.close()
            self._producer = None
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None
        if self._trace_file is not None:
            self._trace_file.close()
            self._trace_file = None
