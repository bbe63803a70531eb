"""The MES's stored requests of every kind, as the provider's "Blockchain requests" page reads
them: the deployment's :class:`blockchain_provider.request_store.RequestStore`.

The API server builds it from Airflow's configuration::

    AIRFLOW__BLOCKCHAIN__REQUEST_STORE=include.mes.request_store.MesRequestStore

It reads the MES database of the connection ``BLOCKCHAIN_MES_CONN_ID`` names (default
``mes_db``), one engine per API server process.
"""

from __future__ import annotations

from collections.abc import Sequence

from include.mes.db import configured_conn_id, mes_engine
from include.mes.models import StoredRequest
from include.mes.repository import MesRepository
from include.mes.request_kinds import stored_kind


class MesRequestStore:
    """The requests the sync DAGs stored in the MES database (newest first)."""

    def __init__(self, conn_id: str | None = None) -> None:
        self.conn_id = conn_id or configured_conn_id()
        self._repository = MesRepository(mes_engine(self.conn_id))
        self._repository.create_schema()

    def request_page(
        self, kind: str, status: str | None = None, *, offset: int = 0, limit: int = 25
    ) -> tuple[int, Sequence[StoredRequest]]:
        return self._repository.request_page(kind, status, offset=offset, limit=limit)

    def request(self, kind: str, request_id: str) -> StoredRequest | None:
        return self._repository.request(kind, request_id)

    def columns(self, kind: str) -> Sequence[str]:
        return stored_kind(kind).page_columns
