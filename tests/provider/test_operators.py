"""The BLK operators, blocking and deferred, against a real broker and a scripted gateway."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowTaskTerminated, AirflowTaskTimeout

from blockchain_provider import protocol
from blockchain_provider.exceptions import (
    BlockchainConfigError,
    BlockchainGatewayError,
    BlockchainTimeoutError,
    InvalidIdentifierError,
)
from blockchain_provider.operators import (
    AnswerOrderRequestOperator,
    AnswerPartnerRequestOperator,
    CheckTokenOperator,
    CreateRecordOperator,
    CreateRecordsOperator,
    DynamicRecordUpdate,
    EnsureRecordTypeOperator,
    GetPartnerRequestOperator,
    ListOrderRequestsOperator,
    ListPartnerRequestsOperator,
    QueueBusy,
    UpdateDynamicRecordOperator,
    UpdateRecordOperator,
)
from blockchain_provider.outcomes import AnswerAt, PendingRequest
from blockchain_provider.triggers import events
from blockchain_provider.triggers.await_response import AwaitResponsesTrigger
from local_services.responder import ScriptedResponder
from tests.operator_runs import first_event, run_operator, task_context
from tests.provider.conftest import MES_PUBKEY
from tests.provider.environments import reconnect
from tests.provider.test_hook import ERP, PID, RT, Ledger, paging_handler, partner

PROPS = [
    {"name": "Status", "data_type": "STRING", "dynamic": True},
    {"name": "Code", "data_type": "STRING", "dynamic": False},
]
REPORTER_CONN = {"conn_type": "blockchain_token", "password": RT}


def run_deferred(operator, context=None):
    """Run *operator* as the triggerer would: execute, run each trigger to its event, resume."""
    return run_operator(operator, context)


def collecting():
    """An apply function for a list operator that keeps the items, and the items it kept."""
    items = []

    def keep(page, context):
        items.extend(page)
        return {"kept": len(page)}

    return keep, items


@pytest.mark.broker
@pytest.mark.parametrize("deferrable", [False, True])
def test_every_operator(gateway_env, deferrable, monkeypatch):
    gateway = Ledger()
    ops = dict(deferrable=deferrable)
    # the reporter's own token connection, with the master's topics
    master = json.loads(__import__("os").environ["AIRFLOW_CONN_BLOCKCHAIN_MASTER"])
    monkeypatch.setenv("AIRFLOW_CONN_UNIT_REPORTER", json.dumps({**REPORTER_CONN, "extra": master["extra"]}))
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, gateway):
        keep, partners = collecting()
        summary = run_deferred(
            ListPartnerRequestsOperator(task_id="lp", page_size=1, apply_function_batch=keep, **ops)
        )
        assert partners == [partner(1), partner(2, "ACCEPTED")]
        assert summary == {"count": 2, "by_status": {"OPEN": 1, "ACCEPTED": 1}, "kept": 2}
        assert run_deferred(ListOrderRequestsOperator(task_id="lo", **ops))["count"] == 1
        found = run_deferred(GetPartnerRequestOperator(task_id="gp", request_id=f"{2:032x}", **ops))
        assert found == {"request_id": f"{2:032x}", "status": "ACCEPTED", "issuing_agent": ERP}
        assert run_deferred(CheckTokenOperator(task_id="tc", **ops)) == "accepted"
        answer = AnswerPartnerRequestOperator(task_id="ap", request_id=PID, decision="accept", **ops)
        assert run_deferred(answer) == f"{PID} ACCEPTED"
        answer = AnswerOrderRequestOperator(task_id="ao", request_id=PID, decision="reject", **ops)
        assert run_deferred(answer) == f"{PID} REJECTED"
        ensure = EnsureRecordTypeOperator(
            task_id="rt", name="ProductionUnit", description="Units", properties=PROPS, **ops
        )
        assert run_deferred(ensure) == "record type created"
        # created again identically: confirmed by this gateway; refused by a stricter one, the read
        # finds the same properties and the type is used as it is
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
    keep, kept = collecting()
    resumed = []

    class Recording(ListPartnerRequestsOperator):
        def execute_complete(self, context, event=None, **kwargs):
            assert kwargs == {}  # the state comes back in the trigger's event, nowhere else
            resumed.append(json.dumps(event["resume"]))
            return super().execute_complete(context, event=event)

    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, paging_handler(items)) as responder:
        result = run_deferred(
            Recording(task_id="lp", page_size=100, deferrable=True, apply_function_batch=keep)
        )
    assert kept == items
    assert result == {"count": 250, "by_status": {"OPEN": 250}, "kept": 250}
    # what crosses the database between pages is a position and counts, never the items read
    assert len(resumed) == 4
    assert all(ERP not in state and len(state) < 200 for state in resumed), resumed
    assert [s.header["start"] for s in responder.seen] == [0, 100, 200, 250]


@pytest.mark.broker
def test_list_operator_reads_capped_pages_to_the_empty_one(gateway_env):
    items = [partner(i) for i in range(7)]

    def capped(topic, header, body):
        return {"data": items[header["start"] : header["start"] + min(header["limit"], 5)]}

    keep, kept = collecting()
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, capped) as responder:
        run_deferred(ListPartnerRequestsOperator(task_id="lp", page_size=100, apply_function_batch=keep))
    assert kept == items
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
    reconnect(
        monkeypatch,
        gateway_env,
        timeout=1,
        late_answer_grace=1,  # the trigger waits this long for a late answer after the deadline
    )
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, lambda *a: None):
        with pytest.raises(BlockchainTimeoutError, match="BLK_Part_Lst"):
            run_deferred(ListPartnerRequestsOperator(task_id="lp", deferrable=True))


@pytest.mark.broker
def test_deferred_echo_mode_skips_noise(gateway_env, monkeypatch):
    reconnect(monkeypatch, gateway_env, echo_request_id=True)

    def noise(producer, topic, header):
        # the right token but no request id, then garbage: neither answers an echoing request
        producer.produce(topic, json.dumps([{"auth": header["auth"]}, {"data": ["stale"]}]).encode())
        producer.produce(topic, b"\x00garbage")

    with ScriptedResponder(
        gateway_env.bootstrap, gateway_env.prefix, paging_handler([partner(3)]), echo=True, before=noise
    ):
        keep, kept = collecting()
        run_deferred(ListPartnerRequestsOperator(task_id="lp", deferrable=True, apply_function_batch=keep))
        assert kept == [partner(3)]


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
    pending = PendingRequest(
        topic="BLK_Part_Lst",
        request_id=PID,
        response_topic="BLK_Res",
        start_positions={0: 12, 1: 3},
        deadline=123.5,
        by_request_id_only=False,
        sent_at=100.0,
    )
    trigger = AwaitResponsesTrigger.for_pending([pending], resume={"state": {"start": 0}})
    classpath, kwargs = trigger.serialize()
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert AwaitResponsesTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert kwargs["start_positions"] == {"0": 12, "1": 3}
    assert (kwargs["deadline"], kwargs["sent_at"]) == (123.5, 100.0)
    assert kwargs["requests"] == [
        {"topic": "BLK_Part_Lst", "request_id": PID, "expect": protocol.ANY_ANSWER.to_primitives()}
    ]


@pytest.mark.broker
def test_a_trigger_started_after_its_deadline_still_finds_the_answer_already_there(gateway_env):
    """A triggerer that picks a wait up late (load, restart) reads what is on the topic first."""
    from blockchain_provider import protocol
    from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook
    from local_services.responder import wait_until

    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, Ledger()) as responder:
        with KafkaBlockchainHook(timeout=1) as hook:
            pending = hook.client.send(protocol.list_call(protocol.PARTNER_LIST, 0, 10))
        wait_until(lambda: len(responder.seen) == 1)
        wait_until(lambda: time.time() > pending.deadline + 0.5, timeout=5)
        event = asyncio.run(first_event(AwaitResponsesTrigger.for_pending([pending])))
        _resume, (found,) = events.results(event.payload)
        assert isinstance(found, AnswerAt), found
        (outcome,) = KafkaBlockchainHook().client.answers_at([found])
    assert outcome.value == [partner(1), partner(2, "ACCEPTED")]


class Requests:
    """Partner requests whose answers change their status, as a ledger does."""

    def __init__(self, *statuses: str, receiver: str | None = None):
        self.items = [partner(i + 1, status) for i, status in enumerate(statuses)]
        if receiver is not None:
            for item in self.items:
                item["receiving_agent"] = receiver
        self.answers = 0

    def __call__(self, topic, header, body):
        if topic == "BLK_Part_Lst":
            return {"data": self.items[header["start"] :][: header["limit"]]}
        if topic == "BLK_Part_Ans":
            self.answers += 1
            item = next(i for i in self.items if i["partner_request_id"] == body["id"])
            if item["status"] != "OPEN":
                return {"error": f"partner request {body['id']} is already {item['status']}"}
            item["status"] = "ACCEPTED" if body["response"] else "REJECTED"
            return {"message": f"{body['id']} {item['status']}"}
        raise AssertionError(topic)


@pytest.mark.broker
@pytest.mark.parametrize("deferrable", [False, True])
def test_get_request_checks_what_it_is_asked_and_hands_the_item_over(gateway_env, deferrable):
    gateway = Requests("OPEN", "ACCEPTED", receiver=ERP)
    seen = []
    first, second = f"{1:032x}", f"{2:032x}"
    ops = dict(deferrable=deferrable, page_size=1)
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, gateway):
        op = GetPartnerRequestOperator(
            task_id="g", request_id=second, apply_function=lambda item, ctx: seen.append(item), **ops
        )
        assert run_deferred(op)["status"] == "ACCEPTED"
        assert seen == [gateway.items[1]]
        with pytest.raises(AirflowFailException, match=f"{second} is ACCEPTED, not OPEN"):
            run_deferred(
                GetPartnerRequestOperator(task_id="g", request_id=second, expected_status="OPEN", **ops)
            )
        with pytest.raises(AirflowFailException, match=f"{first} is addressed to {ERP}, not to this MES"):
            run_deferred(
                GetPartnerRequestOperator(task_id="g", request_id=first, addressed_to_us=True, **ops)
            )
        with pytest.raises(AirflowFailException, match=f"{3:032x} does not exist on the ledger"):
            run_deferred(GetPartnerRequestOperator(task_id="g", request_id=f"{3:032x}", **ops))


@pytest.mark.broker
@pytest.mark.parametrize("deferrable", [False, True])
def test_a_retried_answer_reads_the_status_before_sending(gateway_env, deferrable):
    gateway = Requests("ACCEPTED", "OPEN", "REJECTED")
    first, second, third = (f"{i:032x}" for i in (1, 2, 3))
    retry = task_context(try_number=2)
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, gateway):
        # our decision is already there (the earlier try was applied, its answer lost): done
        accept = AnswerPartnerRequestOperator(
            task_id="a", request_id=first, decision="accept", deferrable=deferrable
        )
        assert run_deferred(accept, retry) == f"{first} already ACCEPTED (applied by an earlier try)"
        assert gateway.answers == 0
        # still OPEN: sent again
        reject = AnswerPartnerRequestOperator(
            task_id="a", request_id=second, decision="reject", deferrable=deferrable
        )
        assert run_deferred(reject, retry) == f"{second} REJECTED"
        assert gateway.answers == 1
        # another decision there: failed with the reason, nothing sent
        accept = AnswerPartnerRequestOperator(
            task_id="a", request_id=third, decision="accept", deferrable=deferrable
        )
        with pytest.raises(AirflowFailException, match=f"{third} is REJECTED, not OPEN: cannot accept it"):
            run_deferred(accept, retry)
        assert gateway.answers == 1
        # a first try does not read: the gateway's refusal is the answer
        with pytest.raises(BlockchainGatewayError, match="already REJECTED"):
            run_deferred(accept)
        assert gateway.answers == 2


class StrictRecordTypes(Ledger):
    """A gateway that refuses to create a record type that exists, whoever asks."""

    def __init__(self, existing=None, readable=True):
        super().__init__()
        self.record_types.update(existing or {})
        self.readable = readable

    def __call__(self, topic, header, body):
        if topic == "BLK_Rty" and body["name"] in self.record_types:
            return {"error": f"record type {body['name']} already exists"}
        if topic == "BLK_Rty_Get" and not self.readable:
            return None  # an original gateway: no read, no answer
        return super().__call__(topic, header, body)


@pytest.mark.broker
@pytest.mark.parametrize("deferrable", [False, True])
def test_ensure_record_type_uses_one_declared_alike_and_refuses_another(gateway_env, deferrable, monkeypatch):
    # a gateway that answers reads (the connection says so): a refused type is read and compared
    reconnect(monkeypatch, gateway_env, timeout=2, late_answer_grace=0, reads=True)
    theirs = {"name": "ProductionUnit", "description": "other words", "creator": ERP}

    def ensure():
        return EnsureRecordTypeOperator(
            task_id="rt", name="ProductionUnit", description="Units", properties=PROPS, deferrable=deferrable
        )

    alike = StrictRecordTypes({"ProductionUnit": {**theirs, "properties": PROPS}})
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, alike):
        assert run_deferred(ensure()) == "ProductionUnit exists with the same properties"
    other = StrictRecordTypes({"ProductionUnit": {**theirs, "properties": PROPS[:1]}})
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, other):
        with pytest.raises(BlockchainConfigError, match=f"already declared on the ledger by agent {ERP}"):
            run_deferred(ensure())
    unreadable = StrictRecordTypes({"ProductionUnit": {**theirs, "properties": PROPS}}, readable=False)
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, unreadable):
        with pytest.raises(BlockchainGatewayError, match="record type ProductionUnit already exists"):
            run_deferred(ensure())


class RecordTypeMemory:
    """The MES's memory of the record types it created, per gateway, in a dict."""

    def __init__(self, known=()):
        self.known = set(known)

    def created(self, gateway, name):
        return (gateway, name) in self.known

    def remember(self, gateway, name):
        self.known.add((gateway, name))


class CountingStrictTypes(StrictRecordTypes):
    """A strict gateway (no reads) that counts each topic's requests."""

    def __init__(self, existing=None):
        super().__init__(existing, readable=False)
        self.sent = []

    def __call__(self, topic, header, body):
        self.sent.append(topic)
        return super().__call__(topic, header, body)


@pytest.mark.broker
@pytest.mark.parametrize("deferrable", [False, True])
def test_a_record_type_is_created_once_per_gateway(gateway_env, deferrable, capsys):
    def ensure(memory):
        return EnsureRecordTypeOperator(
            task_id="rt",
            name="ProductionUnit",
            description="Units",
            properties=PROPS,
            record_types=lambda: memory,
            deferrable=deferrable,
        )

    memory = RecordTypeMemory()
    gateway = CountingStrictTypes()
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, gateway):
        assert run_deferred(ensure(memory)) == "record type created"
        assert run_deferred(ensure(memory)) == "ProductionUnit created earlier"
    # the second run sent nothing: the gateway, which refuses a second creation, never saw one
    assert gateway.sent == ["BLK_Rty"]
    ((gateway_id, name),) = memory.known
    assert name == "ProductionUnit" and gateway_id.endswith("|" + MES_PUBKEY)
    assert gateway_id.startswith(",".join(sorted(gateway_env.bootstrap.split(","))))

    # a restored MES database: the type exists on the ledger, the MES does not know it
    forgotten = RecordTypeMemory()
    gateway = CountingStrictTypes({"ProductionUnit": {"name": "ProductionUnit", "properties": PROPS}})
    operator = ensure(forgotten)
    capsys.readouterr()
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, gateway):
        result = run_deferred(operator)
    assert result.startswith("ProductionUnit exists (refused as a new type")
    # no read was asked (reads are off by default), and the type is remembered
    assert gateway.sent == ["BLK_Rty"]
    assert forgotten.known == memory.known
    assert "taken as existing and remembered" in capsys.readouterr().out


@pytest.mark.broker
@pytest.mark.parametrize("deferrable", [False, True])
def test_a_refused_token_fails_the_check_without_retries(gateway_env, deferrable):
    def refuse(topic, header, body):
        return {"error": "invalid token"}

    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, refuse):
        with pytest.raises(AirflowFailException, match="refused the token of connection blockchain_master"):
            run_deferred(CheckTokenOperator(task_id="t", deferrable=deferrable))


@pytest.mark.broker
def test_create_records_writes_what_is_missing_and_reports_it(gateway_env):
    gateway = Ledger()
    noted = []

    def records(context, unit):
        return [
            {"record_id": f"{unit}_{n}", "description": f"indicator {n}", "properties": {"Code": str(n)}}
            for n in range(3)
        ], 25

    op = CreateRecordsOperator(
        task_id="c",
        record_type="ProductionUnit",
        records=records,
        on_written=lambda ids, context, unit: noted.append((unit, ids)),
        records_kwargs={"unit": "PT10"},
    )
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, gateway):
        assert run_deferred(op) == {"written": 3, "already_done": 25}
    assert noted == [("PT10", ["PT10_0", "PT10_1", "PT10_2"])]
    assert set(gateway.records) == {"PT10_0", "PT10_1", "PT10_2"}


BATCH_TRIGGER = "blockchain_provider.triggers.await_response.AwaitResponsesTrigger"
SERIAL_TRIGGER = "blockchain_provider.triggers.serial_requests.SerialRequestsTrigger"


def three_records(context, unit):
    return [
        {"record_id": f"{unit}_{n}", "description": f"indicator {n}", "properties": {"Code": str(n)}}
        for n in range(3)
    ]


def slowly(handler, seconds):
    """*handler*, answering each request *seconds* late."""

    def answer(topic, header, body):
        time.sleep(seconds)
        return handler(topic, header, body)

    return answer


@pytest.mark.broker
@pytest.mark.parametrize("echo", [True, False])
def test_deferred_create_records_awaits_slow_answers_in_the_triggerer(gateway_env, monkeypatch, echo):
    reconnect(monkeypatch, gateway_env, echo_request_id=echo)
    gateway, noted, triggers = Ledger(), [], []
    op = CreateRecordsOperator(
        task_id="c",
        record_type="ProductionUnit",
        records=three_records,
        on_written=lambda ids, context, unit: noted.extend(ids),
        records_kwargs={"unit": "PT10"},
        deferrable=True,
        defer_after=0,
    )
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, slowly(gateway, 0.2), echo=echo):
        assert run_operator(op, triggers=triggers) == {"written": 3, "already_done": 0}
    assert noted == ["PT10_0", "PT10_1", "PT10_2"]
    assert set(gateway.records) == set(noted)
    # with echo, one wait for the whole batch; without, one conversation in the triggerer that
    # sends one request of the token at a time: one deferral either way
    assert [classpath for classpath, _ in triggers] == [BATCH_TRIGGER if echo else SERIAL_TRIGGER]
    assert [len(kwargs["requests" if echo else "calls"]) for _, kwargs in triggers] == [3]
    assert all(gateway_env.token not in json.dumps(kwargs) for _, kwargs in triggers)


@pytest.mark.broker
def test_deferred_create_records_takes_prompt_answers_in_the_worker(gateway_env, monkeypatch):
    reconnect(monkeypatch, gateway_env, echo_request_id=True)
    gateway, triggers = Ledger(), []
    op = CreateRecordsOperator(
        task_id="c",
        record_type="ProductionUnit",
        records=three_records,
        records_kwargs={"unit": "PT11"},
        deferrable=True,
        defer_after=20,
    )
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, gateway, echo=True):
        assert run_operator(op, triggers=triggers) == {"written": 3, "already_done": 0}
    assert triggers == []  # answered within defer_after: no task resume spent


@pytest.mark.broker
def test_deferred_create_records_notes_the_written_before_it_fails(gateway_env, monkeypatch):
    reconnect(monkeypatch, gateway_env, echo_request_id=True, timeout=3)
    gateway, noted = Ledger(), []

    def refuse_one_ignore_one(topic, header, body):
        if body.get("record_id") == "PT12_1":
            return {"error": "Value out of range"}
        if body.get("record_id") == "PT12_2":
            return None  # never answered
        return gateway(topic, header, body)

    def op():
        return CreateRecordsOperator(
            task_id="c",
            record_type="ProductionUnit",
            records=lambda context, unit: [
                s for s in three_records(context, unit) if s["record_id"] not in noted
            ],
            on_written=lambda ids, context, unit: noted.extend(ids),
            records_kwargs={"unit": "PT12"},
            deferrable=True,
            defer_after=0,
        )

    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, refuse_one_ignore_one, echo=True):
        # the unanswered request fails the try, after the written record is noted
        with pytest.raises(BlockchainTimeoutError, match=r"No answer on .* within"):
            run_operator(op())
        assert noted == ["PT12_0"]
    answering = {"PT12_2"}

    def refuse_one(topic, header, body):
        if body.get("record_id") == "PT12_1":
            return {"error": "Value out of range"}
        answering.discard(body.get("record_id"))
        return gateway(topic, header, body)

    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, refuse_one, echo=True):
        # the retry sends what is missing; the refusal fails it for good, the rest written
        with pytest.raises(AirflowFailException, match=r"refused 1 record.*PT12_1: Value out of range"):
            run_operator(op())
    assert noted == ["PT12_0", "PT12_2"] and not answering


#: The reporters' tokens the triggerer reads in these tests, through TriggererRegistry (a
#: deployment's registry reads them where its store keeps them: the MES database).
TRIGGERER_TOKENS: dict[str, str] = {}


class MemoryStore:
    """Reporters kept in a dict, as a database would keep them."""

    def __init__(self):
        self.rows = {}

    def token(self, record_id):
        return self.rows.get(record_id, {}).get("token")

    def prepare(self, record_id, topic, password):
        return self.rows.setdefault(record_id, {"topic": topic, "password": password})["password"]

    def store(self, record_id, public_key, token):
        self.rows[record_id].update(public_key=public_key, token=token)
        TRIGGERER_TOKENS[record_id] = token


class TriggererRegistry:
    """The deployment's reporter registry as the triggerer uses it: a reporter's token by record."""

    def reporters(self):
        return []

    def credentials(self, name):
        return None

    def set_token(self, record_id, token):
        TRIGGERER_TOKENS[record_id] = token

    def token(self, record_id):
        return TRIGGERER_TOKENS.get(record_id)


@pytest.fixture(autouse=True)
def triggerer_registry(monkeypatch):
    """The triggerer reads reporters' tokens through TriggererRegistry."""
    monkeypatch.setenv("AIRFLOW__BLOCKCHAIN__REPORTER_REGISTRY", f"{__name__}.TriggererRegistry")


def production_unit_operator(**kwargs) -> UpdateDynamicRecordOperator:
    """An update of a record of type ProductionUnit (PROPS), which the operator ensures first;
    *kwargs* say which record, or which queue, and how."""
    return UpdateDynamicRecordOperator(
        task_id="u",
        record_type="ProductionUnit",
        record_type_description="Units",
        record_type_properties=PROPS,
        **kwargs,
    )


def unit_operator(store, status, unit="PT20", **kwargs) -> UpdateDynamicRecordOperator:
    """The update of production unit *unit*'s record (created with status NEW) to *status*, its
    reporter kept in *store*."""
    return production_unit_operator(
        record_id=f"PU_{unit}",
        description=f"Unit {unit}",
        properties={"Code": unit, "Status": "NEW"},
        updates={"Status": status},
        reporters=store,
        **kwargs,
    )


@pytest.mark.broker
@pytest.mark.parametrize("reads", [True, False])
def test_update_dynamic_record_creates_its_reporter_once_and_updates_as_it(gateway_env, monkeypatch, reads):
    reconnect(monkeypatch, gateway_env, reads=reads)
    gateway, store, memory = Ledger(), MemoryStore(), RecordTypeMemory()

    def operator(status):
        return unit_operator(store, status, unit="PT10", record_types=lambda: memory)

    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, gateway) as responder:
        result = run_deferred(operator("RUN"))
        assert result == {
            "record_id": "PU_PT10",
            "Status": "RUN",
            "message": "record updated",
        }
        assert store.rows["PU_PT10"]["token"] == RT and RT not in json.dumps(result)
        retried = run_deferred(operator("RUN"), task_context(try_number=2))["message"]
        if reads:
            # a retry whose values are on the record already sends no update
            assert retried == "already up to date"
        else:
            # without reads the retry cannot know: it sends the same values again
            assert retried == "record updated"
        assert run_deferred(operator("STOP"))["message"] == "record updated"
    topics = [s.topic for s in responder.seen]
    # one creation, two updates (three without reads: the retry's)
    assert topics.count("BLK_Rec_ProductionUnit") == (3 if reads else 4)
    assert topics.count("BLK_Rec_Get") == (1 if reads else 0)
    # the record type was created by the first update only: the MES remembers it
    assert topics.count("BLK_Rty") == 1
    assert gateway.records["PU_PT10"]["properties"]["Status"] == "STOP"


@pytest.mark.broker
@pytest.mark.parametrize("sourced", [True, False])
def test_a_deferred_update_waits_in_the_triggerer_when_it_can_read_the_reporters_token(
    gateway_env, monkeypatch, sourced
):
    gateway, triggers, store = Ledger(), [], MemoryStore()
    if not sourced:  # no registry: the triggerer cannot read a reporter's token
        monkeypatch.delenv("AIRFLOW__BLOCKCHAIN__REPORTER_REGISTRY")
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, slowly(gateway, 0.3)):
        result = run_operator(unit_operator(store, "RUN", deferrable=True, defer_after=0), triggers=triggers)
    assert (result["Status"], result["message"]) == ("RUN", "record updated")
    assert gateway.records["PU_PT20"]["properties"]["Status"] == "RUN"
    signers = [kwargs["reporter_record_id"] for _, kwargs in triggers]
    if sourced:  # the record type's creation (master token), then the update (the reporter's)
        assert signers == [None, "PU_PT20"]
    else:  # the update, signed with a token no connection holds, waited in the worker
        assert signers == [None]
    assert not [kwargs for _, kwargs in triggers if RT in json.dumps(kwargs)]


class ListQueue:
    """A record's queue in a list, its lock a flag, as a database would keep them."""

    def __init__(self, store, *, busy_claims=0, failure=None):
        self.store, self.busy_claims, self.failure = store, busy_claims, failure
        self.claims, self.failed_with, self.locked, self.kept = 0, [], False, []

    def claim(self, context):
        from blockchain_provider.operators import ClaimedUpdates, PendingUpdate, QueueBusy

        self.claims += 1
        if self.claims <= self.busy_claims:
            raise QueueBusy("PU_PT21 is held by run other")
        if self.failure is not None:
            raise self.failure
        self.locked = True
        update = DynamicRecordUpdate("PU_PT21", "Unit PT21", {"Code": "PT21"}, {"Status": "RUN"}, self.store)
        return ClaimedUpdates(
            pending=[PendingUpdate(update=update, key="change 1", own=True)],
            keep=self.kept.append,
            release=lambda: setattr(self, "locked", False),
        )

    def failed(self, context, failure):
        self.failed_with.append(type(failure).__name__)


@pytest.mark.broker
def test_a_busy_queue_waits_in_the_triggerer_when_deferrable(gateway_env):
    from airflow.providers.standard.triggers.temporal import DateTimeTrigger

    from blockchain_provider.operators import QueueBusy

    gateway, store = Ledger(), MemoryStore()

    def operator(queue, deferrable):
        return production_unit_operator(
            update_queue=queue,
            deferrable=deferrable,
            defer_after=0,
            queue_retry=0.5,
        )

    blocking = ListQueue(store, busy_claims=1)
    with pytest.raises(QueueBusy, match="held by run other"):
        run_operator(operator(blocking, False))  # blocking: the try fails, and is retried
    assert blocking.failed_with == []  # not its last try: nothing given up
    queue, triggers = ListQueue(store, busy_claims=1), []
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, slowly(gateway, 0.3)):
        result = run_operator(operator(queue, True), triggers=triggers)
    assert result["applied"] == ["change 1"] and queue.claims >= 2
    assert triggers[0][0] == f"{DateTimeTrigger.__module__}.DateTimeTrigger"
    # the claims that deferred for an answer kept the lock; the last let go of it
    assert queue.kept and not queue.locked and queue.failed_with == []


class FailingStore(MemoryStore):
    """A store whose reading of the reporter's token fails with *failure*."""

    def __init__(self, failure):
        super().__init__()
        self.failure = failure

    def token(self, record_id):
        raise self.failure


def _timeout():
    return BlockchainTimeoutError("no answer", topic="BLK_Rec", request_id="r", timeout=1)


@pytest.mark.parametrize(
    ("where", "failure", "try_number", "told"),
    [
        # a claim that fails tells nothing: the update stays in the queue, whose holder applies it
        ("claim", lambda: QueueBusy("held"), 4, []),
        ("claim", lambda: AirflowFailException("not this unit's"), 1, []),
        # a failure under the claim: told when no retry follows
        ("apply", _timeout, 1, []),
        ("apply", _timeout, 4, ["BlockchainTimeoutError"]),
        ("apply", lambda: AirflowFailException("no"), 1, ["AirflowFailException"]),
        ("apply", lambda: AirflowTaskTimeout("execution_timeout"), 4, ["AirflowTaskTimeout"]),
        ("apply", lambda: AirflowTaskTerminated("killed"), 1, ["AirflowTaskTerminated"]),
    ],
)
def test_the_queue_is_told_of_a_failure_no_retry_follows_and_the_lock_goes(where, failure, try_number, told):
    queue = ListQueue(
        FailingStore(failure()) if where == "apply" else MemoryStore(),
        failure=failure() if where == "claim" else None,
    )
    operator = production_unit_operator(
        update_queue=queue,
        deferrable=False,
        part="update",  # nothing of the master's: the first thing done under the claim reads the token
    )
    with pytest.raises(BaseException) as raised:
        operator.execute(task_context(try_number=try_number))
    assert type(raised.value) is type(failure())
    assert queue.failed_with == told and not queue.locked


def test_an_update_is_given_as_values_or_as_a_queue():
    kwargs = {"task_id": "u", "record_type": "ProductionUnit", "record_type_description": "U"}
    kwargs["record_type_properties"] = PROPS
    with pytest.raises(BlockchainConfigError, match="record_id, updates, reporters missing"):
        UpdateDynamicRecordOperator(**kwargs)
    with pytest.raises(BlockchainConfigError, match="not both"):
        UpdateDynamicRecordOperator(**kwargs, update_queue=ListQueue(MemoryStore()), record_id="PU_1")
    with pytest.raises(BlockchainConfigError, match="an UpdateQueue"):
        UpdateDynamicRecordOperator(**kwargs, update_queue=object())


def test_every_operator_templates_its_connections():
    from blockchain_provider import operators

    for name in operators.__all__:
        cls = getattr(operators, name)
        if isinstance(cls, type) and issubclass(cls, BaseOperator):
            assert {"kafka_config_id", "token_conn_id"} <= set(cls.template_fields), name


def test_deferrable_defaults_to_airflows_setting():
    import subprocess
    import sys

    code = (
        "from blockchain_provider.operators import CheckTokenOperator as C; "
        "print(C(task_id='t').deferrable, C(task_id='u', deferrable=False).deferrable)"
    )
    for setting, expected in (("True", "True False"), ("False", "False False")):
        env = {**__import__("os").environ, "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": setting}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.split()[-2:] == expected.split(), out.stderr


@pytest.mark.broker
@pytest.mark.parametrize("deferrable", [False, True])
def test_a_listing_ends_on_a_repeated_page_and_stores_it_once(gateway_env, deferrable, caplog):
    items = [partner(i) for i in range(3)]
    asked = []

    def ignores_start(topic, header, body):
        asked.append(header["start"])
        return {"data": items[: header["limit"]]}  # always the first page, whatever the start

    stored = []
    lister = ListPartnerRequestsOperator(
        task_id="lp",
        page_size=10,
        apply_function_batch=lambda page, context: stored.extend(page),
        deferrable=deferrable,
    )
    with (
        ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, ignores_start),
        caplog.at_level("ERROR"),
    ):
        summary = run_deferred(lister)
    assert asked == [0, 3]  # the second page is the first again: the listing ends there
    assert summary == {"count": 3, "by_status": {"OPEN": 3}}
    assert stored == items  # stored once
    alerts = [r for r in caplog.records if r.getMessage().startswith("ALERT")]
    assert len(alerts) == 1 and "ignore 'start'" in alerts[0].getMessage()


@pytest.mark.broker
def test_a_listing_ends_at_its_page_cap(gateway_env, caplog):
    asked = []

    def endless(topic, header, body):
        asked.append(header["start"])
        return {"data": [partner(header["start"] + i) for i in range(2)]}  # never an empty page

    lister = ListPartnerRequestsOperator(task_id="lp", page_size=2, max_pages=4, deferrable=True)
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, endless), caplog.at_level("ERROR"):
        summary = run_deferred(lister)
    assert asked == [0, 2, 4, 6]
    assert summary["count"] == 8
    assert [r.getMessage() for r in caplog.records if "cap of 4 page(s)" in r.getMessage()]
    with pytest.raises(BlockchainConfigError, match="max_pages"):
        ListPartnerRequestsOperator(task_id="lp", max_pages=0)


@pytest.mark.broker
@pytest.mark.parametrize("deferrable", [False, True])
def test_a_dynamic_record_answered_without_a_reporter_fails_at_once(gateway_env, deferrable):
    def no_reporter(topic, header, body):
        if topic == "BLK_Rty":
            return {"message": "record type created"}
        if topic == "BLK_Rec_ProductionUnit" and header["isRecord"]:
            return {"message": f"record {body['record_id']} created"}
        return {"error": "unexpected"}

    operator = unit_operator(MemoryStore(), "RUN", unit="PT30", deferrable=deferrable)
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, no_reporter):
        with pytest.raises(AirflowFailException) as failed:
            run_deferred(operator)
    text = str(failed.value)
    assert "PU_PT30" in text and "message 'record PU_PT30 created'" in text
    assert "public key and token" in text


def test_updates_rendered_to_something_else_fail_at_once():
    """A template that renders to text, not an object of values, is not retried: it renders alike."""
    operator = production_unit_operator(
        record_id="PU_PT40",
        updates="{{ params.updates }}",
        reporters=MemoryStore(),
    )
    operator.updates = "Status=RUN"  # as the template rendered it
    with pytest.raises(AirflowFailException, match="updates must be an object"):
        operator.execute(task_context())
    assert "hook" not in vars(operator)  # nothing sent
