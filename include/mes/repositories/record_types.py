"""The record types the MES created (or found) on each gateway, so that it creates each once."""

from __future__ import annotations

import sqlalchemy as sa

from include.mes import schema
from include.mes.repositories.base import RepositoryBase, _dialect_insert


class RecordTypesRepository(RepositoryBase):
    """Record types created per gateway."""

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
