"""Reading and writing the MES database: production units, day reports, synced requests, and what
the MES created on the ledger (record types, reporters).

:class:`MesRepository` wraps an engine (see :mod:`include.mes.db`) and works the same on SQLite
and PostgreSQL. Every method runs in its own transaction.

Syncing requests (:meth:`MesRepository.upsert_requests`, for any stored kind; the partner and
order methods are it with the kind set) reads the stored rows of the given ids in chunks,
classifies each item as inserted, updated or unchanged, and writes the inserted and changed ones
with one dialect ``INSERT ... ON CONFLICT DO UPDATE`` executed for many rows, all in one
transaction. Concurrent syncs of the same table take turns (see :func:`.repositories.base._serialise_writers`), so
an item is reported as newly seen once, and none fails on a duplicate key.
"""

from __future__ import annotations

import functools
import hashlib
import os

from sqlalchemy.engine import Engine

from include.mes import crypto, schema
from include.mes.repositories.day_reports import DayReportNotFoundError, DayReportsRepository
from include.mes.repositories.record_types import RecordTypesRepository
from include.mes.repositories.reporters import ReportersRepository
from include.mes.repositories.requests import RequestsRepository
from include.mes.repositories.unit_changes import UnitChangesRepository
from include.mes.repositories.units import UnitsRepository

__all__ = ["DayReportNotFoundError", "MesRepository", "process_repository"]


class MesRepository(
    UnitsRepository,
    UnitChangesRepository,
    DayReportsRepository,
    ReportersRepository,
    RecordTypesRepository,
    RequestsRepository,
):
    """The MES database.

    :param engine: a SQLAlchemy engine for SQLite or PostgreSQL, from :func:`include.mes.db.mes_engine`.
    :param chunk_size: how many ids one ``IN (...)`` lookup holds during a sync; default 500.
    :param fernet: encrypts the reporters' tokens and passwords; default Airflow's Fernet key.
    """

    def __init__(
        self, engine: Engine, *, chunk_size: int = 500, fernet: crypto.FernetLike | None = None
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"Invalid chunk_size {chunk_size!r}: expected a positive integer")
        self.engine = engine
        self.chunk_size = chunk_size
        self._fernet = fernet

    def __repr__(self) -> str:
        return f"MesRepository({self.engine.url.render_as_string(hide_password=True)!r})"

    def create_schema(self) -> None:
        """Create the MES tables that are missing (idempotent)."""
        schema.create_schema(self.engine)


def process_repository(conn_id: str) -> MesRepository:
    """The MES database on Airflow connection *conn_id*, one engine per process.

    A task runs in its own process, and a sync stores page after page: opening the database once
    per process keeps a page's write to the write itself; a triggerer's waits share one engine.
    The connection as the environment gives it (tests, local runs) is part of the key; one the
    metadata database or a secrets backend gives is read when the process first asks. The tables
    are created when the deployment is set up (``python -m include.mes.schema``), not by a task.
    """
    # a digest of the connection as the environment gives it: the cache holds no password
    from_environment = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}")
    digest = hashlib.sha256(from_environment.encode()).hexdigest() if from_environment else None
    return _process_repository(conn_id, digest)


@functools.lru_cache(maxsize=4)
def _process_repository(conn_id: str, _environment_digest: str | None) -> MesRepository:
    from include.mes.db import mes_engine

    # a long-lived process (the triggerer) outlives database restarts: a pooled connection is
    # checked before it is used
    return MesRepository(mes_engine(conn_id, pool_pre_ping=True))
