"""A serial conversation with the gateway held in the triggerer (:class:`SerialRequestsTrigger`).

Without request_id echo, one request per token is in flight at a time: a task that writes 28
records must wait for each answer before sending the next. Deferring per request costs a task
resume per request (seconds each, besides the gateway's own delay). This trigger sends the next
request itself when the previous answer arrives, and the task resumes once for the whole
conversation, to note what was written.

It sends the requests the task built (the same :class:`~blockchain_provider.protocol.Call`
primitives, with request ids the task chose), signed with the token it reads from the connection
in the triggerer (never from its arguments), and matches each answer with the same
:class:`~blockchain_provider.answer_matcher.AnswerMatcher` and wait loop as
:class:`~.await_response.AwaitResponsesTrigger`. Its event is the same batch
(:mod:`.events`): for each request sent, where its answer is, its refusal, or its timeout.

A triggerer restart runs the trigger again from its arguments: before sending, it reads the
request topic from the positions the task fixed, and a request whose id is there was sent by an
earlier run: it is not sent again, its answer is looked for on ``BLK_Res`` from the start
positions, in order (one request in flight for the token: the k-th answer is the k-th request's).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import TriggerEvent
from asgiref.sync import sync_to_async
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError, TopicPartition

from blockchain_provider import protocol
from blockchain_provider.answer_matcher import (
    AnswerMatcher,
    positions_from_primitives,
    positions_to_primitives,
)
from blockchain_provider.exceptions import (
    BlockchainBrokerError,
    BlockchainConfigError,
    BlockchainDeliveryError,
)
from blockchain_provider.hooks import kafka_clients
from blockchain_provider.hooks.delivery import deliver
from blockchain_provider.triggers import events
from blockchain_provider.triggers.await_response import CATCH_UP_LIMIT, AnswerWaitTrigger

#: The most requests one conversation sends: its event, one entry per request, stays under
#: :data:`.events.MAX_EVENT_BYTES` (a unit's day report is 28).
MAX_CONVERSATION = 28


class SerialRequestsTrigger(AnswerWaitTrigger):
    """Send *calls* one at a time, each when the answer to the one before has come, and wait for
    each answer; then yield one event (:func:`.events.batch`) with an entry per request sent.

    The conversation goes on past a refusal (the gateway answered: the token is free) and ends at
    the first request with no answer by its deadline (after the late-answer grace, holding the
    token) or not taken by the broker: what comes after it is not sent.

    :param calls: ``{"topic", "header", "body", "request_id"}`` for each request, in order: a
        :class:`~blockchain_provider.protocol.Call` (protocol topic name) and the id to send it with.
    :param response_topic: the actual response topic.
    :param start_positions: where to look for the answers: partition (as text) -> position, fixed
        before the first request was sent.
    :param request_positions: actual request topic -> (partition as text -> position), fixed
        before the trigger's first request was sent, where a restarted trigger finds what it sent.
    :param timeout: seconds each request waits for its answer, from its sending.
    :param by_request_id_only: match only on the echoed request id (the gateway echoes).
    :param sent: request id -> when it was sent (seconds since the epoch), for requests the task
        sent itself before deferring; defaults to none.
    :param token_conn_id: the ``blockchain_token`` connection, defaults to ``blockchain_master``.
    :param kafka_config_id: the ``kafka`` connection, defaults to ``kafka_default``.
    :param poll_timeout: seconds one poll may block a worker thread, defaults to 0.2.
    :param late_answer_grace: without echo, how long after a request's deadline to keep waiting
        (holding the token) for its late answer; defaults to 0.
    :param resume: what the deferred task resumes with, handed back in the event; defaults to None.
    """

    def __init__(
        self,
        *,
        calls: list[dict[str, Any]],
        response_topic: str,
        start_positions: dict[str, int],
        request_positions: dict[str, dict[str, int]],
        timeout: float,
        by_request_id_only: bool,
        sent: dict[str, float] | None = None,
        token_conn_id: str = "blockchain_master",
        kafka_config_id: str = "kafka_default",
        poll_timeout: float = 0.2,
        late_answer_grace: float = 0.0,
        resume: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not calls:
            raise BlockchainConfigError("A conversation needs at least one request")
        if len(calls) > MAX_CONVERSATION:
            raise BlockchainConfigError(
                f"A conversation sends at most {MAX_CONVERSATION} requests (its event stays small), "
                f"not {len(calls)}"
            )
        self.calls = [
            {
                "topic": str(call["topic"]),
                "header": dict(call.get("header") or {}),
                "body": None if call.get("body") is None else dict(call["body"]),
                "request_id": protocol.validate_request_id(call["request_id"]),
            }
            for call in calls
        ]
        for call in self.calls:
            self._call(call)  # a topic the protocol does not know is refused here, not mid-way
        if len({c["request_id"] for c in self.calls}) != len(self.calls):
            raise BlockchainConfigError("A conversation names a request twice")
        self.response_topic = response_topic
        self.start_positions = positions_from_primitives(start_positions)
        self.request_positions = {
            str(topic): positions_from_primitives(positions) for topic, positions in request_positions.items()
        }
        if isinstance(timeout, bool) or float(timeout) <= 0:
            raise BlockchainConfigError(f"timeout must be a positive number of seconds, not {timeout!r}")
        self.timeout = float(timeout)
        self.by_request_id_only = bool(by_request_id_only)
        self.sent = {str(rid): float(at) for rid, at in (sent or {}).items()}
        self.token_conn_id = token_conn_id
        self.kafka_config_id = kafka_config_id
        self.poll_timeout = float(poll_timeout)
        self.late_answer_grace = 0.0 if self.by_request_id_only else max(0.0, float(late_answer_grace))
        self.resume = resume
        self.reporter_record_id = None
        self._producer: Any = None
        self._init_wait()

    @staticmethod
    def _call(call: dict[str, Any]) -> protocol.Call:
        built = protocol.Call(call["topic"], call["header"], call["body"])
        protocol.expectation(built)
        return built

    @property
    def deadline(self) -> float:
        """When the conversation's last request would give up, were each sent now and answered at
        its deadline: what the deferral's own timeout is counted from."""
        return time.time() + len(self.calls) * (self.timeout + self.late_answer_grace) + CATCH_UP_LIMIT

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "calls": self.calls,
                "response_topic": self.response_topic,
                "start_positions": positions_to_primitives(self.start_positions),
                "request_positions": {
                    topic: positions_to_primitives(positions)
                    for topic, positions in self.request_positions.items()
                },
                "timeout": self.timeout,
                "by_request_id_only": self.by_request_id_only,
                "sent": self.sent,
                "token_conn_id": self.token_conn_id,
                "kafka_config_id": self.kafka_config_id,
                "poll_timeout": self.poll_timeout,
                "late_answer_grace": self.late_answer_grace,
                "resume": self.resume,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        answers: list[dict[str, Any]] = []
        conversation = self._conversation()
        try:
            async for answer in conversation:
                answers.append(answer)
        finally:
            await conversation.aclose()
        yield TriggerEvent(events.batch(self.response_topic, answers, self.resume))

    async def _conversation(self) -> AsyncIterator[dict[str, Any]]:
        """Send each request when the one before is answered; yield each one's entry."""
        hook = self._hook()
        secrets = await self._open(hook)
        settings = hook.settings
        broker = await sync_to_async(lambda: hook._bootstrap_servers)()
        self._producer = await sync_to_async(kafka_clients.new_producer)(self.kafka_config_id)
        # what an earlier run of this trigger sent (a triggerer restart) is not sent again
        sent = {**self.sent, **await sync_to_async(self._sent_before)(hook)}
        matcher = AnswerMatcher(self.response_topic)
        # Sent already (by the task, or by this trigger before a restart): their answers are
        # awaited together; without echo the matcher gives a token's answers to its waits in the
        # order they were added, which is the order they were sent, one at a time.
        earlier = [call for call in self.calls if call["request_id"] in sent]
        if [call["request_id"] for call in earlier] != [c["request_id"] for c in self.calls[: len(earlier)]]:
            raise BlockchainConfigError("A conversation was found sent out of order: nothing more is sent")
        for primitives in earlier:
            call = self._call(primitives)
            topic = settings.topics[call.topic]
            self._wait_for(
                matcher,
                topic,
                primitives["request_id"],
                protocol.expectation(call).to_primitives(),
                secrets[0],
            )
        if earlier:
            first_sent = min(sent[c["request_id"]] for c in earlier)
            last_deadline = max(sent[c["request_id"]] for c in earlier) + self.timeout
            ended = False
            async for _request_id, answer in self._await(matcher, last_deadline, first_sent, secrets):
                ended = ended or answer["status"] == events.TIMEOUT
                yield answer
            if ended:
                return  # uncertain: the token's next request could take its answer
        for primitives in self.calls[len(earlier) :]:
            call = self._call(primitives)
            request_id = primitives["request_id"]
            topic = settings.topics[call.topic]
            signed = None if call.topic == protocol.AGENTS else secrets[0]
            request = protocol.envelope(call, request_id, signed)
            sent_at = time.time()
            try:
                await sync_to_async(deliver)(self._producer, request, topic, self.timeout, broker)
            except BlockchainDeliveryError as exc:
                yield events.undelivered(events.RequestRef(topic, request_id), str(exc))
                return
            self._wait_for(matcher, topic, request_id, protocol.expectation(call).to_primitives(), secrets[0])
            async for _request_id, answer in self._await(matcher, sent_at + self.timeout, sent_at, secrets):
                yield answer
                if answer["status"] == events.TIMEOUT:
                    return  # uncertain: the token's next request could take its answer

    def _sent_before(self, hook: Any) -> dict[str, float]:
        """Request id -> when it was written, for this conversation's requests already on their
        request topics past the positions the task fixed."""
        ours = {c["request_id"] for c in self.calls}
        found: dict[str, float] = {}
        if not self.request_positions:
            return found
        consumer = hook.new_response_consumer()
        try:
            assigned = [
                TopicPartition(topic, partition, offset)
                for topic, positions in self.request_positions.items()
                for partition, offset in positions.items()
            ]
            consumer.assign(assigned)
            left = {(tp.topic, tp.partition) for tp in assigned}
            until = time.monotonic() + CATCH_UP_LIMIT
            while left and time.monotonic() < until:
                for message in kafka_clients.consume_available(consumer, 1.0):
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            left.discard((message.topic(), message.partition()))
                        continue
                    key = message.key()
                    request_id = key.decode("ascii", "replace") if isinstance(key, bytes) else None
                    if request_id in ours:
                        ts_type, ts_ms = message.timestamp()
                        found[request_id] = (
                            ts_ms / 1000 if ts_type != TIMESTAMP_NOT_AVAILABLE else time.time()
                        )
        finally:
            consumer.close()
        if left:
            topic, partition = sorted(left)[0]
            raise BlockchainBrokerError(
                f"Could not read {topic}[{partition}] to its end within {CATCH_UP_LIMIT:.0f} s to find the "
                "requests an earlier run of this conversation sent: none is sent blindly again"
            )
        return found

    async def cleanup(self) -> None:
        producer, self._producer = self._producer, None
        await super().cleanup()
        if producer is not None:
            await sync_to_async(producer.flush)(5)
