"""The MES database schema (SQLAlchemy Core), for SQLite and PostgreSQL alike.

Tables:

* ``production_units``: the plant's units (``PT10`` "Press line 10") with their current status
  and process name.
* ``day_reports``: one row per unit and day, id a 24-hex object id, with the 28 indicator
  values as columns ``<shift>_<indicator>`` (see :func:`value_column`), so reading a report is
  one single-row query.
* ``partner_requests`` and ``order_requests``: the requests synced from the gateway, with
  JSON-valued fields stored as canonical JSON text.
* ``day_report_submissions``: which day-report records have been written to the ledger, so a
  re-run skips them.
* ``gateway_record_types``: the record types the MES has created on each gateway (its bootstrap
  servers and master agent), so a type is sent once per gateway and no flow reads the ledger
  before creating one.
* ``kafka_tokens``: what the gateway gave the MES for each agent it created, as the original's
  ``KafkaToken`` model (instance type ``Reporter``: token, public key, password, record id, topic,
  name); the token and password encrypted with Airflow's Fernet key (:mod:`include.mes.crypto`).
* ``unit_updates``: each change of a unit's status and process name, noted in order (``seq``) as
  the MES triggers the ``blockchain_production_unit_update`` run that carries it, with the run's
  id, and when and by which run it was applied on the ledger (:mod:`include.mes.unit_updates`).

All times are stored in UTC. :func:`create_schema` is idempotent and safe to run from
concurrent tasks.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from include.day_report_keys import INDICATORS, SHIFTS

__all__ = [
    "INDICATOR_COLUMN_NAMES",
    "VALUE_COLUMNS",
    "aware",
    "create_schema",
    "day_report_submissions",
    "day_reports",
    "gateway_record_types",
    "kafka_tokens",
    "metadata",
    "order_requests",
    "partner_requests",
    "production_units",
    "unit_claims",
    "unit_updates",
    "utcnow",
    "value_column",
]

#: The column-name part of each indicator code.
INDICATOR_COLUMN_NAMES: dict[str, str] = {
    "D": "availability",
    "P": "performance",
    "Q": "quality",
    "OEE": "oee",
    "MTBF": "mtbf",
    "MTTR": "mttr",
    "ProductionTime": "production_time",
}
assert set(INDICATOR_COLUMN_NAMES) == set(INDICATORS)


def value_column(shift: str, indicator: str) -> str:
    """The ``day_reports`` column of one value: ``("A", "D")`` -> ``a_availability``."""
    if shift not in SHIFTS:
        raise ValueError(f"Invalid shift {shift!r}: expected one of {', '.join(SHIFTS)}")
    if indicator not in INDICATORS:
        raise ValueError(f"Invalid indicator {indicator!r}: expected one of {', '.join(INDICATORS)}")
    return f"{shift.lower()}_{INDICATOR_COLUMN_NAMES[indicator]}"


#: ``(shift, indicator) -> column name`` for the 28 values, in record-id order.
VALUE_COLUMNS: dict[tuple[str, str], str] = {
    (shift, indicator): value_column(shift, indicator) for shift in SHIFTS for indicator in INDICATORS
}

metadata = sa.MetaData()


def utcnow() -> datetime:
    """Now, in UTC: every time the MES stores."""
    return datetime.now(UTC)


def aware(value: datetime | None) -> datetime | None:
    """A stored time with its zone: SQLite returns the stored UTC times without one."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


_Row = TypeVar("_Row")


def from_row(model: type[_Row], row: RowMapping) -> _Row:
    """The *model* dataclass of a stored *row*: each field from the column of its name, and a time
    with its zone (:func:`aware`)."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(model):  # type: ignore[arg-type]
        value = row[field.name]
        values[field.name] = aware(value) if isinstance(value, datetime) else value
    return model(**values)


def _utc_time(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


production_units = sa.Table(
    "production_units",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("code", sa.String(16), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("status", sa.String(64), nullable=False),
    sa.Column("process_name", sa.String(200), nullable=False, server_default=""),
    _utc_time("updated_at"),
)

day_reports = sa.Table(
    "day_reports",
    metadata,
    sa.Column("id", sa.String(24), primary_key=True),
    sa.Column("production_unit_id", sa.Integer, sa.ForeignKey("production_units.id"), nullable=False),
    sa.Column("report_date", sa.Date, nullable=False, index=True),
    # Double, not Float: PostgreSQL's FLOAT(n) may be single precision, and a value read back
    # must equal the one written to the ledger.
    *(sa.Column(name, sa.Double, nullable=False) for name in VALUE_COLUMNS.values()),
    _utc_time("created_at"),
    sa.UniqueConstraint("production_unit_id", "report_date", name="uq_day_reports_unit_date"),
)

_REQUEST_COMMON = (
    ("issuing_agent", sa.String(66)),
    ("receiving_agent", sa.String(66)),
    ("status", sa.String(16)),
    ("timestamp", sa.BigInteger),
    ("answer_timestamp", sa.BigInteger),
    ("transaction_ids", sa.Text),
)


def request_table(name: str, meta: sa.MetaData, id_field: str, *own: sa.Column) -> sa.Table:
    """The table of one kind of request: its id, its *own* columns, the columns every kind has,
    the bookkeeping times and an index on the status."""
    return sa.Table(
        name,
        meta,
        sa.Column(id_field, sa.String(32), primary_key=True),
        *own,
        *(sa.Column(column, type_, nullable=False) for column, type_ in _REQUEST_COMMON),
        _utc_time("first_seen_at"),
        _utc_time("updated_at"),
        sa.Index(f"ix_{name}_status", "status"),
    )


partner_requests = request_table("partner_requests", metadata, "partner_request_id")

order_requests = request_table(
    "order_requests",
    metadata,
    "abs_action_id",
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("metadata", sa.Text, nullable=False),
    sa.Column("files", sa.Text, nullable=False),
)

day_report_submissions = sa.Table(
    "day_report_submissions",
    metadata,
    sa.Column("report_id", sa.String(24), sa.ForeignKey("day_reports.id"), primary_key=True),
    sa.Column("record_id", sa.String(32), primary_key=True),
    _utc_time("submitted_at"),
)

gateway_record_types = sa.Table(
    "gateway_record_types",
    metadata,
    sa.Column("gateway", sa.String(255), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    _utc_time("created_at"),
)

kafka_tokens = sa.Table(
    "kafka_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("instance_type", sa.String(32), nullable=False),
    # Fernet text: the token and the password are never stored in clear
    sa.Column("token", sa.Text, nullable=True),
    sa.Column("public_key", sa.String(66), nullable=True),
    sa.Column("password", sa.Text, nullable=False),
    sa.Column("record_id", sa.String(128), nullable=False),
    sa.Column("topic", sa.String(249), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    _utc_time("created_at"),
    _utc_time("updated_at"),
    sa.UniqueConstraint("instance_type", "record_id", name="uq_kafka_tokens_type_record"),
)

# Items the gateway lists that cannot be stored (a NUL, a lone surrogate, an oversized text, a
# bad field): set aside with the reason, once per distinct item, so a sync stores the others and
# alerts once per new bad item instead of failing on it forever.
rejected_items = sa.Table(
    "rejected_items",
    metadata,
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("fingerprint", sa.String(64), primary_key=True),
    sa.Column("item_id", sa.String(32), nullable=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("times_seen", sa.Integer, nullable=False),
    _utc_time("first_seen_at"),
    _utc_time("last_seen_at"),
)

# One row per change of a unit's status and process name, in the order the MES made them. A row is
# pending until a run applies it on the ledger ("applied", or "refused" for good, with the run
# that settled it); ``attempted_at`` is set just before its update is sent, so a later drain knows
# an earlier one may have sent it without noting the answer.
unit_updates = sa.Table(
    "unit_updates",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("production_unit_id", sa.Integer, sa.ForeignKey("production_units.id"), nullable=False),
    sa.Column("status", sa.String(64), nullable=False),
    sa.Column("process_name", sa.String(200), nullable=False),
    sa.Column("dag_run_id", sa.String(250), nullable=False, unique=True),
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.Column("detail", sa.Text, nullable=True),
    _utc_time("noted_at"),
    _utc_time("attempted_at", nullable=True),
    _utc_time("applied_at", nullable=True),
    sa.Column("applied_by_run", sa.String(250), nullable=True),
    sa.Index("ix_unit_updates_unit_pending", "production_unit_id", "applied_at", "seq"),
)

#: Which run holds a unit's lock, and until when (see :mod:`include.mes.unit_updates`).
unit_claims = sa.Table(
    "unit_claims",
    metadata,
    sa.Column("production_unit_id", sa.Integer, sa.ForeignKey("production_units.id"), primary_key=True),
    sa.Column("dag_run_id", sa.String(250), nullable=False),
    _utc_time("claimed_until"),
)


# Any fixed 64-bit number: the PostgreSQL advisory lock held while creating the schema.
_SCHEMA_LOCK_KEY = 0x4D45535F534348


def create_schema(engine: Engine | Connection) -> None:
    """Create every missing table and index; existing ones are left as they are.

    On PostgreSQL, concurrent callers are serialised by a transaction-level advisory lock, so
    two tasks starting at once do not both try to create the same table.
    """
    if isinstance(engine, Connection):
        _create(engine)
        return
    with engine.begin() as conn:
        _create(conn)


def _create(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
    metadata.create_all(conn, checkfirst=True)


def main(argv: list[str] | None = None) -> int:
    """Command line: create the missing tables in the database of an Airflow connection or a URL."""
    import argparse

    from include.mes.db import engine_from_url, mes_engine

    parser = argparse.ArgumentParser(
        prog="python -m include.mes.schema",
        description="Create the MES tables this pipeline reads and writes; existing ones are left as they are.",
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--conn-id", default=None, help="Airflow connection id (default: mes_db)")
    target.add_argument("--url", default=None, help="SQLAlchemy URL, e.g. sqlite:////tmp/mes.sqlite3")
    args = parser.parse_args(argv)
    engine = engine_from_url(args.url) if args.url else mes_engine(args.conn_id or "mes_db")
    try:
        create_schema(engine)
    finally:
        shown = engine.url.render_as_string(hide_password=True)
        engine.dispose()
    print(f"MES tables present in {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
