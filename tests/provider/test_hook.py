"""KafkaBlockchainHook against a real broker and a scripted gateway."""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from blockchain_provider.exceptions import (
    BlockchainBrokerError,
    BlockchainConfigError,
    BlockchainDeliveryError,
    BlockchainError,
    BlockchainGatewayError,
    BlockchainTimeoutError,
)
from blockchain_provider.hooks import delivery, gateway_client, kafka_blockchain, kafka_clients
from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook
from blockchain_provider.triggers import await_response
from gateway_sandbox.broker import TansuBroker, ensure_topics, free_port
from local_services.responder import ScriptedResponder, encode, wait_until
from tests.provider.conftest import MES_PUBKEY, set_connections
from tests.provider.environments import reconnect

pytestmark = pytest.mark.broker

PID = "9df8888dea6df991f86e0e61b2379e46"
ERP = "025e451e2caf44821d0fb262c1cfd2e8c02fb37c989adf548aede227283126d5cb"
TX = "56" * 64


def partner(i: int, status: str = "OPEN") -> dict:
    return {
        "partner_request_id": f"{i:032x}",
        "issuing_agent": ERP,
        "receiving_agent": MES_PUBKEY,
        "status": status,
        "timestamp": 1638789671 + i,
        "answer_timestamp": 0,
        "transaction_ids": [TX],
    }


def paging_handler(items):
    def handler(topic, header, body):
        if topic in ("BLK_Part_Lst", "BLK_Act_Lst"):
            return {"data": items[header["start"] : header["start"] + header["limit"]]}
        return {"error": "unexpected"}

    return handler


RT = "reporter-token-1"


class Ledger:
    """Just enough gateway state for the happy path of every request (PROTOCOL.md 3.3 messages)."""

    def __init__(self):
        self.record_types = {}
        self.records = {}

    def __call__(self, topic, header, body):
        if topic == "BLK_Part_Lst":
            return {"data": [partner(1), partner(2, "ACCEPTED")][header["start"] :][: header["limit"]]}
        if topic == "BLK_Act_Lst":
            items = [{"abs_action_id": "64f605cc6f131e6c6f19a82a4b148f8a", "status": "OPEN"}]
            return {"data": items[header["start"] :][: header["limit"]]}
        if topic in ("BLK_Part_Ans", "BLK_Act_Ans"):
            return {"message": f"{body['id']} {'ACCEPTED' if body['response'] else 'REJECTED'}"}
        if topic == "BLK_Rty_Get":
            found = self.record_types.get(body["name"])
            return {"data": found} if found else {"error": f"record type {body['name']} not found"}
        if topic == "BLK_Rec_Get":
            found = self.records.get(body["record_id"])
            return {"data": found} if found else {"error": f"record {body['record_id']} not found"}
        if topic == "BLK_Rty":
            assert header["isRecord"] is False
            self.record_types[body["name"]] = dict(body)
            return {"message": "record type created"}
        if topic == "BLK_Rec_ProductionUnit":
            values = {p["name"]: p["value"] for p in body["properties"]}
            if header["isRecord"]:
                self.records[body["record_id"]] = {
                    "record_id": body["record_id"],
                    "record_type": body["record_type"],
                    "owner": MES_PUBKEY,
                    "reporters": [ERP] if body["dynamic"] else [],
                    "properties": values,
                    "transaction_ids": [TX],
                }
                if body["dynamic"]:
                    return {"data": {"record_id": body["record_id"], "public_key": ERP, "token": RT}}
                return {"message": "record created"}
            if header["auth"] != RT:
                return {"error": "only the reporter updates"}
            self.records[body["record_id"]]["properties"].update(values)
            return {"message": "record updated"}
        if topic == "BLK_Agt":
            if body["action"] == "create":
                return {"_auth": ERP, "data": {"public_key": ERP, "token": "agent-token-1"}}
            return {"_auth": MES_PUBKEY, "data": {"token": "agent-token-2"}}
        raise AssertionError(topic)


@pytest.mark.also_tansu
def test_happy_path_of_every_request(gateway_env):
    gateway = Ledger()
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, gateway) as responder:
        with KafkaBlockchainHook() as hook:
            assert hook.list_partner_requests(0, 10) == [partner(1), partner(2, "ACCEPTED")]
            assert list(hook.iter_partner_requests(page_size=1)) == [partner(1), partner(2, "ACCEPTED")]
            assert hook.answer_partner_request(PID, True) == f"{PID} ACCEPTED"
            assert hook.list_order_requests()[0]["abs_action_id"] == "64f605cc6f131e6c6f19a82a4b148f8a"
            assert len(list(hook.iter_order_requests(page_size=5))) == 1
            assert hook.answer_order_request(PID, False) == f"{PID} REJECTED"
            assert hook.get_record_type("ProductionUnit") is None
            props = [
                {"name": "Code", "data_type": "STRING", "dynamic": False},
                {"name": "Status", "data_type": "STRING", "dynamic": True},
            ]
            assert hook.create_record_type("ProductionUnit", "Units", props) == "record type created"
            assert hook.get_record_type("ProductionUnit")["properties"] == props
            assert hook.get_record("PU_PT10") is None
            reporter = hook.create_dynamic_record(
                "PU_PT10", "ProductionUnit", "Unit PT10", {"Code": "PT10", "Status": "IDLE"}, "p" * 43
            )
            assert (reporter.record_id, reporter.public_key, reporter.token) == ("PU_PT10", ERP, RT)
            with pytest.raises(BlockchainGatewayError, match="only the reporter"):
                hook.update_record("ProductionUnit", "PU_PT10", {"Status": "RUNNING"})  # master token
            assert hook.update_record("ProductionUnit", "PU_PT10", {"Status": "RUNNING"}, token=RT) == (
                "record updated"
            )
            assert hook.create_record("PU_PT11", "ProductionUnit", "Unit PT11", {"Code": "PT11"}) == (
                "record created"
            )
            assert hook.get_record("PU_PT10")["properties"] == {"Code": "PT10", "Status": "RUNNING"}
            assert hook.create_agent("ERP", "a-long-password") == (ERP, "agent-token-1")
            assert hook.get_token() == "agent-token-2"
            outcome = hook.request("BLK_Part_Lst", header={"start": 1, "limit": 1})
            assert (outcome.kind, outcome.value) == ("data", [partner(2, "ACCEPTED")])

        first = responder.seen[0]
        assert first.topic == "BLK_Part_Lst"
        assert first.header == {
            "auth": gateway_env.token,
            "start": 0,
            "limit": 10,
            "request_id": first.header["request_id"],
        }
        assert first.kafka_headers["blk-request-id"].decode() == first.header["request_id"]
        assert first.key.decode() == first.header["request_id"]
        answer = next(s for s in responder.seen if s.topic == "BLK_Part_Ans")
        assert answer.body == {"id": PID, "response": 1}
        # the record messages as PROTOCOL.md 3.3 gives them
        rty = next(s for s in responder.seen if s.topic == "BLK_Rty")
        assert rty.header == {
            "auth": gateway_env.token,
            "isRecord": False,
            "request_id": rty.header["request_id"],
        }
        assert rty.body == {"name": "ProductionUnit", "description": "Units", "properties": props}
        created, refused, updated, plain = (s for s in responder.seen if s.topic == "BLK_Rec_ProductionUnit")
        assert (created.header["auth"], created.header["isRecord"]) == (gateway_env.token, True)
        assert created.body == {
            "record_id": "PU_PT10",
            "record_type": "ProductionUnit",
            "description": "Unit PT10",
            "dynamic": True,
            "password": "p" * 43,
            "properties": [{"name": "Code", "value": "PT10"}, {"name": "Status", "value": "IDLE"}],
        }
        assert (updated.header["auth"], updated.header["isRecord"]) == (RT, False)
        assert updated.body == {
            "record_id": "PU_PT10",
            "properties": [{"name": "Status", "value": "RUNNING"}],
        }
        assert (plain.body["dynamic"], plain.body["password"]) == (False, "")
        assert refused.header["auth"] == gateway_env.token
        token_request = [s for s in responder.seen if s.topic == "BLK_Agt"][-1]
        assert token_request.header["public_key"] == MES_PUBKEY
        assert token_request.body == {"action": "token", "password": "agent-password-1234"}
        assert len({s.header["request_id"] for s in responder.seen}) == len(responder.seen)


def test_agent_answers_match_by_request_id_and_an_error_is_an_error_not_a_timeout(gateway_env, monkeypatch):
    reconnect(monkeypatch, gateway_env, timeout=20)

    def handler(topic, header, body):
        # the answer's auth is the agent's public key, never a token; it echoes request_id
        if body["password"] == "agent-password-1234":
            return {"_auth": MES_PUBKEY, "data": {"token": "fresh-token"}}
        return {"_auth": MES_PUBKEY, "error": "unknown agent or wrong password"}

    def noise(producer, topic, header):
        # an answer with the right auth but another request id is not ours
        producer.produce(
            topic,
            encode([{"auth": MES_PUBKEY, "request_id": "0" * 32}, {"data": {"token": "stolen"}}], "json"),
        )
        producer.flush(5)

    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, handler, before=noise):
        with KafkaBlockchainHook() as hook:
            assert hook.get_token() == "fresh-token"
            # the gateway's text, but for "password": 8 characters in a row of the connection's
            # agent password ("agent-password-1234"), removed from every text quoted
            with pytest.raises(BlockchainGatewayError, match=r": unknown agent or wrong \*\*\*$") as refused:
                hook.get_token(password="not-the-password-123")
            assert not isinstance(refused.value, BlockchainTimeoutError)  # answered, not waited out
            assert "not-the-password-123" not in str(refused.value)


def test_pages_capped_by_the_gateway_are_read_until_an_empty_page(gateway_env):
    items = [partner(i) for i in range(12)]

    def capped(topic, header, body):
        return {"data": items[header["start"] : header["start"] + min(header["limit"], 5)]}

    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, capped) as responder:
        with KafkaBlockchainHook() as hook:
            assert list(hook.iter_partner_requests(page_size=100)) == items
    assert [s.header["start"] for s in responder.seen] == [0, 5, 10, 12]


def test_a_gateway_that_ignores_start_ends_the_hooks_listing(gateway_env):
    items = [partner(i) for i in range(3)]

    def ignores_start(topic, header, body):
        return {"data": items[: header["limit"]]}

    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, ignores_start) as responder:
        with KafkaBlockchainHook() as hook:
            assert list(hook.iter_partner_requests(page_size=100)) == items  # each item once
    assert [s.header["start"] for s in responder.seen] == [0, 3]


@pytest.mark.parametrize("encoding", ["json", "json-string", "python-literal"])
def test_every_encoding_including_an_apostrophe(gateway_env, encoding):
    items = [{**partner(1), "note": "Operator's note", "flag": True, "none": None}]
    with ScriptedResponder(
        gateway_env.bootstrap, gateway_env.prefix, paging_handler(items), encoding=encoding
    ):
        with KafkaBlockchainHook() as hook:
            assert hook.list_partner_requests() == items


def test_foreign_and_garbage_responses_before_the_answer_are_skipped(gateway_env):
    def noise(producer, topic, header):
        for i in range(25):
            producer.produce(topic, encode([{"auth": f"other-token-{i}"}, {"data": ["not yours"]}], "json"))
            producer.produce(topic, [b"\xff\xfe", b"{]", b'{"a": 1}', b"[1, 2, 3]", b'"[{}]"'][i % 5])
        producer.flush(5)

    items = [partner(7)]
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, paging_handler(items), before=noise):
        with KafkaBlockchainHook() as hook:
            assert hook.list_partner_requests() == items
            assert hook.list_partner_requests() == items
            reader = hook._reader
            # none of them holds our token: set aside unread, not decoded
            assert reader.ignored == 100
            assert reader.malformed == reader.skipped == 0


def test_a_response_the_reader_fails_on_does_not_stop_it(gateway_env, monkeypatch, caplog):
    decode = kafka_blockchain.protocol.decode_response

    def failing_decode(value):
        if value.startswith(b"unexpected"):
            raise RuntimeError("a failure the decoder does not foresee")
        return decode(value)

    def noise(producer, topic, header):
        producer.produce(topic, b"unexpected " + header["auth"].encode())
        producer.flush(5)

    monkeypatch.setattr(kafka_blockchain.protocol, "decode_response", failing_decode)
    items = [partner(7)]
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, paging_handler(items), before=noise):
        with KafkaBlockchainHook(timeout=10) as hook:
            assert hook.list_partner_requests() == items
            assert hook.list_partner_requests() == items
    # the matcher counts and sets it aside, as it does any message it cannot read
    assert caplog.text.count("Skipped malformed response at") == 2
    assert caplog.text.count("unreadable (RuntimeError)") == 2


@pytest.mark.also_tansu
def test_an_immediate_answer_is_not_missed(gateway_env):
    """The responder answers the moment it reads the request: a client that subscribes after
    sending would start reading after the answer and wait forever."""
    produced_after = []

    def handler(topic, header, body):
        produced_after.append(time.time())
        return {"data": []}

    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, handler):
        for _ in range(3):
            with KafkaBlockchainHook(timeout=5) as hook:
                assert hook.list_partner_requests() == []
    assert len(produced_after) == 3


def test_empty_page_and_paging_across_three_pages(gateway_env):
    items = [partner(i) for i in range(250)]
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, paging_handler(items)) as responder:
        with KafkaBlockchainHook() as hook:
            assert list(hook.iter_partner_requests(page_size=100)) == items
            starts = [s.header["start"] for s in responder.seen]
            assert starts == [0, 100, 200, 250]  # the short page is not the end: the empty one is
            assert hook.list_partner_requests(start=250, limit=10) == []

    with ScriptedResponder(
        gateway_env.bootstrap, gateway_env.prefix, paging_handler(items[:200])
    ) as responder:
        with KafkaBlockchainHook() as hook:
            assert len(list(hook.iter_partner_requests(page_size=100))) == 200
            assert [s.header["start"] for s in responder.seen] == [0, 100, 200]


def test_gateway_error_raises_with_the_gateways_text(gateway_env):
    def handler(topic, header, body):
        return {"error": f"partner request {body['id']} is already ACCEPTED"}

    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, handler):
        with KafkaBlockchainHook() as hook, pytest.raises(BlockchainGatewayError) as info:
            hook.answer_partner_request(PID, True)
    assert f"partner request {PID} is already ACCEPTED" in str(info.value)
    assert info.value.topic == gateway_env.prefix + "BLK_Part_Ans"
    assert isinstance(info.value, BlockchainError)


@pytest.mark.also_tansu
def test_timeout_against_a_silent_gateway_ends_by_the_deadline(gateway_env, monkeypatch):
    # closing the hook waits out the grace period for a late answer: a short one here
    reconnect(monkeypatch, gateway_env, late_answer_grace=1)
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, lambda *a: None) as responder:
        with KafkaBlockchainHook(timeout=2) as hook:
            started = time.monotonic()
            with pytest.raises(BlockchainTimeoutError) as info:
                hook.list_partner_requests()
            elapsed = time.monotonic() - started
            assert hook._reader.waiting() == 0
    request_id = responder.seen[0].header["request_id"]
    assert info.value.timeout == 2  # the hook's deadline, not the connection's default (30 s)
    assert elapsed < 30  # a hang guard only: the deadline in force is the line above
    assert request_id in str(info.value)
    assert gateway_env.prefix + "BLK_Part_Lst" in str(info.value)
    assert not [t for t in threading.enumerate() if t.name.startswith("blk-reader")]


@pytest.mark.also_tansu
@pytest.mark.parametrize("echo", [True, False])
def test_ten_concurrent_requests_with_one_token_get_their_own_answers(gateway_env, monkeypatch, echo):
    reconnect(monkeypatch, gateway_env, echo_request_id=echo)
    in_flight = {"now": 0, "max": 0}
    lock = threading.Lock()
    answered = []

    def handler(topic, header, body):
        # Answer in the responder's own time, so that requests would overlap if they could.
        time.sleep(0.02)
        answered.append(time.time_ns() // 1_000_000)  # at the Kafka timestamp's resolution
        return {"data": [{"start": header["start"]}]}

    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, handler, echo=echo) as responder:
        with KafkaBlockchainHook() as hook:

            def one(i):
                with lock:
                    in_flight["now"] += 1
                    in_flight["max"] = max(in_flight["max"], in_flight["now"])
                try:
                    return hook.list_partner_requests(start=i, limit=1)
                finally:
                    with lock:
                        in_flight["now"] -= 1

            with ThreadPoolExecutor(10) as pool:
                results = list(pool.map(one, range(10)))
    assert results == [[{"start": i}] for i in range(10)]
    assert sorted(s.header["start"] for s in responder.seen) == list(range(10))
    assert in_flight["max"] > 1  # the callers really were concurrent
    # A request sent before the previous answer was written was pipelined. Both times are whole
    # milliseconds, truncated: without echo the next request leaves within a millisecond of the
    # answer, and its timestamp may then fall in the answer's millisecond, never before it.
    sent = [s.sent_at_ms for s in responder.seen]
    overlapping = sum(sent[i + 1] < answered[i] for i in range(9))
    if echo:
        assert overlapping > 0
    else:
        assert overlapping == 0


def test_delivery_failure_names_the_topic_and_the_broker(monkeypatch, tmp_path):
    with TansuBroker() as broker:
        ensure_topics(broker.bootstrap_servers, ["BLK_Res", "BLK_Part_Lst"])
        set_connections(monkeypatch, broker.bootstrap_servers, "", "tok-delivery")
        monkeypatch.setenv(
            "AIRFLOW_CONN_KAFKA_DEFAULT",
            json.dumps(
                {
                    "conn_type": "kafka",
                    "extra": {"bootstrap.servers": broker.bootstrap_servers, "message.timeout.ms": 1500},
                }
            ),
        )
        hook = KafkaBlockchainHook(timeout=3)
        hook._ensure_started()
        broker.stop()
        with pytest.raises(BlockchainDeliveryError) as info:
            hook.list_partner_requests()
        hook.close()
    assert "BLK_Part_Lst" in str(info.value)
    assert broker.bootstrap_servers in str(info.value)


def test_unreachable_broker_is_named(monkeypatch):
    port = free_port()
    set_connections(monkeypatch, f"127.0.0.1:{port}", "", "tok-unreachable")
    monkeypatch.setattr(kafka_blockchain, "READER_START_TIMEOUT", 2.0)
    with KafkaBlockchainHook(timeout=2) as hook, pytest.raises(BlockchainBrokerError) as info:
        hook.list_partner_requests()
    assert f"127.0.0.1:{port}" in str(info.value)


def test_missing_response_topic_is_a_clear_error(gateway_env, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_BLOCKCHAIN_MASTER",
        json.dumps(
            {
                "conn_type": "blockchain_token",
                "password": gateway_env.token,
                "extra": {"topics": json.dumps({"BLK_Res": gateway_env.prefix + "nope"})},
            }
        ),
    )
    with KafkaBlockchainHook() as hook, pytest.raises(BlockchainConfigError, match="nope"):
        hook.list_partner_requests()


def test_connection_without_token_is_a_clear_error(gateway_env, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_BLOCKCHAIN_MASTER", json.dumps({"conn_type": "blockchain_token"}))
    with pytest.raises(BlockchainConfigError, match="blockchain_master has no token"):
        KafkaBlockchainHook().list_partner_requests()


def test_the_token_never_reaches_logs_errors_or_reprs(gateway_env, caplog, capfd, monkeypatch):
    caplog.set_level(logging.DEBUG)
    token = gateway_env.token
    # a short grace period for the late answer of the request that times out below
    set_connections(monkeypatch, gateway_env.bootstrap, gateway_env.prefix, token, late_answer_grace=1)

    def handler(topic, header, body):
        if topic == "BLK_Part_Ans":
            return {"error": f"token {header['auth']} may not answer {body['id']}"}
        return {"data": [partner(1)]}

    errors = []
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, handler):
        with KafkaBlockchainHook(timeout=3) as hook:
            hook.list_partner_requests()
            try:
                hook.answer_partner_request(PID, True)
            except BlockchainGatewayError as exc:
                errors.append(exc)
            texts = [repr(hook), repr(hook.settings), str(hook.settings)]
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, lambda *a: None):
        with KafkaBlockchainHook(timeout=1) as hook:
            try:
                hook.list_partner_requests()
            except BlockchainTimeoutError as exc:
                errors.append(exc)
    assert len(errors) == 2
    assert "***" in str(errors[0])
    out, err = capfd.readouterr()
    for text in [caplog.text, out, err, *texts, *map(str, errors), *(repr(e.args) for e in errors)]:
        assert token not in text
    assert "agent-password-1234" not in caplog.text + repr(texts)


def test_many_requests_reuse_one_producer_and_one_reader(gateway_env):
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, paging_handler([partner(1)])):
        hook = KafkaBlockchainHook()
        for _ in range(20):
            hook.list_partner_requests()
        producer, reader = hook._producer, hook._reader
        hook.list_partner_requests()
        assert (hook._producer, hook._reader) == (producer, reader)
        hook.close()
        assert hook._reader is None
        wait_until(lambda: not [t for t in threading.enumerate() if t.name.startswith("blk-reader")])


TASK = (None, kafka_clients.TANSU_CONSUMER_DEFAULTS)
TRIGGER = (await_response.TRIGGER_CONSUMER_DEFAULTS, await_response.TRIGGER_TANSU_CONSUMER_DEFAULTS)


@pytest.mark.parametrize(
    ("tansu", "connection_extra", "reader", "expected_wait"),
    [
        # Apache Kafka: 100 ms for a task's reader, the client's default 500 ms for the triggerer's
        (False, {}, TASK, 100),
        (False, {}, TRIGGER, 500),
        # tansu: short waits, since it holds every fetch for the whole wait
        (True, {}, TASK, 5),
        (True, {}, TRIGGER, 100),
        # the connection decides on either broker
        (True, {"fetch.wait.max.ms": 7}, TRIGGER, 7),
        (False, {"fetch.wait.max.ms": 7}, TASK, 7),
    ],
)
def test_reader_settings_layer_defaults_connection_and_required(
    monkeypatch, tansu, connection_extra, reader, expected_wait
):
    built: dict = {}

    class FakeConsumer:
        def __init__(self, config: dict) -> None:
            built.clear()
            built.update(config)

        def close(self) -> None:
            pass

    monkeypatch.setattr(kafka_clients, "Consumer", FakeConsumer)
    monkeypatch.setitem(kafka_clients._TANSU_BROKERS, "broker:9092", tansu)
    set_connections(monkeypatch, "broker:9092", "", "tok-settings")
    monkeypatch.setenv(
        "AIRFLOW_CONN_KAFKA_DEFAULT",
        json.dumps(
            {
                "conn_type": "kafka",
                "extra": {
                    "bootstrap.servers": "broker:9092",
                    "enable.auto.commit": True,
                    "auto.offset.reset": "latest",
                    **connection_extra,
                },
            }
        ),
    )
    KafkaBlockchainHook().new_response_consumer(*reader)
    assert built["fetch.wait.max.ms"] == expected_wait
    assert built["bootstrap.servers"] == "broker:9092"
    assert built["enable.auto.commit"] is False  # required: the reader commits nothing
    assert "auto.offset.reset" not in built  # positions are assigned, never reset to the end


def test_a_caller_that_gets_its_token_too_late_gives_up_unsent(gateway_env):
    """Without echo a caller queues for its token; one that gets it with almost no time left
    sends nothing, since no answer could arrive before its deadline."""
    with KafkaBlockchainHook(timeout=0.5) as hook:
        token = hook.settings.token.reveal()
        lock = delivery.token_lock(f"{hook.kafka_config_id}\0{hook.settings.topics.responses}", token)
        lock.acquire()
        releaser = threading.Timer(0.5 - gateway_client.MIN_SEND_BUDGET / 2, lock.release)
        releaser.start()
        with pytest.raises(BlockchainTimeoutError) as info:
            hook.list_partner_requests()
        releaser.join()
        assert info.value.request_id == "(not sent)"
        assert info.value.timeout == 0.5  # its own deadline, which the queueing used up
        assert hook._producer is None  # never started: nothing was sent
