"""A unit's day report on the original gateway (no echo, every write answered late): its 28
records are one serial conversation held in the triggerer, the task deferring once.

Real broker, the sandbox's ``original`` profile and the day report's own task (``dags/``), run as
a task is: deferred, its trigger revived from what it serialises and run to its event. The runs'
times are printed (``-s`` shows them).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from datetime import date
from pathlib import Path

import pytest

from blockchain_provider.triggers import events
from blockchain_provider.triggers.serial_requests import SerialRequestsTrigger
from include.day_report_keys import DAY_REPORT_RECORD_TYPE, day_report_keys
from include.mes.models import DayReport
from tests.dags.conftest import Stack
from tests.dags.test_original_gateway import original  # noqa: F401 (the fixture)
from tests.operator_runs import dag_task, first_event, run_operator, stored, task_context

pytestmark = [pytest.mark.broker, pytest.mark.airflow_db, pytest.mark.timeout(600)]

DAY = date(2026, 11, 27)
#: Longer than the second the task waits in the worker (``defer_after``): every record's answer
#: comes after it, so the wait is the triggerer's.
DELAY = 1.2
RECORDS = 28
#: What a conversation may add to the gateway's delays: the deferral, the triggerer's consumer
#: and producer, reading the answers back (a loaded 2-core machine included).
CONSTANT = 12.0
SERIAL = f"{SerialRequestsTrigger.__module__}.{SerialRequestsTrigger.__qualname__}"


def record_requests(tmp_path: Path) -> list[dict]:
    """The record requests the gateway answered, in the order it read them (its trace)."""
    path = tmp_path / "trace.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    entries = [json.loads(line) for line in lines]
    return sorted(
        (e for e in entries if e["topic"] == f"BLK_Rec_{DAY_REPORT_RECORD_TYPE}"), key=lambda e: e["received"]
    )


def assert_one_in_flight(requests: list[dict]) -> None:
    """No request reached the gateway before the answer to the one before it was out."""
    for before, after in itertools.pairwise(requests):
        assert after["received"] >= before["answered"], (before, after)


def unit_report(original_stack: Stack) -> tuple[DayReport, dict]:
    from include.mes.db import mes_engine
    from include.sample_data import generate_plant

    generate_plant(mes_engine("mes_db"), units=1, weeks=1, end_date=DAY)
    (report,) = original_stack.mes().day_reports(DAY)
    run_operator(dag_task("blockchain_day_report", "ensure_record_type"))
    kwargs = {"report_id": report.report_id, "unit": report.unit_code, "day": DAY.isoformat()}
    return report, kwargs


def send_unit_report(kwargs: dict):
    return dag_task("blockchain_day_report", "send_unit_report", {"records_kwargs": kwargs})


def test_a_units_records_are_written_in_one_deferral_at_the_gateways_pace(original, tmp_path):  # noqa: F811
    stack = original(write_delay_ms=DELAY * 1000)
    report, kwargs = unit_report(stack)
    triggers: list = []
    sizes: list[int] = []
    started = time.monotonic()
    result = run_operator(send_unit_report(kwargs), task_context(), triggers, sizes)
    elapsed = time.monotonic() - started
    print(
        f"{RECORDS} records, gateway {DELAY:g} s late, no echo: {elapsed:.1f} s, {len(triggers)} deferral(s)"
    )
    assert result == {"written": RECORDS, "already_done": 0}
    assert [classpath for classpath, _kwargs in triggers] == [SERIAL]
    assert max(sizes) < events.MAX_EVENT_BYTES, sizes
    assert RECORDS * DELAY <= elapsed < RECORDS * DELAY + CONSTANT
    # in order, each once, one in flight at a time; noted in the MES
    ledger = stack.ledger()
    expected = [key.record_id for key in day_report_keys(report.report_id)]
    assert [r["record_id"] for r in ledger.records(DAY_REPORT_RECORD_TYPE)] == expected
    requests = record_requests(tmp_path)
    assert len(requests) == RECORDS == len({r["request_id"] for r in requests})
    assert_one_in_flight(requests)
    assert stack.mes().submitted_record_ids(report.report_id) == set(expected)
    # a retry (or rerun) of the task sends nothing: all is noted written
    again = run_operator(send_unit_report(kwargs), task_context(try_number=2))
    assert again == {"written": 0, "already_done": RECORDS}
    assert len(record_requests(tmp_path)) == RECORDS


def test_a_triggerer_restart_mid_conversation_sends_nothing_twice(original, tmp_path):  # noqa: F811
    from airflow.sdk.exceptions import TaskDeferred

    stack = original(write_delay_ms=DELAY * 1000)
    report, kwargs = unit_report(stack)
    task = send_unit_report(kwargs)
    context = task_context()
    with pytest.raises(TaskDeferred) as deferred:
        task.execute(context)
    classpath, trigger_kwargs = deferred.value.trigger.serialize()
    assert classpath == SERIAL

    async def stopped_mid_way() -> None:
        running = asyncio.ensure_future(first_event(SerialRequestsTrigger(**trigger_kwargs)))
        while len(record_requests(tmp_path)) < 10:
            await asyncio.sleep(0.05)
        await asyncio.sleep(DELAY / 2)  # the 11th is at the gateway, unanswered
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running

    asyncio.run(stopped_mid_way())
    stopped_at = len(record_requests(tmp_path))
    assert 10 <= stopped_at < RECORDS
    # the triggerer runs it again from what it serialised
    event = asyncio.run(first_event(SerialRequestsTrigger(**trigger_kwargs)))
    result = task.execute_complete(context, event=stored(event)[0])
    assert result == {"written": RECORDS, "already_done": 0}
    requests = record_requests(tmp_path)
    assert len(requests) == RECORDS == len({r["request_id"] for r in requests})
    assert_one_in_flight(requests)
    expected = [key.record_id for key in day_report_keys(report.report_id)]
    assert [r["record_id"] for r in stack.ledger().records(DAY_REPORT_RECORD_TYPE)] == expected
    assert stack.mes().submitted_record_ids(report.report_id) == set(expected)
    assert stack.ledger().verify() == []
