"""The parts of :class:`~include.mes.repository.MesRepository`, one per aggregate: production
units, their changes, day reports, what the MES created on the ledger, and synced requests."""
