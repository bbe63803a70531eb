"""Answers on the shared BLK_Res that are not ours: forged, misfit, or late."""

from __future__ import annotations

import threading
import time

import pytest

from blockchain_provider import protocol
from blockchain_provider.exceptions import BlockchainTimeoutError
from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook
from local_services.responder import ScriptedResponder, encode
from tests.provider.conftest import MES_PUBKEY, GatewayEnv
from tests.provider.environments import reconnect

pytestmark = pytest.mark.broker

PID = "9df8888dea6df991f86e0e61b2379e46"
ERP = "025e451e2caf44821d0fb262c1cfd2e8c02fb37c989adf548aede227283126d5cb"


def test_an_echoed_answer_with_another_token_is_not_taken(gateway_env, monkeypatch):
    reconnect(monkeypatch, gateway_env, echo_request_id=True)

    def forge(producer, topic, header):
        forged = [{"auth": "someone-else", "request_id": header["request_id"]}, {"message": "forged"}]
        producer.produce(topic, encode(forged, "json"))
        producer.flush(5)

    def handler(topic, header, body):
        return {"message": "genuine"}

    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, handler, echo=True, before=forge):
        with KafkaBlockchainHook(timeout=10) as hook:
            assert hook.answer_partner_request(PID, True) == "genuine"
            assert hook._reader.forged == 1


def test_an_answer_that_does_not_fit_the_call_is_not_taken(gateway_env, monkeypatch):
    """A write is answered by a message, a list by data: a forged answer of the other kind,
    even with our token and request id, is set aside."""
    reconnect(monkeypatch, gateway_env, echo_request_id=True)

    def forge(producer, topic, header):
        rid = header["request_id"]
        misfit = {"data": [{"x": 1}]} if "start" not in header else {"message": "done"}
        producer.produce(topic, encode([{"auth": header["auth"], "request_id": rid}, misfit], "json"))
        producer.flush(5)

    def handler(topic, header, body):
        return {"data": []} if topic == "BLK_Part_Lst" else {"message": "genuine"}

    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, handler, echo=True, before=forge):
        with KafkaBlockchainHook(timeout=10) as hook:
            assert hook.answer_partner_request(PID, False) == "genuine"
            assert hook.list_partner_requests() == []
            assert hook._reader.forged == 2


def test_without_echo_a_misfit_answer_with_our_token_is_not_taken(gateway_env):
    def forge(producer, topic, header):
        producer.produce(topic, encode([{"auth": header["auth"]}, {"data": []}], "json"))
        producer.flush(5)

    def handler(topic, header, body):
        return {"message": "genuine"}

    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, handler, before=forge):
        with KafkaBlockchainHook(timeout=10) as hook:
            assert hook.answer_order_request(PID, True) == "genuine"


def test_an_agent_answer_about_another_public_key_is_not_taken(gateway_env):
    def forge(producer, topic, header):
        rid = header["request_id"]
        forged = [
            {"auth": "forged-token", "public_key": ERP, "request_id": rid},
            {"data": {"token": "forged-token"}},
        ]
        producer.produce(topic, encode(forged, "json"))
        # the right key, but no token in its data
        odd = [{"auth": MES_PUBKEY, "public_key": MES_PUBKEY, "request_id": rid}, {"data": {"tok": "tok-b"}}]
        producer.produce(topic, encode(odd, "json"))
        producer.flush(5)

    def handler(topic, header, body):
        return {"_auth": "agent-token-2", "data": {"token": "agent-token-2"}}

    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, handler, before=forge):
        with KafkaBlockchainHook(timeout=10) as hook:
            assert hook.get_token() == "agent-token-2"
            assert hook._reader.forged == 2


def test_expectations_of_each_call():
    assert protocol.expectation(protocol.list_call(protocol.PARTNER_LIST, 0, 10)).kinds == ("data",)
    assert protocol.expectation(protocol.answer_call(protocol.ORDER_ANSWER, PID, True)).kinds == ("message",)
    assert protocol.expectation(protocol.record_type_get_call("X")).kinds == ("data",)
    assert protocol.expectation(protocol.record_get_call("R1")).kinds == ("data",)
    assert protocol.expectation(
        protocol.record_type_create_call(
            "X", "Units", [{"name": "a", "data_type": "NUMBER", "dynamic": True}]
        )
    ).kinds == ("message",)
    assert protocol.expectation(protocol.record_create_call("R1", "X", "Unit 1", {"a": 1})).kinds == (
        "message",
    )
    dynamic = protocol.record_create_call("R1", "X", "Unit 1", {"a": 1}, dynamic=True, password="p" * 16)
    assert set(protocol.expectation(dynamic).kinds) == {"data", "message"}
    assert protocol.expectation(protocol.record_update_call("X", "R1", {"a": 2})).kinds == ("message",)
    create_agent = protocol.expectation(protocol.agent_create_call("ERP", "p" * 16))
    assert (create_agent.agent, create_agent.public_key) == (True, None)
    token_call = protocol.expectation(protocol.agent_token_call(MES_PUBKEY, "pw"))
    assert (token_call.agent, token_call.public_key) == (True, MES_PUBKEY)


def answering_late(gateway_env: GatewayEnv, seconds: float) -> ScriptedResponder:
    """A gateway that lets each request time out and answers it *seconds* after reading it."""
    responder: ScriptedResponder

    def handler(topic, header, body):
        late = encode([{"auth": header["auth"]}, {"data": ["late"]}], "json")
        threading.Timer(seconds, responder.write, (late,)).start()
        return None

    responder = ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, handler)
    return responder


def test_a_late_answer_is_not_taken_by_the_next_request_of_the_token(gateway_env, monkeypatch):
    """Without echo, the answer to a request that timed out arrives while the next request of
    the same token waits: the next request must get its own answer, not the late one."""
    reconnect(monkeypatch, gateway_env, late_answer_grace=20)
    calls = []
    late_written = threading.Event()
    responder: ScriptedResponder

    def write_late(value):
        responder.write(value)
        late_written.set()

    def handler(topic, header, body):
        calls.append(header)
        if len(calls) == 1:
            late = encode([{"auth": header["auth"]}, {"data": ["late answer"]}], "json")
            threading.Timer(2.5, write_late, (late,)).start()
            return None
        late_written.wait(10)  # the late answer reaches BLK_Res before this one
        return {"data": ["own answer"]}

    responder = ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, handler)
    with responder, KafkaBlockchainHook(timeout=1.5) as hook:
        with pytest.raises(BlockchainTimeoutError):
            hook.list_partner_requests()
        second = KafkaBlockchainHook(timeout=10)
        try:
            assert second.list_partner_requests() == ["own answer"]
        finally:
            second.close()
        assert hook._reader.late == 1


def test_a_late_answer_that_never_comes_blocks_the_token_for_the_grace_period(gateway_env, monkeypatch):
    reconnect(monkeypatch, gateway_env, late_answer_grace=2)
    calls = []

    def handler(topic, header, body):
        calls.append(header)
        return None if len(calls) == 1 else {"data": []}

    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, handler) as responder:
        with KafkaBlockchainHook(timeout=1) as hook:
            called_at = time.time()
            with pytest.raises(BlockchainTimeoutError):
                hook.list_partner_requests()
            with KafkaBlockchainHook(timeout=10) as second_hook:
                assert second_hook.list_partner_requests() == []
        _first, second = responder.seen
    # the second request left only once the grace period after the first's timeout was over:
    # timed from before the first call, which a loaded machine can only make look longer
    assert second.sent_at - called_at >= 1 + 2 - 0.5


def test_the_day_report_marks_nothing_on_a_forged_or_missing_answer(gateway_env, monkeypatch, tmp_path):
    import datetime
    import json

    from include.day_report_keys import DAY_REPORT_RECORD_TYPE
    from include.mes.db import engine_from_url
    from include.mes.repository import MesRepository
    from include.sample_data import generate_plant
    from tests.operator_runs import dag_task, run_operator

    reconnect(monkeypatch, gateway_env, echo_request_id=True, timeout=3, late_answer_grace=0)
    mes_path = tmp_path / "mes.sqlite3"
    monkeypatch.setenv("AIRFLOW_CONN_MES_DB", json.dumps({"conn_type": "sqlite", "host": str(mes_path)}))
    repository = MesRepository(engine_from_url(f"sqlite:///{mes_path}"))
    day = datetime.date(2021, 1, 4)
    generate_plant(repository.engine, units=1, weeks=1, end_date=day)
    (report,) = repository.day_reports(day)

    seen = []

    def handler(topic, header, body):
        # the gateway never answers; a neighbour answers every request with our token and request
        # id, but with data where a write takes a message
        assert topic == f"BLK_Rec_{DAY_REPORT_RECORD_TYPE}"
        seen.append(body["record_id"])
        forged = [{"auth": header["auth"], "request_id": header["request_id"]}, {"data": "ok"}]
        responder.write(encode(forged, "json"))
        return None

    # the day report DAG's task for this unit, as a worker runs its map index
    send = dag_task(
        "blockchain_day_report",
        "send_unit_report",
        {"records_kwargs": {"report_id": report.report_id, "unit": report.unit_code, "day": day.isoformat()}},
    )
    readers = []
    close = send.hook.close

    def keep_reader():
        readers.append(send.hook._reader)
        close()

    monkeypatch.setattr(send.hook, "close", keep_reader)
    responder = ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, handler, echo=True)
    with responder, pytest.raises(BlockchainTimeoutError):
        run_operator(send)
    assert readers[0].forged >= 1
    assert seen
    assert repository.submitted_record_ids(report.report_id) == set()


def test_the_trigger_takes_no_forged_answer(gateway_env, monkeypatch):
    from blockchain_provider.operators import AnswerPartnerRequestOperator
    from tests.provider.test_operators import run_deferred

    reconnect(monkeypatch, gateway_env, echo_request_id=True)

    def forge(producer, topic, header):
        rid = header["request_id"]
        producer.produce(
            topic, encode([{"auth": "someone-else", "request_id": rid}, {"message": "forged"}], "json")
        )
        producer.produce(topic, encode([{"auth": header["auth"], "request_id": rid}, {"data": []}], "json"))
        producer.flush(5)

    def handler(topic, header, body):
        return {"message": "genuine"}

    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, handler, echo=True, before=forge):
        op = AnswerPartnerRequestOperator(task_id="ap", request_id=PID, decision=True, deferrable=True)
        assert run_deferred(op) == "genuine"


def test_the_trigger_waits_out_a_late_answer_before_giving_up(gateway_env, monkeypatch):
    """Without echo a deferred request that timed out keeps its token (and its pool slot) until
    its late answer comes or the grace period is over."""
    from blockchain_provider.operators import ListPartnerRequestsOperator
    from tests.provider.test_operators import run_deferred

    reconnect(monkeypatch, gateway_env, timeout=1, late_answer_grace=20)
    with answering_late(gateway_env, 2):
        with pytest.raises(BlockchainTimeoutError, match="late answer"):
            run_deferred(ListPartnerRequestsOperator(task_id="lp", deferrable=True))


def test_a_task_that_timed_out_holds_its_token_until_the_grace_period_is_over(gateway_env, monkeypatch):
    """Across processes the token's pool slot is what serialises requests: a task whose request
    timed out keeps it (its hook's close waits) until the late answer comes or the grace passes."""
    reconnect(monkeypatch, gateway_env, late_answer_grace=2)
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, lambda *a: None):
        hook = KafkaBlockchainHook(timeout=1)
        called_at = time.monotonic()  # before the call: a loaded machine can only add to the wait
        with pytest.raises(BlockchainTimeoutError):
            hook.list_partner_requests()
        hook.close()
        assert time.monotonic() - called_at >= 1 + 2 - 0.5


def test_a_late_answer_ends_the_wait_of_close(gateway_env, monkeypatch):
    reconnect(monkeypatch, gateway_env, late_answer_grace=60)
    with answering_late(gateway_env, 2):
        hook = KafkaBlockchainHook(timeout=1)
        with pytest.raises(BlockchainTimeoutError):
            hook.list_partner_requests()
        reader = hook._reader
        hook.close()  # returns when the late answer is read, not after 60 s
    assert reader.late == 1
