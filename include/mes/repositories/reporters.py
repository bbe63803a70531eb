"""The reporters: the agents the MES created to sign each unit's updates (the original's
``KafkaToken`` rows), with their encrypted secrets."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping

from include.day_report_keys import validate_unit_code
from include.mes import crypto, schema
from include.mes.models import Reporter
from include.mes.repositories.base import RepositoryBase, _dialect_insert


class ReportersRepository(RepositoryBase):
    """The reporters, one per production unit, their password and token encrypted."""

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
