"""The BLK operators, blocking and deferred, against a real broker and a scripted gateway."""

from __future__ import annotations

import asyncio
import json

import pytest
from airflow.sdk.exceptions import TaskDeferred

from blockchain_provider.exceptions import (
    BlockchainConfigError,
    BlockchainGatewayError,
    BlockchainTimeoutError,
    InvalidIdentifierError,
)
from blockchain_provider.operators import (
    AddReporterOperator,
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
from tests.provider.test_hook import ERP, PID, Ledger, paging_handler, partner

PROPS = [
    {"name": "Status", "data_type": "STRING", "dynamic": True},
    {"name": "Code", "data_type": "STRING", "dynamic": False},
]


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
def test_every_operator(gateway_env, deferrable):
    gateway = Ledger()
    ops = dict(deferrable=deferrable)
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
        ensure = EnsureRecordTypeOperator(task_id="rt", name="ProductionUnit", properties=PROPS, **ops)
        assert run_deferred(ensure) == {"name": "ProductionUnit", "properties": PROPS}
        assert gateway.record_types["ProductionUnit"]["properties"] == PROPS
        again = EnsureRecordTypeOperator(task_id="rt2", name="ProductionUnit", properties=PROPS, **ops)
        assert run_deferred(again)["name"] == "ProductionUnit"
        create = CreateRecordOperator(
            task_id="c",
            record_id="PU_PT10",
            record_type="ProductionUnit",
            properties={"Status": "IDLE"},
            **ops,
        )
        assert run_deferred(create) == "record created"
        update = UpdateRecordOperator(task_id="u", record_id="PU_PT10", properties={"Status": "RUN"}, **ops)
        assert run_deferred(update) == "record updated"
        add = AddReporterOperator(task_id="a", record_id="PU_PT10", reporter=ERP, **ops)
        assert run_deferred(add) == "reporter added"
    assert gateway.records["PU_PT10"]["properties"] == {"Status": "RUN"}
    assert gateway.records["PU_PT10"]["reporters"] == [ERP]


@pytest.mark.broker
def test_deferred_list_walks_three_pages(gateway_env):
    items = [partner(i) for i in range(250)]
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, paging_handler(items)) as responder:
        result = run_deferred(ListPartnerRequestsOperator(task_id="lp", page_size=100, deferrable=True))
    assert result == items
    assert [s.header["start"] for s in responder.seen] == [0, 100, 200]


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
    with pytest.raises(InvalidIdentifierError, match="reporter public key"):
        AddReporterOperator(task_id="x", record_id="R", reporter="05")
    with pytest.raises(InvalidIdentifierError, match="data_type"):
        EnsureRecordTypeOperator(task_id="x", name="T", properties=[{"name": "a", "data_type": "X"}])
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
    assert set(kwargs) >= {"topic", "request_id", "token_conn_id", "start_offsets", "deadline"}
