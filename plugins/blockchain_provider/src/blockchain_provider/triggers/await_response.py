"""Wait in the triggerer for the gateway's answers to the requests a deferred task has sent
(:class:`AwaitResponsesTrigger`, for one request or many)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow.sdk.log import mask_secret
from airflow.triggers.base import BaseTrigger, TriggerEvent
from asgiref.sync import sync_to_async
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError, TopicPartition

from blockchain_provider import protocol
from blockchain_provider.answer_matcher import (
    AnswerMatcher,
    Positions,
    Verdict,
    Wait,
    positions_from_primitives,
    positions_to_primitives,
)
from blockchain_provider.exceptions import BlockchainConfigError
from blockchain_provider.hooks.kafka_clients import consume_available
from blockchain_provider.outcomes import AnswerAt, refusal_text
from blockchain_provider.triggers import events

if TYPE_CHECKING:
    from blockchain_provider.outcomes import PendingRequest

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
    """What one poll brought: the answers found, each with the time it was written, the partitions
    read to their end, and those that brought messages."""

    found: list[tuple[str, protocol.Response, AnswerAt, float]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    at_end: set[int] = field(default_factory=set)
    read: set[int] = field(default_factory=set)
    empty: bool = True


class AnswerWaitTrigger(BaseTrigger):
    """What every wait for the gateway's answers in the triggerer shares: the connections it reads
    (the token never crosses the database), its ``BLK_Res`` consumer, and the loop that hands each
    message to the one :class:`~blockchain_provider.answer_matcher.AnswerMatcher` until the waiting
    requests have their answers or their deadline (and late-answer grace) has passed."""

    response_topic: str
    start_positions: Positions
    token_conn_id: str
    kafka_config_id: str
    poll_timeout: float
    late_answer_grace: float
    by_request_id_only: bool
    reporter_record_id: str | None

    def _init_wait(self) -> None:
        self._consumer: Any = None
        self._polling: asyncio.Future[Any] | None = None
        self._topics: dict[str, str] = {}

    def _hook(self) -> Any:
        from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook

        return KafkaBlockchainHook(self.kafka_config_id, self.token_conn_id)

    async def _open(self, hook: Any = None) -> tuple[str | None, str | None]:
        """Read the connections (with *hook*, a new one by default), assign the consumer at the
        start positions; return the token to match by and the agent password (to scrub from
        refusals)."""
        hook = self._hook() if hook is None else hook
        settings = await sync_to_async(lambda: hook.settings)()
        token = settings.token.reveal() if settings.token is not None else None
        if self.reporter_record_id is not None:
            token = await sync_to_async(self._reporter_token)()
        agent_password = settings.agent_password.reveal() if settings.agent_password is not None else None
        self._consumer = await sync_to_async(hook.new_response_consumer)(
            TRIGGER_CONSUMER_DEFAULTS, TRIGGER_TANSU_CONSUMER_DEFAULTS
        )
        self._consumer.assign(
            [TopicPartition(self.response_topic, p, off) for p, off in self.start_positions.items()]
        )
        return token, agent_password

    def _wait_for(
        self, matcher: AnswerMatcher, topic: str, request_id: str, expect: Any, token: str | None
    ) -> None:
        """Have *matcher* wait for the answer to request *request_id* sent to *topic*."""
        self._topics[request_id] = topic
        expectation = protocol.Expectation.from_primitives(expect)
        # an agent request is matched by its echoed id alone: no token in its answer's auth
        signed = None if expectation.agent else token
        by_id_only = self.by_request_id_only or signed is None
        matcher.add(Wait(request_id, signed, by_id_only, self.start_positions, expectation))

    @staticmethod
    def _waited(sent_at: float | None) -> float | None:
        """Seconds since *sent_at*, or ``None`` when that is unknown."""
        return None if sent_at is None else time.time() - sent_at

    async def _await(
        self,
        matcher: AnswerMatcher,
        deadline: float,
        sent_at: float | None,
        secrets: tuple[str | None, str | None],
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Read on until every request *matcher* waits for has its answer or *deadline* (and the
        late-answer grace) has passed; yield ``(request id, answer)`` for each as it ends."""
        refs = {rid: events.RequestRef(self._topics[rid], rid) for rid in matcher.waiting()}
        loop = asyncio.get_running_loop()
        # A triggerer that picks the wait up late (load, a restart) must find an answer that is
        # already on the topic: past the deadline, the wait reads on until every partition is at
        # its end before it reports a timeout. Whether an answer is late is told by the time the
        # message was written, not by when this wait got to read it.
        partitions = set(self.start_positions)
        at_end: set[int] = set()
        catch_up_until: float | None = None
        while matcher.waiting():
            now = time.time()
            remaining = deadline - now
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
                    for request_id in matcher.waiting():
                        matcher.remove(request_id)
                        yield request_id, events.timeout(refs[request_id], self._waited(sent_at))
                    return
                wait = min(self.poll_timeout, grace_left) if caught_up else CATCH_UP_POLL
            # reading and matching both run in a worker thread: a large hostile message must not
            # stall the triggerer's event loop, which every other deferred wait shares
            self._polling = loop.run_in_executor(None, self._read, matcher, wait)
            batch = await asyncio.shield(self._polling)
            self._polling = None
            for warning in batch.warnings:
                log.warning("%s", warning)
            at_end = (at_end - batch.read) | batch.at_end
            if catch_up_until is not None and batch.empty:
                at_end = set(partitions)  # a whole poll brought nothing: what was there is read
            for request_id, response, at, written_at in batch.found:
                matcher.remove(request_id)
                request = refs[request_id]
                if written_at > deadline:
                    log.warning(
                        "A late answer (%s) to request %s came on %s after its deadline",
                        response.kind,
                        request_id,
                        self.response_topic,
                    )
                    yield (
                        request_id,
                        events.timeout(request, self._waited(sent_at), late_answer=response.kind),
                    )
                elif response.kind == "error":
                    yield request_id, events.gateway_error(request, refusal_text(response, secrets))
                else:
                    yield request_id, events.success(request, at)

    def _reporter_token(self) -> str:
        """The token of the reporter that signed the requests, from the deployment's registry."""
        from blockchain_provider.reporter_registry import reporter_token

        token = reporter_token(str(self.reporter_record_id))
        if not isinstance(token, str) or not token:
            raise BlockchainConfigError(
                f"The reporter registry has no token for record {self.reporter_record_id}"
            )
        mask_secret(token)
        return token

    def _read(self, matcher: AnswerMatcher, timeout: float) -> _Batch:
        """Poll once; match the messages at or after the start positions."""
        batch = _Batch()
        for message in consume_available(self._consumer, timeout):
            batch.empty = False
            error = message.error()
            partition = message.partition()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    batch.at_end.add(partition)
                else:
                    log.warning("Error reading %s: %s", self.response_topic, error)
                continue
            batch.read.add(partition)
            batch.at_end.discard(partition)
            offset = message.offset()
            if offset < self.start_positions.get(partition, 0):
                continue
            value = message.value()
            match = matcher.match(partition, offset, value)
            if match.warning is not None:
                batch.warnings.append(match.warning)
            if match.verdict is not Verdict.ANSWER or match.response is None or match.request_id is None:
                continue
            # taken: no later message (a duplicate) can answer it again
            matcher.remove(match.request_id)
            ts_type, ts_ms = message.timestamp()
            written_at = ts_ms / 1000 if ts_type != TIMESTAMP_NOT_AVAILABLE else time.time()
            digest = hashlib.sha256(value or b"").hexdigest()
            topic = self._topics[match.request_id]
            at = AnswerAt(topic, match.request_id, self.response_topic, partition, offset, digest)
            batch.found.append((match.request_id, match.response, at, written_at))
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


class AwaitResponsesTrigger(AnswerWaitTrigger):
    """Read ``BLK_Res`` from the positions fixed before one or many requests were sent, until each
    has its answer or the deadline has passed; then yield one event
    (:func:`blockchain_provider.triggers.events.batch`): for each request, in order, where its
    answer is, the gateway's refusal, or its timeout. Which message answers which request is
    :class:`~blockchain_provider.answer_matcher.AnswerMatcher`'s to say, as in the worker.

    It serialises only primitives, so a waiting request holds no worker slot and survives a
    triggerer restart. Its event carries no token and no value of an answer. Many requests of
    one token can only be told apart by their echoed ids: without request_id echo it waits for one.

    :param requests: ``{"topic", "request_id", "expect"}`` for each request, in the order sent
        (``expect`` as :meth:`blockchain_provider.protocol.Expectation.to_primitives` gives it).
    :param response_topic: the actual response topic.
    :param start_positions: where to look for the answers: partition (as text) -> position.
    :param deadline: when to give up, in seconds since the epoch.
    :param by_request_id_only: match only on the echoed request id (the gateway echoes).
    :param token_conn_id: the ``blockchain_token`` connection, defaults to ``blockchain_master``.
    :param kafka_config_id: the ``kafka`` connection, defaults to ``kafka_default``.
    :param poll_timeout: seconds one poll may block a worker thread, defaults to 0.2.
    :param late_answer_grace: without echo, how long after the deadline to keep waiting (and keep the
        token's pool slot) for the late answer, so the next request of the token cannot take it;
        defaults to 0.
    :param sent_at: when the first request was sent, in seconds since the epoch, to report how long
        it waited; defaults to ``None`` (unknown).
    :param resume: what the deferred task resumes with, handed back in the event: small and
        JSON-serialisable; defaults to ``None``.
    :param reporter_record_id: the requests were signed with a token no connection holds: that of
        this record's reporter, which the triggerer reads from the deployment's reporter registry
        (``[blockchain] reporter_registry``); defaults to ``None`` (the token of ``token_conn_id``).
    :param token_source: (deprecated) version 0.2.0's way to name the reporter's token, read only so
        that the waits deferred before an upgrade resume: its ``record_id`` keyword argument is
        taken as *reporter_record_id*.
    :param token_source_kwargs: (deprecated) see *token_source*.
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
        reporter_record_id: str | None = None,
        token_source: str | None = None,
        token_source_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if reporter_record_id is None and token_source is not None:
            # a wait serialised by version 0.2.0, still deferred when the triggerer was upgraded
            reporter_record_id = (token_source_kwargs or {}).get("record_id")
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
        self.start_positions: Positions = positions_from_primitives(start_positions)
        self.deadline = float(deadline)
        self.by_request_id_only = bool(by_request_id_only)
        self.token_conn_id = token_conn_id
        self.kafka_config_id = kafka_config_id
        self.poll_timeout = float(poll_timeout)
        self.late_answer_grace = 0.0 if self.by_request_id_only else max(0.0, float(late_answer_grace))
        self.sent_at = None if sent_at is None else float(sent_at)
        self.resume = resume
        self.reporter_record_id = None if reporter_record_id is None else str(reporter_record_id)
        self._init_wait()

    @classmethod
    def for_pending(
        cls,
        pending: list[PendingRequest],
        *,
        token_conn_id: str = "blockchain_master",
        kafka_config_id: str = "kafka_default",
        resume: dict[str, Any] | None = None,
        reporter_record_id: str | None = None,
    ) -> AwaitResponsesTrigger:
        """The wait for the answers to *pending*, requests sent together (the start positions were
        fixed before the first was sent); it ends by the last one's deadline.

        :param reporter_record_id: the record whose reporter signed them, when no connection holds
            its token (the triggerer reads it from the reporter registry); defaults to ``None``.
        """
        if not pending:
            raise BlockchainConfigError("A wait for answers needs at least one request")
        first = pending[0]
        sent = [request.sent_at for request in pending if request.sent_at is not None]
        return cls(
            requests=[
                {"topic": request.topic, "request_id": request.request_id, "expect": request.expect}
                for request in pending
            ],
            response_topic=first.response_topic,
            start_positions=positions_to_primitives(first.start_positions),
            deadline=max(request.deadline for request in pending),
            by_request_id_only=first.by_request_id_only,
            token_conn_id=token_conn_id,
            kafka_config_id=kafka_config_id,
            late_answer_grace=first.late_answer_grace,
            sent_at=min(sent) if sent else None,
            resume=resume,
            reporter_record_id=reporter_record_id,
        )

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
                "reporter_record_id": self.reporter_record_id,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        found: dict[str, dict[str, Any]] = {}
        answers = self._answers()
        try:
            async for request_id, answer in answers:
                found[request_id] = answer
        finally:
            await answers.aclose()
        ordered = [found[r["request_id"]] for r in self.requests]
        yield TriggerEvent(events.batch(self.response_topic, ordered, self.resume))

    async def _answers(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Read ``BLK_Res`` from the start positions; yield ``(request id, answer)`` for each
        request as its answer comes or its wait ends, until none is left."""
        secrets = await self._open()
        matcher = AnswerMatcher(self.response_topic)
        for r in self.requests:
            self._wait_for(matcher, r["topic"], r["request_id"], r["expect"], secrets[0])
        async for found in self._await(matcher, self.deadline, self.sent_at, secrets):
            yield found
