"""Wait in the triggerer for the gateway's answers to the requests a deferred task has sent: one
(:class:`AwaitResponseTrigger`) or many at once (:class:`AwaitResponsesTrigger`)."""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from airflow.sdk.log import mask_secret
from airflow.triggers.base import BaseTrigger, TriggerEvent
from asgiref.sync import sync_to_async
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError, TopicPartition

from blockchain_provider import protocol
from blockchain_provider.exceptions import BlockchainConfigError, MalformedResponseError
from blockchain_provider.hooks.response_reader import (
    Positions,
    consume_available,
    positions_from_primitives,
    positions_to_primitives,
)
from blockchain_provider.triggers import events

log = logging.getLogger(__name__)

#: The triggerer's readers wait longer per fetch than a task's: a deferred request is one that
#: may wait long, and the triggerer runs many of them. On Apache Kafka they keep the client's
#: default, 500 ms (two fetches a second while idle): a fetch returns when the answer arrives.
#: The ``kafka`` connection's ``fetch.wait.max.ms`` overrides it, as it does the hook's.
TRIGGER_CONSUMER_DEFAULTS = {"fetch.wait.max.ms": 500}
#: On tansu, which holds every fetch for the whole wait, that would add up to 500 ms to a
#: deferred answer: there the wait is 100 ms.
TRIGGER_TANSU_CONSUMER_DEFAULTS = {"fetch.wait.max.ms": 100}
#: Past its deadline, a wait that has not read its partitions to their end reads on with this
#: poll timeout (s) until a poll brings nothing...
CATCH_UP_POLL = 1.0
#: ...or for this long (s) at the most.
CATCH_UP_LIMIT = 30.0


@dataclass
class _Batch:
    """What one poll brought: decoded messages with the time each was written, the partitions
    read to their end, and those that brought messages."""

    decoded: list[tuple[protocol.Response | MalformedResponseError, float]] = field(default_factory=list)
    at_end: set[int] = field(default_factory=set)
    read: set[int] = field(default_factory=set)
    empty: bool = True


class _ResponseWait(BaseTrigger):
    """What the waits for answers share: reading ``BLK_Res`` from fixed start positions in a
    worker thread, matching and fencing the answers, and the deadline with its catch-up.

    A subclass sets ``response_topic``, ``start_positions``, ``deadline``, ``by_request_id_only``,
    ``token_conn_id``, ``kafka_config_id`` and ``poll_timeout``, and calls :meth:`_answers`.
    """

    response_topic: str
    start_positions: Positions
    deadline: float
    by_request_id_only: bool
    token_conn_id: str
    kafka_config_id: str
    poll_timeout: float
    late_answer_grace: float
    sent_at: float | None
    #: where the token the requests were signed with is read, instead of ``token_conn_id``: a
    #: dotted path to a function and its keyword arguments (a record's reporter's token)
    token_source: str | None = None
    token_source_kwargs: dict[str, Any] | None = None
    _consumer: Any = None
    _polling: asyncio.Future[Any] | None = None

    def _waited(self) -> float | None:
        """Seconds since the (first) request was sent, or ``None`` when that is unknown."""
        return None if self.sent_at is None else time.time() - self.sent_at

    async def _answers(
        self, waits: dict[str, tuple[events.RequestRef, protocol.Expectation]]
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Read ``BLK_Res`` from the start positions; yield ``(request id, event)`` for each of
        *waits* (request id -> what its events name, what its answer may be) as its answer comes
        or its wait ends, until none is left."""
        from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook

        waits = dict(waits)
        hook = KafkaBlockchainHook(self.kafka_config_id, self.token_conn_id)
        settings = await sync_to_async(lambda: hook.settings)()
        token = settings.token.reveal() if settings.token is not None else None
        if self.token_source is not None:
            token = await sync_to_async(self._sourced_token)()
        agent_password = settings.agent_password.reveal() if settings.agent_password is not None else None
        self._consumer = await sync_to_async(hook._new_consumer)(
            TRIGGER_CONSUMER_DEFAULTS, TRIGGER_TANSU_CONSUMER_DEFAULTS
        )
        self._consumer.assign(
            [TopicPartition(self.response_topic, p, off) for p, off in self.start_positions.items()]
        )
        malformed = forged = 0
        # a message holding neither our request ids nor (without echo) our token is not decoded
        needles = protocol.needles_of(*waits, None if self.by_request_id_only else token)
        loop = asyncio.get_running_loop()
        # A triggerer that picks the wait up late (load, a restart) must find an answer that is
        # already on the topic: past the deadline, the wait reads on until every partition is at
        # its end before it reports a timeout. Whether an answer is late is told by the time the
        # message was written, not by when this wait got to read it.
        partitions = set(self.start_positions)
        at_end: set[int] = set()
        catch_up_until: float | None = None
        while waits:
            now = time.time()
            remaining = self.deadline - now
            # without echo, the late answer would be taken by the token's next request: wait for
            # it (holding the token's pool slot) until the grace period is over
            grace_left = remaining + self.late_answer_grace
            if remaining > 0:
                wait = min(self.poll_timeout, remaining)
            else:
                if catch_up_until is None:
                    catch_up_until = now + CATCH_UP_LIMIT
                caught_up = at_end >= partitions or now >= catch_up_until
                if caught_up and grace_left <= 0:
                    for request_id, (request, _expect) in list(waits.items()):
                        del waits[request_id]
                        yield request_id, events.timeout_event(request, self._waited())
                    return
                wait = min(self.poll_timeout, grace_left) if caught_up else CATCH_UP_POLL
            # reading and decoding both run in a worker thread: a large hostile message must not
            # stall the triggerer's event loop, which every other deferred wait shares
            self._polling = loop.run_in_executor(None, self._read, consume_available, wait, needles)
            batch = await asyncio.shield(self._polling)
            self._polling = None
            at_end = (at_end - batch.read) | batch.at_end
            if catch_up_until is not None and batch.empty:
                at_end = set(partitions)  # a whole poll brought nothing: what was there is read
            for response, written_at in batch.decoded:
                if isinstance(response, MalformedResponseError):
                    malformed += 1
                    if malformed <= 10 or malformed % 100 == 0:
                        log.warning("Skipped malformed response on %s: %s", self.response_topic, response)
                    continue
                request_id = next(
                    (
                        rid
                        for rid in waits
                        if protocol.matches(
                            response, request_id=rid, token=token, by_request_id_only=self.by_request_id_only
                        )
                    ),
                    None,
                )
                if request_id is None:
                    continue
                request, expect = waits[request_id]
                if not protocol.fits(response, token, expect):
                    forged += 1
                    log.warning(
                        "Set aside an answer on %s that names request %s but does not fit it (%s answer, "
                        "other token or agent); %d so far",
                        self.response_topic,
                        request_id,
                        response.kind,
                        forged,
                    )
                    continue
                del waits[request_id]
                if written_at > self.deadline:
                    log.warning(
                        "A late answer (%s) to request %s came on %s after its deadline",
                        response.kind,
                        request_id,
                        self.response_topic,
                    )
                    yield request_id, events.timeout_event(request, self._waited(), late_answer=response.kind)
                elif response.kind == "error":
                    text = protocol.error_text(response, (token, agent_password))
                    yield request_id, events.gateway_error_event(request, text)
                else:
                    yield (
                        request_id,
                        events.success_event(request, response.kind, response.value, response.public_key),
                    )

    def _sourced_token(self) -> str:
        module, _, name = str(self.token_source).rpartition(".")
        try:
            fetch = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise BlockchainConfigError(
                f"Token source {self.token_source!r} cannot be imported: {exc}"
            ) from None
        token = fetch(**(self.token_source_kwargs or {}))
        if not isinstance(token, str) or not token:
            raise BlockchainConfigError(
                f"Token source {self.token_source!r} has no token for {self.token_source_kwargs}"
            )
        mask_secret(token)
        return token

    def _read(self, consume: Any, timeout: float, needles: tuple[bytes, ...]) -> _Batch:
        """Poll once; decode the messages at or after the start positions that name us."""
        batch = _Batch()
        for message in consume(self._consumer, timeout):
            batch.empty = False
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    batch.at_end.add(message.partition())
                else:
                    log.warning("Error reading %s: %s", self.response_topic, error)
                continue
            batch.read.add(message.partition())
            batch.at_end.discard(message.partition())
            if message.offset() < self.start_positions.get(message.partition(), 0):
                continue
            value = message.value()
            if not protocol.mentions(value, needles):
                continue
            ts_type, ts_ms = message.timestamp()
            written_at = ts_ms / 1000 if ts_type != TIMESTAMP_NOT_AVAILABLE else time.time()
            try:
                batch.decoded.append((protocol.decode_response(value), written_at))
            except MalformedResponseError as exc:
                batch.decoded.append((exc, written_at))
        return batch

    async def cleanup(self) -> None:
        consumer, polling = self._consumer, self._polling
        self._consumer = self._polling = None
        if polling is not None:
            # Never close the consumer under a poll still running in a worker thread.
            await asyncio.wait([polling])
        if consumer is not None:
            try:
                await sync_to_async(consumer.close)()
            except Exception:
                log.warning("Failed to close the Kafka consumer", exc_info=True)


class AwaitResponseTrigger(_ResponseWait):
    """Read ``BLK_Res`` from the positions fixed before the request was sent, until its answer.

    It serialises only primitives, so a waiting request holds no worker slot and survives a
    triggerer restart. It yields one event of :mod:`blockchain_provider.triggers.events`:
    ``success``, ``gateway_error`` (the gateway's text, token removed) or ``timeout`` (with the
    time waited since the request was sent); it never carries the token.

    :param topic: the actual request topic (for messages).
    :param request_id: the request's id.
    :param response_topic: the actual response topic.
    :param start_positions: where to look for the answer: partition (as text) -> position, the
        offset of the next message to read (:data:`blockchain_provider.hooks.response_reader.Positions`).
    :param deadline: when to give up, in seconds since the epoch.
    :param by_request_id_only: match only on the echoed request id (the gateway echoes).
    :param token_conn_id: the ``blockchain_token`` connection, defaults to ``blockchain_master``.
    :param kafka_config_id: the ``kafka`` connection, defaults to ``kafka_default``.
    :param poll_timeout: seconds one poll may block a worker thread, defaults to 0.2.
    :param expect: what the answer may be (:meth:`blockchain_provider.protocol.Expectation.to_primitives`);
        an answer that does not fit (another token, another kind) is not taken.
    :param late_answer_grace: without echo, how long after the deadline to keep waiting (and keep the
        token's pool slot) for the late answer, so the next request of the token cannot take it.
    :param sent_at: when the request was sent, in seconds since the epoch, to report how long it
        waited; defaults to ``None`` (unknown, as in triggers serialised by earlier versions).
    :param start_offsets: the former name of *start_positions*, still taken (triggers serialised
        by earlier versions); defaults to ``None``.
    :param resume: what the deferred task resumes with (a list's position and counts), handed back
        in the event: small and JSON-serialisable; defaults to ``None``.
    """

    def __init__(
        self,
        *,
        topic: str,
        request_id: str,
        response_topic: str,
        start_positions: dict[str, int] | None = None,
        deadline: float,
        by_request_id_only: bool,
        token_conn_id: str = "blockchain_master",
        kafka_config_id: str = "kafka_default",
        poll_timeout: float = 0.2,
        expect: dict[str, Any] | None = None,
        late_answer_grace: float = 0.0,
        sent_at: float | None = None,
        start_offsets: dict[str, int] | None = None,
        resume: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if start_positions is None:
            start_positions = start_offsets
        if start_positions is None:
            raise BlockchainConfigError(f"The wait for request {request_id} has no start positions")
        self.topic = topic
        self.request_id = protocol.validate_request_id(request_id)
        self.response_topic = response_topic
        self.start_positions: Positions = positions_from_primitives(start_positions)
        self.deadline = float(deadline)
        self.by_request_id_only = bool(by_request_id_only)
        self.token_conn_id = token_conn_id
        self.kafka_config_id = kafka_config_id
        self.poll_timeout = float(poll_timeout)
        self.expect = protocol.Expectation.from_primitives(expect).to_primitives()
        self.late_answer_grace = 0.0 if self.by_request_id_only else max(0.0, float(late_answer_grace))
        self.sent_at = None if sent_at is None else float(sent_at)
        self.resume = resume
        self._request = events.RequestRef(topic, self.request_id, response_topic, resume)
        self._consumer: Any = None
        self._polling: asyncio.Future[Any] | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "topic": self.topic,
                "request_id": self.request_id,
                "response_topic": self.response_topic,
                "start_positions": positions_to_primitives(self.start_positions),
                "deadline": self.deadline,
                "by_request_id_only": self.by_request_id_only,
                "token_conn_id": self.token_conn_id,
                "kafka_config_id": self.kafka_config_id,
                "poll_timeout": self.poll_timeout,
                "expect": self.expect,
                "late_answer_grace": self.late_answer_grace,
                "sent_at": self.sent_at,
                "resume": self.resume,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        waits = {self.request_id: (self._request, protocol.Expectation.from_primitives(self.expect))}
        answers = self._answers(waits)
        try:
            async for _request_id, event in answers:
                yield TriggerEvent(event)
                return
        finally:
            await answers.aclose()


class AwaitResponsesTrigger(_ResponseWait):
    """Read ``BLK_Res`` from the positions fixed before many requests were sent, until each has
    its answer or the deadline has passed; then yield one ``batch`` event
    (:func:`blockchain_provider.triggers.events.batch_event`) with each request's event in order.

    Many requests of one token can only be told apart by their echoed ids: without request_id
    echo the batch holds one request. It never carries the token.

    :param requests: ``{"topic", "request_id", "expect"}`` for each request, in the order sent
        (``expect`` as :meth:`blockchain_provider.protocol.Expectation.to_primitives` gives it).
    :param response_topic: the actual response topic.
    :param start_positions: where to look for the answers: partition (as text) -> position.
    :param deadline: when to give up, in seconds since the epoch.
    :param by_request_id_only: match only on the echoed request id (the gateway echoes).
    :param token_conn_id: the ``blockchain_token`` connection, defaults to ``blockchain_master``.
    :param kafka_config_id: the ``kafka`` connection, defaults to ``kafka_default``.
    :param poll_timeout: seconds one poll may block a worker thread, defaults to 0.2.
    :param late_answer_grace: without echo, how long after the deadline to keep waiting for the
        late answer, defaults to 0.
    :param sent_at: when the first request was sent, in seconds since the epoch; defaults to
        ``None`` (unknown).
    :param resume: what the deferred task resumes with, handed back in the event: small and
        JSON-serialisable; defaults to ``None``.
    :param token_source: the requests were signed with a token no connection holds (a record's
        reporter's): a dotted path to a function that returns it, called in the triggerer with
        *token_source_kwargs*; defaults to ``None`` (the token of ``token_conn_id``).
    :param token_source_kwargs: the keyword arguments of *token_source* (ids, never a secret);
        defaults to ``None``.
    """

    def __init__(
        self,
        *,
        requests: list[dict[str, Any]],
        response_topic: str,
        start_positions: dict[str, int],
        deadline: float,
        by_request_id_only: bool,
        token_conn_id: str = "blockchain_master",
        kafka_config_id: str = "kafka_default",
        poll_timeout: float = 0.2,
        late_answer_grace: float = 0.0,
        sent_at: float | None = None,
        resume: dict[str, Any] | None = None,
        token_source: str | None = None,
        token_source_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not requests:
            raise BlockchainConfigError("A wait for answers needs at least one request")
        if len(requests) > 1 and not by_request_id_only:
            raise BlockchainConfigError(
                f"{len(requests)} requests awaited together need request_id echo: without it, answers "
                "to one token cannot be told apart"
            )
        self.requests = [
            {
                "topic": str(request["topic"]),
                "request_id": protocol.validate_request_id(request["request_id"]),
                "expect": protocol.Expectation.from_primitives(request.get("expect")).to_primitives(),
            }
            for request in requests
        ]
        if len({r["request_id"] for r in self.requests}) != len(self.requests):
            raise BlockchainConfigError("A wait for answers names a request twice")
        self.response_topic = response_topic
        self.start_positions = positions_from_primitives(start_positions)
        self.deadline = float(deadline)
        self.by_request_id_only = bool(by_request_id_only)
        self.token_conn_id = token_conn_id
        self.kafka_config_id = kafka_config_id
        self.poll_timeout = float(poll_timeout)
        self.late_answer_grace = 0.0 if self.by_request_id_only else max(0.0, float(late_answer_grace))
        self.sent_at = None if sent_at is None else float(sent_at)
        self.resume = resume
        self.token_source = token_source
        self.token_source_kwargs = token_source_kwargs
        self._consumer = None
        self._polling = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "requests": self.requests,
                "response_topic": self.response_topic,
                "start_positions": positions_to_primitives(self.start_positions),
                "deadline": self.deadline,
                "by_request_id_only": self.by_request_id_only,
                "token_conn_id": self.token_conn_id,
                "kafka_config_id": self.kafka_config_id,
                "poll_timeout": self.poll_timeout,
                "late_answer_grace": self.late_answer_grace,
                "sent_at": self.sent_at,
                "resume": self.resume,
                "token_source": self.token_source,
                "token_source_kwargs": self.token_source_kwargs,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        waits = {
            r["request_id"]: (
                events.RequestRef(r["topic"], r["request_id"], self.response_topic),
                protocol.Expectation.from_primitives(r["expect"]),
            )
            for r in self.requests
        }
        found: dict[str, dict[str, Any]] = {}
        answers = self._answers(waits)
        try:
            async for request_id, event in answers:
                found[request_id] = event
        finally:
            await answers.aclose()
        ordered = [found[r["request_id"]] for r in self.requests]
        yield TriggerEvent(events.batch_event(self.response_topic, ordered, self.resume))
