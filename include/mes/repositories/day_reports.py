"""The units' day reports, and which of their records the ledger has."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping

from include.day_report_keys import (
    day_report_keys,
    validate_report_date,
    validate_report_id,
)
from include.mes import schema
from include.mes.models import (
    DayReport,
    NewDayReport,
    new_object_id,
    validate_unit_id,
)
from include.mes.repositories.base import RepositoryBase, _dialect_insert


class DayReportNotFoundError(LookupError):
    """No day report has the given id; the message names it."""


class DayReportsRepository(RepositoryBase):
    """Day reports: added, read, their records noted submitted."""

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
