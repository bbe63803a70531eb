"""Each fault knob has the effect it promises, over the real broker."""

from __future__ import annotations

import json
import time

import pytest

from gateway_sandbox.faults import ERROR_TEXT, FaultInjector, Faults
from tests.sandbox.client import CREATE, UNIT, unit_record, well_formed

pytestmark = pytest.mark.broker


@pytest.fixture
def unit_type(ledger, mes):
    ledger.create_record_type(mes[0], "Unit", UNIT)


def test_drop_applies_but_never_answers(make_server, make_client, ledger, mes, unit_type):
    _, token = mes
    server = make_server(echo=True, faults=Faults(drop_rate=1.0, seed=1))
    client = make_client()
    client.send("BLK_Rec_Unit", {"auth": token, **CREATE}, unit_record("D1"))
    assert server.wait_for(lambda c: c.get("fault_drop", 0) == 1)
    assert ledger.record("D1") is not None  # applied
    assert client.quiet_for(0.5) == []  # never answered
    assert server.counters.get("answered", 0) == 0


def test_error_answers_error_without_applying(make_server, make_client, ledger, mes, unit_type):
    _, token = mes
    server = make_server(echo=True, faults=Faults(error_rate=1.0, seed=1))
    client = make_client()
    answer = client.request("BLK_Rec_Unit", {"auth": token, **CREATE}, unit_record("E1"))
    assert answer.outcome == {"error": ERROR_TEXT}
    assert ledger.record("E1") is None
    assert server.counters["fault_error"] == 1
    # an agent request is refused the same way, and creates nothing
    agents = len(ledger.agents())
    refused = client.request("BLK_Agt", {}, {"action": "create", "name": "X", "password": "p" * 12})
    assert refused.outcome == {"error": ERROR_TEXT}
    assert len(ledger.agents()) == agents


def test_garbage_is_written_before_each_answer_and_is_undecodable(make_server, make_client, mes):
    _, token = mes
    server = make_server(echo=True, faults=Faults(garbage_rate=1.0, seed=3))
    client = make_client()
    rids = [client.request("BLK_Part_Lst", {"auth": token}).header["request_id"] for _ in range(12)]
    assert server.wait_for(lambda c: c.get("sent", 0) == 24)
    client.quiet_for(0.1)
    assert len(client.received) == 24
    garbage = [raw for raw in client.received if raw.envelope is None]
    assert len(garbage) == 12
    for raw in garbage:
        assert well_formed(raw.value, "python-literal") is None
        assert well_formed(raw.value, "json") is None  # undecodable in either encoding
    kinds = {raw.value[:12] for raw in garbage}
    assert len(kinds) >= 4  # several kinds of garbage
    # each garbage message comes right before the answer it precedes
    order = [raw.envelope is None for raw in client.received]
    assert order == [True, False] * 12
    assert [raw.header["request_id"] for raw in client.received if raw.envelope] == rids
    assert server.counters["fault_garbage"] == 12


def test_duplicate_writes_the_answer_twice(make_server, make_client, ledger, mes, unit_type):
    _, token = mes
    server = make_server(echo=True, faults=Faults(duplicate_rate=1.0, seed=1))
    client = make_client()
    rid = client.send("BLK_Rec_Unit", {"auth": token, **CREATE}, unit_record("U1"))
    assert server.wait_for(lambda c: c.get("sent", 0) == 2)
    client.quiet_for(0.2)
    copies = [raw for raw in client.received if raw.envelope and raw.header.get("request_id") == rid]
    assert len(copies) == 2
    assert copies[0].value == copies[1].value
    assert copies[0].outcome == {"message": "record U1 created"}
    assert ledger.count_records() == 1  # applied once


@pytest.mark.parametrize("echo", [False, True])
def test_foreign_answers_go_to_another_token_first(make_server, make_client, mes, echo):
    _, token = mes
    server = make_server(echo=echo, faults=Faults(foreign_rate=1.0, seed=5))
    client = make_client()
    rid = client.send("BLK_Part_Lst", {"auth": token})
    assert server.wait_for(lambda c: c.get("sent", 0) == 2)
    client.quiet_for(0.2)
    foreign, real = client.received
    assert foreign.envelope is not None, "a foreign answer is well-formed"
    assert foreign.header["auth"] != token
    assert len(foreign.header["auth"]) >= 32
    assert real.header["auth"] == token and real.outcome == {"data": []}
    if echo:
        assert foreign.header["request_id"] != rid and real.header["request_id"] == rid
    else:
        assert "request_id" not in foreign.header


def test_delay_postpones_answers_without_blocking_the_gateway(make_server, make_client, mes, tmp_path):
    _, token = mes
    trace = tmp_path / "trace.jsonl"
    server = make_server(echo=True, faults=Faults(delay_ms=2000, seed=1), trace_path=str(trace))
    client = make_client()
    started = time.monotonic()
    rids = [client.send("BLK_Part_Lst", {"auth": token}, flush=False) for _ in range(5)]
    client.producer.flush(10)
    answers = [client.response_to(rid, timeout=30) for rid in rids]
    first = min(a.received_at for a in answers) - started
    assert first >= 2.0
    assert server.counters["fault_delay"] == 5
    assert server.wait_for(lambda c: c.get("sent", 0) == 5)  # each answer traced before it is sent
    entries = [json.loads(line) for line in trace.read_text().splitlines()]
    assert sorted(e["request_id"] for e in entries) == sorted(rids)
    # the gateway read all five before it wrote any answer: one sleeping through each answer's
    # delay would have read the second only after answering the first
    assert max(e["received"] for e in entries) < min(e["answered"] for e in entries)


def test_same_seed_same_faults(make_server, make_client, mes):
    """A partial drop rate drops exactly the requests its seeded stream says."""
    _, token = mes
    faults = Faults(drop_rate=0.4, seed=11)
    server = make_server(echo=True, faults=faults)
    client = make_client()
    rids = [client.send("BLK_Part_Lst", {"auth": token, "start": i}, flush=False) for i in range(25)]
    client.producer.flush(10)
    injector = FaultInjector(faults)
    expected = {rid for rid in rids if not injector.decide().drop}
    assert 0 < len(expected) < 25
    # counted by the server, not timed: a loaded machine may deliver the answers late
    assert server.wait_for(lambda c: c.get("requests", 0) == 25 and c.get("sent", 0) >= len(expected), 60)
    deadline = time.monotonic() + 60
    while not expected <= _answered(client) and time.monotonic() < deadline:
        client.poll(0.5)
    client.quiet_for(0.3)
    assert _answered(client) == expected
    assert server.counters["sent"] == len(expected)


def _answered(client) -> set[str]:
    return {raw.header["request_id"] for raw in client.received if raw.envelope}
