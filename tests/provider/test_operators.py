"""The BLK operators, blocking and deferred, against a real broker and a scripted gateway."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from airflow.sdk.exceptions import TaskDeferred

from blockchain_provider.exceptions import (
    BlockchainConfigError,
    BlockchainGatewayError,
    BlockchainTimeoutError,
    InvalidIdentifierError,
)
from blockchain_provider.operators import (
    AnswerOrderRequestOperator,
    AnswerPartnerRequestOperator,
    CreateRecordOperator,
    EnsureRecordTypeOperator,
    ListOrderRequestsOperator,
    ListPartnerRequestsOperator,
    UpdateRecordOperator,
)
from blockchain_provider.triggers.await_response import AwaitResponseTrigger
from tests.provider.conftest import set_connections
from tests.provider.responder import ScriptedResponder
from tests.provider.test_hook import PID, RT, Ledger, paging_handler, partner

PROPS = [
    {"name": "Status", "data_type": "STRING", "dynamic": True},
    {"name": "Code", "data_type": "STRING", "dynamic": False},
]
REPORTER_CONN = {"conn_type": "blockchain_token", "password": RT}


def run_deferred(operator, context=None):
    """Run *operator* as the triggerer would: execute, run each trigger to its event, resume."""
    context = context or {}
    try:
        return operator.execute(context)
    except TaskDeferred as deferred:
        current = deferred
    while True:
        trigger = current.trigger
        classpath, kwargs = trigger.serialize()
        assert classpath == "blockchain_provider.triggers.await_response.AwaitResponseTrigger"
        json.dumps(kwargs)  # only primitives cross the database
        revived = AwaitResponseTrigger(**kwargs)
        event = asyncio.run(_first_event(revived))
        try:
            return getattr(operator, current.method_name)(
                context, event=event.payload, **(current.kwargs or {})
            )
        except TaskDeferred as deferred:
            current = deferred


async def _first_event(trigger):
    try:
        async for event in trigger.run():
            return event
    finally:
        await trigger.cleanup()


@pytest.mark.broker
@pytest.mark.parametrize("deferrable", [False, True])
def test_every_operator(gateway_env, deferrable, monkeypatch):
    gateway = Ledger()
    ops = dict(deferrable=deferrable)
    # the reporter's own token connection, with the master's topics
    master = json.loads(__import__("os").environ["AIRFLOW_CONN_BLOCKCHAIN_MASTER"])
    monkeypatch.setenv("AIRFLOW_CONN_UNIT_REPORTER", json.dumps({**REPORTER_CONN, "extra": master["extra"]}))
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, gateway):
        partners = run_deferred(ListPartnerRequestsOperator(task_id="lp", page_size=1, **ops))
        assert partners == [partner(1), partner(2, "ACCEPTED")]
        summary = run_deferred(ListPartnerRequestsOperator(task_id="lps", summary=True, **ops))
        assert summary == {"count": 2, "by_status": {"OPEN": 1, "ACCEPTED": 1}}
        assert len(run_deferred(ListOrderRequestsOperator(task_id="lo", **ops))) == 1
        answer = AnswerPartnerRequestOperator(task_id="ap", request_id=PID, decision="accept", **ops)
        assert run_deferred(answer) == f"{PID} ACCEPTED"
        answer = AnswerOrderRequestOperator(task_id="ao", request_id=PID, decision="reject", **ops)
        assert run_deferred(answer) == f"{PID} REJECTED"
        ensure = EnsureRecordTypeOperator(
            task_id="rt", name="ProductionUnit", description="Units", properties=PROPS, **ops
        )
        assert run_deferred(ensure) == "record type created"
        assert gateway.record_types["ProductionUnit"] == {
            "name": "ProductionUnit",
            "description": "Units",
            "properties": PROPS,
        }
        create = CreateRecordOperator(
            task_id="c",
            record_id="PU_PT10",
            record_type="ProductionUnit",
            description="Unit PT10",
            properties={"Code": "PT10"},
            **ops,
        )
        assert run_deferred(create) == "record created"
        gateway.records["PU_PT10"]["reporters"] = ["reporter"]
        update = UpdateRecordOperator(
            task_id="u",
            record_type="ProductionUnit",
            record_id="PU_PT10",
            properties={"Status": "RUN"},
            token_conn_id="unit_reporter",
            **ops,
        )
        assert run_deferred(update) == "record updated"
        as_master = UpdateRecordOperator(
            task_id="m", record_type="ProductionUnit", record_id="PU_PT10", properties={"Status": "X"}, **ops
        )
        with pytest.raises(BlockchainGatewayError, match="only the reporter"):
            run_deferred(as_master)
    assert gateway.records["PU_PT10"]["properties"] == {"Code": "PT10", "Status": "RUN"}


@pytest.mark.broker
def test_deferred_list_walks_three_pages(gateway_env):
    items = [partner(i) for i in range(250)]
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, paging_handler(items)) as responder:
        result = run_deferred(ListPartnerRequestsOperator(task_id="lp", page_size=100, deferrable=True))
    assert result == items
    assert [s.header["start"] for s in responder.seen] == [0, 100, 200, 250]


@pytest.mark.broker
def test_list_operator_reads_capped_pages_to_the_empty_one(gateway_env):
    items = [partner(i) for i in range(7)]

    def capped(topic, header, body):
        return {"data": items[header["start"] : header["start"] + min(header["limit"], 5)]}

    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, capped) as responder:
        assert run_deferred(ListPartnerRequestsOperator(task_id="lp", page_size=100)) == items
    assert [s.header["start"] for s in responder.seen] == [0, 5, 7]


@pytest.mark.broker
@pytest.mark.parametrize("deferrable", [False, True])
def test_gateway_refusal_fails_the_task(gateway_env, deferrable):
    def refuse(topic, header, body):
        return {"error": f"partner request {body['id']} is already ACCEPTED"}

    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, refuse):
        op = AnswerPartnerRequestOperator(task_id="ap", request_id=PID, decision=True, deferrable=deferrable)
        with pytest.raises(BlockchainGatewayError, match="already ACCEPTED"):
            run_deferred(op)


@pytest.mark.broker
def test_deferred_wait_times_out(gateway_env, monkeypatch):
    set_connections(
        monkeypatch,
        gateway_env.bootstrap,
        gateway_env.prefix,
        gateway_env.token,
        timeout=1,
        late_answer_grace=1,  # the trigger waits this long for a late answer after the deadline
    )
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, lambda *a: None):
        with pytest.raises(BlockchainTimeoutError, match="BLK_Part_Lst"):
            run_deferred(ListPartnerRequestsOperator(task_id="lp", deferrable=True))


@pytest.mark.broker
def test_deferred_echo_mode_skips_noise(gateway_env, monkeypatch):
    set_connections(
        monkeypatch, gateway_env.bootstrap, gateway_env.prefix, gateway_env.token, echo_request_id=True
    )

    def noise(producer, topic, header):
        # the right token but no request id, then garbage: neither answers an echoing request
        producer.produce(topic, json.dumps([{"auth": header["auth"]}, {"data": ["stale"]}]).encode())
        producer.produce(topic, b"\x00garbage")

    with ScriptedResponder(
        gateway_env.bootstrap, gateway_env.prefix, paging_handler([partner(3)]), echo=True, before=noise
    ):
        assert run_deferred(ListPartnerRequestsOperator(task_id="lp", deferrable=True)) == [partner(3)]


def test_arguments_are_checked_when_the_dag_is_parsed():
    with pytest.raises(InvalidIdentifierError, match="partner request id"):
        AnswerPartnerRequestOperator(task_id="x", request_id="nope", decision="accept")
    with pytest.raises(BlockchainConfigError, match="decision"):
        AnswerOrderRequestOperator(task_id="x", request_id=PID, decision="maybe")
    with pytest.raises(InvalidIdentifierError, match="limit"):
        ListOrderRequestsOperator(task_id="x", page_size=0)
    with pytest.raises(InvalidIdentifierError, match="data_type"):
        EnsureRecordTypeOperator(
            task_id="x", name="T", description="d", properties=[{"name": "a", "data_type": "X"}]
        )
    with pytest.raises(InvalidIdentifierError, match="cannot name a topic"):
        UpdateRecordOperator(task_id="x", record_type="Get", record_id="R", properties={"a": 1})
    # templates are checked after rendering, in execute
    AnswerPartnerRequestOperator(task_id="x", request_id="{{ params.id }}", decision="{{ params.decision }}")


def test_trigger_serialises_only_primitives():
    trigger = AwaitResponseTrigger(
        topic="BLK_Part_Lst",
        request_id=PID,
        response_topic="BLK_Res",
        start_offsets={"0": 12},
        deadline=123.5,
        by_request_id_only=False,
    )
    classpath, kwargs = trigger.serialize()
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert AwaitResponseTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert set(kwargs) >= {"topic", "request_id", "token_conn_id", "start_positions", "deadline", "sent_at"}


def test_a_trigger_serialised_by_an_earlier_version_still_loads():
    """Before ``sent_at`` and ``start_positions``: ``start_offsets`` and no send time."""
    earlier = {
        "topic": "BLK_Part_Lst",
        "request_id": PID,
        "response_topic": "BLK_Res",
        "start_offsets": {"0": 12, "1": 3},
        "deadline": 123.5,
        "by_request_id_only": False,
        "token_conn_id": "blockchain_master",
        "kafka_config_id": "kafka_default",
        "poll_timeout": 0.2,
        "expect": None,
        "late_answer_grace": 0.0,
    }
    trigger = AwaitResponseTrigger(**earlier)
    assert trigger.start_positions == {0: 12, 1: 3}
    assert trigger.sent_at is None
    _classpath, kwargs = trigger.serialize()
    assert kwargs["start_positions"] == {"0": 12, "1": 3}
    assert "start_offsets" not in kwargs


@pytest.mark.broker
def test_a_trigger_started_after_its_deadline_still_finds_the_answer_already_there(gateway_env):
    """A triggerer that picks a wait up late (load, restart) reads what is on the topic first."""
    from blockchain_provider import protocol
    from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook
    from tests.faults.test_silent_gateway import trigger_kwargs
    from tests.provider.responder import wait_until

    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, Ledger()) as responder:
        with KafkaBlockchainHook(timeout=1) as hook:
            pending = hook.send(protocol.list_call(protocol.PARTNER_LIST, 0, 10))
        wait_until(lambda: len(responder.seen) == 1)
        wait_until(lambda: time.time() > pending.deadline + 0.5, timeout=5)
        event = asyncio.run(_first_event(AwaitResponseTrigger(**trigger_kwargs(pending))))
    assert event.payload["status"] == "success", event.payload
    assert event.payload["value"] == [partner(1), partner(2, "ACCEPTED")]
