"""A production unit's changes, noted by the MES in order and drained onto the ledger under a lock.

The MES notes each change of a unit's status and process name (table ``unit_updates``) in the
same transaction that saves it, with the id of the ``blockchain_production_unit_update`` run it
then triggers (:meth:`~include.mes.repository.MesRepository.set_production_unit_state`). Runs of
the DAG may then start in any order and side by side. A drain takes a unit's lock
(:class:`UnitDrain`), applies its pending changes in ``seq`` order (a unit's creation run, those
up to its own; the triggerer's drain of many units, all of them), notes each one applied
(committed before the next is sent), and lets go. A run whose change an earlier drain already
applied has nothing left to do.

The lock is a row per unit (table ``unit_claims``): the run that holds it, and until when. It
is taken and renewed by a conditional update (or, for a unit's first lock, an insert that a
second claimer's primary key refuses), so PostgreSQL and SQLite behave alike, and it
outlives the process that took it: a deferred run keeps its unit's lock while the triggerer
waits for the gateway's answer, and takes it back when it resumes (the run's id is the key, so
its retry does too). It lasts :data:`CLAIM_LEASE` seconds past its last renewal; every change
noted renews it, and a run that defers (or sends a request from the triggerer) renews it for its
wait too. Leases are told by the clocks of the workers and triggerers, which must agree to well
within the lease. A run that died holding it holds back the unit's other runs that long at most.

Changes are read and noted in short transactions of their own, so nothing is held open across a
gateway wait.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from include.mes import schema
from include.mes.models import validate_process_name, validate_unit_id, validate_unit_status

__all__ = [
    "APPLIED",
    "CLAIM_LEASE",
    "DEFAULT_LOCK_TIMEOUT",
    "FAILED",
    "REFUSED",
    "UnitChange",
    "UnitDrain",
    "UnitLockLostError",
    "UnitLockTimeoutError",
    "claim_unit",
    "give_up_unit_change",
    "note_unit_change",
    "release_unit",
    "unit_change",
    "unit_changes",
    "unit_lock_holder",
    "units_with_pending_changes",
]

#: How a change was settled (``outcome``): applied on the ledger, refused for good by the
#: ledger's rules, or given up when the run that carried it failed for good.
APPLIED, REFUSED, FAILED = "applied", "refused", "failed"
#: Seconds a run waits for the unit's lock before its try fails (and is retried).
DEFAULT_LOCK_TIMEOUT = 300.0
#: Seconds a unit's lock lasts past its last renewal. It covers a gateway wait (30 s by default)
#: and a deferred task's resume with a wide margin.
CLAIM_LEASE = 300.0
#: Airflow's ``dag_run.run_id`` column length.
RUN_ID_MAX = 250
_POLL = 0.1


class UnitLockTimeoutError(TimeoutError):
    """The unit's lock was not free within the timeout; the message names the unit."""


class UnitLockLostError(RuntimeError):
    """The run's lock on the unit lapsed and another run took it; the message names both."""


@dataclass(frozen=True)
class UnitChange:
    """One noted change of a production unit (a ``unit_updates`` row).

    :param seq: its place in the order the MES made the changes.
    :param production_unit_id: the unit's id.
    :param status: the unit's new status.
    :param process_name: its new process name.
    :param dag_run_id: the id of the run triggered to carry it.
    :param noted_at: when the MES noted it.
    :param attempted_at: when its update was last sent, if ever (its answer may have been lost).
    :param applied_at: when it was settled, ``None`` while pending.
    :param applied_by_run: the run that settled it.
    :param outcome: :data:`APPLIED`, :data:`REFUSED` or :data:`FAILED`; ``None`` while pending.
    :param detail: the gateway's confirmation, or why it was refused or given up.
    """

    seq: int
    production_unit_id: int
    status: str
    process_name: str
    dag_run_id: str
    noted_at: datetime
    attempted_at: datetime | None = None
    applied_at: datetime | None = None
    applied_by_run: str | None = None
    outcome: str | None = None
    detail: str | None = None

    @property
    def pending(self) -> bool:
        """Whether no run has settled it yet."""
        return self.applied_at is None


def _change(row: sa.RowMapping) -> UnitChange:
    return schema.from_row(UnitChange, row)


def positive_seconds(name: str, value: float) -> float:
    """*value*, the argument *name*, as seconds > 0; anything else raises ``ValueError`` naming it."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not value > 0
        or value == float("inf")
    ):
        raise ValueError(f"Invalid {name} {value!r}: expected positive seconds")
    return float(value)


def _validate_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not run_id or len(run_id) > RUN_ID_MAX:
        raise ValueError(f"Invalid run id {run_id!r:.80}: 1 to {RUN_ID_MAX} characters")
    return run_id


def note_unit_change(
    conn: Connection, unit_id: int, status: str, process_name: str, dag_run_id: str
) -> UnitChange:
    """Note a change of unit *unit_id* carried by run *dag_run_id*, in the caller's transaction.

    Noting the same run again returns the change already noted (a run that notes its own change
    when it starts, after a retry).

    The unit's row is locked first (PostgreSQL; SQLite has one writer at a time), so two changes
    of one unit are numbered in the order their transactions commit, and a drain never sees a
    change numbered after one not yet committed.

    :param conn: a connection inside the transaction that also saves the unit's new state.
    :raises ValueError: naming a bad argument, or if the run id already carries another unit's change.
    :raises LookupError: if there is no such unit.
    """
    validate_unit_id(unit_id)
    validate_unit_status(status)
    validate_process_name(process_name)
    _validate_run_id(dag_run_id)
    units = schema.production_units
    if conn.execute(sa.select(units.c.id).where(units.c.id == unit_id).with_for_update()).first() is None:
        raise LookupError(f"Production unit {unit_id} does not exist")
    table = schema.unit_updates
    existing = conn.execute(sa.select(table).where(table.c.dag_run_id == dag_run_id)).mappings().first()
    if existing is None:
        conn.execute(
            sa.insert(table).values(
                production_unit_id=unit_id,
                status=status,
                process_name=process_name,
                dag_run_id=dag_run_id,
                noted_at=schema.utcnow(),
            )
        )
        existing = conn.execute(sa.select(table).where(table.c.dag_run_id == dag_run_id)).mappings().one()
    change = _change(existing)
    if change.production_unit_id != unit_id:
        raise ValueError(
            f"Run {dag_run_id!r} already carries a change of unit {change.production_unit_id}, not {unit_id}"
        )
    return change


def unit_change(engine: Engine, dag_run_id: str) -> UnitChange | None:
    """The change run *dag_run_id* carries, or ``None`` if none was noted for it."""
    table = schema.unit_updates
    with engine.connect() as conn:
        row = conn.execute(sa.select(table).where(table.c.dag_run_id == dag_run_id)).mappings().first()
    return None if row is None else _change(row)


def unit_changes(engine: Engine, unit_id: int, *, pending_only: bool = False) -> list[UnitChange]:
    """Unit *unit_id*'s noted changes in order, all or only the pending ones."""
    validate_unit_id(unit_id)
    table = schema.unit_updates
    query = sa.select(table).where(table.c.production_unit_id == unit_id)
    if pending_only:
        query = query.where(table.c.applied_at.is_(None))
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(table.c.seq)).mappings().all()
    return [_change(row) for row in rows]


def units_with_pending_changes(engine: Engine, run_id: str) -> list[int]:
    """The units with pending changes whose lock is free or run *run_id*'s, oldest change first."""
    table, claims = schema.unit_updates, schema.unit_claims
    held_by_others = sa.select(claims.c.production_unit_id).where(
        claims.c.dag_run_id != run_id, claims.c.claimed_until >= schema.utcnow()
    )
    query = (
        sa.select(table.c.production_unit_id)
        .where(table.c.applied_at.is_(None), table.c.production_unit_id.not_in(held_by_others))
        .group_by(table.c.production_unit_id)
        .order_by(sa.func.min(table.c.seq))
    )
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(query)]


class UnitDrain:
    """Hold unit *unit_id*'s lock for a block and settle its pending changes up to *up_to*.

    ``with UnitDrain(...) as pending:`` waits for the lock (at most *lock_timeout* seconds, then
    :class:`UnitLockTimeoutError`), and gives the unit's changes with ``seq <= up_to`` that are
    still pending, in order; a pending change whose values fail the MES's checks is marked
    :data:`REFUSED` there and not given. Each ``mark_*`` method renews the lock and commits at once. The lock
    is released when the block ends, however it ends, unless :meth:`keep` was called in it (the
    run defers, and takes the lock back when it resumes). A block that spans calls (a task's
    claim, then its updates) starts with :meth:`open` and ends with :meth:`close`.

    :param engine: the MES database.
    :param unit_id: the unit.
    :param up_to: the ``seq`` of the last change to drain (the run's own); ``None``: every
        pending change, those noted while the lock is held included.
    :param run_id: the run draining, noted as ``applied_by_run``.
    :param lock_timeout: seconds to wait for the lock; default :data:`DEFAULT_LOCK_TIMEOUT`.
    """

    def __init__(
        self,
        engine: Engine,
        unit_id: int,
        up_to: int | None,
        run_id: str,
        *,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        validate_unit_id(unit_id)
        self.engine = engine
        self.unit_id = unit_id
        self.up_to = up_to
        self.run_id = _validate_run_id(run_id)
        self.lock_timeout = positive_seconds("lock_timeout", lock_timeout)
        self._held = False
        self._keep = False

    def __repr__(self) -> str:
        return f"UnitDrain(unit={self.unit_id}, up_to={self.up_to}, run_id={self.run_id!r})"

    def __enter__(self) -> list[UnitChange]:
        return self.open()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close()

    def open(self) -> list[UnitChange]:
        """Take the lock and give the pending changes: the block's start, for a caller whose
        block spans calls (a task that defers); :meth:`close` ends it."""
        deadline = time.monotonic() + self.lock_timeout
        while not claim_unit(self.engine, self.unit_id, self.run_id):
            if time.monotonic() >= deadline:
                holder = unit_lock_holder(self.engine, self.unit_id)
                raise UnitLockTimeoutError(
                    f"Production unit {self.unit_id}'s lock not free within {self.lock_timeout:g} s"
                    + (f" (held by run {holder})" if holder else "")
                )
            time.sleep(_POLL)
        self._held, self._keep = True, False
        try:
            table = schema.unit_updates
            with self.engine.connect() as conn:
                rows = (
                    conn.execute(
                        sa.select(table)
                        .where(
                            table.c.production_unit_id == self.unit_id,
                            table.c.applied_at.is_(None),
                            *([] if self.up_to is None else [table.c.seq <= self.up_to]),
                        )
                        .order_by(table.c.seq)
                    )
                    .mappings()
                    .all()
                )
            return [change for change in map(_change, rows) if self._sendable(change)]
        except BaseException:
            self.close()
            raise

    def _sendable(self, change: UnitChange) -> bool:
        """Whether *change*'s values pass the MES's checks; one that does not (noted before they
        were this strict, or written by hand) is marked refused, and is never sent."""
        try:
            validate_unit_status(change.status)
            validate_process_name(change.process_name)
        except ValueError as exc:
            self.mark_refused(change.seq, str(exc).encode("utf-8", "backslashreplace").decode("utf-8"))
            return False
        return True

    def keep(self, wait: float = 0.0) -> None:
        """Keep the lock past the block: the run goes on later, in another process, and enters a
        drain of the same run again. The lock is renewed for *wait* seconds (how long the run may
        be away, at most) plus :data:`CLAIM_LEASE`.

        :raises UnitLockLostError: another run holds the lock now.
        """
        if not claim_unit(self.engine, self.unit_id, self.run_id, lease=max(0.0, wait) + CLAIM_LEASE):
            raise UnitLockLostError(
                f"Run {self.run_id}'s lock on production unit {self.unit_id} lapsed, and run "
                f"{unit_lock_holder(self.engine, self.unit_id)} holds it now"
            )
        self._keep = True

    def close(self) -> None:
        """End the block: release the lock unless :meth:`keep` was called (closing twice is harmless)."""
        held, self._held = self._held, False
        if not held:
            return
        if not self._keep:
            release_unit(self.engine, self.unit_id, self.run_id)

    def mark_attempted(self, seq: int) -> None:
        """Note that change *seq*'s update is about to be sent."""
        self._set(seq, attempted_at=schema.utcnow())

    def mark_applied(self, seq: int, detail: str = "") -> None:
        """Note change *seq* applied on the ledger by this run, with the gateway's confirmation."""
        self._settle(seq, APPLIED, detail)

    def mark_refused(self, seq: int, reason: str) -> None:
        """Note that change *seq* can never be applied (the ledger's rules refuse its values)."""
        self._settle(seq, REFUSED, reason)

    def _settle(self, seq: int, outcome: str, detail: str) -> None:
        self._set(
            seq, outcome=outcome, detail=detail[:1000], applied_at=schema.utcnow(), applied_by_run=self.run_id
        )

    def _set(self, seq: int, **values: object) -> None:
        if not self._held:
            raise RuntimeError("The unit's lock is not held: mark changes inside the drain's block")
        if not claim_unit(self.engine, self.unit_id, self.run_id):
            raise UnitLockLostError(
                f"Run {self.run_id}'s lock on production unit {self.unit_id} lapsed, and run "
                f"{unit_lock_holder(self.engine, self.unit_id)} holds it now"
            )
        table = schema.unit_updates
        with self.engine.begin() as conn:
            done = conn.execute(
                sa.update(table)
                .where(
                    table.c.seq == seq,
                    table.c.production_unit_id == self.unit_id,
                    table.c.applied_at.is_(None),
                )
                .values(**values)
            ).rowcount
        if done != 1:
            raise LookupError(f"Change {seq} of unit {self.unit_id} is not pending")


def give_up_unit_change(engine: Engine, dag_run_id: str, reason: str) -> bool:
    """Note run *dag_run_id*'s change given up (:data:`FAILED`) if still pending; whether it was.

    For a run that failed for good: the unit's later runs then no longer try to apply it.
    """
    table = schema.unit_updates
    with engine.begin() as conn:
        done = conn.execute(
            sa.update(table)
            .where(table.c.dag_run_id == dag_run_id, table.c.applied_at.is_(None))
            .values(
                outcome=FAILED, detail=reason[:1000], applied_at=schema.utcnow(), applied_by_run=dag_run_id
            )
        ).rowcount
    return done == 1


def claim_unit(engine: Engine, unit_id: int, run_id: str, *, lease: float = CLAIM_LEASE) -> bool:
    """Take or renew unit *unit_id*'s lock for run *run_id*, for *lease* seconds; whether it is
    the run's now (``False``: another run holds it and its lease has not ended).

    One conditional write decides, so two runs never both get it: on PostgreSQL the second
    writer re-reads the row the first committed; SQLite writes one at a time.
    """
    validate_unit_id(unit_id)
    _validate_run_id(run_id)
    table = schema.unit_claims
    now = schema.utcnow()
    held = {"dag_run_id": run_id, "claimed_until": now + timedelta(seconds=lease)}
    with engine.begin() as conn:
        taken = conn.execute(
            sa.update(table)
            .where(
                table.c.production_unit_id == unit_id,
                sa.or_(table.c.dag_run_id == run_id, table.c.claimed_until < now),
            )
            .values(**held)
        ).rowcount
        if taken:
            return True
        if conn.execute(sa.select(table.c.dag_run_id).where(table.c.production_unit_id == unit_id)).first():
            return False
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(table).values(production_unit_id=unit_id, **held))
    except sa.exc.IntegrityError:
        return False  # another run's first claim won
    return True


def release_unit(engine: Engine, unit_id: int, run_id: str) -> None:
    """Let go of unit *unit_id*'s lock, if run *run_id* holds it."""
    table = schema.unit_claims
    with engine.begin() as conn:
        conn.execute(
            sa.delete(table).where(table.c.production_unit_id == unit_id, table.c.dag_run_id == run_id)
        )


def unit_lock_holder(engine: Engine, unit_id: int) -> str | None:
    """The run that holds unit *unit_id*'s lock, ``None`` when none does (or its lease ended)."""
    table = schema.unit_claims
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(table.c.dag_run_id).where(
                table.c.production_unit_id == unit_id, table.c.claimed_until >= schema.utcnow()
            )
        ).first()
    return None if row is None else row[0]
