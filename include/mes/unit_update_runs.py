"""A production unit update run's side of the MES: its params, its claim on the unit, its queue.

A run of ``blockchain_production_unit_update`` notes its change and takes its unit's lock in a
first task (:class:`ClaimUnitOperator`), outside every gateway pool; its gateway tasks then drain
the unit's noted changes up to the run's own, in order, through :class:`UnitChangeQueue`, the
:class:`~blockchain_provider.operators.UpdateQueue` the MES keeps in its database
(:mod:`include.mes.unit_updates`). A run that fails for good gives its change up, so the unit's
later runs pass it by.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.branch import BranchMixIn
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from blockchain_provider.operators import ClaimedUpdates, DynamicRecordUpdate, PendingUpdate
from blockchain_provider.operators.update_queue import last_try
from include.day_report_keys import (
    production_unit_dynamic_properties,
    production_unit_record_description,
    production_unit_record_id,
    production_unit_record_properties,
)
from include.mes.models import ProductionUnitNotFoundError, validate_process_name, validate_unit_status
from include.mes.reporter_store import MesReporterStore
from include.mes.unit_updates import (
    FAILED,
    REFUSED,
    UnitLockTimeoutError,
    claim_unit,
    release_unit,
)

if TYPE_CHECKING:
    from include.mes.models import ProductionUnit
    from include.mes.repository import MesRepository
    from include.mes.unit_updates import UnitChange

__all__ = [
    "IN_POOL_LOCK_WAIT",
    "UNIT_ID_MAX",
    "ClaimUnitOperator",
    "DrainUnitChangesOperator",
    "UnitChangeQueue",
    "own_change",
    "unit_update_args",
]

#: The MES's unit ids are 32-bit database integers.
UNIT_ID_MAX = 2**31 - 1

#: Seconds the gateway task waits for its unit's lock, which its run's claim took: a lock held by
#: another run is not waited for in the pool (see :class:`UnitChangeQueue`).
IN_POOL_LOCK_WAIT = 1.0


def unit_update_args(params: Mapping[str, Any]) -> tuple[int, str, str]:
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


def own_change(repository: MesRepository, context: Mapping[str, Any]) -> tuple[ProductionUnit, UnitChange]:
    """The run's unit and its own change: the one the MES noted under the run's id, or the params'
    values noted now (a run triggered by hand; noting again returns the same).

    A unit that does not exist, or values the MES refuses, fail the task at once (no retries: a
    retry would fail alike, and would hold back the unit's later updates).
    """
    unit_id, status, process_name = unit_update_args(context["params"])
    try:
        unit = repository.require_production_unit(unit_id)
        own = repository.note_unit_change(unit_id, status, process_name, context["dag_run"].run_id)
    except ProductionUnitNotFoundError as exc:
        raise AirflowFailException(str(exc)) from None
    except ValueError as exc:  # a value the MES refuses, or the run id carries another unit's change
        raise AirflowFailException(str(exc)) from None
    return unit, own


def fail_unless_applied(own: UnitChange) -> None:
    """Fail the task for good (no retries) when the run's settled change was refused or given up.

    A change given up stays so: the unit's later changes may be on the ledger already, and
    applying it now would put older values back.
    """
    if own.outcome == REFUSED:
        raise AirflowFailException(f"Change {own.seq} was refused for good: {own.detail}")
    if own.outcome == FAILED:
        raise AirflowFailException(
            f"Change {own.seq} was given up ({own.detail}); make the change again to apply it"
        )


def given_up_reason(failure: BaseException) -> str:
    """What a change given up by a run that failed for good is noted with."""
    return f"its run failed for good: {type(failure).__name__}"


class ClaimUnitOperator(BaseOperator, BranchMixIn):
    """Note the run's change. A unit with its reporter goes straight to the drain (which takes the
    units' locks in the triggerer); one without takes its lock for the run, outside every gateway
    pool, and goes on to its creation (master's pool).

    A unit busy with another run is waited for in the triggerer (:class:`~include.mes.unit_claims.UnitClaimTrigger`,
    which takes the lock for the run when it is free): the wait holds no worker slot and no slot of
    a gateway pool, so the lock's holder always finds the slot it needs. Nothing is claimed when
    the run's change was settled already. Returns the task ids it goes on to.

    :param repository: gives the MES database when the task runs.
    :param conn_id: the MES database's connection, for the triggerer's wait.
    :param create_task_id: the task that creates the unit's record and reporter (then updates it).
    :param drain_task_id: the task that drains the changes of the units with reporters.
    """

    ui_color = "#fff4e0"
    inherits_from_skipmixin = True

    def __init__(
        self,
        *,
        repository: Callable[[], MesRepository],
        conn_id: str,
        create_task_id: str,
        drain_task_id: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.repository = repository
        self.conn_id = conn_id
        self.create_task_id = create_task_id
        self.drain_task_id = drain_task_id

    def execute(self, context: Mapping[str, Any]) -> Any:
        from include.mes.unit_claims import UnitClaimTrigger

        repository = self.repository()
        unit, own = own_change(repository, context)
        if not own.pending:
            self.log.info("Change %s was settled already by run %s", own.seq, own.applied_by_run)
            return self.do_branch(context, self.drain_task_id)
        if _has_reporter(repository, unit):
            # the drain takes the locks of the units it applies, in the triggerer
            return self.do_branch(context, self.drain_task_id)
        run_id = context["dag_run"].run_id
        if claim_unit(repository.engine, unit.id, run_id):
            return self._go_on(context, repository, unit)
        self.log.info(
            "Production unit %s is busy with another run: its lock is awaited in the triggerer", unit.code
        )
        self.defer(
            trigger=UnitClaimTrigger(conn_id=self.conn_id, unit_id=unit.id, run_id=run_id),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Mapping[str, Any], event: Any = None, **_: Any) -> Any:
        """Resume once the triggerer took the lock for the run."""
        from include.mes.unit_claims import CLAIMED

        if not isinstance(event, Mapping) or event.get("status") != CLAIMED:
            raise RuntimeError(f"Unexpected event from the unit's claim: {event!r:.200}")
        repository = self.repository()
        unit, _own = own_change(repository, context)
        return self._go_on(context, repository, unit)

    def _go_on(self, context: Mapping[str, Any], repository: MesRepository, unit: ProductionUnit) -> Any:
        """The lock is the run's: create the unit's record and reporter if it has none; if the run
        that held the lock created them, let go of it and leave the change to the drain."""
        if not _has_reporter(repository, unit):
            return self.do_branch(context, self.create_task_id)
        release_unit(repository.engine, unit.id, context["dag_run"].run_id)
        return self.do_branch(context, self.drain_task_id)


def _has_reporter(repository: MesRepository, unit: ProductionUnit) -> bool:
    """Whether *unit*'s record has its reporter, with its token."""
    reporter = repository.reporter(production_unit_record_id(unit))
    return reporter is not None and reporter.token is not None


class DrainUnitChangesOperator(BaseOperator):
    """Have the run's change applied, with every unit's noted changes, from the triggerer.

    The task defers at once to :class:`~include.mes.unit_drain.UnitsDrainTrigger`, which drains
    the pending changes of every unit with a reporter that no other run holds, side by side (one
    request in flight per reporter token), and ends once the run's own change is settled. The task
    resumes once, and reads from the MES what became of the change: applied (by this run or an
    earlier one, named in the result), refused for good (the task fails, without retries), or
    still pending (its update got no answer in time: the try fails, and its retry drains again;
    after the last try the change is given up, as the unit's lock allows).

    :param repository: gives the MES database when the task runs.
    :param conn_id: the MES database's connection, for the triggerer.
    :param kafka_config_id: the ``kafka`` connection.
    :param token_conn_id: the ``blockchain_token`` connection whose agent created the reporters.
    """

    ui_color = "#e8f4ff"

    def __init__(
        self,
        *,
        repository: Callable[[], MesRepository],
        conn_id: str,
        kafka_config_id: str,
        token_conn_id: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.repository = repository
        self.conn_id = conn_id
        self.kafka_config_id = kafka_config_id
        self.token_conn_id = token_conn_id

    def execute(self, context: Mapping[str, Any]) -> dict[str, Any]:
        from include.mes.unit_drain import UnitsDrainTrigger

        unit, own = own_change(self.repository(), context)
        if not own.pending:
            return self._settled(unit, own)
        self.defer(
            trigger=UnitsDrainTrigger(
                conn_id=self.conn_id,
                run_id=context["dag_run"].run_id,
                kafka_config_id=self.kafka_config_id,
                token_conn_id=self.token_conn_id,
            ),
            method_name="execute_complete",
            timeout=self.execution_timeout,
        )

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Any) -> Any:
        """Resume after the triggerer. When the wait itself failed (the trigger failed, or the
        deferral timed out) the change may have been applied meanwhile: then the task succeeds;
        else the try fails, and the change stays pending (the trigger may still be stopping with
        the unit's lock, so it is not given up here)."""
        from airflow.sdk.exceptions import TaskDeferralError, TaskDeferralTimeout

        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except (TaskDeferralError, TaskDeferralTimeout):
            unit, own = own_change(self.repository(), context)
            if not own.pending:
                return self._settled(unit, own)
            raise

    def execute_complete(self, context: Mapping[str, Any], event: Any = None, **_: Any) -> dict[str, Any]:
        """Resume once the drain ended: read what became of the run's change."""
        from include.mes.unit_drain import DRAINED

        if not isinstance(event, Mapping) or event.get("status") != DRAINED:
            raise RuntimeError(f"Unexpected event from the units' drain: {event!r:.200}")
        unit, own = own_change(self.repository(), context)
        if own.pending:
            failure = RuntimeError(
                f"Change {own.seq} of production unit {unit.code} is still pending: its update got no "
                "answer in time (or the unit has no reporter); the try fails and its retry drains again"
            )
            self._give_up_after_last_try(context, failure)
            raise failure
        return self._settled(unit, own, context["dag_run"].run_id)

    def _settled(self, unit: ProductionUnit, own: UnitChange, run_id: str | None = None) -> dict[str, Any]:
        """The task's result for its settled change; *run_id* when this run's drain just ended (then
        a change it applied is reported with the gateway's confirmation)."""
        fail_unless_applied(own)
        self.log.info("Change %s of %s applied by run %s", own.seq, unit.code, own.applied_by_run)
        by_this_run = own.applied_by_run == run_id
        return {
            "record_id": production_unit_record_id(unit),
            "unit": unit.code,
            "change": own.seq,
            "applied_by": own.applied_by_run,
            # the gateway's confirmation, or which run applied it, as the update task says
            "message": own.detail if by_this_run else f"applied by run {own.applied_by_run}",
        }

    def _give_up_after_last_try(self, context: Mapping[str, Any], failure: BaseException) -> None:
        """On the last try, give the run's change up so the unit's later runs pass it by; only
        under the unit's lock, so that no drain holding it is applying the change meanwhile."""
        if not last_try(context):
            return
        repository = self.repository()
        run_id = context["dag_run"].run_id
        own = repository.unit_change(run_id)
        if own is None or not own.pending:
            return
        if not claim_unit(repository.engine, own.production_unit_id, run_id):
            self.log.info(
                "Production unit %s is being drained by another run: change %s stays",
                own.production_unit_id,
                own.seq,
            )
            return
        try:
            repository.give_up_unit_change(run_id, given_up_reason(failure))
        finally:
            release_unit(repository.engine, own.production_unit_id, run_id)


class UnitChangeQueue:
    """A unit's noted changes, as :class:`~blockchain_provider.operators.UpdateDynamicRecordOperator` drains them.

    A claim gives the unit's changes up to the run's own, under the unit's lock. The lock is the
    run's already (:class:`ClaimUnitOperator` took it, outside the pool); should it have lapsed and
    been taken by another run meanwhile, the claim fails at once instead of waiting in the pool's
    slot that the holder needs, and the try's retry claims again.

    :param repository: gives the MES database when the task runs.
    """

    def __init__(self, repository: Callable[[], MesRepository]) -> None:
        self.repository = repository

    def claim(self, context: Mapping[str, Any]) -> ClaimedUpdates:
        repository = self.repository()
        unit, own = own_change(repository, context)
        run_id = context["dag_run"].run_id
        summary = {"record_id": production_unit_record_id(unit), "unit": unit.code, "change": own.seq}
        if not own.pending:
            # settled while this run waited for the lock (another run's drain applied it, in order):
            # the lock its claim took then must go now, not when its lease ends
            release_unit(repository.engine, unit.id, run_id)
            fail_unless_applied(own)
            return ClaimedUpdates(pending=[], applied_by=f"run {own.applied_by_run}", summary=summary)
        drain = repository.drain_unit_changes(unit.id, own.seq, run_id, lock_timeout=IN_POOL_LOCK_WAIT)
        try:
            changes = drain.open()
        except UnitLockTimeoutError as exc:
            raise UnitLockTimeoutError(
                f"{exc}: this run's claim lapsed before its update got a slot of the pool; the try "
                "fails rather than wait in that slot, and its retry claims again"
            ) from None
        try:
            store = MesReporterStore(repository, unit.code)
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
        except BaseException:
            drain.close()
            raise
        return ClaimedUpdates(
            pending=pending,
            applied_by=applied_by,
            summary=summary,
            keep=drain.keep,
            release=drain.close,
        )

    def failed(self, context: Mapping[str, Any], failure: BaseException) -> None:
        """Give the run's change up (the run failed for good after its claim), so the unit's later
        runs pass it by instead of trying it again."""
        self.repository().give_up_unit_change(context["dag_run"].run_id, given_up_reason(failure))
