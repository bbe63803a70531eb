"""A production unit's changes, noted by the MES in order and drained onto the ledger under a lock.

The MES notes each change of a unit's status and process name (table ``unit_updates``) in the
same transaction that saves it, with the id of the ``blockchain_production_unit_update`` run it
then triggers (:meth:`~include.mes.repository.MesRepository.set_production_unit_state`). Runs of
the DAG may then start in any order and side by side: each takes the unit's lock
(:class:`UnitDrain`), applies the unit's pending changes up to its own in ``seq`` order, notes
each one applied (committed before the next is sent), and lets go. A run whose change an earlier
drain already applied has nothing left to do.

The lock, per unit:

* PostgreSQL: a transaction-level advisory lock on a connection of its own, held until the
  drain ends; a worker that dies drops its connection, and the server releases the lock. The
  wait for it is bounded by ``lock_timeout``.
* SQLite: an exclusive ``flock`` on a file per unit next to the database file (an in-memory
  database: a lock of this process). Not ``BEGIN IMMEDIATE``: that is SQLite's one write lock of
  the whole database, and a drain holds its lock while it waits for the gateway, during which the
  MES must still note new changes and the drain itself stores the unit's new reporter.

Changes are read and noted applied in short transactions of their own, so nothing is held open
across a gateway wait except the lock.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from include.mes import schema
from include.mes.models import validate_process_name, validate_unit_id, validate_unit_status

__all__ = [
    "APPLIED",
    "DEFAULT_LOCK_TIMEOUT",
    "FAILED",
    "REFUSED",
    "UnitChange",
    "UnitDrain",
    "UnitLockTimeoutError",
    "give_up_unit_change",
    "note_unit_change",
    "unit_change",
    "unit_changes",
]

#: How a change was settled (``outcome``): applied on the ledger, refused for good by the
#: ledger's rules, or given up when the run that carried it failed for good.
APPLIED, REFUSED, FAILED = "applied", "refused", "failed"
#: Seconds a run waits for the unit's lock before its try fails (and is retried).
DEFAULT_LOCK_TIMEOUT = 300.0
#: Airflow's ``dag_run.run_id`` column length.
RUN_ID_MAX = 250
_POLL = 0.05


class UnitLockTimeoutError(TimeoutError):
    """The unit's lock was not free within the timeout; the message names the unit."""


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
    return UnitChange(
        seq=row["seq"],
        production_unit_id=row["production_unit_id"],
        status=row["status"],
        process_name=row["process_name"],
        dag_run_id=row["dag_run_id"],
        noted_at=schema.aware(row["noted_at"]),
        attempted_at=schema.aware(row["attempted_at"]),
        applied_at=schema.aware(row["applied_at"]),
        applied_by_run=row["applied_by_run"],
        outcome=row["outcome"],
        detail=row["detail"],
    )


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


class UnitDrain:
    """Hold unit *unit_id*'s lock for a block and settle its pending changes up to *up_to*.

    ``with UnitDrain(...) as pending:`` waits for the lock (at most *lock_timeout* seconds, then
    :class:`UnitLockTimeoutError`), and gives the unit's changes with ``seq <= up_to`` that are
    still pending, in order. Each ``mark_*`` method commits at once. The lock is released when the
    block ends, however it ends.

    :param engine: the MES database.
    :param unit_id: the unit.
    :param up_to: the ``seq`` of the last change to drain (the run's own).
    :param run_id: the run draining, noted as ``applied_by_run``.
    :param lock_timeout: seconds to wait for the lock; default :data:`DEFAULT_LOCK_TIMEOUT`.
    """

    def __init__(
        self,
        engine: Engine,
        unit_id: int,
        up_to: int,
        run_id: str,
        *,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        validate_unit_id(unit_id)
        if lock_timeout <= 0:
            raise ValueError(f"Invalid lock_timeout {lock_timeout!r}: expected positive seconds")
        self.engine = engine
        self.unit_id = unit_id
        self.up_to = up_to
        self.run_id = _validate_run_id(run_id)
        self.lock_timeout = float(lock_timeout)
        self._lock: Iterator[None] | None = None

    def __repr__(self) -> str:
        return f"UnitDrain(unit={self.unit_id}, up_to={self.up_to}, run_id={self.run_id!r})"

    def __enter__(self) -> list[UnitChange]:
        lock = unit_lock(self.engine, self.unit_id, timeout=self.lock_timeout)
        lock.__enter__()
        self._lock = lock
        try:
            table = schema.unit_updates
            with self.engine.connect() as conn:
                rows = (
                    conn.execute(
                        sa.select(table)
                        .where(
                            table.c.production_unit_id == self.unit_id,
                            table.c.seq <= self.up_to,
                            table.c.applied_at.is_(None),
                        )
                        .order_by(table.c.seq)
                    )
                    .mappings()
                    .all()
                )
            return [_change(row) for row in rows]
        except BaseException:
            self._release(None, None, None)
            raise

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._release(exc_type, exc, tb)

    def _release(self, exc_type: object, exc: object, tb: object) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.__exit__(exc_type, exc, tb)

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
        if self._lock is None:
            raise RuntimeError("The unit's lock is not held: mark changes inside the drain's block")
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


def _lock_key(unit_id: int) -> int:
    return int.from_bytes(
        hashlib.blake2b(f"mes-unit-update:{unit_id}".encode(), digest_size=8).digest(), "big", signed=True
    )


@contextmanager
def unit_lock(engine: Engine, unit_id: int, *, timeout: float = DEFAULT_LOCK_TIMEOUT) -> Iterator[None]:
    """Hold unit *unit_id*'s drain lock for the block (see the module's documentation).

    :param engine: the MES database (PostgreSQL or SQLite).
    :param unit_id: the unit.
    :param timeout: seconds to wait for the lock; default :data:`DEFAULT_LOCK_TIMEOUT`.
    :raises UnitLockTimeoutError: if it is not free within *timeout*.
    """
    validate_unit_id(unit_id)
    if engine.dialect.name == "postgresql":
        with _pg_lock(engine, unit_id, timeout):
            yield
    elif engine.dialect.name == "sqlite":
        database = engine.url.database
        if not database or database == ":memory:" or "mode=memory" in str(engine.url.query):
            with _process_lock(engine, unit_id, timeout):
                yield
        else:
            with _file_lock(Path(database), unit_id, timeout):
                yield
    else:
        raise ValueError(f"No unit lock for the {engine.dialect.name!r} dialect: PostgreSQL or SQLite")


@contextmanager
def _pg_lock(engine: Engine, unit_id: int, timeout: float) -> Iterator[None]:
    with engine.connect() as conn:
        deadline = time.monotonic() + timeout
        # try-and-sleep rather than lock_timeout: the wait stays bounded whatever the server's settings
        while not conn.execute(
            sa.text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _lock_key(unit_id)}
        ).scalar_one():
            conn.rollback()
            if time.monotonic() >= deadline:
                raise UnitLockTimeoutError(f"Production unit {unit_id}'s lock not free within {timeout:g} s")
            time.sleep(_POLL)
        try:
            yield
        finally:
            conn.rollback()  # ends the transaction, and with it the lock


_process_locks: dict[tuple[str, int], threading.Lock] = {}
_process_locks_guard = threading.Lock()


@contextmanager
def _process_lock(engine: Engine, unit_id: int, timeout: float) -> Iterator[None]:
    with _process_locks_guard:
        lock = _process_locks.setdefault((str(engine.url), unit_id), threading.Lock())
    if not lock.acquire(timeout=timeout):
        raise UnitLockTimeoutError(f"Production unit {unit_id}'s lock not free within {timeout:g} s")
    try:
        yield
    finally:
        lock.release()


@contextmanager
def _file_lock(database: Path, unit_id: int, timeout: float) -> Iterator[None]:
    folder = database.with_name(database.name + "-unit-locks")
    folder.mkdir(exist_ok=True)
    # one open file per holder: flock excludes other open files, also in this process's threads
    fd = os.open(folder / f"{unit_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() >= deadline:
                raise UnitLockTimeoutError(f"Production unit {unit_id}'s lock not free within {timeout:g} s")
            time.sleep(_POLL)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
