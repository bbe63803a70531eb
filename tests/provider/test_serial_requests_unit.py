"""The serial conversation held in the triggerer (:class:`SerialRequestsTrigger`), on a fake broker
and a fake gateway without echo: no broker, no Airflow process.

The fake broker keeps each topic's partitions as lists of messages (key, value, timestamp); the
fake gateway answers each write it reads, signed with the token, after a short delay, or refuses
it, or holds it, as a test scripts it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from airflow.triggers.base import TriggerEvent
from confluent_kafka import KafkaError

from blockchain_provider import protocol
from blockchain_provider.exceptions import (
    BlockchainConfigError,
    BlockchainDeliveryError,
    BlockchainGatewayError,
    BlockchainTimeoutError,
)
from blockchain_provider.hooks import kafka_clients
from blockchain_provider.hooks.gateway_client import GatewayClient
from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook
from blockchain_provider.operators import CreateRecordsOperator
from blockchain_provider.outcomes import AnswerAt, Outcome
from blockchain_provider.triggers import events
from blockchain_provider.triggers.serial_requests import MAX_CONVERSATION, SerialRequestsTrigger
from tests.operator_runs import first_event, stored, task_context
from tests.provider.conftest import set_connections
from tests.provider.test_response_reader_unit import FakeError, FakeMessage

TOKEN = "tok-serial-unit-0123456789"
RECORDS = "BLK_Rec_DayReportIndicator"
RESPONSES = "BLK_Res"


@dataclass
class Broker:
    """Topics of one partition each, and what the gateway does with each request it reads."""

    topics: dict[str, list[FakeMessage]] = field(default_factory=lambda: {RECORDS: [], RESPONSES: []})
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: record id -> "hold" (never answered) or "refuse"; any other record is answered
    script: dict[str, str] = field(default_factory=dict)
    delay: float = 0.05
    in_flight: int = 0
    most_in_flight: int = 0
    timers: list[threading.Timer] = field(default_factory=list)

    def write(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        with self.lock:
            log = self.topics[topic]
            log.append(
                FakeMessage(0, len(log), value, topic_name=topic, message_key=key, written=time.time())
            )

    def requests(self) -> list[dict[str, Any]]:
        return [json.loads(m.data or b"")[1] for m in self.topics[RECORDS]]

    def on_request(self, value: bytes) -> None:
        header, body = json.loads(value)
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        what = self.script.get(body["record_id"])
        if what == "hold":
            return
        outcome = {"error": f"record {body['record_id']} exists"} if what == "refuse" else {"message": "ok"}

        def answer() -> None:
            with self.lock:
                self.in_flight -= 1
            self.write(RESPONSES, json.dumps([{"auth": header["auth"]}, outcome]).encode())

        timer = threading.Timer(self.delay, answer)
        self.timers.append(timer)
        timer.start()


class Consumer:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.next: dict[tuple[str, int], int] = {}
        self.eof: dict[tuple[str, int], int] = {}

    def list_topics(self, topic: str, timeout: float) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(
            topics={topic: SimpleNamespace(error=None, partitions={0: None})}, cluster_id="fake"
        )

    def get_watermark_offsets(self, tp: Any, timeout: float | None = None, cached: bool = False):
        with self.broker.lock:
            return 0, len(self.broker.topics[tp.topic])

    def assign(self, partitions: list[Any]) -> None:
        self.next = {(tp.topic, tp.partition): tp.offset for tp in partitions}

    def _take(self) -> FakeMessage | None:
        with self.broker.lock:
            for place, offset in self.next.items():
                log = self.broker.topics[place[0]]
                if offset < len(log):
                    self.next[place] = offset + 1
                    return log[offset]
                if self.eof.get(place) != offset:
                    self.eof[place] = offset
                    return FakeMessage(
                        place[1], offset, failure=FakeError(KafkaError._PARTITION_EOF), topic_name=place[0]
                    )
        return None

    def poll(self, timeout: float) -> FakeMessage | None:
        until = time.monotonic() + timeout
        while (message := self._take()) is None and time.monotonic() < until:
            time.sleep(0.005)
        return message

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        taken: list[FakeMessage] = []
        while len(taken) < num_messages and (message := self._take()) is not None:
            taken.append(message)
        return taken

    def close(self) -> None:
        pass


class Producer:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.reports: list[Callable[[], None]] = []

    def produce(self, topic: str, value: bytes, key: bytes, headers: Any, on_delivery: Any) -> None:
        if self.broker.script.get(json.loads(value)[1]["record_id"]) == "full":
            raise BufferError("Local: Queue full")
        self.broker.write(topic, value, key)
        self.broker.on_request(value)
        self.reports.append(lambda: on_delivery(None, None))

    def poll(self, timeout: float) -> int:
        reports, self.reports = self.reports, []
        for report in reports:
            report()
        return len(reports)

    def flush(self, timeout: float) -> int:
        return self.poll(timeout)


@pytest.fixture
def broker(monkeypatch) -> Any:
    fake = Broker()
    set_connections(monkeypatch, "127.0.0.1:1", "", TOKEN)
    monkeypatch.setattr(KafkaBlockchainHook, "new_response_consumer", lambda self, *a, **k: Consumer(fake))
    monkeypatch.setattr(kafka_clients, "new_producer", lambda conn_id: Producer(fake))
    yield fake
    for timer in fake.timers:
        timer.cancel()


def calls(count: int, first: int = 0) -> list[dict[str, Any]]:
    out = []
    for n in range(first, first + count):
        call = protocol.record_create_call(f"R{n:02d}", "DayReportIndicator", f"indicator {n}", {"Value": n})
        out.append(
            {"topic": call.topic, "header": dict(call.header), "body": call.body, "request_id": f"{n:032x}"}
        )
    return out


def conversation(broker: Broker, count: int, **kwargs: Any) -> SerialRequestsTrigger:
    return SerialRequestsTrigger(
        calls=kwargs.pop("calls", None) or calls(count),
        response_topic=RESPONSES,
        start_positions={"0": len(broker.topics[RESPONSES])},
        request_positions={RECORDS: {"0": len(broker.topics[RECORDS])}},
        timeout=kwargs.pop("timeout", 5.0),
        by_request_id_only=False,
        resume={"pending": ["R00"]},
        **kwargs,
    )


def revived(trigger: SerialRequestsTrigger) -> SerialRequestsTrigger:
    classpath, kwargs = trigger.serialize()
    json.dumps(kwargs)  # only primitives cross the database
    assert classpath == "blockchain_provider.triggers.serial_requests.SerialRequestsTrigger"
    assert TOKEN not in json.dumps(kwargs)
    return SerialRequestsTrigger(**kwargs)


def test_each_request_is_sent_when_the_answer_before_it_has_come(broker):
    trigger = revived(conversation(broker, 6))
    started = time.monotonic()
    payload, size = stored(asyncio.run(first_event(trigger)))
    elapsed = time.monotonic() - started
    resume, results = events.results(payload)
    assert resume == {"pending": ["R00"]}
    # one request in flight at a time, in order, each sent once
    assert broker.most_in_flight == 1
    assert [r["record_id"] for r in broker.requests()] == [f"R{n:02d}" for n in range(6)]
    assert all(isinstance(r, AnswerAt) for r in results)
    assert [r.offset for r in results] == list(range(6))
    assert [r.request_id for r in results] == [c["request_id"] for c in calls(6)]
    # the gateway's delay per request, plus little: no wait of its own between requests
    assert 6 * broker.delay <= elapsed < 6 * broker.delay + 2.0
    text = json.dumps(payload)
    assert TOKEN not in text and "indicator" not in text and size < events.MAX_EVENT_BYTES


def test_a_refusal_is_reported_and_the_conversation_goes_on(broker):
    broker.script["R01"] = "refuse"
    payload, _size = stored(asyncio.run(first_event(conversation(broker, 3))))
    _resume, (first, refused, third) = events.results(payload)
    assert isinstance(first, AnswerAt) and isinstance(third, AnswerAt)
    assert isinstance(refused, BlockchainGatewayError) and refused.gateway_text == "record R01 exists"
    assert len(broker.requests()) == 3


def test_a_timeout_ends_the_conversation_and_nothing_after_it_is_sent(broker):
    broker.script["R02"] = "hold"
    payload, _size = stored(asyncio.run(first_event(conversation(broker, 5, timeout=0.5))))
    _resume, results = events.results(payload)
    assert [type(r) for r in results] == [AnswerAt, AnswerAt, BlockchainTimeoutError]
    # the token's next request would take the held request's late answer: none is sent
    assert [r["record_id"] for r in broker.requests()] == ["R00", "R01", "R02"]


def test_a_request_the_broker_does_not_take_ends_the_conversation(broker):
    broker.script["R01"] = "full"
    payload, _size = stored(asyncio.run(first_event(conversation(broker, 3))))
    _resume, (written, undelivered) = events.results(payload)
    assert isinstance(written, AnswerAt)
    assert isinstance(undelivered, BlockchainDeliveryError)
    assert "Queue full" in str(undelivered) and undelivered.request_id == calls(2)[1]["request_id"]
    assert [r["record_id"] for r in broker.requests()] == ["R00"]


def test_a_restarted_conversation_sends_nothing_twice(broker):
    """A triggerer that stops mid-way (its trigger cancelled) runs it again from its arguments:
    what the first run sent is found on the request topic and its answer on BLK_Res."""
    broker.delay = 0.8  # longer than the trigger takes to stop (a poll of 0.2 s at most)
    first = conversation(broker, 5)
    kwargs = first.serialize()[1]

    async def stop_after_three_sent() -> None:
        task = asyncio.ensure_future(first_event(first))
        while len(broker.requests()) < 3:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(stop_after_three_sent())
    assert broker.in_flight == 1  # the third is at the gateway, unanswered, when the triggerer stops
    payload, _size = stored(asyncio.run(first_event(SerialRequestsTrigger(**kwargs))))
    _resume, results = events.results(payload)
    assert [r["record_id"] for r in broker.requests()] == [f"R{n:02d}" for n in range(5)]
    assert [r.offset for r in results] == list(range(5))  # each answer taken for its own request
    assert broker.most_in_flight == 1


def test_a_request_the_task_sent_is_awaited_not_sent_again(broker):
    sent_by_task = calls(1)[0]
    request = protocol.envelope(
        protocol.Call(sent_by_task["topic"], sent_by_task["header"], sent_by_task["body"]),
        sent_by_task["request_id"],
        TOKEN,
    )
    start = {"0": len(broker.topics[RESPONSES])}
    Producer(broker).produce(RECORDS, request.encode(), request.kafka_key(), [], lambda *_: None)
    trigger = SerialRequestsTrigger(
        calls=calls(3),
        response_topic=RESPONSES,
        start_positions=start,
        request_positions={RECORDS: {"0": len(broker.topics[RECORDS])}},
        timeout=5.0,
        by_request_id_only=False,
        sent={sent_by_task["request_id"]: time.time()},
    )
    payload, _size = stored(asyncio.run(first_event(trigger)))
    _resume, results = events.results(payload)
    assert [r.offset for r in results] == [0, 1, 2]
    assert [r["record_id"] for r in broker.requests()] == ["R00", "R01", "R02"]


def test_the_event_of_the_longest_conversation_stays_under_8_kib(broker):
    """A conversation names each request and where its answer is: 28 of them fit in 8 KiB."""
    long_topic = "plant_a_long_topic_prefix_" + RECORDS
    broker.topics[long_topic] = []
    many = calls(MAX_CONVERSATION)
    # every entry names the request topic: the longest the connection maps it to
    refs = [events.RequestRef(long_topic, c["request_id"]) for c in many]
    at = [AnswerAt(long_topic, c["request_id"], RESPONSES, 11, 10**12, "f" * 64) for c in many]
    event = events.batch(RESPONSES, [events.success(r, a) for r, a in zip(refs, at, strict=True)], {})
    _payload, size = stored(TriggerEvent(event))
    assert size < events.MAX_EVENT_BYTES, size
    with pytest.raises(BlockchainConfigError, match=f"at most {MAX_CONVERSATION} requests"):
        conversation(broker, 0, calls=calls(MAX_CONVERSATION + 1))


def test_a_resumed_task_notes_what_a_conversation_wrote_then_fails_on_its_timeout(broker, monkeypatch):
    """The event of a conversation that ended at a timeout: the records answered are noted, the
    try fails on the timeout, and the records after it (never sent) are left for the retry."""
    noted: list[list[str]] = []
    operator = CreateRecordsOperator(
        task_id="t",
        record_type="DayReportIndicator",
        records=lambda context: ([], 0),
        on_written=lambda ids, context: noted.append(list(ids)),
        deferrable=True,
    )
    many = calls(4)
    refs = [events.RequestRef(RECORDS, c["request_id"]) for c in many]
    answers = [
        events.success(refs[0], AnswerAt(RECORDS, refs[0].request_id, RESPONSES, 0, 7, "a" * 64)),
        events.gateway_error(refs[1], "record R01 exists"),
        events.timeout(refs[2], 5.0),
    ]
    state = {"already_done": 0, "written": 0, "done": [], "refused": {}}
    payload = events.batch(RESPONSES, answers, {"state": state, "pending": ["R00", "R01", "R02", "R03"]})
    monkeypatch.setattr(
        GatewayClient,
        "answers_at",
        lambda self, located: [Outcome("message", "ok", a.topic, a.request_id) for a in located],
    )
    with pytest.raises(BlockchainTimeoutError):
        operator.execute_complete(task_context(), event=stored(TriggerEvent(payload))[0])
    assert noted == [["R00"]]
