"""The production units of the MES."""

from __future__ import annotations

import sqlalchemy as sa

from include.day_report_keys import (
    validate_unit_code,
)
from include.mes import schema, unit_updates
from include.mes.models import (
    ProductionUnit,
    ProductionUnitNotFoundError,
    validate_process_name,
    validate_unit_id,
    validate_unit_status,
)
from include.mes.repositories.base import RepositoryBase


class UnitsRepository(RepositoryBase):
    """Production units: read, added, their state set."""

    def production_units(self) -> list[ProductionUnit]:
        """All production units, by id."""
        units = schema.production_units
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(units).order_by(units.c.id)).mappings().all()
        return [schema.from_row(ProductionUnit, row) for row in rows]

    def production_unit(self, unit_id: int) -> ProductionUnit | None:
        """The unit with id *unit_id*, or ``None`` if there is none."""
        validate_unit_id(unit_id)
        return self._unit_where(schema.production_units.c.id == unit_id)

    def require_production_unit(self, unit_id: int) -> ProductionUnit:
        """The unit with id *unit_id*; raises :class:`ProductionUnitNotFoundError` naming the id if missing."""
        unit = self.production_unit(unit_id)
        if unit is None:
            raise ProductionUnitNotFoundError(unit_id)
        return unit

    def production_unit_by_code(self, code: str) -> ProductionUnit | None:
        """The unit whose code is *code* (like ``PT10``), or ``None``."""
        validate_unit_code(code)
        return self._unit_where(schema.production_units.c.code == code)

    def _unit_where(self, condition: sa.ColumnElement[bool]) -> ProductionUnit | None:
        with self.engine.connect() as conn:
            select = sa.select(schema.production_units).where(condition)
            row = conn.execute(select).mappings().first()
        return None if row is None else schema.from_row(ProductionUnit, row)

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
        return schema.from_row(ProductionUnit, row)
