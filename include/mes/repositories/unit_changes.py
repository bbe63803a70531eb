"""A production unit's changes, noted in order and drained onto the ledger."""

from __future__ import annotations

from include.mes import unit_updates
from include.mes.models import (
    ProductionUnitNotFoundError,
)
from include.mes.repositories.base import RepositoryBase
from include.mes.unit_updates import UnitChange


class UnitChangesRepository(RepositoryBase):
    """Production-unit changes: noted, drained in order, given up."""

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
        up_to: int | None,
        run_id: str,
        *,
        lock_timeout: float = unit_updates.DEFAULT_LOCK_TIMEOUT,
    ) -> unit_updates.UnitDrain:
        """The unit's lock and its pending changes up to *up_to* (``None``: all): see :class:`~include.mes.unit_updates.UnitDrain`.

        :param lock_timeout: seconds to wait for the lock; default 300.
        """
        return unit_updates.UnitDrain(self.engine, unit_id, up_to, run_id, lock_timeout=lock_timeout)

    def give_up_unit_change(self, dag_run_id: str, reason: str) -> bool:
        """Note run *dag_run_id*'s change given up if still pending (its run failed for good)."""
        return unit_updates.give_up_unit_change(self.engine, dag_run_id, reason)
