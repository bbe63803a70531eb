"""Request/reply with the blockchain gateway over Kafka, without Airflow.

:class:`GatewayClient` sends a request and waits for its own answer (PROTOCOL.md section 2):

* one producer (idempotent, ``acks=all``) and one response reader serve every request of a
  client, and are closed by :meth:`GatewayClient.close`;
* the reader assigns the ``BLK_Res`` partitions directly (no consumer-group join) and reads
  to their end *before* the first request is sent, then keeps reading in a background
  thread, so an answer that arrives a millisecond after the request is never missed;
* an answer is matched by the echoed ``request_id`` when the gateway echoes one, otherwise
  by the token, read at or after the positions fixed before sending; foreign and malformed
  answers are skipped;
* without echo, one request per token is in flight at a time (a process-wide lock here, an
  Airflow pool per token in the DAGs); with echo, requests are pipelined;
* every wait has a deadline.

It is built from the connection's :class:`~.settings.GatewaySettings` and two factories for the
Kafka clients; :class:`~.kafka_blockchain.KafkaBlockchainHook` builds them from Airflow
connections. The token is never logged, put in an exception or shown by ``repr``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer

from blockchain_provider import protocol
from blockchain_provider.answer_matcher import Positions
from blockchain_provider.exceptions import (
    BlockchainBrokerError,
    BlockchainConfigError,
    BlockchainGatewayError,
    BlockchainTimeoutError,
)
from blockchain_provider.hooks.delivery import ReleaseOnce, deliver, token_lock
from blockchain_provider.hooks.response_reader import ResponseReader, read_answers_at
from blockchain_provider.hooks.settings import GatewaySettings, _mask
from blockchain_provider.outcomes import AnswerAt, Outcome, PendingRequest, refusal

log = logging.getLogger(__name__)

#: How long the first request may wait for the response reader to be positioned.
READER_START_TIMEOUT = 30.0
#: A caller queued for its token that gets it with less time than this left gives up unsent: no
#: answer could arrive in time, and the gateway would act on a request nobody waits for.
MIN_SEND_BUDGET = 0.05


class _Abandoned(Exception):
    """A call of :meth:`GatewayClient.call_many` not sent because an earlier one failed."""


class GatewayClient:
    """Sends requests to the blockchain gateway and waits for their answers.

    :param settings: the token connection's settings (token, topics, timeout, echo).
    :param new_producer: makes the request producer, on first use.
    :param new_consumer: makes the response consumer, on first use.
    :param broker: the bootstrap servers (or a function giving them), to name the broker in errors.
    :param conn_id: the token connection's id, to name it in errors; defaults to ``""``.
    :param lock_scope: with *settings*' response topic, which requests of a token are serialised
        together without request_id echo (the Kafka connection's id); defaults to ``""``.
    :param reader_start_timeout: seconds the first request may wait for the response reader to
        be positioned; defaults to :data:`READER_START_TIMEOUT`.
    """

    def __init__(
        self,
        settings: GatewaySettings,
        new_producer: Callable[[], Producer],
        new_consumer: Callable[[], Consumer],
        *,
        broker: str | Callable[[], str],
        conn_id: str = "",
        lock_scope: str = "",
        reader_start_timeout: float | None = None,
    ) -> None:
        self.settings = settings
        self._new_producer = new_producer
        self._new_consumer = new_consumer
        self._broker = broker
        self.conn_id = conn_id
        self._lock_scope = lock_scope
        self._reader_start_timeout = (
            READER_START_TIMEOUT if reader_start_timeout is None else reader_start_timeout
        )
        self.producer: Producer | None = None
        self.reader: ResponseReader | None = None
        self._consumer: Consumer | None = None
        self._start_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(conn_id={self.conn_id!r})"

    @property
    def broker(self) -> str:
        """The bootstrap servers, as errors name them."""
        if callable(self._broker):
            self._broker = self._broker()
        return self._broker

    def token(self, override: str | None = None) -> str:
        """The token to sign with: *override* (registered for masking) or the connection's."""
        if override is not None:
            if not isinstance(override, str) or not override:
                raise BlockchainConfigError("The token to sign with is empty")
            _mask(override)
            return override
        token = self.settings.token
        if token is None:
            raise BlockchainConfigError(
                f"Connection {self.conn_id} has no token: run `blockchain-provider token create "
                f"--conn-id {self.conn_id}` or set its Token field"
            )
        return token.reveal()

    # -------------------------------------------------------------- lifecycle
    def ensure_started(self) -> ResponseReader:
        """Start the producer and the response reader, positioned at the end of the response
        topic, unless they run already."""
        with self._start_lock:
            if self.reader is not None:
                return self.reader
            producer = self._new_producer()
            consumer = self._new_consumer()
            reader = ResponseReader(consumer, self.settings.topics.responses, self.broker)
            try:
                reader.start(self._reader_start_timeout)
            except KafkaException as exc:
                consumer.close()
                raise BlockchainBrokerError(
                    f"The Kafka broker {self.broker} did not answer while positioning on "
                    f"{reader.topic}: {exc.args[0] if exc.args else exc}"
                ) from None
            except Exception:
                consumer.close()
                raise
            self.producer, self._consumer, self.reader = producer, consumer, reader
            log.info("Reading %s from %s on %s", reader.topic, reader.positions(), self.broker)
            return reader

    def close(self) -> None:
        """Stop the response reader and close the Kafka clients.

        Without request_id echo, after a request timed out this first waits for its late answer, at
        most the grace period (``late_answer_grace``): the caller keeps the token, so another
        request cannot take that answer.
        """
        reader = self.reader
        if reader is not None:
            reader.wait_for_late_answers()
        with self._start_lock:
            reader, consumer, producer = self.reader, self._consumer, self.producer
            self.reader = self._consumer = self.producer = None
        if reader is not None:
            reader.close()
        if consumer is not None:
            consumer.close()
        if producer is not None:
            producer.flush(5)

    # --------------------------------------------------------------- requests
    def call(
        self,
        call: protocol.Call,
        *,
        timeout: float | None = None,
        token: str | None = None,
        secrets: tuple[str, ...] = (),
    ) -> Outcome:
        """Send a :class:`~blockchain_provider.protocol.Call` and return its answer.

        :param timeout: seconds to wait for the answer; defaults to the connection's.
        :param token: sign with this token (a reporter's) instead of the connection's.
        :param secrets: besides the connection's token and password, texts to scrub from a
            gateway error (a new agent's password).
        :raises BlockchainGatewayError: the gateway answered ``error``.
        :raises BlockchainTimeoutError: no answer by the deadline.
        :raises BlockchainDeliveryError: the broker did not take the request.
        """
        settings = self.settings
        token = None if call.topic == protocol.AGENTS else self.token(token)
        by_id_only = settings.echo_request_id or token is None
        timeout = settings.timeout if timeout is None else timeout
        if by_id_only:
            return self._exchange(call, token, timeout, by_id_only, secrets=secrets)
        lock = token_lock(f"{self._lock_scope}\0{settings.topics.responses}", token)
        queued = time.monotonic()
        acquired = lock.acquire(timeout=timeout)
        # The deadline covers the wait for the token: a queued caller gets what is left of it.
        waited = time.monotonic() - queued
        if not acquired or timeout - waited < min(MIN_SEND_BUDGET, timeout):
            if acquired:
                lock.release()
            raise BlockchainTimeoutError(
                f"Gave up on a {call.topic} request after {timeout:g} s waiting for the previous request "
                f"of token connection {self.conn_id} (without request_id echo, one request per token "
                "is in flight at a time)",
                topic=call.topic,
                request_id="(not sent)",
                timeout=timeout,
            )
        release = ReleaseOnce(lock)
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
        self.ensure_started()
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
        reader = self.ensure_started()
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
            raise refusal(response, topic, request_id, (token, agent_password, *extra_secrets))
        return Outcome(response.kind, response.value, topic, request_id, response.public_key)

    def _deliver(self, request: protocol.Request, topic: str, timeout: float) -> None:
        """Produce *request* and wait until the broker confirms it (:func:`deliver`)."""
        producer = self.producer
        assert producer is not None
        deliver(producer, request, topic, timeout, self.broker)

    # ------------------------------------------------------------- deferral
    def send(
        self, call: protocol.Call, *, timeout: float | None = None, token: str | None = None
    ) -> PendingRequest:
        """Send *call* without waiting; return what a trigger needs to wait for the answer.

        The start positions are fixed before the request is sent. With no request_id echo, the
        caller serialises requests per token (the DAGs run them in a one-slot pool per token).
        """
        settings = self.settings
        token = None if call.topic == protocol.AGENTS else self.token(token)
        timeout = settings.timeout if timeout is None else timeout
        reader = self.ensure_started()
        request = protocol.envelope(call, protocol.new_request_id(), token)
        topic = settings.topics[call.topic]
        start_positions = reader.start_positions()
        sent_at = time.time()
        self._deliver(request, topic, timeout)
        by_id_only = settings.echo_request_id or token is None
        return self._pending(request, topic, start_positions, sent_at, timeout, by_id_only, call)

    def _pending(
        self,
        request: protocol.Request,
        topic: str,
        start_positions: Positions,
        sent_at: float,
        timeout: float,
        by_id_only: bool,
        call: protocol.Call,
    ) -> PendingRequest:
        reader = self.reader
        assert reader is not None
        return PendingRequest(
            topic=topic,
            request_id=request.request_id,
            response_topic=reader.topic,
            start_positions=dict(start_positions),
            deadline=sent_at + timeout,
            by_request_id_only=by_id_only,
            expect=protocol.expectation(call).to_primitives(),
            late_answer_grace=0.0 if by_id_only else self.settings.late_answer_grace,
            sent_at=sent_at,
        )

    def send_batch(
        self,
        calls: list[protocol.Call],
        *,
        timeout: float | None = None,
        wait: float = 0.0,
        token: str | None = None,
    ) -> list[Outcome | BlockchainGatewayError | PendingRequest]:
        """Send *calls*, wait up to *wait* seconds for their answers here, and return in order each
        one's outcome or refusal, or, for one not answered by then, what a trigger needs to wait
        for it (the start positions fixed before the first was sent).

        With request_id echo they are all sent at once; without, only one call may be given (the
        answers to one token cannot be told apart), and the caller serialises them per token.

        :param timeout: seconds from sending to the end of each wait; defaults to the connection's.
        :param wait: seconds to wait here before handing the rest to a trigger; defaults to 0.
        :param token: sign with this token (a reporter's) instead of the connection's.
        :raises BlockchainDeliveryError: the broker did not take a request (those before it are sent).
        """
        settings = self.settings
        if len(calls) > 1 and not settings.echo_request_id:
            raise BlockchainConfigError(
                f"{len(calls)} requests sent together need request_id echo: without it, one request per "
                "token is in flight at a time"
            )
        timeout = settings.timeout if timeout is None else timeout
        reader = self.ensure_started()
        start_positions = reader.start_positions()
        sent: list[tuple[protocol.Request, str, str | None, Any, float, bool, protocol.Call]] = []
        try:
            for call in calls:
                signed = None if call.topic == protocol.AGENTS else self.token(token)
                by_id_only = settings.echo_request_id or signed is None
                request = protocol.envelope(call, protocol.new_request_id(), signed)
                topic = settings.topics[call.topic]
                waiter = reader.register(request.request_id, signed, by_id_only, protocol.expectation(call))
                sent_at = time.time()
                sent.append((request, topic, signed, waiter, sent_at, by_id_only, call))
                self._deliver(request, topic, timeout)
            until = time.monotonic() + min(wait, timeout)
            for *_, waiter, _sent_at, _by_id, _call in sent:
                left = until - time.monotonic()
                if left <= 0:
                    break
                waiter.event.wait(left)
            results: list[Outcome | BlockchainGatewayError | PendingRequest] = []
            for request, topic, signed, waiter, sent_at, by_id_only, call in sent:
                response = waiter.response if waiter.event.is_set() else None
                if response is not None:
                    try:
                        results.append(self._outcome(response, topic, request.request_id, signed))
                    except BlockchainGatewayError as exc:
                        results.append(exc)
                    continue
                results.append(
                    self._pending(request, topic, start_positions, sent_at, timeout, by_id_only, call)
                )
            return results
        finally:
            for *_, waiter, _sent_at, _by_id, _call in sent:
                reader.unregister(waiter)

    # ------------------------------------------------------------- resuming
    def answers_at(self, located: list[AnswerAt], *, timeout: float | None = None) -> list[Outcome]:
        """Read back the answers a trigger found (a deferred task resuming), in order.

        Each is the message at its offset whose value has the digest the trigger noted: the
        answer it matched, decoded here as the worker's reader decodes it.

        :param timeout: seconds reading them may take; defaults to the connection's.
        :raises BlockchainBrokerError: an answer could not be read back (no longer on the topic).
        :raises BlockchainProtocolError: the message there is not the one the trigger matched.
        """
        timeout = self.settings.timeout if timeout is None else timeout
        if not located:
            return []
        consumer = self._new_consumer()
        try:
            responses = read_answers_at(consumer, located, timeout)
        finally:
            consumer.close()
        return [
            Outcome(response.kind, response.value, answer.topic, answer.request_id, response.public_key)
            for answer, response in zip(located, responses, strict=True)
        ]
