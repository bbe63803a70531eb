"""Noise on ``BLK_Res``: garbage, answers for other clients, duplicate answers, concurrent callers.

Every answer here names what it answers (a record id, or the record itself), so each case checks
that every request got its own answer, and then that the ledger holds each change exactly once.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import pytest

from blockchain_provider import protocol
from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook
from gateway_sandbox.faults import Faults
from include.day_report_keys import day_report_keys
from tests.faults.conftest import wait_for

pytestmark = pytest.mark.broker

UNIT = [{"name": "Status", "data_type": "STRING", "dynamic": True}]
REPORTER_PASSWORD = "reporter-password-0123"
DAY = date(2026, 11, 27)


def seed_records(stack, count: int) -> list[str]:
    """*count* dynamic records ``N0000``... of type ``Unit``, owned by the MES (who may update them as
    their reporters may), created on the ledger directly."""
    ids = [f"N{i:04d}" for i in range(count)]
    with stack.ledger() as ledger, ledger.transaction():
        ledger.create_record_type(stack.mes_public_key, "Unit", UNIT)
        for record_id in ids:
            ledger.create_dynamic_record(
                stack.mes_public_key, record_id, "Unit", {"Status": "NEW"}, REPORTER_PASSWORD
            )
    return ids


def changes_per_record(stack, ids: list[str]) -> dict[str, tuple[str, int]]:
    """``record id -> (Status, number of ledger transactions)``."""
    with stack.ledger() as ledger:
        return {
            record_id: (record["properties"]["Status"], len(record["transaction_ids"]))
            for record_id in ids
            for record in [ledger.record(record_id)]
        }


@pytest.mark.parametrize("echo", [False, True], ids=["echo-off", "echo-on"])
def test_a_thousand_garbage_and_foreign_answers_do_not_mislead_any_request(make_stack, echo):
    # Before each real answer the gateway writes one undecodable value and one well-formed
    # answer for another token (with echo: for another request id too).
    stack = make_stack(echo=echo, faults=Faults(garbage_rate=1.0, foreign_rate=1.0, seed=11))
    ids = seed_records(stack, 250)

    with KafkaBlockchainHook() as hook:
        updates = [protocol.record_update_call("Unit", rid, {"Status": f"S-{rid}"}) for rid in ids]
        gets = [protocol.record_get_call(rid) for rid in ids]
        if echo:
            updated = hook.client.call_many(updates, max_in_flight=16)
            read = hook.client.call_many(gets, max_in_flight=16)
        else:
            updated = [hook.client.call(call) for call in updates]
            read = [hook.client.call(call) for call in gets]
        reader = hook._reader
        malformed, skipped, ignored = reader.malformed, reader.skipped, reader.ignored

    assert [outcome.value for outcome in updated] == [f"record {rid} updated" for rid in ids]
    assert [(o.value["record_id"], o.value["properties"]["Status"]) for o in read] == [
        (rid, f"S-{rid}") for rid in ids
    ]
    counters = stack.server.counters
    assert counters["fault_garbage"] == counters["fault_foreign"] == 500  # 1,000 noise messages
    # every noise message was set aside: most unread (they name none of our requests), the rest
    # decoded and found malformed or not ours
    assert malformed + skipped + ignored == 1000
    assert ignored >= 500
    # each record was updated once: its creation and one update
    assert changes_per_record(stack, ids) == {rid: (f"S-{rid}", 2) for rid in ids}


def test_duplicate_answers_are_each_processed_once(make_stack):
    stack = make_stack(echo=True, faults=Faults(duplicate_rate=1.0, seed=5))
    ids = seed_records(stack, 100)

    with KafkaBlockchainHook() as hook:
        outcomes = []
        for rid in ids:
            outcomes.append(hook.update_record("Unit", rid, {"Status": f"D-{rid}"}))
            outcomes.append(hook.get_record(rid)["properties"]["Status"])
        pipelined = hook.client.call_many([protocol.record_get_call(rid) for rid in ids], max_in_flight=16)
        reader = hook._reader
        # every duplicate was read and set aside (unread: its request no longer waits)
        assert wait_for(lambda: reader.skipped + reader.ignored == 300)

    expected = []
    for rid in ids:
        expected += [f"record {rid} updated", f"D-{rid}"]
    assert outcomes == expected
    assert [outcome.value["record_id"] for outcome in pipelined] == ids
    assert stack.server.counters["fault_duplicate"] == 300
    assert changes_per_record(stack, ids) == {rid: (f"D-{rid}", 2) for rid in ids}


def test_duplicate_answers_without_echo_write_nothing_twice(make_stack):
    """The original gateway (no echo): a duplicate cannot be told from the next answer to the same
    token (PROTOCOL.md section 2), which is why echo matters. What must hold all the same: the day
    report's writes, answered with duplicates, are on the ledger and marked in the MES once."""
    from include.day_report_keys import DAY_REPORT_RECORD_TYPE
    from include.mes.db import mes_engine
    from include.sample_data import generate_plant
    from tests.operator_runs import dag_task, run_operator

    stack = make_stack(echo=False, faults=Faults(duplicate_rate=1.0, seed=9))
    generate_plant(mes_engine("mes_db"), units=2, weeks=1, end_date=DAY)
    repository = stack.mes()
    reports = repository.day_reports(DAY)

    def send(report) -> int:
        """The day report DAG's task for one unit; how many records it wrote."""
        mapped = {"report_id": report.report_id, "unit": report.unit_code, "day": DAY.isoformat()}
        return run_operator(
            dag_task("blockchain_day_report", "send_unit_report", {"records_kwargs": mapped})
        )["written"]

    run_operator(dag_task("blockchain_day_report", "ensure_record_type"))
    first = [send(r) for r in reports]
    again = [send(r) for r in reports]

    assert first == [28, 28]
    assert again == [0, 0]
    with stack.ledger() as ledger:
        assert ledger.count_records(DAY_REPORT_RECORD_TYPE) == 56
        for report in reports:
            for key in day_report_keys(report.report_id):
                assert len(ledger.record(key.record_id)["transaction_ids"]) == 1
    assert [len(repository.submitted_record_ids(r.report_id)) for r in reports] == [28, 28]
    assert stack.server.counters["fault_duplicate"] >= 56


@pytest.mark.parametrize("echo", [False, True], ids=["echo-off (serialised)", "echo-on (pipelined)"])
def test_twenty_concurrent_requests_with_one_token_each_get_their_own_answer(make_stack, tmp_path, echo):
    # Twenty callers in one process, on four hooks (five callers each), as mapped tasks of one
    # worker would be. Each answer is written 50 ms after its request (500 ms with echo: a window
    # that callers started late by a loaded machine still fall in), so requests overlap if they can.
    stack = make_stack(echo=echo, timeout=30, serve=False)
    trace = tmp_path / "trace.jsonl"
    stack.serve(echo=echo, faults=Faults(delay_ms=500 if echo else 50), trace_path=str(trace))
    ids = seed_records(stack, 20)
    hooks = [KafkaBlockchainHook() for _ in range(4)]
    for hook in hooks:
        hook.get_record_type("Unit")  # started: the timing below is of the requests only

    def one(index: int) -> tuple[str, str]:
        hook, rid = hooks[index % 4], ids[index]
        message = hook.update_record("Unit", rid, {"Status": f"C-{rid}"})
        return message, hook.get_record(rid)["properties"]["Status"]

    started = time.monotonic()
    try:
        with ThreadPoolExecutor(20) as pool:
            results = list(pool.map(one, range(20)))
    finally:
        for hook in hooks:
            hook.close()
    elapsed = time.monotonic() - started

    assert results == [(f"record {rid} updated", f"C-{rid}") for rid in ids]
    assert changes_per_record(stack, ids) == {rid: (f"C-{rid}", 2) for rid in ids}
    # at the gateway: a request read before the answer to one read earlier was written
    assert wait_for(lambda: stack.server.counters.get("sent", 0) >= 44)  # each answer traced before
    entries = [json.loads(line) for line in trace.read_text().splitlines()]
    timed = sorted(
        (e for e in entries if e["topic"] in ("BLK_Rec_Unit", "BLK_Rec_Get")), key=lambda e: e["received"]
    )
    assert len(timed) == 40
    overlapping = sum(
        later["received"] < max(e["answered"] for e in timed[:index])
        for index, later in enumerate(timed)
        if index
    )
    if echo:
        assert overlapping > 0  # pipelined
    else:
        assert overlapping == 0  # serialised: one request of the token at a time
        assert elapsed >= 40 * 0.05  # so the 40 answer delays add up
