"""Wait in the triggerer for the gateway's answer to a request a deferred task has sent."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent
from asgiref.sync import sync_to_async
from confluent_kafka import KafkaError, TopicPartition

from blockchain_provider import protocol
from blockchain_provider.exceptions import MalformedResponseError

log = logging.getLogger(__name__)

#: The triggerer's readers wait longer per fetch than a task's: a deferred request is one that
#: may wait long, and the triggerer runs many of them. On Apache Kafka they keep the client's
#: default, 500 ms (two fetches a second while idle): a fetch returns when the answer arrives.
#: The ``kafka`` connection's ``fetch.wait.max.ms`` overrides it, as it does the hook's.
TRIGGER_CONSUMER_DEFAULTS = {"fetch.wait.max.ms": 500}
#: On tansu, which holds every fetch for the whole wait, that would add up to 500 ms to a
#: deferred answer: there the wait is 100 ms.
TRIGGER_TANSU_CONSUMER_DEFAULTS = {"fetch.wait.max.ms": 100}


class AwaitResponseTrigger(BaseTrigger):
    """Read ``BLK_Res`` from the positions fixed before the request was sent, until its answer.

    It serialises only primitives, so a waiting request holds no worker slot and survives a
    triggerer restart. The event is ``{"status": "success", "kind", "value", ...}``, or
    ``"gateway_error"`` with the gateway's text (token removed), or ``"timeout"``; it never
    carries the token.

    :param topic: the actual request topic (for messages).
    :param request_id: the request's id.
    :param response_topic: the actual response topic.
    :param start_offsets: partition (as text) -> first offset to read.
    :param deadline: when to give up, in seconds since the epoch.
    :param by_request_id_only: match only on the echoed request id (the gateway echoes).
    :param token_conn_id: the ``blockchain_token`` connection, defaults to ``blockchain_master``.
    :param kafka_config_id: the ``kafka`` connection, defaults to ``kafka_default``.
    :param poll_timeout: seconds one poll may block a worker thread, defaults to 0.2.
    """

    def __init__(
        self,
        *,
        topic: str,
        request_id: str,
        response_topic: str,
        start_offsets: dict[str, int],
        deadline: float,
        by_request_id_only: bool,
        token_conn_id: str = "blockchain_master",
        kafka_config_id: str = "kafka_default",
        poll_timeout: float = 0.2,
    ) -> None:
        super().__init__()
        self.topic = topic
        self.request_id = protocol.validate_request_id(request_id)
        self.response_topic = response_topic
        self.start_offsets = {str(p): int(o) for p, o in start_offsets.items()}
        self.deadline = float(deadline)
        self.by_request_id_only = bool(by_request_id_only)
        self.token_conn_id = token_conn_id
        self.kafka_config_id = kafka_config_id
        self.poll_timeout = float(poll_timeout)
        self._consumer: Any = None
        self._polling: asyncio.Future[Any] | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "topic": self.topic,
                "request_id": self.request_id,
                "response_topic": self.response_topic,
                "start_offsets": self.start_offsets,
                "deadline": self.deadline,
                "by_request_id_only": self.by_request_id_only,
                "token_conn_id": self.token_conn_id,
                "kafka_config_id": self.kafka_config_id,
                "poll_timeout": self.poll_timeout,
            },
        )

    def _event(self, status: str, **fields: Any) -> TriggerEvent:
        return TriggerEvent(
            {
                "status": status,
                "topic": self.topic,
                "request_id": self.request_id,
                "response_topic": self.response_topic,
                **fields,
            }
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook, _consume_available

        hook = KafkaBlockchainHook(self.kafka_config_id, self.token_conn_id)
        settings = await sync_to_async(lambda: hook.settings)()
        token = settings.token.reveal() if settings.token is not None else None
        agent_password = settings.agent_password.reveal() if settings.agent_password is not None else None
        self._consumer = await sync_to_async(hook._new_consumer)(
            TRIGGER_CONSUMER_DEFAULTS, TRIGGER_TANSU_CONSUMER_DEFAULTS
        )
        self._consumer.assign(
            [TopicPartition(self.response_topic, int(p), off) for p, off in self.start_offsets.items()]
        )
        malformed = 0
        loop = asyncio.get_running_loop()
        while True:
            remaining = self.deadline - time.time()
            if remaining <= 0:
                yield self._event("timeout", timeout=max(0.0, self.deadline - time.time()))
                return
            self._polling = loop.run_in_executor(
                None, _consume_available, self._consumer, min(self.poll_timeout, remaining)
            )
            messages = await asyncio.shield(self._polling)
            self._polling = None
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.warning("Error reading %s: %s", self.response_topic, error)
                    continue
                if message.offset() < self.start_offsets.get(str(message.partition()), 0):
                    continue
                try:
                    response = protocol.decode_response(message.value())
                except MalformedResponseError as exc:
                    malformed += 1
                    if malformed <= 10 or malformed % 100 == 0:
                        log.warning("Skipped malformed response on %s: %s", self.response_topic, exc)
                    continue
                if not protocol.matches(
                    response,
                    request_id=self.request_id,
                    token=token,
                    by_request_id_only=self.by_request_id_only,
                ):
                    continue
                if response.kind == "error":
                    text = protocol.error_text(response, (token, agent_password))
                    yield self._event("gateway_error", text=text)
                else:
                    yield self._event(
                        "success", kind=response.kind, value=response.value, public_key=response.public_key
                    )
                return

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
