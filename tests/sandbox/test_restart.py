"""Restarts: state persists, nothing is applied twice, nothing is lost, broker restarts are noticed."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid

import pytest
from confluent_kafka import Producer, TopicPartition

from gateway_sandbox.broker import TansuBroker
from gateway_sandbox.ledger import Ledger
from gateway_sandbox.server import GatewayServer
from tests.sandbox.client import CREATE, UNIT, BlkClient, unit_record
from tests.sandbox.conftest import ERP_PASSWORD
from tests.sandbox_process import SandboxProcess

pytestmark = pytest.mark.broker


def _creates_of(ledger: Ledger, record_id: str) -> int:
    rows = ledger._conn.execute(
        "SELECT COUNT(*) FROM transactions WHERE op = 'record.create' AND json_extract(payload, '$.record_id') = ?",
        (record_id,),
    ).fetchone()
    return rows[0]


def test_restart_keeps_state_and_does_not_reapply_old_requests(make_server, make_client, ledger, mes):
    mes_pk, token = mes
    erp, _ = ledger.create_agent("ERP", ERP_PASSWORD)
    partner_request = ledger.create_partner_request(erp, mes_pk)
    ledger.create_record_type(mes_pk, "Unit", UNIT)
    first = make_server(echo=True)
    client = make_client()
    assert client.request(
        "BLK_Part_Ans", {"auth": token}, {"id": partner_request, "response": 1}
    ).outcome == {"message": f"partner request {partner_request} ACCEPTED"}
    dynamic = {**unit_record("PT10"), "dynamic": True, "password": "reporter-password-0123"}
    reporter = client.request("BLK_Rec_Unit", {"auth": token, **CREATE}, dynamic).outcome["data"]
    assert reporter["record_id"] == "PT10"
    assert client.request(
        "BLK_Rec_Unit",
        {"auth": reporter["token"], "isRecord": False},
        {"record_id": "PT10", "properties": [{"name": "Status", "value": "running"}]},
    ).outcome == {"message": "record PT10 updated"}
    first.stop()
    blocks = ledger.blocks()

    second = make_server(echo=True)
    rec_topic = second.topic_prefix + "BLK_Rec_Unit"
    assert second.start_offsets[(rec_topic, 0)] == 2  # resumes after the two record requests
    assert not second.wait_for(lambda c: c.get("requests", 0) > 0, timeout=0.5)
    assert ledger.blocks() == blocks  # nothing re-applied
    got = client.request("BLK_Rec_Get", {"auth": token}, {"record_id": "PT10"}).outcome["data"]
    assert got["properties"] == {"Status": "running"} and len(got["transaction_ids"]) == 2
    assert ledger.partner_request(partner_request)["status"] == "ACCEPTED"
    assert second.counters["requests"] == 1
    assert ledger.verify() == []


def test_requests_sent_while_stopped_are_answered_once_after_restart(make_server, make_client, ledger, mes):
    mes_pk, token = mes
    ledger.create_record_type(mes_pk, "Unit", UNIT)
    make_server(echo=True).stop()  # served once: offsets exist
    client = make_client()
    sent = {
        client.send("BLK_Rec_Unit", {"auth": token, **CREATE}, unit_record(f"R{i}"), flush=False): f"R{i}"
        for i in range(5)
    }
    assert client.producer.flush(10) == 0  # on the topic while no server runs
    assert ledger.count_records() == 0

    server = make_server(echo=True)
    for rid, record_id in sent.items():
        assert client.response_to(rid).outcome == {"message": f"record {record_id} created"}
    server.stop()
    assert ledger.count_records() == 5

    third = make_server(echo=True)
    assert not third.wait_for(lambda c: c.get("requests", 0) > 0, timeout=0.5)
    assert all(_creates_of(ledger, record_id) == 1 for record_id in sent.values())
    assert len(client.quiet_for(0.2)) == 0  # and nothing was answered again


def test_unsent_outbox_rows_are_sent_first_on_start(make_server, make_client, ledger, mes, topic_prefix):
    """A process killed after committing a request but before producing its answer."""
    _, token = mes
    client = make_client(encoding="json")
    rid = uuid.uuid4().hex
    value = json.dumps([{"auth": token, "request_id": rid}, {"message": "left in the outbox"}]).encode()
    ledger.outbox_add(topic_prefix + "BLK_Res", rid.encode(), value, [("blk-request-id", rid)], time.time())
    server = make_server(encoding="json", echo=True)
    answer = client.response_to(rid)
    assert answer.outcome == {"message": "left in the outbox"}
    assert answer.key == rid.encode()
    assert server.counters["resent"] == 1
    assert server.wait_for(lambda c: c.get("sent", 0) == 1)
    assert ledger.outbox_pending() == []


@pytest.mark.also_tansu
def test_a_killed_server_loses_nothing_and_applies_nothing_twice(
    kafka_bootstrap, topic_prefix, db_path, ledger, mes, tmp_path
):
    mes_pk, token = mes
    ledger.create_record_type(mes_pk, "Unit", UNIT)
    client = BlkClient(kafka_bootstrap, topic_prefix)
    server = SandboxProcess(kafka_bootstrap, db_path, topic_prefix, tmp_path / "sandbox.log", "--echo")
    sent: dict[str, str] = {}
    killed = threading.Event()

    def send_paced() -> None:  # keeps sending while the server runs, dies and comes back
        for i in range(400):
            if i == 200:
                # the other half goes after the kill, however slowly the server answered the first
                client.producer.flush(10)
                killed.wait(120)
            sent[
                client.send("BLK_Rec_Unit", {"auth": token, **CREATE}, unit_record(f"K{i:03d}"), flush=False)
            ] = f"K{i:03d}"
            time.sleep(0.005)
        client.producer.flush(10)

    server.start()
    sender = threading.Thread(target=send_paced)
    try:
        client.request("BLK_Part_Lst", {"auth": token}, timeout=60)  # the server is up
        sender.start()
        client.wait(lambda r: len(client.received) >= 31, timeout=30, what="30 answers")
        server.kill()  # mid-stream, no chance to clean up
        assert sender.is_alive(), "the sender stopped before the kill"
        killed.set()
        answered_before_kill = len(client.received)
        server.start()
        sender.join(30)
        assert len(sent) == 400
        outcomes = {rid: client.response_to(rid, timeout=30).outcome for rid in list(sent)}
        assert server.stop() == 0
    finally:
        killed.set()
        sender.join(30)
        server.stop()
        client.close()
    assert 30 < answered_before_kill < 400
    # a request applied twice would have been answered "exists with identical values"
    assert outcomes == {rid: {"message": f"record {record_id} created"} for rid, record_id in sent.items()}
    assert ledger.count_records("Unit") == len(sent)
    assert all(_creates_of(ledger, record_id) == 1 for record_id in sent.values())
    assert ledger.verify() == []


@pytest.mark.also_tansu
def test_a_batch_of_requests_does_not_look_like_a_broker_restart(
    make_server, make_client, kafka_bootstrap, ledger, mes
):
    """tansu's high watermark counts a multi-record batch as one offset: a stored offset beyond it
    is no proof that the broker lost its data."""
    _, token = mes
    first = make_server(echo=True)
    client = make_client()
    topic = first.topics["BLK_Part_Lst"]
    batching = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 200})
    rids = [uuid.uuid4().hex for _ in range(20)]
    for rid in rids:
        batching.produce(topic, json.dumps([{"auth": token, "request_id": rid}]).encode(), key=rid.encode())
    batching.flush(10)
    batching.close()
    for rid in rids:
        client.response_to(rid)
    first.stop()

    stored = ledger.stored_offsets()[(topic, 0)][0]
    assert stored == 20
    second = make_server(echo=True)
    assert second.start_offsets[(topic, 0)] == 20
    assert not second.wait_for(lambda c: c.get("requests", 0) > 0, timeout=0.5)
    consumer_high = client.consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    logging.getLogger(__name__).info("high watermark %d after 20 batched requests", consumer_high)


@pytest.mark.tansu
def test_a_restarted_broker_is_read_from_the_beginning(tmp_path, db_path, ledger, mes, caplog):
    """tansu keeps topics in memory: after a broker restart the stored offsets point past the end."""
    _, token = mes
    caplog.set_level(logging.WARNING, logger="gateway_sandbox")
    prefix = "restart_"
    with TansuBroker(log_path=tmp_path / "a.log") as broker:
        with GatewayServer(broker.bootstrap_servers, db_path, topic_prefix=prefix, echo=True) as server:
            client = BlkClient(broker.bootstrap_servers, prefix)
            for _ in range(3):
                client.request("BLK_Part_Lst", {"auth": token})
            client.close()
        assert server.counters["requests"] == 3
    assert ledger.stored_offsets()[(prefix + "BLK_Part_Lst", 0)][0] == 3

    with TansuBroker(log_path=tmp_path / "b.log") as broker:  # empty: a new broker
        with GatewayServer(broker.bootstrap_servers, db_path, topic_prefix=prefix, echo=True) as server:
            assert server.start_offsets[(prefix + "BLK_Part_Lst", 0)] == 0
            client = BlkClient(broker.bootstrap_servers, prefix)
            answer = client.request("BLK_Part_Lst", {"auth": token})
            client.close()
        assert answer.outcome == {"data": []}
    assert any(
        "broker restarted" in r.getMessage() and "BLK_Part_Lst" in r.getMessage() for r in caplog.records
    )
