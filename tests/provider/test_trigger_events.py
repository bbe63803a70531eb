"""The trigger-event contract: what the trigger yields and what the task makes of it. No broker."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from blockchain_provider import protocol
from blockchain_provider.exceptions import (
    BlockchainConfigError,
    BlockchainGatewayError,
    BlockchainTimeoutError,
)
from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook, PendingRequest
from blockchain_provider.triggers import events
from blockchain_provider.triggers.await_response import AwaitResponsesTrigger, AwaitResponseTrigger
from tests.provider.conftest import set_connections
from tests.provider.test_response_reader_unit import FakeConsumer, answer

REF = events.RequestRef("BLK_Part_Lst", "9df8888dea6df991f86e0e61b2379e46", "BLK_Res")


def _round_trip(event: dict) -> dict:
    """An event as the task gets it: through JSON, as the triggerer stores it."""
    return json.loads(json.dumps(event))


def test_a_success_event_gives_back_the_outcome():
    event = _round_trip(events.success_event(REF, "data", [{"id": 1}], public_key=None))
    assert event["status"] == events.SUCCESS
    outcome = events.outcome_from_event(event)
    assert outcome == events.Outcome("data", [{"id": 1}], REF.topic, REF.request_id, None)


def test_a_gateway_error_event_raises_the_refusal():
    event = _round_trip(events.gateway_error_event(REF, "partner request not found"))
    with pytest.raises(BlockchainGatewayError, match="partner request not found") as info:
        events.outcome_from_event(event)
    assert (info.value.topic, info.value.request_id) == (REF.topic, REF.request_id)
    assert info.value.gateway_text == "partner request not found"


def test_a_timeout_event_says_how_long_the_request_waited():
    event = _round_trip(events.timeout_event(REF, waited=42.25))
    assert event["waited"] == 42.25
    with pytest.raises(BlockchainTimeoutError, match=r"within 42\.2 s of sending it") as info:
        events.outcome_from_event(event)
    assert info.value.timeout == 42.25
    assert info.value.request_id == REF.request_id


def test_a_timeout_event_names_a_late_answer():
    event = _round_trip(events.timeout_event(REF, waited=3.0, late_answer="data"))
    with pytest.raises(BlockchainTimeoutError, match=r"a late answer \(data\) came after it"):
        events.outcome_from_event(event)


def test_a_timeout_event_of_an_earlier_version_still_reads():
    """Before ``waited``: a ``timeout`` field of about 0."""
    event = {"status": "timeout", "topic": REF.topic, "request_id": REF.request_id, "timeout": 0.0}
    with pytest.raises(BlockchainTimeoutError, match="by the deadline") as info:
        events.outcome_from_event(event)
    assert info.value.timeout == 0.0


def test_an_event_of_no_known_status_is_refused():
    with pytest.raises(BlockchainConfigError, match="unknown status 'error'"):
        events.outcome_from_event({"status": "error", "message": "trigger crashed"})


def test_the_hook_reads_events_with_the_contract():
    event = events.success_event(REF, "message", "done")
    assert KafkaBlockchainHook().outcome_from_event(event) == events.outcome_from_event(event)


def test_a_pending_request_gives_its_trigger_the_send_time_and_start_positions():
    pending = PendingRequest(
        topic=REF.topic,
        request_id=REF.request_id,
        response_topic=REF.response_topic,
        start_positions={0: 5, 1: 7},
        deadline=1_000.0,
        by_request_id_only=True,
        sent_at=970.0,
    )
    assert pending.start_offsets == {"0": 5, "1": 7}  # the former name, still read
    trigger = AwaitResponseTrigger(**pending.trigger_kwargs())
    assert (trigger.start_positions, trigger.sent_at) == ({0: 5, 1: 7}, 970.0)
    _classpath, kwargs = trigger.serialize()
    assert AwaitResponseTrigger(**kwargs).serialize()[1] == kwargs


async def _first_event(trigger: AwaitResponseTrigger) -> dict:
    try:
        async for event in trigger.run():
            return event.payload
    finally:
        await trigger.cleanup()
    raise AssertionError("the trigger ended without an event")


@pytest.fixture
def fake_topic(monkeypatch) -> FakeConsumer:
    """The trigger's consumer: a fake ``BLK_Res`` of one partition."""
    consumer = FakeConsumer()
    set_connections(monkeypatch, "127.0.0.1:1", "", "tok-trigger-unit")
    monkeypatch.setattr(KafkaBlockchainHook, "_new_consumer", lambda self, *defaults: consumer)
    return consumer


def test_the_trigger_reports_the_time_waited_since_sending(fake_topic):
    now = time.time()
    trigger = AwaitResponseTrigger(
        topic=REF.topic,
        request_id=REF.request_id,
        response_topic=REF.response_topic,
        start_positions={"0": 0},
        deadline=now - 2,  # past: the wait reads what is there, then gives up
        by_request_id_only=True,
        sent_at=now - 42,
    )
    event = asyncio.run(_first_event(trigger))
    assert event["status"] == events.TIMEOUT
    assert event["waited"] >= 42  # not the ~0 left before the deadline
    with pytest.raises(BlockchainTimeoutError, match=r"within \d+\.\d s of sending it"):
        events.outcome_from_event(event)


def test_the_trigger_yields_the_answer_as_a_success_event(fake_topic):
    request_id = protocol.new_request_id()
    fake_topic.append(0, answer({"data": ["old"]}, token="tok-trigger-unit", request_id=request_id))
    fake_topic.append(0, answer({"data": ["ours"]}, token="tok-trigger-unit", request_id=request_id))
    trigger = AwaitResponseTrigger(
        topic=REF.topic,
        request_id=request_id,
        response_topic=REF.response_topic,
        start_positions={"0": 1},  # the first message is before where the answer is looked for
        deadline=time.time() + 600,
        by_request_id_only=True,
        sent_at=time.time(),
    )
    event = asyncio.run(_first_event(trigger))
    assert event["status"] == events.SUCCESS
    assert events.outcome_from_event(event).value == ["ours"]
    assert "tok-trigger-unit" not in json.dumps(event)


def test_a_batch_event_gives_each_request_what_became_of_it():
    other = events.RequestRef("BLK_Rec_X", protocol.new_request_id(), "BLK_Res")
    third = events.RequestRef("BLK_Rec_X", protocol.new_request_id(), "BLK_Res")
    event = _round_trip(
        events.batch_event(
            "BLK_Res",
            [
                events.success_event(REF, "message", "created"),
                events.gateway_error_event(other, "Value out of range"),
                events.timeout_event(third, waited=3.0),
            ],
            resume={"pending": ["a", "b", "c"]},
        )
    )
    assert event["resume"] == {"pending": ["a", "b", "c"]}
    created, refused, silent = events.outcomes_from_batch(event)
    assert created == events.Outcome("message", "created", REF.topic, REF.request_id, None)
    assert isinstance(refused, BlockchainGatewayError) and refused.request_id == other.request_id
    assert isinstance(silent, BlockchainTimeoutError) and silent.request_id == third.request_id


def test_a_single_event_is_not_a_batch():
    with pytest.raises(BlockchainConfigError, match="Expected a batch of answers"):
        events.outcomes_from_batch(events.success_event(REF, "message", "done"))


def _batch(request_ids: list[str], *, deadline: float, echo: bool = True) -> AwaitResponsesTrigger:
    return AwaitResponsesTrigger(
        requests=[{"topic": "BLK_Rec_X", "request_id": rid, "expect": None} for rid in request_ids],
        response_topic="BLK_Res",
        start_positions={"0": 0},
        deadline=deadline,
        by_request_id_only=echo,
        sent_at=time.time(),
        resume={"pending": ["first", "second"][: len(request_ids)]},
    )


def test_the_batch_trigger_orders_the_answers_as_the_requests_were_sent(fake_topic):
    first, second = protocol.new_request_id(), protocol.new_request_id()
    fake_topic.append(0, answer({"message": "two"}, token="tok-trigger-unit", request_id=second))
    fake_topic.append(
        0, answer({"message": "stranger"}, token="tok-trigger-unit", request_id=protocol.new_request_id())
    )
    fake_topic.append(0, answer({"message": "one"}, token="tok-trigger-unit", request_id=first))
    trigger = _batch([first, second], deadline=time.time() + 600)
    assert AwaitResponsesTrigger(**trigger.serialize()[1]).serialize() == trigger.serialize()
    event = asyncio.run(_first_event(trigger))
    assert event["status"] == events.BATCH and event["resume"] == {"pending": ["first", "second"]}
    assert [o.value for o in events.outcomes_from_batch(event)] == ["one", "two"]
    assert "tok-trigger-unit" not in json.dumps(event)


def test_the_batch_trigger_reports_the_unanswered_as_timeouts(fake_topic):
    first, second = protocol.new_request_id(), protocol.new_request_id()
    fake_topic.append(
        0, answer({"error": "bad tok-trigger-unit"}, token="tok-trigger-unit", request_id=first)
    )
    event = asyncio.run(_first_event(_batch([first, second], deadline=time.time() - 1)))
    refused, silent = events.outcomes_from_batch(event)
    assert isinstance(refused, BlockchainGatewayError) and refused.gateway_text == "bad ***"
    assert isinstance(silent, BlockchainTimeoutError) and silent.request_id == second


def test_requests_awaited_together_need_echo():
    with pytest.raises(BlockchainConfigError, match="2 requests awaited together need request_id echo"):
        _batch([protocol.new_request_id(), protocol.new_request_id()], deadline=0, echo=False)
    with pytest.raises(BlockchainConfigError, match="names a request twice"):
        rid = protocol.new_request_id()
        _batch([rid, rid], deadline=0)
