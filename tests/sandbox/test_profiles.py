"""The ``original`` profile: the strictest gateway the sources allow (PROTOCOL.md 3.1, 3.3)."""

from __future__ import annotations

import json

import pytest

from gateway_sandbox import handlers, wire
from gateway_sandbox.cli import build_parser
from gateway_sandbox.ledger import Ledger
from gateway_sandbox.profiles import PROFILES, profile

PROPS = [{"name": "Status", "data_type": "STRING", "dynamic": True}]


def ask(ledger: Ledger, topic: str, header: dict, body: dict | None = None, **kwargs):
    raw = json.dumps([header] if body is None else [header, body]).encode()
    with ledger.transaction():
        return handlers.handle(ledger, topic, raw, [], **kwargs)


def test_the_original_profile_refuses_any_second_creation(ledger: Ledger, mes: tuple[str, str]) -> None:
    _, token = mes
    original = PROFILES["original"]
    rty = {"name": "Unit", "description": "units", "properties": PROPS}
    assert (
        "message"
        in ask(ledger, wire.RECORD_TYPES, {"auth": token, "isRecord": False}, rty, profile=original).outcome
    )
    # the sandbox confirms an identical re-creation; the original refuses it
    assert "message" in ask(ledger, wire.RECORD_TYPES, {"auth": token, "isRecord": False}, rty).outcome
    again = ask(ledger, wire.RECORD_TYPES, {"auth": token, "isRecord": False}, rty, profile=original)
    assert again.outcome == {"error": "record type Unit exists"}
    record = {
        "record_id": "PT10_101",
        "record_type": "Unit",
        "description": "d",
        "dynamic": False,
        "password": "",
        "properties": [{"name": "Status", "value": "idle"}],
    }
    header = {"auth": token, "isRecord": True}
    assert "message" in ask(ledger, "BLK_Rec_Unit", header, record, profile=original).outcome
    assert "message" in ask(ledger, "BLK_Rec_Unit", header, record).outcome
    assert ask(ledger, "BLK_Rec_Unit", header, record, profile=original).outcome == {
        "error": "record PT10_101 exists"
    }


def test_ignore_start_answers_the_first_page_again(ledger: Ledger, mes: tuple[str, str]) -> None:
    mes_pk, token = mes
    for n in range(3):
        erp_pk, _ = ledger.create_agent(f"ERP {n}", "erp-password-123456")
        ledger.create_partner_request(erp_pk, mes_pk)
    first = ask(ledger, wire.PARTNER_LIST, {"auth": token, "start": 0, "limit": 2}).outcome["data"]
    honoured = ask(ledger, wire.PARTNER_LIST, {"auth": token, "start": 2, "limit": 2}).outcome["data"]
    ignored = ask(
        ledger,
        wire.PARTNER_LIST,
        {"auth": token, "start": 2, "limit": 2},
        profile=profile("original", ignore_start=True),
    ).outcome["data"]
    assert len(first) == 2 and len(honoured) == 1
    assert ignored == first


def test_the_cli_builds_the_profile() -> None:
    args = build_parser().parse_args(
        ["serve", "--bootstrap-servers", "k:9092", "--db", "x", "--profile", "original"]
    )
    chosen = profile(args.profile, ignore_start=args.ignore_start, write_delay_ms=args.write_delay_ms)
    assert chosen == PROFILES["original"]
    assert (chosen.refuse_recreation, chosen.read_topics, chosen.write_delay_ms) == (True, False, 1000.0)
    args = build_parser().parse_args(
        [
            "serve",
            "--bootstrap-servers",
            "k:9092",
            "--db",
            "x",
            "--profile",
            "original",
            "--ignore-start",
            "--write-delay-ms",
            "250",
        ]
    )
    chosen = profile(args.profile, ignore_start=args.ignore_start, write_delay_ms=args.write_delay_ms)
    assert chosen.ignore_start and chosen.write_delay_ms == 250.0
    with pytest.raises(ValueError, match="unknown profile"):
        profile("lenient")


def test_the_original_gateway_answers_writes_late_and_concurrently_and_reads_never(
    make_server, make_client, mes, tmp_path
):
    _, token = mes
    trace = tmp_path / "trace.jsonl"
    # The sandbox reads requests one at a time, and a record type's creation makes its topic
    # first (up to a second each on a loaded machine): the writes' delay is longer than four of
    # them take, so that the four are seen waiting side by side.
    delay = 4.0
    original = profile("original", write_delay_ms=delay * 1000)
    server = make_server(echo=True, profile=original, trace_path=str(trace))
    client = make_client()
    rids = [
        client.send(
            wire.RECORD_TYPES,
            {"auth": token, "isRecord": False},
            {"name": f"T{i}", "description": "d", "properties": PROPS},
            flush=False,
        )
        for i in range(4)
    ]
    listed = client.send(wire.PARTNER_LIST, {"auth": token, "start": 0, "limit": 10}, flush=False)
    read = client.send(wire.RECORD_TYPE_GET, {"auth": token}, {"name": "T0"}, flush=False)
    client.producer.flush(10)
    answers = [client.response_to(rid, timeout=60) for rid in rids]
    assert all("message" in a.outcome for a in answers)
    client.response_to(listed, timeout=30)
    assert server.wait_for(lambda c: c.get("sent", 0) >= 5)
    entries = {e["request_id"]: e for e in map(json.loads, trace.read_text().splitlines())}
    writes = [entries[rid] for rid in rids]
    # each write waited its delay for its block; a list, sent after them, is not held: it is
    # answered before any of them
    assert all(e["answered"] - e["received"] >= delay for e in writes)
    assert entries[listed]["answered"] < min(e["answered"] for e in writes)
    # the four waited side by side: all were read before the first was answered
    assert max(e["received"] for e in writes) < min(e["answered"] for e in writes)
    # no read topic: the read gets no answer at all
    assert not [raw for raw in client.quiet_for(2.0) if raw.header.get("request_id") == read]
    assert read not in entries
