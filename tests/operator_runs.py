"""Run a provider operator in the test process as a task would: blocking, or deferred with each
trigger revived from what it serialises and run to its first event."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import msgspec
from airflow.providers.standard.triggers.temporal import DateTimeTrigger
from airflow.sdk.exceptions import TaskDeferred
from airflow.sdk.execution_time.comms import _new_encoder
from airflow.triggers.base import TriggerEvent

from blockchain_provider.triggers.await_response import AwaitResponsesTrigger
from blockchain_provider.triggers.serial_requests import SerialRequestsTrigger
from include.mes.unit_claims import UnitClaimTrigger
from include.mes.unit_drain import UnitsDrainTrigger

#: The triggers a task defers to, by the class path they serialise with (a pause before looking
#: at a busy queue again is Airflow's own timer; a production unit's lock is waited for in
#: :class:`UnitClaimTrigger`, and the units' changes are drained in :class:`UnitsDrainTrigger`).
TRIGGERS = {
    f"{cls.__module__}.{cls.__qualname__}": cls
    for cls in (
        AwaitResponsesTrigger,
        SerialRequestsTrigger,
        DateTimeTrigger,
        UnitClaimTrigger,
        UnitsDrainTrigger,
    )
}


def stored(event: TriggerEvent) -> tuple[Any, int]:
    """*event*'s payload as the resumed task gets it, and its size encoded: Airflow's triggerer
    encodes an event with msgpack (a trigger whose event does not encode is failed), and the
    metadata database stores the payload as JSON."""
    encoded = _new_encoder().encode(event)
    payload = msgspec.msgpack.decode(encoded)["payload"]
    json.dumps(payload, ensure_ascii=False, default=str).encode("utf-8")
    return payload, len(encoded)


def task_context(
    *,
    try_number: int = 1,
    max_tries: int = 3,
    params: dict[str, Any] | None = None,
    run_id: str = "manual__test",
    **extra: Any,
) -> dict[str, Any]:
    """The parts of a task's context the operators and the DAGs' functions read: the try number
    (of *max_tries* retries, the DAGs' default), the params and the run (*run_id*, started now)."""
    pushed: dict[str, Any] = {}
    ti = SimpleNamespace(
        try_number=try_number,
        max_tries=max_tries,
        map_index=-1,
        # a branch reads the DAG from the task instance's task and notes what it follows
        task=extra.get("task"),
        xcom_push=lambda key, value: pushed.update({key: value}),
    )
    dag_run = SimpleNamespace(run_id=run_id, start_date=datetime.now(UTC))
    return {"ti": ti, "params": dict(params or {}), "dag_run": dag_run, **extra}


def run_operator(
    operator: Any,
    context: dict[str, Any] | None = None,
    triggers: list[tuple[str, dict[str, Any]]] | None = None,
    event_sizes: list[int] | None = None,
) -> Any:
    """Execute *operator*; while it defers, run its trigger to its event and resume it. Each
    trigger's class path and arguments are appended to *triggers* when given, and the size of
    each event, encoded as the triggerer encodes it, to *event_sizes*."""
    context = task_context() if context is None else context
    try:
        return operator.execute(context)
    except TaskDeferred as deferred:
        return resume(operator, context, deferred, triggers, event_sizes)


def resume(
    operator: Any,
    context: dict[str, Any],
    deferred: TaskDeferred,
    triggers: list[tuple[str, dict[str, Any]]] | None = None,
    event_sizes: list[int] | None = None,
) -> Any:
    """Run the trigger *operator* deferred to, resume it with the event, and so on until it
    returns (see :func:`run_operator`)."""
    current = deferred
    while True:
        classpath, kwargs = current.trigger.serialize()
        if classpath.startswith("blockchain_provider."):
            json.dumps(kwargs)  # only primitives cross the database
        if triggers is not None:
            triggers.append((classpath, kwargs))
        event = asyncio.run(first_event(TRIGGERS[classpath](**kwargs)))
        json.dumps(current.kwargs or {})  # the resume state too
        payload, size = stored(event)
        if event_sizes is not None:
            event_sizes.append(size)
        try:
            return getattr(operator, current.method_name)(context, event=payload, **(current.kwargs or {}))
        except TaskDeferred as deferred:
            current = deferred


async def first_event(trigger: Any) -> TriggerEvent:
    """Run *trigger* to its first event, then clean it up as the triggerer does."""
    try:
        async for event in trigger.run():
            return event
    finally:
        await trigger.cleanup()
    raise AssertionError("the trigger ended without an event")


def dag_task(dag_id: str, task_id: str, mapped: dict[str, Any] | None = None) -> Any:
    """Task *task_id* of DAG *dag_id* as ``dags/`` builds it, from a fresh parse (so no hook is
    cached from an earlier run); a mapped task is unmapped with *mapped* as its expanded arguments,
    as a worker does for one map index."""
    from pathlib import Path

    from airflow.dag_processing.dagbag import DagBag

    dags = Path(__file__).resolve().parents[1] / "dags"
    task = DagBag(str(dags)).dags[dag_id].get_task(task_id)
    return task if mapped is None else task.unmap(mapped)


def run_unit_update(
    params: dict[str, Any],
    *,
    run_id: str = "manual__test",
    try_number: int = 1,
    triggers: list[tuple[str, dict[str, Any]]] | None = None,
) -> Any:
    """One run of ``blockchain_production_unit_update`` as the scheduler runs its tasks: the claim,
    then what it goes on to (on the unit's first update its creation, then the update; else the
    drain); returns the last task's result."""
    from airflow.sdk.exceptions import DownstreamTasksSkipped

    dag_id = "blockchain_production_unit_update"
    claim = dag_task(dag_id, "claim_unit")
    try:
        run_operator(
            claim, task_context(try_number=try_number, params=params, run_id=run_id, task=claim), triggers
        )
    except DownstreamTasksSkipped as skipped:
        left = {task_id for task_id, _map_index in skipped.tasks}
    else:
        raise AssertionError("the claim follows one branch: the unit's creation or the drain")
    # the update follows the creation, and is skipped with it
    following = (
        ["drain_unit_changes"]
        if "create_unit_record" in left
        else ["create_unit_record", "update_unit_record"]
    )
    result = None
    for task_id in following:
        task = dag_task(dag_id, task_id)
        result = run_operator(
            task, task_context(try_number=try_number, params=params, run_id=run_id, task=task), triggers
        )
    return result
