"""The sandbox's hold knob keeps answers until released, and its trace records each request's
receive and answer times per token (by digest: the token itself is never written)."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.sandbox.client import CREATE, UNIT, unit_record

pytestmark = pytest.mark.broker


def test_held_answers_are_applied_then_released_together_and_traced(
    make_server, make_client, ledger, mes, tmp_path
):
    _, token = mes
    ledger.create_record_type(mes[0], "Unit", UNIT)
    hold = tmp_path / "hold"
    hold.touch()
    trace = tmp_path / "trace.jsonl"
    server = make_server(echo=True, hold_file=str(hold), trace_path=str(trace))
    cycles = []
    cycle = server._cycle
    server._cycle = lambda: cycles.append(1) or cycle()  # counted from here on
    client = make_client()
    ids = [uuid.uuid4().hex for _ in range(3)]
    for number, request_id in enumerate(ids):
        client.send(
            "BLK_Rec_Unit", {"auth": token, **CREATE}, unit_record(f"H{number}"), request_id=request_id
        )
    assert server.wait_for(lambda c: c.get("requests", 0) == 3)
    # applied: the sandbox counts a request before its transaction commits, so the last one may
    # still be committing
    deadline = time.monotonic() + 10
    while not all(ledger.record(f"H{n}") for n in range(3)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [ledger.record(f"H{n}") is not None for n in range(3)] == [True] * 3
    held_from, quiet_from = len(cycles), time.monotonic()
    assert client.quiet_for(1.0) == []  # but not answered while held
    quiet = time.monotonic() - quiet_from
    # and the sandbox waits for them, not spinning on answers that stay due: a cycle per
    # poll_timeout (0.1 s) at most, where a spin makes thousands a second. Counted per second
    # that really passed: a loaded machine stretches the wait, and only makes fewer cycles.
    assert len(cycles) - held_from <= 30 * quiet, (len(cycles) - held_from, quiet)
    released = time.time()
    hold.unlink()
    answers = [client.response_to(request_id, timeout=30) for request_id in ids]
    assert [("error" in a.outcome) for a in answers] == [False] * 3
    assert server.wait_for(lambda c: c.get("sent", 0) == 3)
    server.stop()
    entries = [json.loads(line) for line in trace.read_text().splitlines()]
    assert sorted(e["request_id"] for e in entries) == sorted(ids)
    assert {e["topic"] for e in entries} == {"BLK_Rec_Unit"}
    assert all(e["echoed"] for e in entries)  # echo on
    assert len({e["token"] for e in entries}) == 1
    assert all(e["received"] < released <= e["answered"] for e in entries)
    assert token not in trace.read_text()
