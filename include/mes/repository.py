"""Reading and writing the MES database: production units, day reports, synced requests, and what
the MES created on the ledger (record types, reporters).

:class:`MesRepository` wraps an engine (see :mod:`include.mes.db`) and works the same on SQLite
and PostgreSQL. Every method runs in its own transaction.

Syncing requests (:meth:`MesRepository.upsert_partner_requests`,
:meth:`MesRepository.upsert_order_requests`) reads the stored rows of the given ids in chunks,
classifies each item as inserted, updated or unchanged, and writes the inserted and changed ones
with one dialect ``INSERT ... ON CONFLICT DO UPDATE`` executed for many rows, all in one
transaction. Concurrent syncs of the same table take turns (see :func:`_serialise_writers`), so
an item is reported as newly seen once, and none fails on a duplicate key.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from include.day_report_keys import (
    day_report_keys,
    validate_report_date,
    validate_report_id,
    validate_unit_code,
)
from include.mes import crypto, schema, unit_updates
from include.mes.models import (
    REQUEST_ID_RE,
    REQUEST_STATUSES,
    DayReport,
    InvalidRequestItemError,
    NewDayReport,
    OrderRequest,
    PartnerRequest,
    ProductionUnit,
    ProductionUnitNotFoundError,
    Reporter,
    UpsertResult,
    new_object_id,
    order_request_row,
    partner_request_row,
    validate_process_name,
    validate_unit_id,
    validate_unit_status,
)
from include.mes.unit_updates import UnitChange

__all__ = ["DayReportNotFoundError", "MesRepository"]

T = TypeVar("T")


class DayReportNotFoundError(LookupError):
    """No day report has the given id; the message names it."""


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class MesRepository:
    """The MES database.

    :param engine: a SQLAlchemy engine for SQLite or PostgreSQL, from :func:`include.mes.db.mes_engine`.
    :param chunk_size: how many ids one ``IN (...)`` lookup holds during a sync; default 500.
    :param fernet: encrypts the reporters' tokens and passwords; default Airflow's Fernet key.
    """

    def __init__(
        self, engine: Engine, *, chunk_size: int = 500, fernet: crypto.FernetLike | None = None
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"Invalid chunk_size {chunk_size!r}: expected a positive integer")
        self.engine = engine
        self.chunk_size = chunk_size
        self._fernet = fernet

    def __repr__(self) -> str:
        return f"MesRepository({self.engine.url.render_as_string(hide_password=True)!r})"

    def create_schema(self) -> None:
        """Create the MES tables that are missing (idempotent)."""
        schema.create_schema(self.engine)

    # ----------------------------------------------------------------------------------
    # Production units
    # ----------------------------------------------------------------------------------

    @staticmethod
    def _unit(row: RowMapping) -> ProductionUnit:
        return ProductionUnit(
            id=row["id"],
            code=row["code"],
            name=row["name"],
            status=row["status"],
            process_name=row["process_name"],
            updated_at=schema.aware(row["updated_at"]),
        )

    def production_units(self) -> list[ProductionUnit]:
        """All production units, by id."""
        units = schema.production_units
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(units).order_by(units.c.id)).mappings().all()
        return [self._unit(row) for row in rows]

    def production_unit(self, unit_id: int) -> ProductionUnit | None:
        """The unit with id *unit_id*, or ``None`` if there is none."""
        validate_unit_id(unit_id)
        units = schema.production_units
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(units).where(units.c.id == unit_id)).mappings().first()
        return None if row is None else self._unit(row)

    def require_production_unit(self, unit_id: int) -> ProductionUnit:
        """The unit with id *unit_id*; raises :class:`ProductionUnitNotFoundError` naming the id if missing."""
        unit = self.production_unit(unit_id)
        if unit is None:
            raise ProductionUnitNotFoundError(unit_id)
        return unit

    def production_unit_by_code(self, code: str) -> ProductionUnit | None:
        """The unit whose code is *code* (like ``PT10``), or ``None``."""
        validate_unit_code(code)
        units = schema.production_units
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(units).where(units.c.code == code)).mappings().first()
        return None if row is None else self._unit(row)

    def add_production_unit(
        self, code: str, name: str, status: str, process_name: str = ""
    ) -> ProductionUnit:
        """Insert a unit and return it with its new id; a duplicate code raises ``IntegrityError``."""
        validate_unit_code(code)
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise ValueError(
                f"Invalid unit name {name!r}: expected a non-blank string of at most 200 characters"
            )
        validate_unit_status(status)
        validate_process_name(process_name)
        units = schema.production_units
        with self.engine.begin() as conn:
            unit_id = conn.execute(
                sa.insert(units)
                .values(
                    code=code, name=name, status=status, process_name=process_name, updated_at=schema.utcnow()
                )
                .returning(units.c.id)
            ).scalar_one()
        return self.require_production_unit(unit_id)

    def set_production_unit_state(
        self, unit_id: int, status: str, process_name: str, *, dag_run_id: str | None = None
    ) -> ProductionUnit:
        """Set a unit's status and process name (what the MES's PATCH view does); returns the unit.

        :param dag_run_id: the id of the ``blockchain_production_unit_update`` run that will carry
            the change to the ledger: the change is noted for it in the same transaction
            (:mod:`include.mes.unit_updates`); default ``None``, nothing noted.
        :raises ProductionUnitNotFoundError: naming *unit_id* if there is no such unit.
        """
        validate_unit_id(unit_id)
        validate_unit_status(status)
        validate_process_name(process_name)
        units = schema.production_units
        with self.engine.begin() as conn:
            row = (
                conn.execute(
                    sa.update(units)
                    .where(units.c.id == unit_id)
                    .values(status=status, process_name=process_name, updated_at=schema.utcnow())
                    .returning(*units.c)
                )
                .mappings()
                .first()
            )
            if row is not None and dag_run_id is not None:
                unit_updates.note_unit_change(conn, unit_id, status, process_name, dag_run_id)
        if row is None:
            raise ProductionUnitNotFoundError(unit_id)
        return self._unit(row)

    # ----------------------------------------------------------------------------------
    # Production-unit changes, noted in order and drained onto the ledger
    # ----------------------------------------------------------------------------------

    def note_unit_change(self, unit_id: int, status: str, process_name: str, dag_run_id: str) -> UnitChange:
        """Note a change of the unit for run *dag_run_id* without saving the unit (a run triggered
        by hand notes its own when it starts); noting a run again returns its change.

        :raises ProductionUnitNotFoundError: naming *unit_id* if there is no such unit.
        """
        try:
            with self.engine.begin() as conn:
                return unit_updates.note_unit_change(conn, unit_id, status, process_name, dag_run_id)
        except LookupError:
            raise ProductionUnitNotFoundError(unit_id) from None

    def unit_change(self, dag_run_id: str) -> UnitChange | None:
        """The change run *dag_run_id* carries, or ``None``."""
        return unit_updates.unit_change(self.engine, dag_run_id)

    def unit_changes(self, unit_id: int, *, pending_only: bool = False) -> list[UnitChange]:
        """Unit *unit_id*'s noted changes in order, all or only the pending ones."""
        return unit_updates.unit_changes(self.engine, unit_id, pending_only=pending_only)

    def drain_unit_changes(
        self,
        unit_id: int,
        up_to: int,
        run_id: str,
        *,
        lock_timeout: float = unit_updates.DEFAULT_LOCK_TIMEOUT,
    ) -> unit_updates.UnitDrain:
        """The unit's lock and its pending changes up to *up_to*: see :class:`~include.mes.unit_updates.UnitDrain`.

        :param lock_timeout: seconds to wait for the lock; default 300.
        """
        return unit_updates.UnitDrain(self.engine, unit_id, up_to, run_id, lock_timeout=lock_timeout)

    def give_up_unit_change(self, dag_run_id: str, reason: str) -> bool:
        """Note run *dag_run_id*'s change given up if still pending (its run failed for good)."""
        return unit_updates.give_up_unit_change(self.engine, dag_run_id, reason)

    # ----------------------------------------------------------------------------------
    # Day reports
    # ----------------------------------------------------------------------------------

    @staticmethod
    def _report_query() -> sa.Select:
        reports, units = schema.day_reports, schema.production_units
        return sa.select(reports, units.c.code.label("unit_code")).join(
            units, units.c.id == reports.c.production_unit_id
        )

    @staticmethod
    def _report(row: RowMapping) -> DayReport:
        return DayReport(
            report_id=row["id"],
            production_unit_id=row["production_unit_id"],
            unit_code=row["unit_code"],
            report_date=row["report_date"],
            values={key: float(row[column]) for key, column in schema.VALUE_COLUMNS.items()},
        )

    def day_report(self, unit_id: int, day: date) -> DayReport | None:
        """The report of unit *unit_id* for *day* with its 28 values (one query), or ``None``."""
        validate_unit_id(unit_id)
        validate_report_date(day)
        reports = schema.day_reports
        query = self._report_query().where(
            reports.c.production_unit_id == unit_id, reports.c.report_date == day
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else self._report(row)

    def day_reports(self, day: date) -> list[DayReport]:
        """Every unit's report for *day*, by unit id."""
        validate_report_date(day)
        reports = schema.day_reports
        query = (
            self._report_query().where(reports.c.report_date == day).order_by(reports.c.production_unit_id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [self._report(row) for row in rows]

    def day_report_by_id(self, report_id: str) -> DayReport | None:
        """The report whose id is *report_id*, or ``None``."""
        validate_report_id(report_id)
        query = self._report_query().where(schema.day_reports.c.id == report_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else self._report(row)

    def add_day_report(
        self,
        unit_id: int,
        day: date,
        values: Mapping[tuple[str, str], float],
        *,
        report_id: str | None = None,
    ) -> DayReport:
        """Insert a unit's report for *day* and return it; a second one for the same unit and day
        raises ``IntegrityError``.

        :param values: all 28 values keyed by ``(shift, indicator)``, e.g. ``("A", "D")``.
        :param report_id: 24 hex; default a new object id.
        """
        (report_id,) = self.add_day_reports([NewDayReport(unit_id, day, values, report_id)])
        report = self.day_report_by_id(report_id)
        assert report is not None
        return report

    def add_day_reports(self, reports: Iterable[NewDayReport]) -> list[str]:
        """Insert many day reports in one transaction; returns their ids in order.

        All are checked before any is written. A report for a unit and day that already has one
        raises ``IntegrityError`` and nothing is written.
        """
        now = schema.utcnow()
        rows = [self._report_row(report, now) for report in reports]
        if rows:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(schema.day_reports), rows)
        return [row["id"] for row in rows]

    @staticmethod
    def _report_row(report: NewDayReport, now: datetime) -> dict[str, Any]:
        validate_unit_id(report.production_unit_id)
        day = validate_report_date(report.report_date)
        row: dict[str, Any] = {
            "id": new_object_id() if report.report_id is None else validate_report_id(report.report_id),
            "production_unit_id": report.production_unit_id,
            "report_date": day,
            "created_at": now,
        }
        extra = set(report.values) - set(schema.VALUE_COLUMNS)
        if extra:
            raise ValueError(f"Unknown day report value keys: {sorted(extra, key=str)}")
        for key, column in schema.VALUE_COLUMNS.items():
            value = report.values.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(
                    f"Day report value {key} of unit {report.production_unit_id} on {day} is {value!r}: "
                    "expected a finite number"
                )
            row[column] = float(value)
        return row

    def existing_day_report_dates(self, unit_id: int, start: date, end: date) -> set[date]:
        """The days from *start* to *end* (inclusive) for which unit *unit_id* has a report."""
        validate_report_date(start)
        validate_report_date(end)
        reports = schema.day_reports
        query = sa.select(reports.c.report_date).where(
            reports.c.production_unit_id == validate_unit_id(unit_id),
            reports.c.report_date.between(start, end),
        )
        with self.engine.connect() as conn:
            return set(conn.execute(query).scalars())

    def mark_submitted(self, report_id: str, record_ids: Iterable[str]) -> int:
        """Record that these records of the report were written to the ledger; returns how many are new.

        Marking a record twice is harmless.

        :raises ValueError: if a record id is not one of the report's 28.
        :raises DayReportNotFoundError: if there is no report *report_id*.
        """
        validate_report_id(report_id)
        valid = {key.record_id for key in day_report_keys(report_id)}
        wanted = list(dict.fromkeys(record_ids))
        for rid in wanted:
            if rid not in valid:
                raise ValueError(f"Record id {rid!r} is not one of the 28 records of day report {report_id}")
        submissions = schema.day_report_submissions
        with self.engine.begin() as conn:
            exists = conn.execute(
                sa.select(schema.day_reports.c.id).where(schema.day_reports.c.id == report_id)
            ).first()
            if exists is None:
                raise DayReportNotFoundError(f"Day report {report_id} does not exist in the MES database")
            done = set(
                conn.execute(
                    sa.select(submissions.c.record_id).where(submissions.c.report_id == report_id)
                ).scalars()
            )
            now = schema.utcnow()
            rows = [
                {"report_id": report_id, "record_id": rid, "submitted_at": now}
                for rid in wanted
                if rid not in done
            ]
            if rows:
                stmt = _dialect_insert(conn, submissions)
                if stmt is None:
                    conn.execute(sa.insert(submissions), rows)
                else:
                    conn.execute(stmt.on_conflict_do_nothing(), rows)
        return len(rows)

    def submitted_record_ids(self, report_id: str) -> set[str]:
        """The record ids of the report already written to the ledger."""
        validate_report_id(report_id)
        submissions = schema.day_report_submissions
        query = sa.select(submissions.c.record_id).where(submissions.c.report_id == report_id)
        with self.engine.connect() as conn:
            return set(conn.execute(query).scalars())

    # ----------------------------------------------------------------------------------
    # What the MES created on the ledger: record types, and reporters (KafkaToken rows)
    # ----------------------------------------------------------------------------------

    def record_type_created(self, gateway: str, name: str) -> bool:
        """Whether the MES has created record type *name* on *gateway* (or found it there)."""
        table = schema.gateway_record_types
        query = sa.select(table.c.name).where(table.c.gateway == gateway, table.c.name == name)
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def mark_record_type_created(self, gateway: str, name: str) -> None:
        """Remember that record type *name* exists on *gateway* (marking it twice is harmless)."""
        for value, what in ((gateway, "gateway"), (name, "record type name")):
            if not isinstance(value, str) or not value:
                raise ValueError(f"Invalid {what} {value!r}")
        table = schema.gateway_record_types
        with self.engine.begin() as conn:
            stmt = _dialect_insert(conn, table)
            row = {"gateway": gateway, "name": name, "created_at": schema.utcnow()}
            if stmt is None:
                found = sa.select(table.c.name).where(table.c.gateway == gateway, table.c.name == name)
                if conn.execute(found).first() is None:
                    conn.execute(sa.insert(table), [row])
            else:
                conn.execute(stmt.on_conflict_do_nothing(), [row])

    def _reporter(self, row: RowMapping) -> Reporter:
        fernet = self._fernet
        return Reporter(
            name=row["name"],
            record_id=row["record_id"],
            topic=row["topic"],
            public_key=row["public_key"],
            token=None if row["token"] is None else crypto.decrypt(row["token"], fernet),
            password=crypto.decrypt(row["password"], fernet),
            instance_type=row["instance_type"],
            created_at=schema.aware(row["created_at"]),
            updated_at=schema.aware(row["updated_at"]),
        )

    def reporter(self, record_id: str) -> Reporter | None:
        """The reporter of record *record_id*, its secrets decrypted (hidden from ``repr``), or ``None``."""
        table = schema.kafka_tokens
        query = sa.select(table).where(table.c.instance_type == "Reporter", table.c.record_id == record_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else self._reporter(row)

    def reporter_of_unit(self, unit_code: str) -> Reporter | None:
        """The reporter of production unit *unit_code* (its ``name``), or ``None``."""
        validate_unit_code(unit_code)
        table = schema.kafka_tokens
        query = sa.select(table).where(table.c.instance_type == "Reporter", table.c.name == unit_code)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else self._reporter(row)

    def reporters(self) -> list[dict[str, Any]]:
        """Every reporter's unit, record id, topic, public key and times; never a token or password."""
        table = schema.kafka_tokens
        columns = [
            table.c[name] for name in ("name", "record_id", "topic", "public_key", "created_at", "updated_at")
        ]
        query = (
            sa.select(*columns, (table.c.token.is_not(None)).label("has_token"))
            .where(table.c.instance_type == "Reporter")
            .order_by(table.c.name)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            {
                **dict(row),
                "created_at": schema.aware(row["created_at"]),
                "updated_at": schema.aware(row["updated_at"]),
            }
            for row in rows
        ]

    def prepare_reporter(self, unit_code: str, record_id: str, topic: str, password: str) -> Reporter:
        """The reporter row of *record_id*, inserted with *password* (encrypted) if there is none yet.

        Called before the record and its reporter are created on the ledger: should the answer be
        lost, a rerun sends the same password, and the gateway answers the reporter again instead of
        refusing a record that exists with another password. An existing row keeps its password.
        """
        validate_unit_code(unit_code)
        table = schema.kafka_tokens
        encrypted = crypto.encrypt(password, self._fernet)
        now = schema.utcnow()
        row = {
            "instance_type": "Reporter",
            "token": None,
            "public_key": None,
            "password": encrypted,
            "record_id": record_id,
            "topic": topic,
            "name": unit_code,
            "created_at": now,
            "updated_at": now,
        }
        with self.engine.begin() as conn:
            stmt = _dialect_insert(conn, table)
            if stmt is None:
                exists = conn.execute(
                    sa.select(table.c.id).where(
                        table.c.instance_type == "Reporter", table.c.record_id == record_id
                    )
                ).first()
                if exists is None:
                    conn.execute(sa.insert(table), [row])
            else:
                conn.execute(stmt.on_conflict_do_nothing(), [row])
        reporter = self.reporter(record_id)
        assert reporter is not None
        return reporter

    def store_reporter_credentials(self, record_id: str, public_key: str, token: str) -> Reporter:
        """Store what the gateway answered for the reporter of *record_id*: its public key and token."""
        return self._update_reporter(
            record_id, public_key=public_key, token=crypto.encrypt(token, self._fernet)
        )

    def set_reporter_token(self, record_id: str, token: str) -> Reporter:
        """Replace the token of the reporter of *record_id* (after the gateway issued a fresh one)."""
        return self._update_reporter(record_id, token=crypto.encrypt(token, self._fernet))

    def _update_reporter(self, record_id: str, **values: Any) -> Reporter:
        table = schema.kafka_tokens
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.update(table)
                .where(table.c.instance_type == "Reporter", table.c.record_id == record_id)
                .values(**values, updated_at=schema.utcnow())
            )
        if result.rowcount != 1:
            raise LookupError(f"The MES has no reporter for record {record_id}")
        reporter = self.reporter(record_id)
        assert reporter is not None
        return reporter

    # ----------------------------------------------------------------------------------
    # Partner and order requests
    # ----------------------------------------------------------------------------------

    def upsert_requests(self, kind: str, items: Iterable[Mapping[str, Any]]) -> UpsertResult:
        """Store *kind* (``partner`` or ``order``) requests as listed by the gateway (PROTOCOL.md 3.1, 3.2).

        Items are checked one by one; an item given twice counts once, and its last occurrence
        wins. An invalid item (a bad field, a NUL, a lone surrogate, an oversized text) is not
        stored: it is set aside in ``rejected_items`` with the reason, and listed in the result's
        ``new_rejected`` the first time only. Ledger items are permanent: one bad item must not
        stop every later sync.
        """
        stored = _stored_kind(kind)
        return self._upsert(stored.table, stored.key, stored.to_row, items)

    def upsert_partner_requests(self, items: Iterable[Mapping[str, Any]]) -> UpsertResult:
        """Store partner requests as listed by the gateway; see :meth:`upsert_requests`."""
        return self.upsert_requests("partner", items)

    def upsert_order_requests(self, items: Iterable[Mapping[str, Any]]) -> UpsertResult:
        """Store order requests as listed by the gateway; see :meth:`upsert_requests`."""
        return self.upsert_requests("order", items)

    def _upsert(
        self,
        table: sa.Table,
        key: str,
        to_row: Callable[[object, int], dict[str, Any]],
        items: Iterable[Mapping[str, Any]],
    ) -> UpsertResult:
        latest: dict[str, tuple[dict[str, Any], Mapping[str, Any]]] = {}
        bad: dict[str, dict[str, Any]] = {}
        for index, item in enumerate(items):
            try:
                row = to_row(item, index)
            except InvalidRequestItemError as exc:
                bad[_fingerprint(item)] = {"item_id": _item_id(item, key), "reason": _reason(exc)}
                continue
            latest[row[key]] = (row, item)
        kind = "partner" if table is schema.partner_requests else "order"
        if not latest:
            if not bad:
                return UpsertResult()
            with self.engine.begin() as conn:
                _serialise_writers(conn, table.name)
                new_rejected = self._set_aside(conn, kind, bad, schema.utcnow())
            return UpsertResult(rejected=len(bad), new_rejected=new_rejected)
        compared = [column for column in next(iter(latest.values()))[0] if column != key]
        key_column = table.c[key]
        select_columns = [key_column, *(table.c[column] for column in compared)]
        inserted: list[dict[str, Any]] = []
        changed: list[dict[str, Any]] = []
        new_open: list[Mapping[str, Any]] = []
        unchanged = 0
        with self.engine.begin() as conn:
            _serialise_writers(conn, table.name)
            stored: dict[str, tuple[Any, ...]] = {}
            for ids in _chunks(list(latest), self.chunk_size):
                for row in conn.execute(sa.select(*select_columns).where(key_column.in_(ids))):
                    stored[row[0]] = tuple(row[1:])
            now = schema.utcnow()
            for item_id, (row, item) in latest.items():
                old = stored.get(item_id)
                if old is None:
                    inserted.append({**row, "first_seen_at": now, "updated_at": now})
                    if row["status"] == "OPEN":
                        new_open.append(item)
                elif old != tuple(row[column] for column in compared):
                    changed.append({**row, "first_seen_at": now, "updated_at": now})
                else:
                    unchanged += 1
            self._write(conn, table, key, compared, inserted, changed)
            new_rejected = self._set_aside(conn, kind, bad, now)
        return UpsertResult(
            inserted=len(inserted),
            updated=len(changed),
            unchanged=unchanged,
            new_open=[dict(item) for item in new_open],
            rejected=len(bad),
            new_rejected=new_rejected,
        )

    def _set_aside(
        self, conn: Connection, kind: str, bad: dict[str, dict[str, Any]], now: datetime
    ) -> list[dict[str, Any]]:
        """Record the rejected items; return those not recorded before."""
        if not bad:
            return []
        table = schema.rejected_items
        seen: set[str] = set()
        for fingerprints in _chunks(list(bad), self.chunk_size):
            rows = conn.execute(
                sa.select(table.c.fingerprint).where(
                    table.c.kind == kind, table.c.fingerprint.in_(fingerprints)
                )
            )
            seen.update(row[0] for row in rows)
        new = [
            {
                "kind": kind,
                "fingerprint": fp,
                **entry,
                "times_seen": 1,
                "first_seen_at": now,
                "last_seen_at": now,
            }
            for fp, entry in bad.items()
            if fp not in seen
        ]
        if new:
            conn.execute(sa.insert(table), new)
        if seen:
            conn.execute(
                sa.update(table)
                .where(table.c.kind == kind, table.c.fingerprint.in_(sorted(seen)))
                .values(times_seen=table.c.times_seen + 1, last_seen_at=now)
            )
        return [{"item_id": row["item_id"], "reason": row["reason"]} for row in new]

    def rejected_items(self, kind: str) -> list[dict[str, Any]]:
        """The items of *kind* (``partner`` or ``order``) set aside by syncs, oldest first."""
        table = schema.rejected_items
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(table)
                .where(table.c.kind == kind)
                .order_by(table.c.first_seen_at, table.c.fingerprint)
            ).mappings()
            return [
                {
                    "item_id": row["item_id"],
                    "reason": row["reason"],
                    "times_seen": row["times_seen"],
                    "first_seen_at": schema.aware(row["first_seen_at"]),
                    "last_seen_at": schema.aware(row["last_seen_at"]),
                }
                for row in rows
            ]

    @staticmethod
    def _write(
        conn: Connection,
        table: sa.Table,
        key: str,
        compared: list[str],
        inserted: list[dict[str, Any]],
        changed: list[dict[str, Any]],
    ) -> None:
        rows = inserted + changed
        if not rows:
            return
        stmt = _dialect_insert(conn, table)
        if stmt is not None:
            # first_seen_at is not in the update set: it keeps the time of the first sync.
            upsert = stmt.on_conflict_do_update(
                index_elements=[table.c[key]],
                set_={column: stmt.excluded[column] for column in [*compared, "updated_at"]},
            )
            conn.execute(upsert, rows)
            return
        if inserted:
            conn.execute(sa.insert(table), inserted)
        if changed:
            params = [{f"b_{name}": value for name, value in row.items()} for row in changed]
            update = (
                sa.update(table)
                .where(table.c[key] == sa.bindparam(f"b_{key}"))
                .values({column: sa.bindparam(f"b_{column}") for column in [*compared, "updated_at"]})
            )
            conn.execute(update, params)

    @staticmethod
    def _partner(row: RowMapping) -> PartnerRequest:
        return PartnerRequest(
            partner_request_id=row["partner_request_id"],
            issuing_agent=row["issuing_agent"],
            receiving_agent=row["receiving_agent"],
            status=row["status"],
            timestamp=row["timestamp"],
            answer_timestamp=row["answer_timestamp"],
            transaction_ids=tuple(json.loads(row["transaction_ids"])),
            first_seen_at=schema.aware(row["first_seen_at"]),
            updated_at=schema.aware(row["updated_at"]),
        )

    @staticmethod
    def _order(row: RowMapping) -> OrderRequest:
        return OrderRequest(
            abs_action_id=row["abs_action_id"],
            type=row["type"],
            description=row["description"],
            metadata=json.loads(row["metadata"]),
            files=json.loads(row["files"]),
            issuing_agent=row["issuing_agent"],
            receiving_agent=row["receiving_agent"],
            status=row["status"],
            timestamp=row["timestamp"],
            answer_timestamp=row["answer_timestamp"],
            transaction_ids=tuple(json.loads(row["transaction_ids"])),
            first_seen_at=schema.aware(row["first_seen_at"]),
            updated_at=schema.aware(row["updated_at"]),
        )

    def partner_request(self, partner_request_id: str) -> PartnerRequest | None:
        """The stored partner request with this id, or ``None``."""
        table = schema.partner_requests
        query = sa.select(table).where(table.c.partner_request_id == _request_id(partner_request_id))
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else self._partner(row)

    def order_request(self, abs_action_id: str) -> OrderRequest | None:
        """The stored order request with this id, or ``None``."""
        table = schema.order_requests
        query = sa.select(table).where(table.c.abs_action_id == _request_id(abs_action_id))
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else self._order(row)

    def request(self, kind: str, request_id: str) -> PartnerRequest | OrderRequest | None:
        """The stored *kind* (``partner`` or ``order``) request with this id, or ``None``."""
        stored = _stored_kind(kind)
        query = sa.select(stored.table).where(stored.table.c[stored.key] == _request_id(request_id))
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else stored.to_item(row)

    def requests_first_seen(
        self, kind: str, since: datetime, status: str | None = "OPEN"
    ) -> list[PartnerRequest] | list[OrderRequest]:
        """The *kind* requests the MES first stored at or after *since* (with *status*, only those),
        in the order it stored them."""
        stored = _stored_kind(kind)
        table = stored.table
        since = since.astimezone(UTC) if since.tzinfo is not None else since.replace(tzinfo=UTC)
        query = _by_status(table, status).where(table.c.first_seen_at >= since)
        query = query.order_by(table.c.first_seen_at, table.c.timestamp, table.c[stored.key])
        with self.engine.connect() as conn:
            return [stored.to_item(row) for row in conn.execute(query).mappings()]

    def partner_requests(self, status: str | None = None) -> list[PartnerRequest]:
        """Stored partner requests, newest first, optionally only those with *status*."""
        table = schema.partner_requests
        query = _by_status(table, status).order_by(table.c.timestamp.desc(), table.c.partner_request_id)
        with self.engine.connect() as conn:
            return [self._partner(row) for row in conn.execute(query).mappings()]

    def order_requests(self, status: str | None = None) -> list[OrderRequest]:
        """Stored order requests, newest first, optionally only those with *status*."""
        table = schema.order_requests
        query = _by_status(table, status).order_by(table.c.timestamp.desc(), table.c.abs_action_id)
        with self.engine.connect() as conn:
            return [self._order(row) for row in conn.execute(query).mappings()]

    def request_page(
        self, kind: str, status: str | None = None, *, offset: int = 0, limit: int = 25
    ) -> tuple[int, list[PartnerRequest] | list[OrderRequest]]:
        """One page of stored *kind* (``partner`` or ``order``) requests, newest first, and how
        many there are in all (with *status*, only those)."""
        stored = _stored_kind(kind)
        for name, value, least in (("offset", offset, 0), ("limit", limit, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"Invalid {name} {value!r}: expected an integer >= {least}")
        table = stored.table
        key = table.c[stored.key]
        query = _by_status(table, status)
        count = sa.select(sa.func.count()).select_from(query.subquery())
        page = query.order_by(table.c.timestamp.desc(), key).offset(offset).limit(limit)
        with self.engine.connect() as conn:
            total = conn.execute(count).scalar_one()
            return total, [stored.to_item(row) for row in conn.execute(page).mappings()]


@dataclass(frozen=True)
class _StoredKind:
    """Where the MES keeps one kind of request: its table, its key column, its row builder (a
    listed item to a row) and its item builder (a row to the kind's item)."""

    table: sa.Table
    key: str
    to_row: Callable[[object, int], dict[str, Any]]
    to_item: Callable[[RowMapping], PartnerRequest | OrderRequest]


_STORED_KINDS = {
    "partner": _StoredKind(
        schema.partner_requests, "partner_request_id", partner_request_row, MesRepository._partner
    ),
    "order": _StoredKind(schema.order_requests, "abs_action_id", order_request_row, MesRepository._order),
}


def _stored_kind(kind: str) -> _StoredKind:
    try:
        return _STORED_KINDS[kind]
    except (KeyError, TypeError):
        raise ValueError(f"Invalid request kind {kind!r}: expected partner or order") from None


def _fingerprint(item: object) -> str:
    """A digest that tells one listed item from another (any value, lone surrogates included)."""
    try:
        text = json.dumps(item, sort_keys=True, ensure_ascii=True, default=repr)
    except (TypeError, ValueError, RecursionError):
        text = repr(item)
    return hashlib.sha256(text.encode("ascii", "backslashreplace")).hexdigest()


def _item_id(item: object, key: str) -> str | None:
    value = item.get(key) if isinstance(item, Mapping) else None
    return value if isinstance(value, str) and REQUEST_ID_RE.fullmatch(value) else None


def _reason(exc: Exception) -> str:
    """The error text, storable anywhere: no NUL, no lone surrogate, at most 1,000 characters."""
    text = str(exc).replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= 1000 else text[:997] + "..."


def _request_id(value: object) -> str:
    if not isinstance(value, str) or not REQUEST_ID_RE.match(value):
        raise ValueError(f"Invalid request id {value!r}: expected 32 lowercase hex characters")
    return value


def _by_status(table: sa.Table, status: str | None) -> sa.Select:
    query = sa.select(table)
    if status is None:
        return query
    if status not in REQUEST_STATUSES:
        raise ValueError(f"Invalid status {status!r}: expected one of {', '.join(REQUEST_STATUSES)}")
    return query.where(table.c.status == status)


def _serialise_writers(conn: Connection, name: str) -> None:
    """Make concurrent syncs of one table take turns, so each classifies against committed rows.

    Without this, two syncs of the same new item would both count it as inserted and both
    report it in ``new_open``. PostgreSQL: a transaction-level advisory lock per table. SQLite:
    take the database's write lock now (``BEGIN IMMEDIATE``) instead of at the first write.
    """
    if conn.dialect.name == "postgresql":
        key = int.from_bytes(
            hashlib.blake2b(f"mes-sync:{name}".encode(), digest_size=8).digest(), "big", signed=True
        )
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    elif conn.dialect.name == "sqlite":
        dbapi_connection = conn.connection.dbapi_connection
        # The sqlite3 module opens its transaction lazily, before the first write; nothing is open yet.
        if dbapi_connection is not None and not dbapi_connection.in_transaction:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def _dialect_insert(conn: Connection, table: sa.Table) -> Any:
    """An ``INSERT`` supporting ``ON CONFLICT`` for SQLite and PostgreSQL; ``None`` for other dialects."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        return None
    return insert(table)
