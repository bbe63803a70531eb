"""The response reader's positioning, hand-over and late answers, on a fake consumer: no broker,
no thread. Which message answers which request is the matcher's (``test_answer_matcher.py``).

Each test positions a :class:`ResponseReader` at the end of a fake ``BLK_Res`` (its partitions
are lists of message values), registers a request, appends messages and reads them with
:meth:`ResponseReader.read_once`, as the reader's thread does.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, KafkaError

from blockchain_provider import protocol
from blockchain_provider.exceptions import BlockchainBrokerError
from blockchain_provider.hooks.response_reader import ResponseReader, _Waiter, read_at

TOPIC = "BLK_Res"
TOKEN = "tok-reader-unit"


class FakeError:
    def __init__(self, code: int) -> None:
        self._code = code

    def code(self) -> int:
        return self._code

    def __str__(self) -> str:
        return f"error {self._code}"


@dataclass
class FakeMessage:
    """What a consumer asks of a message: topic, partition, offset, key, value, error and the
    time it was written (seconds)."""

    part: int
    at: int
    data: bytes | None = None
    failure: FakeError | None = None
    topic_name: str = TOPIC
    message_key: bytes | None = None
    written: float = 0.0

    def topic(self) -> str:
        return self.topic_name

    def partition(self) -> int:
        return self.part

    def offset(self) -> int:
        return self.at

    def key(self) -> bytes | None:
        return self.message_key

    def value(self) -> bytes | None:
        return self.data

    def error(self) -> FakeError | None:
        return self.failure

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_CREATE_TIME, int(self.written * 1000)


class FakeConsumer:
    """A topic's partitions as lists of values, read from assigned positions; a partition read
    to its end yields one end-of-partition event, as librdkafka does with ``enable.partition.eof``."""

    def __init__(self, partitions: int = 1, *, log: dict[int, list[bytes]] | None = None) -> None:
        self.log: dict[int, list[bytes]] = log if log is not None else {p: [] for p in range(partitions)}
        self.next: dict[int, int] = {}
        self._lock = threading.Lock()

    def another(self) -> FakeConsumer:
        """A second consumer of the same topic, as another hook of the process has."""
        return FakeConsumer(log=self.log)

    def append(self, partition: int, value: bytes) -> int:
        with self._lock:
            self.log[partition].append(value)
            return len(self.log[partition]) - 1

    # -------------------------------------------------------------- the consumer's API
    def list_topics(self, topic: str, timeout: float) -> Any:
        meta = SimpleNamespace(error=None, partitions={p: None for p in self.log})
        return SimpleNamespace(topics={TOPIC: meta}, cluster_id="fake")

    def get_watermark_offsets(self, tp: Any, timeout: float | None = None, cached: bool = False):
        with self._lock:
            return 0, len(self.log[tp.partition])

    def assign(self, partitions: list[Any]) -> None:
        with self._lock:
            self.next = {tp.partition: tp.offset for tp in partitions}
            self._eof_at: dict[int, int] = {}

    def _take(self) -> FakeMessage | None:
        for partition, offset in self.next.items():
            if offset < len(self.log[partition]):
                self.next[partition] = offset + 1
                return FakeMessage(partition, offset, self.log[partition][offset])
            if self._eof_at.get(partition) != offset:
                self._eof_at[partition] = offset
                return FakeMessage(partition, offset, failure=FakeError(KafkaError._PARTITION_EOF))
        return None

    def poll(self, timeout: float) -> FakeMessage | None:
        with self._lock:
            return self._take()

    def close(self) -> None:
        pass

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        taken = []
        with self._lock:
            while len(taken) < num_messages and (message := self._take()) is not None:
                taken.append(message)
        return taken


def answer(
    outcome: dict[str, Any],
    *,
    token: str = TOKEN,
    request_id: str | None = None,
    public_key: str | None = None,
) -> bytes:
    header: dict[str, Any] = {"auth": token}
    if request_id is not None:
        header["request_id"] = request_id
    if public_key is not None:
        header["public_key"] = public_key
    return json.dumps([header, outcome]).encode()


def started(consumer: FakeConsumer, broker: str | None = None) -> ResponseReader:
    """A reader at the end of *consumer*'s topic; its own broker name unless given, so what one
    test learns of the topic's end is not shared with another's."""
    reader = ResponseReader(consumer, TOPIC, broker or f"fake-{uuid.uuid4()}")  # type: ignore[arg-type]
    reader.read_to_end(5.0)
    return reader


def read_all(reader: ResponseReader) -> None:
    reader.read_once(0)


def waiting_reader() -> tuple[FakeConsumer, ResponseReader, _Waiter]:
    """A fresh topic, a reader at its end, and a request of TOKEN registered with the reader."""
    consumer = FakeConsumer()
    reader = started(consumer)
    return consumer, reader, registered(reader)


def registered(reader: ResponseReader) -> _Waiter:
    """A request of TOKEN registered with *reader*, its answer told by the token (no echo)."""
    return reader.register(protocol.new_request_id(), TOKEN, by_request_id_only=False)


def answered(consumer: FakeConsumer, reader: ResponseReader, data: list[Any]) -> None:
    """An answer of TOKEN with *data* appended to *consumer*'s topic, and read by *reader*."""
    consumer.append(0, answer({"data": data}))
    read_all(reader)


def test_read_to_end_positions_the_reader_after_what_was_there():
    consumer = FakeConsumer(partitions=2)
    consumer.append(0, b"old")
    consumer.append(0, b"old")
    consumer.append(1, b"old")
    reader = started(consumer)
    assert reader.positions() == {0: 2, 1: 1}
    assert reader.start_positions() == {0: 2, 1: 1}


def test_an_echoed_request_id_is_matched_whatever_the_token_order():
    consumer = FakeConsumer()
    reader = started(consumer)
    mine, other = protocol.new_request_id(), protocol.new_request_id()
    waiter = reader.register(mine, TOKEN, by_request_id_only=True)
    reader.register(other, TOKEN, by_request_id_only=True)
    consumer.append(0, answer({"data": ["mine"]}, request_id=mine))
    read_all(reader)
    assert waiter.event.is_set()
    assert waiter.response is not None and waiter.response.value == ["mine"]
    assert reader.waiting() == 1  # the other request still waits


def test_an_answer_before_the_start_positions_is_not_taken():
    """A duplicate of an earlier answer to the same token, already on the topic when the request
    was sent but not yet read by this reader (another reader of the process had read it)."""
    consumer = FakeConsumer()
    broker = f"fake-{uuid.uuid4()}"
    reader = started(consumer, broker)
    consumer.append(0, answer({"data": ["an earlier request's"]}))
    other_reader = started(consumer.another(), broker)  # reads to the end: the topic is known to end at 1
    assert other_reader.positions() == {0: 1}
    assert reader.positions() == {0: 0}
    waiter = registered(reader)
    assert waiter.start_positions == {0: 1}
    read_all(reader)
    assert not waiter.event.is_set()
    assert reader.skipped == 1
    answered(consumer, reader, ["ours"])
    assert waiter.response is not None and waiter.response.value == ["ours"]


def test_a_late_answer_releases_the_held_token_and_is_not_taken():
    consumer, reader, waiter = waiting_reader()
    released = []
    # the request timed out: its token stays blocked until the late answer (or a minute)
    assert reader.hold_late(waiter, 60.0, lambda: released.append(True))
    answered(consumer, reader, ["late"])
    assert released == [True]
    assert waiter.settled.is_set()
    assert waiter.response is None  # the caller gave up: nobody takes it
    assert reader.late == 1
    # the token is free again: the next request takes the next answer, not that one
    following = registered(reader)
    answered(consumer, reader, ["next"])
    assert following.response is not None and following.response.value == ["next"]


def test_hold_late_holds_nothing_when_the_answer_came_meanwhile():
    consumer, reader, waiter = waiting_reader()
    answered(consumer, reader, ["just in time"])
    assert not reader.hold_late(waiter, 60.0, lambda: pytest.fail("nothing to release"))


def test_the_reader_survives_a_failure_on_one_message(monkeypatch, caplog):
    consumer, reader, waiter = waiting_reader()
    decode = protocol.decode_response

    def failing(value):
        if value.startswith(b"unexpected"):
            raise RuntimeError("a failure the decoder does not foresee")
        return decode(value)

    monkeypatch.setattr(protocol, "decode_response", failing)
    consumer.append(0, b"unexpected " + TOKEN.encode())
    consumer.append(0, answer({"data": ["after it"]}))
    with caplog.at_level(logging.WARNING):
        read_all(reader)
    assert "Skipped malformed response at BLK_Res[0]@0: unreadable (RuntimeError)" in caplog.text
    assert waiter.response is not None and waiter.response.value == ["after it"]


def test_read_at_reads_back_the_messages_at_their_offsets():
    consumer = FakeConsumer(partitions=2)
    for value in (b"a", b"b", b"c"):
        consumer.append(0, value)
    consumer.append(1, b"d")
    assert read_at(consumer, TOPIC, [(0, 2), (1, 0), (0, 1)], 5.0) == {
        (0, 2): b"c",
        (1, 0): b"d",
        (0, 1): b"b",
    }  # type: ignore[arg-type]


def test_read_at_names_an_answer_no_longer_on_the_topic():
    consumer = FakeConsumer()
    consumer.append(0, b"a")
    with pytest.raises(BlockchainBrokerError, match=r"read back the answer at BLK_Res\[0\]@5"):
        read_at(consumer, TOPIC, [(0, 5)], 5.0)  # type: ignore[arg-type]
