"""The record types the MES created on each gateway, as the provider's operators ask for them
(:class:`~blockchain_provider.memory.RecordTypeMemory`): a type is sent once per gateway."""

from __future__ import annotations

from include.mes.repository import MesRepository


class MesRecordTypes:
    """The MES database's memory of the record types it created (``gateway_record_types``).

    :param repository: the MES database.
    """

    def __init__(self, repository: MesRepository) -> None:
        self.repository = repository

    def __repr__(self) -> str:
        return "MesRecordTypes()"

    def created(self, gateway: str, name: str) -> bool:
        """Whether the MES created (or found) record type *name* on *gateway*."""
        return self.repository.record_type_created(gateway, name)

    def remember(self, gateway: str, name: str) -> None:
        """Note that record type *name* exists on *gateway*."""
        self.repository.mark_record_type_created(gateway, name)
