"""A run that cannot take its unit's lock never keeps a slot of the token's pool.

The livelock this guards against (20 updates of 5 units, a gateway answering 1 s late, no echo,
a pool of one slot): the run holding unit 4's lock came back from the triggerer and waited for
the pool's only slot, while another run of unit 4 kept taking that slot, waited for the lock in
it, deferred on a timer (a deferred task keeps its slot: the pool counts deferred tasks) and was
scheduled again first. Here the scheduler's worst order is played: the waiting run's tasks run
first, one after the other, while the lock is another run's.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from airflow.sdk.exceptions import DownstreamTasksSkipped, TaskDeferred

from tests.operator_runs import first_event, stored, task_context

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def unit_dag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(ROOT / "dags")).dags["blockchain_production_unit_update"]


@pytest.fixture
def mes(monkeypatch, tmp_path):
    """The MES database of the ``mes_db`` connection, a SQLite file, with one unit."""
    from include.mes.db import engine_from_url
    from include.mes.repository import MesRepository

    path = tmp_path / "mes.sqlite3"
    monkeypatch.setenv("AIRFLOW_CONN_MES_DB", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    repository = MesRepository(engine_from_url(f"sqlite:///{path}"))
    repository.create_schema()
    repository.add_production_unit("PT4", "Press line 4", "Running", "Stamping")
    try:
        yield repository
    finally:
        repository.engine.dispose()


def test_a_run_waiting_for_its_units_lock_keeps_no_slot_of_the_tokens_pool(unit_dag, mes):
    from blockchain_common import REQUEST_POOL

    from include.mes.unit_updates import claim_unit, release_unit, unit_lock_holder

    unit = mes.production_units()[0]
    conf = {"production_unit_id": unit.id, "process_name": "Stamping"}
    mes.set_production_unit_state(unit.id, "W", "Stamping", dag_run_id="mes__waiter")
    mes.set_production_unit_state(unit.id, "H", "Stamping", dag_run_id="mes__holder")
    # the holder's task deferred on its gateway answer, keeping the lock; it is back from the
    # triggerer and waits for a slot of the pool
    assert claim_unit(mes.engine, unit.id, "mes__holder")

    # the waiter's tasks, in the DAG's order, as far as they go while the lock is the holder's
    waits = []
    for task in unit_dag.topological_sort():
        context = task_context(run_id="mes__waiter", params={**conf, "status": "W"}, task=task)
        started = time.monotonic()
        try:
            task.execute(context)
        except TaskDeferred as deferred:
            waits.append((task.task_id, task.pool, time.monotonic() - started, deferred))
            break
    else:
        pytest.fail("the waiter's tasks all ran while the holder held the unit's lock")

    ((task_id, pool, waited_in_slot, deferred),) = waits
    assert unit_lock_holder(mes.engine, unit.id) == "mes__holder"
    # the wait for the lock keeps no slot of the token's pool: a task of the pool never waits
    # for a lock another run holds, neither in the worker nor deferred
    assert pool != REQUEST_POOL, (task_id, pool, type(deferred.trigger).__name__, waited_in_slot)
    assert type(deferred.trigger).__name__ == "UnitClaimTrigger"
    assert "token" not in json.dumps(deferred.trigger.serialize()[1]).lower()

    # the holder's claim is its own lock: it goes on at once, to the pool
    holder_claim = unit_dag.get_task("claim_unit")
    with pytest.raises(DownstreamTasksSkipped) as skipped:
        holder_claim.execute(
            task_context(run_id="mes__holder", params={**conf, "status": "H"}, task=holder_claim)
        )
    # its first update: the master creates its reporter first, and the drain is skipped
    assert [task_id for task_id, _ in skipped.value.tasks] == ["drain_unit_changes"]

    # the holder lets go; the triggerer takes the lock for the waiter, which then goes on
    async def claimed_when_released():
        waiting = asyncio.ensure_future(first_event(deferred.trigger))
        await asyncio.sleep(1.0)
        assert not waiting.done()  # the lock is still the holder's
        release_unit(mes.engine, unit.id, "mes__holder")
        return await asyncio.wait_for(waiting, 10)

    event = asyncio.run(claimed_when_released())
    payload, _size = stored(event)
    assert unit_lock_holder(mes.engine, unit.id) == "mes__waiter"
    waiter_claim = unit_dag.get_task(task_id)
    context = task_context(run_id="mes__waiter", params={**conf, "status": "W"}, task=waiter_claim)
    with pytest.raises(DownstreamTasksSkipped) as skipped:
        getattr(waiter_claim, deferred.method_name)(context, event=payload, **(deferred.kwargs or {}))
    assert [task_id for task_id, _ in skipped.value.tasks] == ["drain_unit_changes"]


def test_a_gateway_task_whose_claim_was_taken_over_fails_its_try_at_once(unit_dag, mes):
    """A claim that lapsed while the task waited for its slot, and that another run took: the
    task does not wait for it in the slot the other run needs; its try fails, to be retried."""
    from include.mes.unit_updates import UnitLockTimeoutError, claim_unit

    unit = mes.production_units()[0]
    mes.set_production_unit_state(unit.id, "W", "Stamping", dag_run_id="mes__late")
    assert claim_unit(mes.engine, unit.id, "mes__other")
    task = unit_dag.get_task("update_unit_record")
    context = task_context(
        run_id="mes__late",
        params={"production_unit_id": unit.id, "status": "W", "process_name": "Stamping"},
        task=task,
    )
    started = time.monotonic()
    with pytest.raises(UnitLockTimeoutError, match="held by run mes__other"):
        task.execute(context)
    assert time.monotonic() - started < 5
    assert "hook" not in vars(task)  # nothing sent
    assert mes.unit_change("mes__late").pending  # its change stays noted for the holder or a retry


def test_a_unit_with_its_reporter_goes_straight_to_the_drain(unit_dag, mes, monkeypatch):
    """Only a unit's first update needs the master's pool (its record and reporter are created);
    later ones skip the creation and go to the drain at once, in no gateway pool, without taking
    the unit's lock (the drain takes it in the triggerer)."""
    from airflow.sdk.crypto import get_fernet
    from blockchain_common import REPORTER_POOL, REQUEST_POOL
    from cryptography.fernet import Fernet

    from include.mes.unit_updates import unit_lock_holder

    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", Fernet.generate_key().decode())
    get_fernet.cache_clear()
    try:
        unit = mes.production_units()[0]
        mes.prepare_reporter(unit.code, f"PU_{unit.code}", "BLK_Rec_ProductionUnit", "a-strong-password-0123")
        mes.store_reporter_credentials(f"PU_{unit.code}", "02" + "ab" * 32, "the-reporters-token")
        mes.set_production_unit_state(unit.id, "S", "Stamping", dag_run_id="mes__later")
        claim = unit_dag.get_task("claim_unit")
        conf = {"production_unit_id": unit.id, "status": "S", "process_name": "Stamping"}
        with pytest.raises(DownstreamTasksSkipped) as skipped:
            claim.execute(task_context(run_id="mes__later", params=conf, task=claim))
    finally:
        get_fernet.cache_clear()
    assert [task_id for task_id, _ in skipped.value.tasks] == ["create_unit_record"]
    assert unit_lock_holder(mes.engine, unit.id) is None
    assert unit_dag.get_task("create_unit_record").pool == REQUEST_POOL
    assert unit_dag.get_task("update_unit_record").pool == REPORTER_POOL
    assert unit_dag.get_task("drain_unit_changes").pool not in (REQUEST_POOL, REPORTER_POOL)


def test_a_run_whose_change_another_run_applied_lets_go_of_the_lock_its_claim_took(unit_dag, mes):
    """Runs start in any order: a later run's drain may apply an earlier run's change while the
    earlier run waits for the lock. The earlier run's claim then takes the lock, and its update
    finds nothing to send: it must let the lock go, or the unit's other runs wait for its lease
    to end (minutes; seen with 20 updates of 5 units on the production shape)."""
    from include.mes.unit_updates import claim_unit, unit_lock_holder

    unit = mes.production_units()[0]
    conf = {"production_unit_id": unit.id, "process_name": "Stamping"}
    mes.set_production_unit_state(unit.id, "E", "Stamping", dag_run_id="mes__early")
    mes.set_production_unit_state(unit.id, "L", "Stamping", dag_run_id="mes__late")
    # the later run drained both changes, in order, and let go of the lock
    drain = mes.drain_unit_changes(unit.id, mes.unit_change("mes__late").seq, "mes__late")
    with drain as changes:
        assert [change.status for change in changes] == ["E", "L"]
        for change in changes:
            drain.mark_applied(change.seq)
    assert unit_lock_holder(mes.engine, unit.id) is None
    # the earlier run's claim takes the lock for it (as its trigger does once the lock is free)
    assert claim_unit(mes.engine, unit.id, "mes__early")
    task = unit_dag.get_task("update_unit_record")
    task.execute(task_context(run_id="mes__early", params={**conf, "status": "E"}, task=task))
    assert mes.unit_change("mes__early").applied_by_run == "mes__late"
    assert unit_lock_holder(mes.engine, unit.id) is None


def test_a_run_with_a_reporter_defers_to_the_drain_with_nothing_secret_in_its_arguments(
    unit_dag, mes, monkeypatch
):
    """The drain task defers at once (no wait in the worker); its trigger carries connection ids
    and the run, never a token, and refuses arguments that make no sense, naming them."""
    from include.mes.unit_drain import UnitsDrainTrigger

    unit = mes.production_units()[0]
    params = {"production_unit_id": unit.id, "status": "D", "process_name": "Stamping"}
    mes.set_production_unit_state(unit.id, "D", "Stamping", dag_run_id="mes__drain")
    task = unit_dag.get_task("drain_unit_changes")
    started = time.monotonic()
    with pytest.raises(TaskDeferred) as deferred:
        task.execute(task_context(run_id="mes__drain", params=params, task=task))
    assert time.monotonic() - started < 5
    classpath, kwargs = deferred.value.trigger.serialize()
    assert classpath == "include.mes.unit_drain.UnitsDrainTrigger"
    assert kwargs["run_id"] == "mes__drain" and kwargs["conn_id"] == "mes_db"
    assert "token" not in json.dumps({k: v for k, v in kwargs.items() if k != "token_conn_id"}).lower()
    assert UnitsDrainTrigger(**kwargs).serialize() == (classpath, kwargs)
    for name, value in (("timeout", 0), ("poll", -1), ("max_units", 0), ("max_units", True)):
        with pytest.raises(ValueError, match=name):
            UnitsDrainTrigger(**{**kwargs, name: value})
    # a change settled already: the task ends at once, naming who applied it
    drain = mes.drain_unit_changes(unit.id, mes.unit_change("mes__drain").seq, "mes__other")
    with drain as pending:
        drain.mark_applied(pending[0].seq, "done")
    result = task.execute(task_context(run_id="mes__drain", params=params, task=task))
    assert result["applied_by"] == "mes__other"
