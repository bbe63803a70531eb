"""A small scripted gateway for the provider's tests and benchmarks: reads request topics, answers on BLK_Res.

It speaks the wire format by itself (plain JSON and ``repr``), independently of the provider's
protocol module, so the tests check that module against the protocol and not against itself.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from gateway_sandbox.wire import AGENTS, TOKEN_TOPICS, record_topic

Handler = Callable[[str, dict[str, Any], dict[str, Any] | None], dict[str, Any] | None]


def encode(envelope: list[Any], encoding: str) -> bytes:
    """``json``: a JSON array; ``json-string``: a JSON string holding one; ``python-literal``:
    a JSON string holding a Python-literal list (the original gateway)."""
    if encoding == "json":
        return json.dumps(envelope).encode()
    if encoding == "json-string":
        return json.dumps(json.dumps(envelope)).encode()
    if encoding == "python-literal":
        return json.dumps(repr(envelope)).encode()
    raise ValueError(encoding)


@dataclass
class Seen:
    topic: str
    header: dict[str, Any]
    body: dict[str, Any] | None
    kafka_headers: dict[str, bytes] = field(default_factory=dict)
    key: bytes | None = None
    #: the request's Kafka timestamp: whole milliseconds of the wall clock, truncated by the producer
    sent_at_ms: int = 0

    @property
    def sent_at(self) -> float:
        """The request's Kafka timestamp, in seconds."""
        return self.sent_at_ms / 1000


class ScriptedResponder:
    """Answers every request with ``handler(topic, header, body)`` (an outcome dict, or ``None``
    to stay silent).

    :param echo: copy the request's ``request_id`` into the response header.
    :param encoding: see :func:`encode`.
    :param before: called with the request before the answer is written, to interleave noise.
    """

    def __init__(
        self,
        bootstrap: str,
        prefix: str,
        handler: Handler,
        *,
        echo: bool = False,
        encoding: str = "json",
        before: Callable[[Producer, str, dict[str, Any]], None] | None = None,
        topics: tuple[str, ...] = (
            *TOKEN_TOPICS,
            record_topic("ProductionUnit"),
            record_topic("DayReportIndicator"),
            AGENTS,
        ),
    ) -> None:
        self.prefix = prefix
        self.handler = handler
        self.echo = echo
        self.encoding = encoding
        self.before = before
        self.seen: list[Seen] = []
        self.response_topic = prefix + "BLK_Res"
        self._topics = topics
        self._producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "responder", "fetch.wait.max.ms": 1}
        )
        self._bootstrap = bootstrap
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ScriptedResponder:
        from gateway_sandbox.broker import ensure_topics

        # a record topic (BLK_Rec_<record type>) is not among the prefix's default topics
        ensure_topics(self._bootstrap, [self.prefix + name for name in self._topics])
        partitions = []
        for name in self._topics:
            topic = self.prefix + name
            meta = self._consumer.list_topics(topic, timeout=10).topics[topic]
            for partition in sorted(meta.partitions) or [0]:
                _low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=10
                )
                partitions.append(TopicPartition(topic, partition, high))
        self._consumer.assign(partitions)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()
        self._producer.flush(5)

    def __enter__(self) -> ScriptedResponder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write(self, value: bytes) -> None:
        self._producer.produce(self.response_topic, value)
        self._producer.flush(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            first = self._consumer.poll(0.05)
            batch = [] if first is None else [first, *self._consumer.consume(100, 0)]
            for message in batch:
                if message.error():
                    continue
                topic = message.topic()[len(self.prefix) :]
                envelope = json.loads(message.value())
                header = envelope[0]
                body = envelope[1] if len(envelope) > 1 else None
                sent_at_ms = message.timestamp()[1]
                self.seen.append(
                    Seen(topic, header, body, dict(message.headers() or []), message.key(), sent_at_ms)
                )
                outcome = self.handler(topic, header, body)
                if outcome is None:
                    continue
                if self.before is not None:
                    self.before(self._producer, self.response_topic, header)
                response_header = {"auth": header.get("auth", outcome.pop("_auth", "new-token"))}
                if self.echo or topic == "BLK_Agt":
                    response_header["request_id"] = header["request_id"]
                if topic == "BLK_Agt":
                    # the agent an answer is about: the one asked about, or the one just created
                    data = outcome.get("data")
                    named = header.get("public_key") or (
                        data.get("public_key") if isinstance(data, dict) else None
                    )
                    if named:
                        response_header["public_key"] = named
                self._producer.produce(self.response_topic, encode([response_header, outcome], self.encoding))
                self._producer.poll(0)
            self._producer.poll(0)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)
