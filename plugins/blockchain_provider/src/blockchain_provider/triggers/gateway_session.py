"""Many requests, each signed by a token of its own, in flight at once from one trigger
(:class:`GatewaySession`).

:class:`~.serial_requests.SerialRequestsTrigger` holds one token's conversation; a deployment that
updates many records, each signed by its own reporter, needs many such conversations at once, one
request in flight per token (the rule without request_id echo), without a task resume between two
requests. A trigger opens one session and asks through it from as many coroutines as it likes:
one producer, one ``BLK_Res`` consumer and one
:class:`~blockchain_provider.answer_matcher.AnswerMatcher` serve them all. Keeping a token to one
request at a time is the caller's job (a lock per record, say); the session matches each answer
to its request by echoed id or, without echo, by its token, read at or after the end of
``BLK_Res`` as it was just before the request was sent.

A session gives the answer's text to the caller, which notes it where it keeps its own state (a
trigger's event carries none of it).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from confluent_kafka import KafkaError, TopicPartition

from blockchain_provider import protocol
from blockchain_provider.answer_matcher import AnswerMatcher, Positions, Verdict, Wait
from blockchain_provider.exceptions import BlockchainBrokerError, BlockchainDeliveryError
from blockchain_provider.hooks import kafka_clients
from blockchain_provider.hooks.delivery import deliver
from blockchain_provider.outcomes import bounded_text, refusal_text
from blockchain_provider.triggers import events
from blockchain_provider.triggers.await_response import (
    TRIGGER_CONSUMER_DEFAULTS,
    TRIGGER_TANSU_CONSUMER_DEFAULTS,
)

log = logging.getLogger(__name__)

__all__ = ["GatewayAnswer", "GatewaySession"]

#: Seconds to read ``BLK_Res``'s end positions before a request is sent.
POSITIONS_TIMEOUT = 10.0


@dataclass(frozen=True)
class GatewayAnswer:
    """What became of one request: :data:`~.events.SUCCESS` (the gateway's confirmation in
    *text*), :data:`~.events.GATEWAY_ERROR` (its refusal, without the token), :data:`~.events.TIMEOUT`
    or :data:`~.events.UNDELIVERED` (why, in *text*). After a timeout the token's answer may still
    come: without echo, the token must not send again until it is known."""

    status: str
    text: str
    #: the answer's decoded value (a read's record, say), for the caller only: never put in an event
    value: Any = field(default=None, repr=False)

    @property
    def answered(self) -> bool:
        """Whether the gateway answered (the token is free again)."""
        return self.status in (events.SUCCESS, events.GATEWAY_ERROR)


class GatewaySession:
    """One producer, one ``BLK_Res`` reader and one matcher, for many requests in flight at once.

    ``async with GatewaySession(...) as session:`` then ``await session.ask(call, token, timeout)``
    from any number of coroutines of the trigger's event loop.

    :param kafka_config_id: the ``kafka`` connection.
    :param token_conn_id: the ``blockchain_token`` connection whose settings (topics, echo, agent
        password) the requests follow; the tokens they are signed with are the caller's.
    :param poll_timeout: seconds one poll of ``BLK_Res`` may block a worker thread; default 0.2.
    """

    def __init__(self, kafka_config_id: str, token_conn_id: str, *, poll_timeout: float = 0.2) -> None:
        self.kafka_config_id = kafka_config_id
        self.token_conn_id = token_conn_id
        self.poll_timeout = poll_timeout
        self._lock = threading.Lock()  # the matcher: added to in the loop, matched in a thread
        self._waits: dict[str, asyncio.Future[GatewayAnswer]] = {}
        self._producer: Any = None
        self._consumer: Any = None
        self._ends: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._closing = False

    async def __aenter__(self) -> GatewaySession:
        from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook

        hook = KafkaBlockchainHook(self.kafka_config_id, self.token_conn_id)
        self.settings = await sync_to_async(lambda: hook.settings)()
        self._broker = await sync_to_async(lambda: hook._bootstrap_servers)()
        self._agent_password = (
            self.settings.agent_password.reveal() if self.settings.agent_password is not None else None
        )
        self.response_topic = self.settings.topics.responses
        self.matcher = AnswerMatcher(self.response_topic)
        try:
            await self._connect(hook)
        except BaseException:
            await self.close()  # what was opened before the failure is closed
            raise
        return self

    async def _connect(self, hook: Any) -> None:
        self._producer = await sync_to_async(kafka_clients.new_producer)(self.kafka_config_id)
        self._consumer = await sync_to_async(hook.new_response_consumer)(
            TRIGGER_CONSUMER_DEFAULTS, TRIGGER_TANSU_CONSUMER_DEFAULTS
        )
        # the ends are asked on connections of their own: a broker answers a connection's requests
        # in turn, and the reader's are fetches held up to fetch.wait.max.ms
        self._ends = await sync_to_async(hook.new_response_consumer)(
            TRIGGER_CONSUMER_DEFAULTS, TRIGGER_TANSU_CONSUMER_DEFAULTS
        )
        metadata = await sync_to_async(self._ends.list_topics)(self.response_topic, timeout=POSITIONS_TIMEOUT)
        self._partitions = sorted(metadata.topics[self.response_topic].partitions)
        if not self._partitions:
            raise BlockchainBrokerError(f"{self.response_topic} has no partitions on {self._broker}")
        start = await sync_to_async(self._end_positions)()
        self._consumer.assign([TopicPartition(self.response_topic, p, off) for p, off in start.items()])
        self._reader = asyncio.get_running_loop().create_task(self._read_on())

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop reading; requests still waiting end as timeouts. Closing twice is harmless."""
        self._closing = True
        reader, self._reader = self._reader, None
        if reader is not None:
            await asyncio.wait([reader])  # never close the consumer under a poll in a worker thread
        for future in self._waits.values():
            if not future.done():
                future.set_result(GatewayAnswer(events.TIMEOUT, "the session closed before the answer came"))
        consumers, producer = (self._consumer, self._ends), self._producer
        self._consumer = self._ends = self._producer = None
        for consumer in consumers:
            if consumer is not None:
                await sync_to_async(consumer.close)()
        if producer is not None:
            await sync_to_async(producer.flush)(5)

    async def ask(self, call: protocol.Call, token: str, timeout: float) -> GatewayAnswer:
        """Send *call* signed with *token* and wait at most *timeout* seconds for its answer."""
        if self._reader is None or self._closing:
            raise RuntimeError("The gateway session is not open")
        topic = self.settings.topics[call.topic]
        request_id = protocol.new_request_id()
        request = protocol.envelope(call, request_id, token)
        try:
            start = await sync_to_async(self._end_positions, thread_sensitive=False)()
        except BlockchainBrokerError as exc:
            return GatewayAnswer(events.UNDELIVERED, str(exc))
        future: asyncio.Future[GatewayAnswer] = asyncio.get_running_loop().create_future()
        self._waits[request_id] = future
        wait = Wait(request_id, token, self.settings.echo_request_id, start, protocol.expectation(call))
        await sync_to_async(self._add)(wait)
        try:
            try:
                await sync_to_async(deliver, thread_sensitive=False)(
                    self._producer, request, topic, timeout, self._broker
                )
            except BlockchainDeliveryError as exc:
                return GatewayAnswer(events.UNDELIVERED, str(exc))
            try:
                return await asyncio.wait_for(asyncio.shield(future), timeout)
            except TimeoutError:
                return GatewayAnswer(
                    events.TIMEOUT, f"no answer to request {request_id} on {topic} within {timeout:g} s"
                )
        finally:
            self._waits.pop(request_id, None)
            await sync_to_async(self._remove)(request_id)

    # --------------------------------------------------------------- inside
    def _add(self, wait: Wait) -> None:
        with self._lock:
            self.matcher.add(wait)

    def _remove(self, request_id: str) -> None:
        with self._lock:
            self.matcher.remove(request_id)

    def _end_positions(self) -> Positions:
        """``BLK_Res``'s end in each partition: an answer matched by token is taken at or after it."""
        positions: Positions = {}
        for partition in self._partitions:
            try:
                _low, high = self._ends.get_watermark_offsets(
                    TopicPartition(self.response_topic, partition), timeout=POSITIONS_TIMEOUT, cached=False
                )
            except Exception as exc:  # KafkaException: the broker did not answer in time
                raise BlockchainBrokerError(
                    f"Could not read the end of {self.response_topic}[{partition}] on {self._broker}: {exc}"
                ) from None
            positions[partition] = high
        return positions

    async def _read_on(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            try:
                found = await loop.run_in_executor(None, self._poll)
            except Exception:
                log.warning("Failed to read %s; reading on", self.response_topic, exc_info=True)
                await asyncio.sleep(1.0)
                continue
            for request_id, answer in found:
                future = self._waits.get(request_id)
                if future is not None and not future.done():
                    future.set_result(answer)

    def _poll(self) -> list[tuple[str, GatewayAnswer]]:
        """Poll once (in a worker thread: a large hostile message must not stall the event loop);
        return the answers found."""
        found = []
        for message in kafka_clients.consume_available(self._consumer, self.poll_timeout):
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("Error reading %s: %s", self.response_topic, error)
                continue
            with self._lock:
                match = self.matcher.match(message.partition(), message.offset(), message.value())
                if match.warning is not None:
                    log.warning("%s", match.warning)
                if match.verdict is not Verdict.ANSWER or match.response is None or match.request_id is None:
                    continue
                # taken: no later message (a duplicate) can answer it again
                wait = self.matcher.wait(match.request_id)
                self.matcher.remove(match.request_id)
            response = match.response
            if response.kind == "error":
                secrets = (wait.token if wait is not None else None, self._agent_password)
                answer = GatewayAnswer(events.GATEWAY_ERROR, refusal_text(response, secrets))
            else:
                answer = GatewayAnswer(events.SUCCESS, _confirmation(response.value), response.value)
            found.append((match.request_id, answer))
        return found


def _confirmation(value: Any) -> str:
    """The gateway's confirmation of a write, as text, bounded."""
    return bounded_text(value if isinstance(value, str) else repr(value))
