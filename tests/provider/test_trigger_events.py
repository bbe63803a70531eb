"""The trigger-event contract: what the trigger yields, as Airflow stores it, and what the task
makes of it. No broker."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

import pytest
from airflow.triggers.base import TriggerEvent

from blockchain_provider import protocol
from blockchain_provider.exceptions import (
    BlockchainConfigError,
    BlockchainGatewayError,
    BlockchainProtocolError,
    BlockchainTimeoutError,
)
from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook
from blockchain_provider.outcomes import REFUSAL_TEXT_LIMIT, AnswerAt
from blockchain_provider.triggers import events
from blockchain_provider.triggers.await_response import AwaitResponsesTrigger
from tests.operator_runs import first_event, stored
from tests.provider.conftest import set_connections
from tests.provider.test_response_reader_unit import FakeConsumer, answer

REF = events.RequestRef("BLK_Part_Lst", "9df8888dea6df991f86e0e61b2379e46")
AT = AnswerAt(REF.topic, REF.request_id, "BLK_Res", 2, 41, "ab" * 32)


def _round_trip(event: dict) -> dict:
    """An event as the task gets it: encoded as the triggerer encodes it, then stored."""
    return stored(TriggerEvent(event))[0]


def test_a_success_names_where_the_answer_is():
    event = _round_trip(events.batch("BLK_Res", [events.success(REF, AT)], resume={"start": 3}))
    resume, (found,) = events.results(event)
    assert resume == {"start": 3}
    assert found == AT


def test_a_gateway_error_raises_the_refusal_bounded_and_encodable():
    text = "partner request not found \ud800\x00 " + "x" * 5000
    event = _round_trip(events.batch("BLK_Res", [events.gateway_error(REF, text)]))
    _resume, (refused,) = events.results(event)
    assert isinstance(refused, BlockchainGatewayError)
    assert (refused.topic, refused.request_id) == (REF.topic, REF.request_id)
    assert refused.gateway_text.startswith("partner request not found \ufffd\ufffd ")
    assert len(refused.gateway_text) == REFUSAL_TEXT_LIMIT


def test_a_timeout_says_how_long_the_request_waited():
    event = _round_trip(events.batch("BLK_Res", [events.timeout(REF, waited=42.25)]))
    _resume, (silent,) = events.results(event)
    assert isinstance(silent, BlockchainTimeoutError)
    assert "within 42.2 s of sending it" in str(silent)
    assert silent.timeout == 42.25 and silent.request_id == REF.request_id


def test_a_timeout_names_a_late_answer():
    event = _round_trip(events.batch("BLK_Res", [events.timeout(REF, waited=3.0, late_answer="data")]))
    _resume, (silent,) = events.results(event)
    assert "a late answer (data) came after it" in str(silent)


@pytest.mark.parametrize(
    "event",
    [None, {"status": "error", "message": "trigger crashed"}, {"status": "success", "value": []}],
)
def test_an_event_of_no_wait_for_answers_is_refused(event):
    with pytest.raises(BlockchainConfigError, match="Expected the answers of a wait"):
        events.results(event)


def test_an_answer_of_no_known_status_is_refused():
    with pytest.raises(BlockchainConfigError, match="unknown status 'error'"):
        events.results(events.batch("BLK_Res", [{"status": "error", **vars(REF)}]))


@pytest.fixture
def fake_topic(monkeypatch) -> FakeConsumer:
    """The trigger's consumer: a fake ``BLK_Res`` of one partition."""
    consumer = FakeConsumer()
    set_connections(monkeypatch, "127.0.0.1:1", "", "tok-trigger-unit")
    monkeypatch.setattr(KafkaBlockchainHook, "new_response_consumer", lambda self, *defaults: consumer)
    return consumer


def _batch(request_ids: list[str], *, deadline: float, echo: bool = True, **kwargs) -> AwaitResponsesTrigger:
    return AwaitResponsesTrigger(
        requests=[{"topic": "BLK_Rec_X", "request_id": rid, "expect": None} for rid in request_ids],
        response_topic="BLK_Res",
        start_positions=kwargs.pop("start_positions", {"0": 0}),
        deadline=deadline,
        by_request_id_only=echo,
        sent_at=kwargs.pop("sent_at", time.time()),
        resume={"pending": ["first", "second"][: len(request_ids)]},
        **kwargs,
    )


def test_the_trigger_reports_the_time_waited_since_sending(fake_topic):
    now = time.time()
    # past: the wait reads what is there, then gives up
    event = asyncio.run(first_event(_batch([REF.request_id], deadline=now - 2, sent_at=now - 42))).payload
    _resume, (silent,) = events.results(event)
    assert isinstance(silent, BlockchainTimeoutError)
    assert silent.timeout >= 42  # not the ~0 left before the deadline


def test_the_trigger_names_where_its_answer_is(fake_topic):
    request_id = protocol.new_request_id()
    fake_topic.append(0, answer({"data": ["old"]}, token="tok-trigger-unit", request_id=request_id))
    ours = answer({"data": ["ours"]}, token="tok-trigger-unit", request_id=request_id)
    fake_topic.append(0, ours)
    # the first message is before where the answer is looked for
    trigger = _batch([request_id], deadline=time.time() + 600, start_positions={"0": 1})
    event = asyncio.run(first_event(trigger)).payload
    _resume, (found,) = events.results(event)
    assert isinstance(found, AnswerAt) and (found.partition, found.offset) == (0, 1)
    assert found.digest == hashlib.sha256(ours).hexdigest()
    assert "ours" not in json.dumps(event) and "tok-trigger-unit" not in json.dumps(event)


def test_a_deferred_page_of_500_items_yields_an_event_under_8_kib(fake_topic):
    request_id = protocol.new_request_id()
    item = {"abs_action_id": "a" * 32, "description": "d" * 1024, "metadata": {"k": "\ud800\x00"}}
    page = json.dumps([{"auth": "tok-trigger-unit", "request_id": request_id}, {"data": [item] * 500}])
    assert len(page) > 500 * 1024
    fake_topic.append(0, page.encode("utf-8", "surrogatepass"))
    trigger = AwaitResponsesTrigger(
        requests=[{"topic": "BLK_Act_Lst", "request_id": request_id, "expect": {"kinds": ["data"]}}],
        response_topic="BLK_Res",
        start_positions={"0": 0},
        deadline=time.time() + 600,
        by_request_id_only=True,
        sent_at=time.time(),
        resume={"state": {"start": 500, "summary": {"count": 500, "by_status": {"OPEN": 500}}}},
    )
    payload, size = stored(asyncio.run(first_event(trigger)))
    assert size < events.MAX_EVENT_BYTES
    _resume, (found,) = events.results(payload)
    assert isinstance(found, AnswerAt)


def test_the_batch_trigger_orders_the_answers_as_the_requests_were_sent(fake_topic):
    first, second = protocol.new_request_id(), protocol.new_request_id()
    fake_topic.append(0, answer({"message": "two"}, token="tok-trigger-unit", request_id=second))
    fake_topic.append(
        0, answer({"message": "stranger"}, token="tok-trigger-unit", request_id=protocol.new_request_id())
    )
    fake_topic.append(0, answer({"message": "one"}, token="tok-trigger-unit", request_id=first))
    trigger = _batch([first, second], deadline=time.time() + 600)
    assert AwaitResponsesTrigger(**trigger.serialize()[1]).serialize() == trigger.serialize()
    event = asyncio.run(first_event(trigger)).payload
    resume, found = events.results(event)
    assert resume == {"pending": ["first", "second"]}
    assert [(a.request_id, a.offset) for a in found] == [(first, 2), (second, 0)]
    assert "tok-trigger-unit" not in json.dumps(event)


def test_the_batch_trigger_reports_the_unanswered_as_timeouts(fake_topic):
    first, second = protocol.new_request_id(), protocol.new_request_id()
    fake_topic.append(
        0, answer({"error": "bad tok-trigger-unit"}, token="tok-trigger-unit", request_id=first)
    )
    event = asyncio.run(first_event(_batch([first, second], deadline=time.time() - 1))).payload
    _resume, (refused, silent) = events.results(event)
    assert isinstance(refused, BlockchainGatewayError) and refused.gateway_text == "bad ***"
    assert isinstance(silent, BlockchainTimeoutError) and silent.request_id == second


def test_requests_awaited_together_need_echo():
    with pytest.raises(BlockchainConfigError, match="2 requests awaited together need request_id echo"):
        _batch([protocol.new_request_id(), protocol.new_request_id()], deadline=0, echo=False)
    with pytest.raises(BlockchainConfigError, match="names a request twice"):
        rid = protocol.new_request_id()
        _batch([rid, rid], deadline=0)


def test_the_resumed_task_reads_back_the_answer_the_trigger_found_and_only_that(fake_topic):
    request_id = protocol.new_request_id()
    value = answer({"data": [{"id": 1}]}, token="tok-trigger-unit", request_id=request_id)
    fake_topic.append(0, value)
    at = AnswerAt("BLK_Part_Lst", request_id, "BLK_Res", 0, 0, hashlib.sha256(value).hexdigest())
    (outcome,) = KafkaBlockchainHook().client.answers_at([at])
    assert (outcome.value, outcome.request_id, outcome.topic) == ([{"id": 1}], request_id, "BLK_Part_Lst")
    # the topic was rewritten (a broker that lost its data): another message at that offset
    other = AnswerAt("BLK_Part_Lst", request_id, "BLK_Res", 0, 0, "0" * 64)
    with pytest.raises(BlockchainProtocolError, match=r"BLK_Res\[0\]@0 is not the answer to request"):
        KafkaBlockchainHook().client.answers_at([other])


def test_a_wait_serialised_with_a_token_source_resumes_with_its_reporter():
    """A wait deferred by version 0.2.0 (token_source and its kwargs) still names its reporter after
    an upgrade; what the trigger serialises now carries the record id only."""
    legacy = _batch(
        [protocol.new_request_id()],
        deadline=time.time() + 60,
        token_source="include.mes.reporter_store.reporter_token",
        token_source_kwargs={"conn_id": "mes_db", "record_id": "PU_PT10"},
    )
    assert legacy.reporter_record_id == "PU_PT10"
    _path, kwargs = legacy.serialize()
    assert kwargs["reporter_record_id"] == "PU_PT10" and "token_source" not in kwargs
    assert _batch([protocol.new_request_id()], deadline=time.time() + 60).reporter_record_id is None
