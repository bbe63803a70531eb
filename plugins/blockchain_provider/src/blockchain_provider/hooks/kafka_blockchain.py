"""Request/reply with the blockchain gateway over Kafka.

The MES publishes a request on a ``BLK_*`` topic; the gateway answers on the shared topic
``BLK_Res``. :class:`KafkaBlockchainHook` sends a request and waits for its own answer
(PROTOCOL.md section 2):

* one producer (idempotent, ``acks=all``) and one response reader serve every request of a
  hook instance, and are closed by :meth:`KafkaBlockchainHook.close` or the ``with`` block;
* the reader assigns the ``BLK_Res`` partitions directly (no consumer-group join) and reads
  to their end *before* the first request is sent, then keeps reading in a background
  thread, so an answer that arrives a millisecond after the request is never missed;
* an answer is matched by the echoed ``request_id`` when the gateway echoes one, otherwise
  by the token, read at or after the positions fixed before sending; foreign and malformed
  answers are skipped;
* without echo, one request per token is in flight at a time (a process-wide lock here, an
  Airflow pool per token in the DAGs); with echo, requests are pipelined;
* every wait has a deadline.

The token is never logged, put in an exception or shown by ``repr``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from airflow.providers.apache.kafka.hooks.base import KafkaBaseHook
from airflow.sdk import BaseHook
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from blockchain_provider import protocol
from blockchain_provider.exceptions import (
    BlockchainBrokerError,
    BlockchainConfigError,
    BlockchainDeliveryError,
    BlockchainGatewayError,
    BlockchainTimeoutError,
    MalformedResponseError,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
#: Without request_id echo, how long after a timeout the token stays blocked while the late answer
#: may still come (the ``late_answer_grace`` field of the token connection overrides it).
DEFAULT_LATE_ANSWER_GRACE = 30.0
#: How long the first request may wait for the response reader to be positioned.
READER_START_TIMEOUT = 30.0
#: A caller queued for its token that gets it with less time than this left gives up unsent: no
#: answer could arrive in time, and the gateway would act on a request nobody waits for.
MIN_SEND_BUDGET = 0.05

#: Producer settings this hook needs; the kafka connection's extra cannot turn them off.
PRODUCER_REQUIRED = {"enable.idempotence": True, "acks": "all"}
#: Producer settings the kafka connection's extra may override.
PRODUCER_DEFAULTS = {"linger.ms": 0, "message.timeout.ms": 10_000}
#: Consumer settings the kafka connection's extra may override. The group id is only a
#: label: the reader assigns partitions itself, never joins the group and commits nothing.
#: ``fetch.wait.max.ms``: Apache Kafka answers a fetch as soon as data arrives, so the wait does
#: not delay an answer; it sets how often an idle reader asks (ten times a second at 100 ms, where
#: 5 ms made it 200) and how long a hook's start takes: the reader reads ``BLK_Res`` to its end
#: first, and the end is known when an empty fetch returns, which the broker holds for the whole
#: wait. The triggerer's long-lived readers wait the client's default, 500 ms.
CONSUMER_DEFAULTS = {
    "group.id": "blockchain-provider-reply",
    "fetch.wait.max.ms": 100,
    "socket.nagle.disable": True,
}
#: Over :data:`CONSUMER_DEFAULTS` where the broker is tansu (the embedded development broker of
#: ``make run``), which holds every fetch for its whole wait: there the wait is added to every
#: answer, so it is short, at the cost of broker CPU while idle (``bench/idle_fetch_cpu.py``).
#: The kafka connection's extra still overrides it.
TANSU_CONSUMER_DEFAULTS = {"fetch.wait.max.ms": 5}
#: tansu names its cluster this in every metadata response; Apache Kafka names a cluster with a
#: random UUID. The hook tells the two apart by it (:func:`broker_is_tansu`).
TANSU_CLUSTER_ID = "tansu_cluster"
CONSUMER_REQUIRED = {"enable.auto.commit": False, "enable.partition.eof": True}


def _without(config: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key not in keys}


class _Secret:
    """A string that ``repr``/``str`` never show."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


def _mask(value: str) -> None:
    """Register *value* with Airflow's secrets masker (task logs, supervisor logs)."""
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - Airflow < 3
        return
    mask_secret(value)


@dataclass(frozen=True)
class GatewaySettings:
    """What a ``blockchain_token`` connection holds. ``repr`` shows no secret."""

    token: _Secret | None
    public_key: str | None
    agent_password: _Secret | None
    instance_type: str | None
    agent_name: str | None
    record_id: str | None
    echo_request_id: bool
    timeout: float
    topics: protocol.TopicMap = field(default_factory=protocol.TopicMap)
    late_answer_grace: float = DEFAULT_LATE_ANSWER_GRACE


@dataclass(frozen=True)
class Outcome:
    """A successful answer: ``kind`` is ``data`` (a list or get) or ``message`` (a write)."""

    kind: str
    value: Any
    topic: str
    request_id: str
    public_key: str | None = None


@dataclass(frozen=True)
class PendingRequest:
    """A request sent but not yet answered, as a deferred task hands it to the trigger."""

    topic: str
    request_id: str
    response_topic: str
    start_offsets: dict[str, int]
    deadline: float
    by_request_id_only: bool
    expect: dict[str, Any] = field(default_factory=protocol.ANY_ANSWER.to_primitives)
    late_answer_grace: float = 0.0


class _ProducerHook(KafkaBaseHook):
    """Builds the request producer from the Kafka provider's ``kafka`` connection."""

    def _get_client(self, config: dict[str, Any]) -> Producer:
        config = {**PRODUCER_DEFAULTS, **config, **PRODUCER_REQUIRED}
        config.setdefault("logger", log)
        return Producer(config)

    @property
    def bootstrap_servers(self) -> str:
        return str(self._build_config().get("bootstrap.servers"))


class _ConsumerHook(KafkaBaseHook):
    """Builds the response consumer from the Kafka provider's ``kafka`` connection.

    :param defaults: settings over :data:`CONSUMER_DEFAULTS` that the connection may still override.
    """

    def __init__(self, kafka_config_id: str, defaults: Mapping[str, Any] | None = None) -> None:
        super().__init__(kafka_config_id)
        self._defaults = dict(defaults or {})

    def _get_client(self, config: dict[str, Any]) -> Consumer:
        config = {
            **CONSUMER_DEFAULTS,
            **self._defaults,
            **_without(config, "auto.offset.reset"),
            **CONSUMER_REQUIRED,
        }
        config.setdefault("logger", log)
        return Consumer(config)


# Bootstrap servers -> whether that broker is tansu, from the first metadata response.
_TANSU_BROKERS: dict[str, bool] = {}


def broker_is_tansu(client: Consumer | Producer, bootstrap_servers: str, topic: str, timeout: float) -> bool:
    """Whether *client*'s broker is tansu, from the cluster id of a metadata request for *topic*
    (remembered per bootstrap servers). A broker that does not answer counts as Apache Kafka,
    unremembered: the caller's own request then reports it."""
    known = _TANSU_BROKERS.get(bootstrap_servers)
    if known is not None:
        return known
    try:
        cluster_id = client.list_topics(topic, timeout=timeout).cluster_id
    except Exception:  # KafkaException, or a client that is not one (unit tests)
        return False
    _TANSU_BROKERS[bootstrap_servers] = cluster_id == TANSU_CLUSTER_ID
    return _TANSU_BROKERS[bootstrap_servers]


@dataclass(eq=False)
class _Waiter:
    request_id: str
    token: str | None
    by_request_id_only: bool
    min_offsets: dict[int, int]
    expect: protocol.Expectation = protocol.ANY_ANSWER
    event: threading.Event = field(default_factory=threading.Event)
    response: protocol.Response | None = None
    # set once the request timed out and its token stays blocked for a late answer
    release: Callable[[], None] | None = None
    timer: threading.Timer | None = None
    late_until: float = 0.0
    settled: threading.Event = field(default_factory=threading.Event)


class _ReleaseOnce:
    """Releases a lock the first time it is called, from whichever thread."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._guard = threading.Lock()
        self._done = False

    def __call__(self) -> None:
        with self._guard:
            if self._done:
                return
            self._done = True
        self._lock.release()


def _consume_available(consumer: Consumer, timeout: float, batch: int = 500) -> list[Any]:
    """Wait up to *timeout* for one message, then take what else is already fetched.

    ``Consumer.consume(n, timeout)`` waits the whole timeout unless *n* messages arrive, which
    would add that timeout to every round trip.
    """
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(num_messages=batch - 1, timeout=0)]


# Where each response topic is known to end, per broker, from what every reader of the process
# has fetched. A request matched by its token must not take an answer that was on the topic
# before it was sent, even one its own reader has not read yet: another hook's answer to the same
# token, or a duplicate that came in the same fetch as the answer before it.
_KNOWN_ENDS: dict[tuple[str, str], dict[int, int]] = {}
_KNOWN_ENDS_GUARD = threading.Lock()


class ResponseReader:
    """Reads ``BLK_Res`` from fixed positions and hands each answer to the request it belongs to.

    :param consumer: a consumer that is not subscribed to anything; the reader assigns it.
    :param topic: the response topic.
    :param broker: names the cluster, to share what is known of the topic's end between readers.
    """

    def __init__(self, consumer: Consumer, topic: str, broker: str = "") -> None:
        self._consumer = consumer
        self.topic = topic
        with _KNOWN_ENDS_GUARD:
            self._known_ends = _KNOWN_ENDS.setdefault((broker, topic), {})
        self._lock = threading.Lock()
        self._positions: dict[int, int] = {}
        self._by_id: dict[str, _Waiter] = {}
        self._by_token: list[_Waiter] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.malformed = 0
        self.skipped = 0
        #: answers that named one of our requests but did not fit it (other auth, other kind)
        self.forged = 0
        #: answers that came after their request had timed out
        self.late = 0
        #: messages not decoded: they hold neither a token nor a request id of a waiting request
        self.ignored = 0
        self._needles: tuple[bytes, ...] = ()

    # ---------------------------------------------------------------- positioning
    def position(self, timeout: float | None = None) -> dict[int, int]:
        """Assign every partition at its end and read up to it; return the positions.

        Reading to the end (not only trusting the high watermark) keeps the positions right on
        brokers whose watermark lags behind batched writes.
        """
        timeout = READER_START_TIMEOUT if timeout is None else timeout
        deadline = time.monotonic() + timeout
        metadata = self._consumer.list_topics(self.topic, timeout=timeout)
        topic_meta = metadata.topics.get(self.topic)
        if topic_meta is None or topic_meta.error is not None or not topic_meta.partitions:
            raise BlockchainConfigError(
                f"Response topic {self.topic} does not exist on the broker: create it or fix the "
                "connection's topic overrides"
            )
        positions = {}
        for partition in sorted(topic_meta.partitions):
            _low, high = self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=max(0.1, deadline - time.monotonic())
            )
            positions[partition] = high
        self._consumer.assign([TopicPartition(self.topic, p, off) for p, off in positions.items()])
        at_end: set[int] = set()
        while at_end != set(positions) and time.monotonic() < deadline:
            for message in _consume_available(self._consumer, 0.1):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        at_end.add(message.partition())
                    continue
                positions[message.partition()] = message.offset() + 1
        if at_end != set(positions):
            raise BlockchainBrokerError(f"Could not read to the end of {self.topic} within {timeout:.0f} s")
        self._positions = positions
        with _KNOWN_ENDS_GUARD:
            # read to the end just now: the truth, even below what was known (a broker that lost
            # its data, like tansu after a restart, starts the topic again from 0)
            self._known_ends.update(positions)
        return dict(positions)

    def start(self) -> None:
        self.position()
        self._thread = threading.Thread(target=self._run, name=f"blk-reader-{self.topic}", daemon=True)
        self._thread.start()

    def snapshot(self) -> dict[int, int]:
        with self._lock:
            return dict(self._positions)

    def fence(self) -> dict[int, int]:
        """Where a request sent now starts looking for an answer matched by its token: the reader's
        positions, or beyond them where the topic is known to end further."""
        positions = self.snapshot()
        with _KNOWN_ENDS_GUARD:
            for partition, end in self._known_ends.items():
                if partition in positions:
                    positions[partition] = max(positions[partition], end)
        return positions

    def _note_ends(self, partitions: set[int]) -> None:
        """Record the high watermarks of the last fetch (a local lookup, no request to the broker)."""
        for partition in partitions:
            try:
                _low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), cached=True
                )
            except KafkaException:  # not known yet: the positions still hold
                continue
            if high >= 0:
                with _KNOWN_ENDS_GUARD:
                    self._known_ends[partition] = max(self._known_ends.get(partition, 0), high)

    # ------------------------------------------------------------------- waiting
    def register(
        self,
        request_id: str,
        token: str | None,
        by_request_id_only: bool,
        expect: protocol.Expectation = protocol.ANY_ANSWER,
    ) -> _Waiter:
        fence = self.fence()
        with self._lock:
            waiter = _Waiter(request_id, token, by_request_id_only, fence, expect)
            self._by_id[request_id] = waiter
            if not by_request_id_only and token:
                self._by_token.append(waiter)
            self._update_needles()
            return waiter

    def _update_needles(self) -> None:
        """What a message must hold to be decoded at all: a waiting request's id, or the token of
        one matched by token. Anyone can write ``BLK_Res``; the rest is not read further."""
        self._needles = protocol.needles_of(
            *self._by_id, *{waiter.token for waiter in self._by_token if waiter.token}
        )

    def unregister(self, waiter: _Waiter) -> None:
        with self._lock:
            self._forget(waiter)

    def waiting(self) -> int:
        """Requests waiting for their answer (not those that timed out and wait for a late one)."""
        with self._lock:
            return sum(1 for waiter in self._by_id.values() if waiter.release is None)

    def hold_late(self, waiter: _Waiter, grace: float, release: Callable[[], None]) -> bool:
        """After *waiter*'s request timed out, keep waiting for its late answer for *grace* seconds,
        and call *release* (unblocking the token) when it comes or the grace period is over.

        Returns False, holding nothing, when the answer came in the meantime.
        """
        with self._lock:
            if waiter.response is not None:
                return False
            waiter.release = release
            waiter.late_until = time.monotonic() + grace
            waiter.timer = threading.Timer(grace, self._expire_late, (waiter,))
            waiter.timer.daemon = True
            waiter.timer.start()
            return True

    def _expire_late(self, waiter: _Waiter) -> None:
        with self._lock:
            pending = self._by_id.get(waiter.request_id) is waiter
            self._forget(waiter)
        if pending:
            log.info(
                "No late answer on %s to request %s within the grace period; its token is free again",
                self.topic,
                waiter.request_id,
            )
        if waiter.release is not None:
            waiter.release()
        waiter.settled.set()

    def wait_for_late_answers(self) -> None:
        """Block until every request that timed out got its late answer or its grace period is
        over. A task calls it (through :meth:`KafkaBlockchainHook.close`) before it ends, so that
        the token's pool slot stays taken as long as the token is blocked."""
        with self._lock:
            late = [waiter for waiter in self._by_id.values() if waiter.release is not None]
        for waiter in late:
            remaining = waiter.late_until - time.monotonic()
            if remaining > 0 and not waiter.settled.is_set():
                log.info(
                    "Waiting up to %.0f s for the late answer to request %s before closing: its token "
                    "stays blocked until then",
                    remaining,
                    waiter.request_id,
                )
                waiter.settled.wait(remaining + 1)

    def _forget(self, waiter: _Waiter) -> None:
        if self._by_id.get(waiter.request_id) is waiter:
            del self._by_id[waiter.request_id]
        if waiter in self._by_token:
            self._by_token.remove(waiter)
        self._update_needles()

    # ------------------------------------------------------------------- reading
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                messages = _consume_available(self._consumer, 0.1)
            except Exception:  # the consumer was closed under us, or librdkafka failed
                if not self._stop.is_set():
                    log.exception("Reading %s failed; retrying", self.topic)
                    time.sleep(0.5)
                continue
            if messages:
                # before any answer of the batch wakes its caller, who may send the next request
                self._note_ends({message.partition() for message in messages})
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.warning("Error reading %s: %s", self.topic, error)
                    continue
                try:
                    self._dispatch(message.partition(), message.offset(), message.value())
                except Exception:  # a reader that dies would leave every request to time out
                    log.exception(
                        "Skipped the response at %s[%d]@%d", self.topic, message.partition(), message.offset()
                    )

    def _dispatch(self, partition: int, offset: int, value: bytes | None) -> None:
        if not protocol.mentions(value, self._needles):
            with self._lock:
                self._positions[partition] = offset + 1
                self.ignored += 1
            return
        try:
            response = protocol.decode_response(value)
        except MalformedResponseError as exc:
            response = None
            reason = str(exc)
        late: _Waiter | None = None
        with self._lock:
            self._positions[partition] = offset + 1
            if response is None:
                self.malformed += 1
                count = self.malformed
            else:
                waiter = self._match(partition, offset, response)
                if waiter is None:
                    self.skipped += 1
                    return
                self._forget(waiter)
                if waiter.release is None:
                    waiter.response = response
                    waiter.event.set()
                    return
                self.late += 1
                late = waiter
        if late is not None:
            if late.timer is not None:
                late.timer.cancel()
            log.warning(
                "A late answer (%s) to request %s came at %s[%d]@%d after the request had timed out; "
                "%d late answer(s) so far",
                response.kind,
                late.request_id,
                self.topic,
                partition,
                offset,
                self.late,
            )
            assert late.release is not None
            late.release()
            late.settled.set()
            return
        if count <= 10 or count % 100 == 0:
            log.warning(
                "Skipped malformed response at %s[%d]@%d: %s (%d malformed so far)",
                self.topic,
                partition,
                offset,
                reason,
                count,
            )

    def _match(self, partition: int, offset: int, response: protocol.Response) -> _Waiter | None:
        if response.request_id is not None:
            waiter = self._by_id.get(response.request_id)
            candidates = [] if waiter is None else [waiter]
        else:
            candidates = [
                waiter
                for waiter in self._by_token
                if offset >= waiter.min_offsets.get(partition, 0)
                and protocol.matches(
                    response, request_id=waiter.request_id, token=waiter.token, by_request_id_only=False
                )
            ]
        for waiter in candidates:
            if protocol.fits(response, waiter.token, waiter.expect):
                return waiter
        if candidates:
            self.forged += 1
            log.warning(
                "Set aside an answer at %s[%d]@%d that names request %s but does not fit it (%s answer, "
                "other token or agent); %d so far",
                self.topic,
                partition,
                offset,
                candidates[0].request_id,
                response.kind,
                self.forged,
            )
        return None

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


class _Abandoned(Exception):
    """A call of :meth:`KafkaBlockchainHook.call_many` not sent because an earlier one failed."""


# Requests of one token are serialised across every hook instance of the process when the
# gateway does not echo request ids. Keyed by a digest, so the token itself is not kept here.
_TOKEN_LOCKS: dict[str, threading.Lock] = {}
_TOKEN_LOCKS_GUARD = threading.Lock()


def _token_lock(scope: str, token: str) -> threading.Lock:
    key = hashlib.sha256(f"{scope}\0{token}".encode()).hexdigest()
    with _TOKEN_LOCKS_GUARD:
        return _TOKEN_LOCKS.setdefault(key, threading.Lock())


class KafkaBlockchainHook(BaseHook):
    """Request/reply with the blockchain gateway over Kafka.

    :param kafka_config_id: the Kafka provider's ``kafka`` connection (broker, TLS/SASL),
        defaults to ``kafka_default``.
    :param token_conn_id: the ``blockchain_token`` connection holding the token, defaults to
        ``blockchain_master``.
    :param timeout: seconds to wait for an answer; defaults to the connection's ``timeout``
        field, else 30.
    """

    conn_name_attr = "token_conn_id"
    default_conn_name = "blockchain_master"
    conn_type = "blockchain_token"
    hook_name = "Blockchain token"

    def __init__(
        self,
        kafka_config_id: str = KafkaBaseHook.default_conn_name,
        token_conn_id: str = default_conn_name,
        *,
        timeout: float | None = None,
    ) -> None:
        super().__init__()
        self.kafka_config_id = kafka_config_id
        self.token_conn_id = token_conn_id
        self._timeout = timeout
        self._producer: Producer | None = None
        self._reader: ResponseReader | None = None
        self._consumer: Consumer | None = None
        self._start_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kafka_config_id={self.kafka_config_id!r}, token_conn_id={self.token_conn_id!r})"

    # ------------------------------------------------------------- connection
    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Custom field behaviour of the ``blockchain_token`` connection form."""
        return {
            "hidden_fields": ["host", "schema", "port", "extra"],
            "relabeling": {"login": "Public key", "password": "Token"},
            "placeholders": {"login": "66 hex characters, starting 02 or 03"},
        }

    @cached_property
    def settings(self) -> GatewaySettings:
        """The ``blockchain_token`` connection's fields; the secrets are registered for masking."""
        conn = self.get_connection(self.token_conn_id)
        extra = conn.extra_dejson
        token = conn.password or None
        agent_password = extra.get("agent_password") or None
        for secret in (token, agent_password):
            if secret:
                _mask(secret)
        public_key = conn.login or None
        if public_key:
            protocol.validate_public_key(public_key, f"public key of connection {self.token_conn_id}")
        timeout = self._timeout if self._timeout is not None else extra.get("timeout") or DEFAULT_TIMEOUT
        try:
            timeout = float(timeout)
        except (TypeError, ValueError):
            raise BlockchainConfigError(
                f"Connection {self.token_conn_id}: timeout must be a number"
            ) from None
        if timeout <= 0:
            raise BlockchainConfigError(f"Connection {self.token_conn_id}: timeout must be positive")
        try:
            topics = protocol.TopicMap.parse(extra.get("topics"))
        except BlockchainConfigError as exc:
            raise BlockchainConfigError(f"Connection {self.token_conn_id}: {exc}") from None
        echo = extra.get("echo_request_id", False)
        if isinstance(echo, str):
            echo = echo.strip().lower() in ("1", "true", "yes", "on")
        grace = extra.get("late_answer_grace")
        try:
            grace = DEFAULT_LATE_ANSWER_GRACE if grace in (None, "") else float(grace)
        except (TypeError, ValueError):
            raise BlockchainConfigError(
                f"Connection {self.token_conn_id}: late_answer_grace must be a number of seconds"
            ) from None
        if not 0 <= grace <= 3600:
            raise BlockchainConfigError(
                f"Connection {self.token_conn_id}: late_answer_grace must be from 0 to 3600 seconds"
            )
        return GatewaySettings(
            token=_Secret(token) if token else None,
            public_key=public_key,
            agent_password=_Secret(agent_password) if agent_password else None,
            instance_type=extra.get("instance_type"),
            agent_name=extra.get("agent_name"),
            record_id=extra.get("record_id"),
            echo_request_id=bool(echo),
            timeout=timeout,
            topics=topics,
            late_answer_grace=grace,
        )

    def _token(self, override: str | None = None) -> str:
        if override is not None:
            if not isinstance(override, str) or not override:
                raise BlockchainConfigError("The token to sign with is empty")
            _mask(override)
            return override
        token = self.settings.token
        if token is None:
            raise BlockchainConfigError(
                f"Connection {self.token_conn_id} has no token: run `blockchain-provider token create "
                f"--conn-id {self.token_conn_id}` or set its Token field"
            )
        return token.reveal()

    def get_conn(self) -> Producer:
        """The request producer (started on first use)."""
        self._ensure_started()
        assert self._producer is not None
        return self._producer

    def test_connection(self) -> tuple[bool, str]:
        """Make a cheap authenticated request (one partner request) and report the outcome."""
        try:
            self.list_partner_requests(0, 1)
        except Exception as exc:
            return False, str(exc)
        finally:
            self.close()
        return True, "The gateway accepted the token."

    # -------------------------------------------------------------- lifecycle
    def _new_consumer(
        self,
        defaults: Mapping[str, Any] | None = None,
        tansu_defaults: Mapping[str, Any] = TANSU_CONSUMER_DEFAULTS,
    ) -> Consumer:
        """A response consumer: *defaults* over :data:`CONSUMER_DEFAULTS`, and *tansu_defaults*
        over both when the broker is tansu; the connection's extra overrides them all."""
        consumer = _ConsumerHook(self.kafka_config_id, defaults).get_conn
        probe_timeout = min(5.0, READER_START_TIMEOUT)
        topic = self.settings.topics.responses
        if not tansu_defaults or not broker_is_tansu(consumer, self._bootstrap_servers, topic, probe_timeout):
            return consumer
        consumer.close()
        return _ConsumerHook(self.kafka_config_id, {**(defaults or {}), **tansu_defaults}).get_conn

    @cached_property
    def _bootstrap_servers(self) -> str:
        return _ProducerHook(self.kafka_config_id).bootstrap_servers

    def _ensure_started(self) -> ResponseReader:
        with self._start_lock:
            if self._reader is not None:
                return self._reader
            settings = self.settings
            producer = _ProducerHook(self.kafka_config_id).get_conn
            consumer = self._new_consumer()
            reader = ResponseReader(consumer, settings.topics.responses, self._bootstrap_servers)
            try:
                reader.start()
            except KafkaException as exc:
                consumer.close()
                raise BlockchainBrokerError(
                    f"The Kafka broker {self._bootstrap_servers} did not answer while positioning on "
                    f"{reader.topic}: {exc.args[0] if exc.args else exc}"
                ) from None
            except Exception:
                consumer.close()
                raise
            self._producer, self._consumer, self._reader = producer, consumer, reader
            log.info("Reading %s from %s on %s", reader.topic, reader.snapshot(), self._bootstrap_servers)
            return reader

    def close(self) -> None:
        """Stop the response reader and close the Kafka clients.

        Without request_id echo, after a request timed out this first waits for its late answer, at
        most the grace period (``late_answer_grace``): the task keeps the token's pool slot, so a
        request of another task cannot take that answer.
        """
        reader = self._reader
        if reader is not None:
            reader.wait_for_late_answers()
        with self._start_lock:
            reader, consumer, producer = self._reader, self._consumer, self._producer
            self._reader = self._consumer = self._producer = None
        if reader is not None:
            reader.close()
        if consumer is not None:
            consumer.close()
        if producer is not None:
            producer.flush(5)

    def __enter__(self) -> KafkaBlockchainHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------- requests
    def request(
        self,
        topic: str,
        body: Mapping[str, Any] | None = None,
        *,
        header: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Outcome:
        """Send one request and return its answer.

        :param topic: the request topic's protocol name (``BLK_Part_Lst``, ...); the connection's
            topic overrides map it to the actual name.
        :param body: the request's body object, if it has one.
        :param header: header keys besides ``auth`` and ``request_id`` (``start``, ``limit``).
        :param timeout: seconds to wait for the answer; defaults to the connection's.
        :raises BlockchainGatewayError: the gateway answered ``error``.
        :raises BlockchainTimeoutError: no answer by the deadline.
        :raises BlockchainDeliveryError: the broker did not take the request.
        """
        return self.call(protocol.Call(topic, dict(header or {}), body), timeout=timeout)

    def call(
        self,
        call: protocol.Call,
        *,
        timeout: float | None = None,
        token: str | None = None,
        secrets: tuple[str, ...] = (),
    ) -> Outcome:
        """Send a :class:`~blockchain_provider.protocol.Call` and return its answer (see :meth:`request`).

        :param token: sign with this token (a reporter's) instead of the connection's.
        :param secrets: besides the connection's token and password, texts to scrub from a
            gateway error (a new agent's password).
        """
        settings = self.settings
        token = None if call.topic == protocol.AGENTS else self._token(token)
        by_id_only = settings.echo_request_id or token is None
        timeout = settings.timeout if timeout is None else timeout
        if by_id_only:
            return self._exchange(call, token, timeout, by_id_only, secrets=secrets)
        lock = _token_lock(f"{self.kafka_config_id}\0{settings.topics.responses}", token)
        queued = time.monotonic()
        acquired = lock.acquire(timeout=timeout)
        # The deadline covers the wait for the token: a queued caller gets what is left of it.
        waited = time.monotonic() - queued
        if not acquired or timeout - waited < min(MIN_SEND_BUDGET, timeout):
            if acquired:
                lock.release()
            raise BlockchainTimeoutError(
                f"Gave up on a {call.topic} request after {timeout:g} s waiting for the previous request "
                f"of token connection {self.token_conn_id} (without request_id echo, one request per token "
                "is in flight at a time)",
                topic=call.topic,
                request_id="(not sent)",
                timeout=timeout,
            )
        release = _ReleaseOnce(lock)
        held = False
        try:
            # a request that times out hands *release* to the reader: the token stays blocked until
            # its late answer comes or the grace period is over, so the next request cannot take it
            return self._exchange(
                call, token, timeout, by_id_only, waited=waited, release=release, secrets=secrets
            )
        except BlockchainTimeoutError as exc:
            held = exc.token_held
            raise
        finally:
            if not held:
                release()

    def call_many(
        self, calls: list[protocol.Call], *, max_in_flight: int = 16, timeout: float | None = None
    ) -> list[Outcome | BlockchainGatewayError]:
        """Send many calls; return each one's outcome, or its gateway refusal, in order.

        With request_id echo they are pipelined, up to *max_in_flight* at a time; without, they go
        one by one (one request per token in flight). Timeouts and broker errors raise at once: the
        calls not yet sent are not sent.
        """
        failed = threading.Event()

        def one(call: protocol.Call) -> Outcome | BlockchainGatewayError:
            if failed.is_set():
                # An earlier call failed; the caller gets that call's error, this one is not sent.
                raise _Abandoned
            try:
                return self.call(call, timeout=timeout)
            except BlockchainGatewayError as exc:
                return exc
            except BaseException:
                failed.set()
                raise

        if not self.settings.echo_request_id or max_in_flight <= 1 or len(calls) <= 1:
            return [one(call) for call in calls]
        self._ensure_started()
        with ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="blk-call") as pool:
            return list(pool.map(one, calls))

    def _exchange(
        self,
        call: protocol.Call,
        token: str | None,
        timeout: float,
        by_id_only: bool,
        waited: float = 0.0,
        release: Callable[[], None] | None = None,
        secrets: tuple[str, ...] = (),
    ) -> Outcome:
        reader = self._ensure_started()
        request = protocol.envelope(call, protocol.new_request_id(), token)
        topic = self.settings.topics[call.topic]
        waiter = reader.register(request.request_id, token, by_id_only, protocol.expectation(call))
        held = False
        try:
            started = time.monotonic() - waited
            self._deliver(request, topic, timeout)
            remaining = timeout - (time.monotonic() - started)
            if remaining <= 0 or not waiter.event.wait(remaining):
                grace = self.settings.late_answer_grace
                if release is not None and grace > 0:
                    held = reader.hold_late(waiter, grace, release)
                if waiter.response is None:
                    error = BlockchainTimeoutError(
                        f"No answer on {reader.topic} within {timeout:g} s to request {request.request_id} "
                        f"sent to {topic}"
                        + (
                            f"; its token stays blocked for up to {grace:g} s for a late answer"
                            if held
                            else ""
                        ),
                        topic=topic,
                        request_id=request.request_id,
                        timeout=timeout,
                    )
                    error.token_held = held
                    raise error
        finally:
            if not held:
                reader.unregister(waiter)
        response = waiter.response
        assert response is not None
        return self._outcome(response, topic, request.request_id, token, secrets)

    def _outcome(
        self,
        response: protocol.Response,
        topic: str,
        request_id: str,
        token: str | None,
        extra_secrets: tuple[str, ...] = (),
    ) -> Outcome:
        if response.kind == "error":
            agent_password = self.settings.agent_password and self.settings.agent_password.reveal()
            secrets = (token, agent_password, *extra_secrets)
            text = protocol.error_text(response, secrets)
            raise BlockchainGatewayError(
                f"The gateway refused request {request_id} on {topic}: {text}",
                topic=topic,
                request_id=request_id,
                gateway_text=text,
            )
        return Outcome(response.kind, response.value, topic, request_id, response.public_key)

    def _deliver(self, request: protocol.Request, topic: str, timeout: float) -> None:
        """Produce *request* and wait until the broker confirms it, or raise naming topic and broker."""
        assert self._producer is not None
        outcome: dict[str, Any] = {}
        delivered = threading.Event()

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            outcome["error"] = err
            delivered.set()

        try:
            self._producer.produce(
                topic,
                value=request.encode(),
                key=request.kafka_key(),
                headers=request.kafka_headers(),
                on_delivery=on_delivery,
            )
        except (BufferError, ValueError, Exception) as exc:
            raise BlockchainDeliveryError(
                f"Could not send request {request.request_id} to topic {topic} on broker "
                f"{self._bootstrap_servers}: {exc}",
                topic=topic,
                request_id=request.request_id,
            ) from None
        deadline = time.monotonic() + max(timeout, 1.0) + 10
        while not delivered.is_set():
            self._producer.poll(0.005)
            if time.monotonic() > deadline:
                break
        error = outcome.get("error")
        if not delivered.is_set() or error is not None:
            reason = error.str() if error is not None else "no delivery report"
            raise BlockchainDeliveryError(
                f"The broker {self._bootstrap_servers} did not take request {request.request_id} for topic "
                f"{topic}: {reason}",
                topic=topic,
                request_id=request.request_id,
            )

    # ------------------------------------------------------------- deferral
    def send(
        self, call: protocol.Call, *, timeout: float | None = None, token: str | None = None
    ) -> PendingRequest:
        """Send *call* without waiting; return what a trigger needs to wait for the answer.

        The start positions are fixed before the request is sent. With no request_id echo, the
        caller serialises requests per token (the DAGs run them in a one-slot pool per token).
        """
        settings = self.settings
        token = None if call.topic == protocol.AGENTS else self._token(token)
        timeout = settings.timeout if timeout is None else timeout
        reader = self._ensure_started()
        request = protocol.envelope(call, protocol.new_request_id(), token)
        topic = settings.topics[call.topic]
        start_offsets = {str(partition): offset for partition, offset in reader.fence().items()}
        self._deliver(request, topic, timeout)
        by_id_only = settings.echo_request_id or token is None
        return PendingRequest(
            topic=topic,
            request_id=request.request_id,
            response_topic=reader.topic,
            start_offsets=start_offsets,
            deadline=time.time() + timeout,
            by_request_id_only=by_id_only,
            expect=protocol.expectation(call).to_primitives(),
            late_answer_grace=0.0 if by_id_only else settings.late_answer_grace,
        )

    def outcome_from_event(self, event: Mapping[str, Any]) -> Outcome:
        """Turn a :class:`~blockchain_provider.triggers.await_response.AwaitResponseTrigger` event into
        an :class:`Outcome`, or raise the error it reports."""
        status = event.get("status")
        topic = event.get("topic", "?")
        request_id = event.get("request_id", "?")
        if status == "success":
            return Outcome(event["kind"], event.get("value"), topic, request_id, event.get("public_key"))
        if status == "gateway_error":
            text = event.get("text", "")
            raise BlockchainGatewayError(
                f"The gateway refused request {request_id} on {topic}: {text}",
                topic=topic,
                request_id=request_id,
                gateway_text=text,
            )
        if status == "timeout":
            late = event.get("late_answer")
            raise BlockchainTimeoutError(
                f"No answer on {event.get('response_topic', 'BLK_Res')} by the deadline to request "
                f"{request_id} sent to {topic}"
                + (f"; a late answer ({late}) came after it, and was not taken" if late else ""),
                topic=topic,
                request_id=request_id,
                timeout=float(event.get("timeout", 0)),
            )
        raise BlockchainConfigError(
            f"Waiting for request {request_id} on {topic} failed: {event.get('message')}"
        )

    # ------------------------------------------------------------ conveniences
    def list_partner_requests(self, start: int = 0, limit: int = 10) -> list[dict[str, Any]]:
        """One page of partner requests addressed to this agent (``BLK_Part_Lst``)."""
        return self._page(protocol.list_call(protocol.PARTNER_LIST, start, limit))

    def iter_partner_requests(self, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Every partner request, page by page until an empty page."""
        return self._iter_pages(protocol.PARTNER_LIST, page_size)

    def answer_partner_request(self, partner_request_id: str, accept: bool) -> str:
        """Accept (``True``) or reject a partner request; return the gateway's confirmation."""
        return self.call(protocol.answer_call(protocol.PARTNER_ANSWER, partner_request_id, accept)).value

    def list_order_requests(self, start: int = 0, limit: int = 10) -> list[dict[str, Any]]:
        """One page of order requests addressed to this agent (``BLK_Act_Lst``)."""
        return self._page(protocol.list_call(protocol.ORDER_LIST, start, limit))

    def iter_order_requests(self, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Every order request, page by page until an empty page."""
        return self._iter_pages(protocol.ORDER_LIST, page_size)

    def answer_order_request(self, order_request_id: str, accept: bool) -> str:
        """Accept (``True``) or reject an order request; return the gateway's confirmation."""
        return self.call(protocol.answer_call(protocol.ORDER_ANSWER, order_request_id, accept)).value

    def get_record_type(self, name: str) -> dict[str, Any] | None:
        """(optional read, ``BLK_Rty_Get``) The record type *name*, or ``None`` when the gateway does not
        know it. No flow needs it: the MES remembers what it created."""
        return self._get_or_none(protocol.record_type_get_call(name))

    def create_record_type(self, name: str, description: str, properties: list[dict[str, Any]]) -> str:
        """Create a record type (``BLK_Rty``); ``properties`` are ``{"name", "data_type", "dynamic"}``.
        Creating it again identically is confirmed, not refused."""
        return self.call(protocol.record_type_create_call(name, description, properties)).value

    def get_record(self, record_id: str, *, timeout: float | None = None) -> dict[str, Any] | None:
        """(optional read, ``BLK_Rec_Get``) The record *record_id*, or ``None`` when it does not exist.

        :param timeout: seconds to wait for the answer; the connection's by default.
        """
        return self._get_or_none(protocol.record_get_call(record_id), timeout=timeout)

    def create_record(
        self, record_id: str, record_type: str, description: str, properties: Mapping[str, Any]
    ) -> str:
        """Create a non-dynamic record (written once); creating it again identically is confirmed."""
        return self.call(protocol.record_create_call(record_id, record_type, description, properties)).value

    def create_dynamic_record(
        self,
        record_id: str,
        record_type: str,
        description: str,
        properties: Mapping[str, Any],
        password: str,
    ) -> protocol.ReporterCredentials:
        """Create a dynamic record and its reporter agent with *password*; return the reporter's
        public key and token (the token is registered for masking at once)."""
        call = protocol.record_create_call(
            record_id, record_type, description, properties, dynamic=True, password=password
        )
        _mask(password)
        outcome = self.call(call)
        if outcome.kind != "data":
            raise MalformedResponseError(
                f"The gateway confirmed dynamic record {record_id} without its reporter's public key and token"
            )
        if isinstance(outcome.value, Mapping) and isinstance(outcome.value.get("token"), str):
            _mask(outcome.value["token"])
        return protocol.reporter_from_answer(outcome.value, record_id)

    def update_record(
        self, record_type: str, record_id: str, properties: Mapping[str, Any], *, token: str | None = None
    ) -> str:
        """Update dynamic properties of a record on its record type's topic, signed with *token* (the
        record's reporter's); the connection's token when ``None``."""
        return self.call(protocol.record_update_call(record_type, record_id, properties), token=token).value

    def create_agent(self, name: str, password: str) -> tuple[str, str]:
        """Create an agent at the gateway; return ``(public_key, token)``. Both are secrets' neighbours:
        the token is registered for masking at once."""
        _mask(password)
        data = self.call(protocol.agent_create_call(name, password), secrets=(password,)).value
        return self._agent_answer(data, need_public_key=True)

    def get_token(self, public_key: str | None = None, password: str | None = None) -> str:
        """A fresh token for an existing agent; defaults to the connection's public key and password."""
        settings = self.settings
        public_key = public_key or settings.public_key
        if password is None and settings.agent_password is not None:
            password = settings.agent_password.reveal()
        if not public_key or not password:
            raise BlockchainConfigError(
                f"Connection {self.token_conn_id} needs its public key and agent password to get a token"
            )
        data = self.call(protocol.agent_token_call(public_key, password), secrets=(password,)).value
        return self._agent_answer(data, need_public_key=False)[1]

    @staticmethod
    def _agent_answer(data: Any, need_public_key: bool) -> tuple[str, str]:
        if not isinstance(data, Mapping) or not isinstance(data.get("token"), str) or not data["token"]:
            raise BlockchainConfigError("The gateway's agent answer has no token")
        _mask(data["token"])
        public_key = data.get("public_key", "")
        if need_public_key:
            protocol.validate_public_key(public_key, "public key in the gateway's answer")
        return public_key, data["token"]

    def _get_or_none(self, call: protocol.Call, *, timeout: float | None = None) -> dict[str, Any] | None:
        try:
            return self.call(call, timeout=timeout).value
        except BlockchainGatewayError as exc:
            if protocol.is_not_found(exc.gateway_text):
                return None
            raise

    def _page(self, call: protocol.Call) -> list[dict[str, Any]]:
        value = self.call(call).value
        if not isinstance(value, list):
            raise BlockchainConfigError(
                f"The gateway answered {call.topic} with {type(value).__name__}, not a list"
            )
        return value

    def _iter_pages(self, topic: str, page_size: int) -> Iterator[dict[str, Any]]:
        start: int | None = 0
        while start is not None:
            page = self._page(protocol.list_call(topic, start, page_size))
            log.info("%s: read %d item(s) from position %d", topic, len(page), start)
            yield from page
            # a short page is not the end (a gateway may cap its pages): only an empty one is
            start = protocol.next_start(start, len(page))
