"""Request/reply with the blockchain gateway over Kafka: the Airflow hook.

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

The parts live beside it: the connection's settings (:mod:`.settings`), the Kafka clients
(:mod:`.kafka_clients`), the response reader and the offsets vocabulary
(:mod:`.response_reader`), and the trigger's events (:mod:`blockchain_provider.triggers.events`).

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
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from blockchain_provider import protocol
from blockchain_provider.exceptions import (
    BlockchainBrokerError,
    BlockchainConfigError,
    BlockchainDeliveryError,
    BlockchainGatewayError,
    BlockchainProtocolError,
    BlockchainTimeoutError,
    MalformedResponseError,
)
from blockchain_provider.hooks import kafka_clients
from blockchain_provider.hooks.kafka_clients import (  # noqa: F401  re-exported for existing importers
    _TANSU_BROKERS,
    CONSUMER_DEFAULTS,
    CONSUMER_REQUIRED,
    PRODUCER_DEFAULTS,
    PRODUCER_REQUIRED,
    TANSU_CLUSTER_ID,
    TANSU_CONSUMER_DEFAULTS,
    _ConsumerHook,
    _ProducerHook,
    broker_is_tansu,
)
from blockchain_provider.hooks.response_reader import (  # noqa: F401  re-exported for existing importers
    Positions,
    ResponseReader,
    positions_from_primitives,
    positions_to_primitives,
)
from blockchain_provider.hooks.response_reader import consume_available as _consume_available  # noqa: F401
from blockchain_provider.hooks.settings import (  # noqa: F401  re-exported for existing importers
    DEFAULT_LATE_ANSWER_GRACE,
    DEFAULT_TIMEOUT,
    GatewaySettings,
    _mask,
    _Secret,
    gateway_settings,
)
from blockchain_provider.triggers import events
from blockchain_provider.triggers.events import Outcome

log = logging.getLogger(__name__)

#: How long the first request may wait for the response reader to be positioned.
READER_START_TIMEOUT = 30.0
#: A caller queued for its token that gets it with less time than this left gives up unsent: no
#: answer could arrive in time, and the gateway would act on a request nobody waits for.
MIN_SEND_BUDGET = 0.05


@dataclass(frozen=True)
class PendingRequest:
    """A request sent but not yet answered, as a deferred task hands it to the trigger.

    ``start_positions``: where its answer is looked for (:data:`.response_reader.Positions`);
    ``sent_at``: when it was sent, and ``deadline``: when its wait ends, in seconds since the epoch.
    """

    topic: str
    request_id: str
    response_topic: str
    start_positions: Positions
    deadline: float
    by_request_id_only: bool
    expect: dict[str, Any] = field(default_factory=protocol.ANY_ANSWER.to_primitives)
    late_answer_grace: float = 0.0
    sent_at: float | None = None

    @property
    def start_offsets(self) -> dict[str, int]:
        """The start positions as the trigger's serialised arguments hold them (text keys); the
        name an :class:`~blockchain_provider.triggers.await_response.AwaitResponseTrigger` still takes."""
        return positions_to_primitives(self.start_positions)

    def trigger_kwargs(self) -> dict[str, Any]:
        """The arguments of the trigger that waits for this request's answer, besides the
        connection ids."""
        return {
            "topic": self.topic,
            "request_id": self.request_id,
            "response_topic": self.response_topic,
            "start_positions": positions_to_primitives(self.start_positions),
            "deadline": self.deadline,
            "by_request_id_only": self.by_request_id_only,
            "expect": self.expect,
            "late_answer_grace": self.late_answer_grace,
            "sent_at": self.sent_at,
        }


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
        return gateway_settings(self.get_connection(self.token_conn_id), self.token_conn_id, self._timeout)

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
        """A response consumer: *defaults* over :data:`.kafka_clients.CONSUMER_DEFAULTS`, and
        *tansu_defaults* over both when the broker is tansu; the connection's extra overrides them all."""
        return kafka_clients.new_response_consumer(
            self.kafka_config_id,
            broker=self._bootstrap_servers,
            response_topic=self.settings.topics.responses,
            probe_timeout=min(5.0, READER_START_TIMEOUT),
            defaults=defaults,
            tansu_defaults=tansu_defaults,
        )

    @cached_property
    def _bootstrap_servers(self) -> str:
        return kafka_clients.bootstrap_servers(self.kafka_config_id)

    def _ensure_started(self) -> ResponseReader:
        with self._start_lock:
            if self._reader is not None:
                return self._reader
            settings = self.settings
            producer = kafka_clients.new_producer(self.kafka_config_id)
            consumer = self._new_consumer()
            reader = ResponseReader(consumer, settings.topics.responses, self._bootstrap_servers)
            try:
                reader.start(READER_START_TIMEOUT)
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
            log.info("Reading %s from %s on %s", reader.topic, reader.positions(), self._bootstrap_servers)
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
            raise events.gateway_refusal(topic, request_id, protocol.error_text(response, secrets))
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
        start_positions = reader.start_positions()
        sent_at = time.time()
        self._deliver(request, topic, timeout)
        by_id_only = settings.echo_request_id or token is None
        return PendingRequest(
            topic=topic,
            request_id=request.request_id,
            response_topic=reader.topic,
            start_positions=start_positions,
            deadline=time.time() + timeout,
            by_request_id_only=by_id_only,
            expect=protocol.expectation(call).to_primitives(),
            late_answer_grace=0.0 if by_id_only else settings.late_answer_grace,
            sent_at=sent_at,
        )

    def outcome_from_event(self, event: Mapping[str, Any]) -> Outcome:
        """Turn a :class:`~blockchain_provider.triggers.await_response.AwaitResponseTrigger` event into
        an :class:`Outcome`, or raise the error it reports (:func:`.events.outcome_from_event`)."""
        return events.outcome_from_event(event)

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
            raise BlockchainProtocolError("The gateway's agent answer has no token")
        _mask(data["token"])
        public_key = data.get("public_key", "")
        if need_public_key:
            protocol.answered_public_key(public_key, "public key in the gateway's answer")
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
            raise BlockchainProtocolError(
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
