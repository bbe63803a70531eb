"""Engines for the MES database tests: a SQLite file and a PostgreSQL database.

The PostgreSQL server is the session's ``postgres_server`` (a throwaway cluster of its own, or
``MES_TEST_PG_HOST``) and the database its ``postgres_database`` (tests/conftest.py), created for
the session and dropped at its end; every test starts with its tables dropped.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from include.mes import schema
from include.mes.db import engine_from_url
from include.mes.repository import MesRepository
from tests.conftest import PostgresServer


def postgres_url(server: PostgresServer, database: str) -> sa.URL:
    return sa.URL.create(
        "postgresql+psycopg", username=server.user, host=server.host, port=server.port, database=database
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path) -> Iterator[Engine]:
    """An engine on an empty MES database: a SQLite file, or the session's PostgreSQL database."""
    if request.param == "sqlite":
        eng = engine_from_url(f"sqlite:///{tmp_path / 'mes.sqlite3'}")
    else:
        server = request.getfixturevalue("postgres_server")
        eng = engine_from_url(postgres_url(server, request.getfixturevalue("postgres_database")))
        schema.metadata.drop_all(eng)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def repo(engine: Engine) -> MesRepository:
    """The MES repository on *engine*'s database, its schema created."""
    repository = MesRepository(engine)
    repository.create_schema()
    return repository
