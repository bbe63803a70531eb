"""What the parts of the MES repository share: the engine they hold, and the helpers of
batched, concurrent writes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from include.mes import crypto

T = TypeVar("T")


class RepositoryBase:
    """What every part of :class:`~include.mes.repository.MesRepository` holds."""

    engine: Engine
    chunk_size: int
    _fernet: crypto.FernetLike | None


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


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
