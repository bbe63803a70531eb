"""Many units' changes drained by one run, side by side, on the original gateway (no echo, no
reads, a second creation refused) answering every write a second late.

Real broker, the sandbox's ``original`` profile, the MES database on SQLite, and the update DAG's
own tasks run as the scheduler runs them: the drain defers, its trigger is revived from what it
serialises and run to its event, and the task resumes with it.
"""

from __future__ import annotations

import time

import pytest

from gateway_sandbox.faults import Faults
from gateway_sandbox.profiles import ORIGINAL_WRITE_DELAY_MS
from gateway_sandbox.trace import in_flight_overlaps, read_trace
from include.day_report_keys import PRODUCTION_UNIT_RECORD_TYPE
from include.mes.unit_drain import DRAINED, UnitsDrainTrigger
from include.mes.unit_updates import APPLIED
from tests.dags.test_original_gateway import original  # noqa: F401 (the fixture)
from tests.operator_runs import run_unit_update

pytestmark = [pytest.mark.broker, pytest.mark.airflow_db, pytest.mark.timeout(600)]

UNITS = 6
#: Seconds the original gateway takes to answer each write (its block): past the second a task
#: would wait in a worker.
DELAY = ORIGINAL_WRITE_DELAY_MS / 1000
DRAIN = f"{UnitsDrainTrigger.__module__}.{UnitsDrainTrigger.__qualname__}"
UNIT_TOPIC = f"BLK_Rec_{PRODUCTION_UNIT_RECORD_TYPE}"


def units_with_reporters(stack, count: int):
    """*count* units, each with its record and reporter (its first update)."""
    from include.mes.db import mes_engine
    from include.sample_data import generate_plant

    generate_plant(mes_engine("mes_db"), units=count, weeks=1)
    mes = stack.mes()
    units = mes.production_units()
    for unit in units:
        run_unit_update(
            {"production_unit_id": unit.id, "status": "S0", "process_name": ""}, run_id=f"mes__{unit.code}_0"
        )
    return mes, units


def note(mes, unit, status: str) -> tuple[str, dict]:
    """Note a change of *unit* as the MES does; its run id and the params it triggers with."""
    run_id = f"mes__{unit.code}_{status}"
    mes.set_production_unit_state(unit.id, status, f"P {status}", dag_run_id=run_id)
    return run_id, {"production_unit_id": unit.id, "status": status, "process_name": f"P {status}"}


def unit_entries(tmp_path, since: float) -> list[dict]:
    return [
        e for e in read_trace(tmp_path / "trace.jsonl") if e["topic"] == UNIT_TOPIC and e["received"] >= since
    ]


@pytest.mark.parametrize("mes", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_one_run_drains_every_units_changes_side_by_side_in_order(original, tmp_path, mes):  # noqa: F811
    stack = original(mes=mes)
    mes, units = units_with_reporters(stack, UNITS)
    # two changes of each unit, and three more of the first: 15, made before any run starts
    changes = {unit.id: ["S1", "S2", *(["S3", "S4", "S5"] if n == 0 else [])] for n, unit in enumerate(units)}
    runs = {unit.id: [note(mes, unit, status) for status in changes[unit.id]] for unit in units}
    since = time.time()

    first_run_id, first_params = runs[units[0].id][0]
    triggers: list = []
    started = time.monotonic()
    result = run_unit_update(first_params, run_id=first_run_id, triggers=triggers)
    elapsed = time.monotonic() - started
    total = sum(map(len, changes.values()))
    print(
        f"{total} changes of {UNITS} units, gateway {DELAY:g} s late, no echo: drained by one run in {elapsed:.1f} s"
    )

    # one deferral, whose arguments and event carry no token and no gateway data
    assert [classpath for classpath, _kwargs in triggers] == [DRAIN]
    assert result["applied_by"] == first_run_id and result["unit"] == units[0].code
    # every change applied by that run, each unit's in the order made, on the ledger and in the MES
    for unit in units:
        noted = mes.unit_changes(unit.id)
        assert [c.outcome for c in noted] == [APPLIED] * len(noted)
        assert {c.applied_by_run for c in noted if c.status != "S0"} == {first_run_id}
        history = [u["Status"] for u in stack.ledger().record_updates(f"PU_{unit.code}")]
        assert history == ["S0", *changes[unit.id]], (unit.code, history)
    entries = unit_entries(tmp_path, since)
    assert len(entries) == total
    same_token, across = in_flight_overlaps(entries)
    assert same_token == []  # one request in flight per reporter token
    assert len(across) >= UNITS - 1  # units side by side, not one after the other
    # no unit's lock is left behind
    from include.mes import schema

    with mes.engine.connect() as conn:
        assert conn.execute(schema.unit_claims.select()).all() == []

    # the other runs find their change settled: no request, no deferral
    for unit in units:
        for run_id, params in runs[unit.id]:
            if run_id == first_run_id:
                continue
            later: list = []
            assert run_unit_update(params, run_id=run_id, triggers=later)["applied_by"] == first_run_id
            assert later == []
    assert len(unit_entries(tmp_path, since)) == total


def test_a_unit_whose_update_gets_no_answer_is_left_to_a_later_drain(original, tmp_path, monkeypatch):  # noqa: F811
    import asyncio
    import json
    import os

    from airflow.sdk.exceptions import TaskDeferred

    from tests.operator_runs import dag_task, first_event, stored, task_context

    stack = original()
    mes, units = units_with_reporters(stack, 2)
    quiet, busy = units
    run_id, params = note(mes, quiet, "S1")
    note(mes, busy, "S1")
    # the gateway applies every write but answers none; each update waits 2 s, and 1 s more for
    # a late answer (the connection's timeout and late-answer grace)
    stack.server.faults = Faults(drop_rate=1.0)
    conn = json.loads(os.environ["AIRFLOW_CONN_BLOCKCHAIN_MASTER"])
    extra = conn.get("extra") or {}
    extra = json.loads(extra) if isinstance(extra, str) else extra
    conn["extra"] = {**extra, "timeout": 2, "late_answer_grace": 1}
    monkeypatch.setenv("AIRFLOW_CONN_BLOCKCHAIN_MASTER", json.dumps(conn))
    task = dag_task("blockchain_production_unit_update", "drain_unit_changes")
    context = task_context(run_id=run_id, params=params, task=task)
    with pytest.raises(TaskDeferred) as deferred:
        task.execute(context)
    event = asyncio.run(first_event(deferred.value.trigger))
    payload, _size = stored(event)
    assert payload == {"status": DRAINED, "run_id": run_id, "stopped": 2}
    # both changes stay pending, noted as sent, and their units' locks are free for a later drain
    for unit in units:
        (pending,) = mes.unit_changes(unit.id, pending_only=True)
        assert pending.attempted_at is not None
    with pytest.raises(RuntimeError, match="still pending"):
        task.execute_complete(context, event=payload)
    assert mes.unit_change(run_id).pending  # a retry drains again
    # the last try gives the run's change up, the other unit's stays for its own run
    last = task_context(run_id=run_id, params=params, task=task, try_number=4)
    with pytest.raises(RuntimeError, match="still pending"):
        task.execute_complete(last, event=payload)
    assert mes.unit_change(run_id).outcome == "failed"
    assert mes.unit_changes(busy.id, pending_only=True)
