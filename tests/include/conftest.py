"""Engines for the MES database tests: a SQLite file and a PostgreSQL database.

The PostgreSQL server is ``MES_TEST_PG_HOST``:``MES_TEST_PG_PORT`` (default 127.0.0.1:5432),
user ``MES_TEST_PG_USER`` (default ``postgres``, trust authentication). One database
``mes_test_<random>`` is created for the session and dropped at its end; every test starts with
its tables dropped. Deselect these tests with ``-m "not postgres"`` where there is no server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from include.mes import schema
from include.mes.db import engine_from_url

PG_HOST = os.environ.get("MES_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("MES_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("MES_TEST_PG_USER", "postgres")


def _admin_connection():
    import psycopg2

    try:
        conn = psycopg2.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=5
        )
    except psycopg2.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} as {PG_USER} ({exc}); "
            'start it or deselect these tests with -m "not postgres"'
        )
    conn.autocommit = True
    return conn


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """The name of a fresh PostgreSQL database, dropped after the session."""
    name = f"mes_test_{uuid.uuid4().hex[:12]}"
    admin = _admin_connection()
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield name
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


def postgres_url(database: str) -> sa.URL:
    return sa.URL.create(
        "postgresql+psycopg", username=PG_USER, host=PG_HOST, port=PG_PORT, database=database
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path) -> Iterator[Engine]:
    """An engine on an empty MES database: a SQLite file, or the session's PostgreSQL database."""
    if request.param == "sqlite":
        eng = engine_from_url(f"sqlite:///{tmp_path / 'mes.sqlite3'}")
    else:
        eng = engine_from_url(postgres_url(request.getfixturevalue("postgres_database")))
        schema.metadata.drop_all(eng)
    try:
        yield eng
    finally:
        eng.dispose()
