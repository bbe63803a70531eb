"""
### Production unit update

Triggered by the MES through the Airflow REST API when a unit's `Status` or `ProcessName`
changes (it replaces the call the original MES made inside its PATCH view):

```bash
curl -X POST "$AIRFLOW_URL/api/v2/dags/blockchain_production_unit_update/dagRuns" \
  -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \
  -d '{"logical_date": null, "conf": {"production_unit_id": 3, "status": "RUNNING", "process_name": "Stamping"}}'
```

On the unit's first update, `create_unit_record` ensures the record type `ProductionUnit`
(dynamic `Status` and `ProcessName`) and creates its dynamic record `PU_<code>` and the unit's own
reporter agent (created with a fresh strong password; its public key and token are stored in the
MES database, encrypted with Airflow's Fernet key), signed by the master, in the master token's
pool. `update_unit_record` then updates the two properties signed with that reporter's token,
in the reporters' pool: without echo one request in flight is the rule per token, so different
units' updates run side by side, and never behind the master's requests. Later runs reuse the
stored reporter and skip the creation. No task needs the Airflow REST API.

A unit's changes apply in the order the MES made them. The MES notes each change (table
`unit_updates`, in the transaction that saves it) under the `dag_run_id` it then triggers with.
A first task, `claim_unit`, takes the unit's lock in the MES database for the run, outside the
gateway pools: a unit busy with another run is waited for in the triggerer, which takes the lock
for the run when it is free, so a waiting run never keeps a pool slot from the run that holds the
lock. Then `update_unit_record` applies the unit's noted changes not yet applied up to its own, in
order, each noted applied as soon as the ledger has it, and lets go. An answer slower than a
second is awaited in the triggerer, the lock kept meanwhile. A run whose change an earlier run
already applied succeeds at once, naming that run.
A run triggered by hand (no note under its id) notes its own change when it starts: among such
runs the order is the order they start in. A run that fails for good gives its change up, so the
unit's later runs do not try it again (clearing it later does not apply it: make the change
again). See `include/mes/unit_updates.py`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.branch import BranchMixIn
from airflow.sdk import BaseOperator, Param, TriggerRule, dag
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
from blockchain_common import (
    GATEWAY_TASK_TIMEOUT,
    MES_CONN_ID,
    REPORTER_POOL,
    START_DATE,
    TAGS,
    default_args,
    gateway_args,
    mes_repository,
    record_type_memory,
)

from blockchain_provider.operators import (
    ClaimedUpdates,
    DynamicRecordUpdate,
    PendingUpdate,
    UpdateDynamicRecordOperator,
)
from include.day_report_keys import (
    PRODUCTION_UNIT_RECORD_PROPERTIES,
    PRODUCTION_UNIT_RECORD_TYPE,
    PRODUCTION_UNIT_RECORD_TYPE_DESCRIPTION,
    production_unit_dynamic_properties,
    production_unit_record_description,
    production_unit_record_id,
    production_unit_record_properties,
)
from include.mes.models import (
    PROCESS_NAME_MAX_LENGTH,
    STATUS_MAX_LENGTH,
    validate_process_name,
    validate_unit_status,
)
from include.mes.visible_text import PROCESS_NAME_PATTERN, STATUS_PATTERN

if TYPE_CHECKING:
    from include.mes.models import ProductionUnit
    from include.mes.repository import MesRepository
    from include.mes.unit_updates import UnitChange

#: Runs at once: different units' changes side by side; one unit's take turns on its lock.
MAX_ACTIVE_RUNS = 16

#: Seconds the gateway task waits for its unit's lock, which its run's claim took: a lock held by
#: another run is not waited for in the pool (see :func:`unit_update`).
IN_POOL_LOCK_WAIT = 1.0

#: The task that creates a unit's record and reporter (signed by the master, in the master's pool)
#: and the one that updates it (signed by the unit's reporter, in the reporters' pool).
CREATE_TASK, UPDATE_TASK = "create_unit_record", "update_unit_record"

#: The MES's unit ids are 32-bit database integers.
UNIT_ID_MAX = 2**31 - 1


def unit_update_args(params: dict[str, Any]) -> tuple[int, str, str]:
    """The unit id, status and process name of a run's params, as the flow takes them.

    JSON Schema counts 3.0 as an integer: it is unit 3. The status and process name get the MES's
    own checks (the Params' patterns are the same rule). A value the schema should have refused
    fails the task at once (:class:`AirflowFailException`, no retries): retrying cannot fix it,
    and a retrying run would hold back the unit's later updates.
    """
    unit_id = params.get("production_unit_id")
    if isinstance(unit_id, float) and unit_id.is_integer():
        unit_id = int(unit_id)
    status, process_name = params.get("status"), params.get("process_name", "")
    if isinstance(unit_id, bool) or not isinstance(unit_id, int) or not 1 <= unit_id <= UNIT_ID_MAX:
        raise AirflowFailException(
            f"Invalid production_unit_id {unit_id!r:.60}: an integer from 1 to {UNIT_ID_MAX}"
        )
    try:
        return unit_id, validate_unit_status(status), validate_process_name(process_name)
    except ValueError as exc:
        raise AirflowFailException(str(exc)) from None


def own_change(context: Mapping[str, Any]) -> tuple[MesRepository, ProductionUnit, UnitChange]:
    """The MES, the run's unit and the run's own change: the one the MES noted under the run's id,
    or the params' values noted now (a run triggered by hand; noting again returns the same).

    A unit that does not exist, or values the MES refuses, fail the task at once (no retries: a
    retry would fail alike, and would hold back the unit's later updates).
    """
    from include.mes.models import ProductionUnitNotFoundError

    unit_id, status, process_name = unit_update_args(context["params"])
    repository = mes_repository()
    try:
        unit = repository.require_production_unit(unit_id)
        own = repository.note_unit_change(unit_id, status, process_name, context["dag_run"].run_id)
    except ProductionUnitNotFoundError as exc:
        raise AirflowFailException(str(exc)) from None
    except ValueError as exc:  # a value the MES refuses, or the run id carries another unit's change
        raise AirflowFailException(str(exc)) from None
    return repository, unit, own


class ClaimUnitOperator(BaseOperator, BranchMixIn):
    """Note the run's change and take its unit's lock for the run, outside every gateway pool; then
    go on to the unit's creation (master's pool) if it has no reporter yet, else straight to its
    update (reporters' pool).

    A unit busy with another run is waited for in the triggerer (:class:`~include.mes.unit_claims.UnitClaimTrigger`,
    which takes the lock for the run when it is free): the wait holds no worker slot and no slot of
    a gateway pool, so the lock's holder always finds the slot it needs. Nothing is claimed when
    the run's change was settled already. Returns the task ids it goes on to.
    """

    ui_color = "#fff4e0"
    inherits_from_skipmixin = True

    def execute(self, context: Mapping[str, Any]) -> Any:
        from include.mes.unit_claims import UnitClaimTrigger
        from include.mes.unit_updates import claim_unit

        repository, unit, own = own_change(context)
        if not own.pending:
            self.log.info("Change %s was settled already by run %s", own.seq, own.applied_by_run)
            return self.do_branch(context, UPDATE_TASK)
        run_id = context["dag_run"].run_id
        if claim_unit(repository.engine, unit.id, run_id):
            return self._go_on(context, repository, unit)
        self.log.info(
            "Production unit %s is busy with another run: its lock is awaited in the triggerer", unit.code
        )
        self.defer(
            trigger=UnitClaimTrigger(conn_id=MES_CONN_ID, unit_id=unit.id, run_id=run_id),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Mapping[str, Any], event: Any = None, **_: Any) -> Any:
        """Resume once the triggerer took the lock for the run."""
        from include.mes.unit_claims import CLAIMED

        if not isinstance(event, Mapping) or event.get("status") != CLAIMED:
            raise RuntimeError(f"Unexpected event from the unit's claim: {event!r:.200}")
        repository, unit, _own = own_change(context)
        return self._go_on(context, repository, unit)

    def _go_on(self, context: Mapping[str, Any], repository: MesRepository, unit: ProductionUnit) -> Any:
        """The lock is the run's: create the unit's record and reporter first if it has none."""
        reporter = repository.reporter(production_unit_record_id(unit))
        if reporter is None or reporter.token is None:
            return self.do_branch(context, CREATE_TASK)
        return self.do_branch(context, UPDATE_TASK)


@contextmanager
def unit_update(context: Mapping[str, Any]) -> Iterator[ClaimedUpdates]:
    """The unit's noted changes up to the run's own, under the unit's lock for the block.

    The lock is the run's already (``claim_unit`` took it, outside the pool); should it have
    lapsed and been taken by another run meanwhile, the try fails at once instead of waiting in
    the pool's slot that the holder needs, and its retry claims again. A run that fails on its
    last try gives its change up.
    """
    from include.mes.reporter_store import MesReporterStore
    from include.mes.unit_updates import FAILED, REFUSED, UnitLockTimeoutError, release_unit

    repository, unit, own = own_change(context)
    unit_id, run_id = unit.id, context["dag_run"].run_id
    summary = {"record_id": production_unit_record_id(unit), "unit": unit.code, "change": own.seq}
    if not own.pending:
        # settled while this run waited for the lock (another run's drain applied it, in order):
        # the lock its claim took then must go now, not when its lease ends
        release_unit(repository.engine, unit_id, run_id)
        if own.outcome == REFUSED:
            raise AirflowFailException(f"Change {own.seq} was refused for good: {own.detail}")
        if own.outcome == FAILED:
            # the unit's later changes may be on the ledger already: applying it now would
            # put older values back
            raise AirflowFailException(
                f"Change {own.seq} was given up ({own.detail}); make the change again to apply it"
            )
        yield ClaimedUpdates(pending=[], applied_by=f"run {own.applied_by_run}", summary=summary)
        return
    store = MesReporterStore(repository, unit.code, MES_CONN_ID)
    drain = repository.drain_unit_changes(unit_id, own.seq, run_id, lock_timeout=IN_POOL_LOCK_WAIT)
    try:
        with drain as changes:
            pending = [
                PendingUpdate(
                    update=DynamicRecordUpdate(
                        record_id=production_unit_record_id(unit),
                        description=production_unit_record_description(unit),
                        properties=production_unit_record_properties(unit),
                        updates=production_unit_dynamic_properties(change.status, change.process_name),
                        store=store,
                    ),
                    key=f"change {change.seq}",
                    own=change.seq == own.seq,
                    maybe_sent=change.attempted_at is not None,
                    mark_sending=partial(drain.mark_attempted, change.seq),
                    mark_applied=partial(drain.mark_applied, change.seq),
                    mark_refused=partial(drain.mark_refused, change.seq),
                )
                for change in changes
            ]
            applied_by = None
            if not any(item.own for item in pending):
                # another run's drain applied it while this one waited for the lock
                settled = repository.unit_change(run_id)
                if settled is not None and settled.outcome == REFUSED:
                    raise AirflowFailException(f"Change {own.seq} was refused for good: {settled.detail}")
                applied_by = f"run {settled.applied_by_run}" if settled is not None else None
            try:
                # the creation hands the lock on to the run's update task
                yield ClaimedUpdates(
                    pending=pending, applied_by=applied_by, summary=summary, keep=partial(drain.keep, 0.0)
                )
            except TaskDeferred as deferred:
                # the task goes on when the triggerer has the answer: the lock lasts the wait out
                away = deferred.timeout.total_seconds() if deferred.timeout is not None else 0.0
                drain.keep(away)
                raise
    except UnitLockTimeoutError as exc:
        # the change is valid and stays noted: the drain that holds the lock, or a later one,
        # applies it in its turn; waiting here would keep the pool's slot from the holder
        raise UnitLockTimeoutError(
            f"{exc}: this run's claim lapsed before its update got a slot of the pool; the try "
            "fails rather than wait in that slot, and its retry claims again"
        ) from None
    except TaskDeferred:
        raise
    except BaseException as exc:
        ti = context.get("ti")
        last_try = ti is not None and getattr(ti, "try_number", 1) > getattr(ti, "max_tries", 0)
        if isinstance(exc, AirflowFailException) or last_try:
            # the unit's later runs then pass it by instead of trying it again
            repository.give_up_unit_change(run_id, f"its run failed for good: {type(exc).__name__}")
        raise


@dag(
    dag_id="blockchain_production_unit_update",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=MAX_ACTIVE_RUNS,
    default_args=default_args(),
    tags=[*TAGS, "production-unit"],
    doc_md=__doc__,
    params={
        "production_unit_id": Param(
            type="integer",
            minimum=1,
            maximum=UNIT_ID_MAX,
            title="Production unit id",
            description="The unit's id in the MES.",
        ),
        "status": Param(
            type="string",
            minLength=1,
            maxLength=STATUS_MAX_LENGTH,
            # the MES's own rule (include/mes/visible_text.py)
            pattern=STATUS_PATTERN,
            title="Status",
            description=(
                "The unit's new status: at least one visible character; no control, format (zero "
                "width, bidi override), line or paragraph separator, private-use or unassigned one."
            ),
        ),
        "process_name": Param(
            type="string",
            maxLength=PROCESS_NAME_MAX_LENGTH,
            pattern=PROCESS_NAME_PATTERN,
            title="Process name",
            description=(
                "The process the unit now runs: no control, format, line or paragraph separator, "
                "private-use or unassigned character."
            ),
        ),
    },
)
def blockchain_production_unit_update() -> None:
    claim = ClaimUnitOperator(
        task_id="claim_unit",
        doc_md=(
            "Note the run's change and take the unit's lock for the run; a unit busy with another run is "
            "waited for in the triggerer, outside the gateway pools, so the lock's holder keeps its way to "
            "their slots. Goes on to the unit's creation when it has no reporter yet, else to its update."
        ),
        # no gateway pool: the wait for the lock must never keep a slot from the run that holds it
        execution_timeout=GATEWAY_TASK_TIMEOUT,
    )
    unit_record = {
        "record_type": PRODUCTION_UNIT_RECORD_TYPE,
        "record_type_description": PRODUCTION_UNIT_RECORD_TYPE_DESCRIPTION,
        "record_type_properties": PRODUCTION_UNIT_RECORD_PROPERTIES,
        "record_types": record_type_memory,
        "update": unit_update,
    }
    create = UpdateDynamicRecordOperator(
        task_id=CREATE_TASK,
        doc_md=(
            "Under the unit's lock, on its first update only: ensure the record type, create the unit's "
            "record and reporter (signed by the master, in the master token's pool)."
        ),
        part="create",
        **unit_record,
        # the creation's answer holds the reporter's token: it is awaited in the worker
        **gateway_args(),
    )
    update = UpdateDynamicRecordOperator(
        task_id=UPDATE_TASK,
        doc_md=(
            "Under the unit's lock: apply the unit's noted changes up to this run's own, in order, signed "
            "by the unit's reporter (in the reporters' pool: units side by side, not behind the master's "
            "requests)."
        ),
        part="update",
        **unit_record,
        # an answer that takes longer than a second is awaited in the triggerer, which reads the
        # reporter's token from the MES
        **gateway_args(pool=REPORTER_POOL),
        # after the creation, or straight after the claim when the unit has its reporter
        trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
    )
    claim >> [create, update]
    create >> update


blockchain_production_unit_update()
