"""Getting a SQLAlchemy engine for the MES database.

In Airflow, the database is the connection ``mes_db``, read through the common SQL tooling: the
connection's hook is a ``DbApiHook`` (``SqliteHook`` for conn type ``sqlite``, ``PostgresHook``
for ``postgres``), and its ``get_sqlalchemy_engine()`` builds the engine. Connections that work
(as ``AIRFLOW_CONN_MES_DB`` JSON; the same fields in the UI):

* SQLite, the embedded default: ``{"conn_type": "sqlite", "host": "/abs/path/mes.sqlite3"}``.
  The file path goes in ``host`` and should be absolute (a relative one is resolved against the
  worker's current directory). SqliteHook turns it into ``sqlite:////abs/path/mes.sqlite3``.
  The hook cannot express a path holding ``?``, ``#`` or ``%``; :func:`mes_engine` refuses one
  rather than open another file.
* PostgreSQL: ``{"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "mes",
  "password": "...", "schema": "mes"}``; ``schema`` is the database name. PostgresHook builds a
  ``postgresql+psycopg`` (psycopg 3) URL; the extra ``{"sqlalchemy_scheme": "postgresql+psycopg2"}``
  selects psycopg2 instead.

Outside Airflow (tests, the sample-data command) :func:`engine_from_url` takes a SQLAlchemy URL.
Both apply :func:`configure_engine`.
"""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

__all__ = [
    "DEFAULT_CONN_ID",
    "SQLITE_BUSY_TIMEOUT_MS",
    "configure_engine",
    "configured_conn_id",
    "engine_from_url",
    "mes_engine",
]

DEFAULT_CONN_ID = "mes_db"
#: How long a SQLite writer waits for another one to finish before failing with "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 30_000


def configured_conn_id() -> str:
    """The MES database's Airflow connection: ``BLOCKCHAIN_MES_CONN_ID``, default ``mes_db``."""
    return os.environ.get("BLOCKCHAIN_MES_CONN_ID") or DEFAULT_CONN_ID


def mes_engine(conn_id: str = DEFAULT_CONN_ID, **engine_kwargs: Any) -> Engine:
    """The engine of the Airflow connection *conn_id*, built by the connection's SQL hook.

    :param conn_id: an Airflow connection of type ``sqlite`` or ``postgres``; default ``mes_db``.
    :param engine_kwargs: passed on to :func:`sqlalchemy.create_engine`.
    :raises ValueError: if the connection's hook is not a SQL (``DbApiHook``) hook.
    """
    # Imported here: importing this module must not load Airflow.
    from airflow.providers.common.sql.hooks.sql import DbApiHook
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        connection = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        # Outside a task (a command such as `python -m include.sample_data`) the Task SDK reads
        # only the environment and secrets backends: read the metadata database as the Airflow
        # CLI does, and hand it to the SQL hook (which looks the id up again) in this process.
        from airflow.models.connection import Connection

        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = Connection.get_connection_from_secrets(
            conn_id
        ).as_json()
        connection = BaseHook.get_connection(conn_id)
    hook = connection.get_hook()
    if not isinstance(hook, DbApiHook):
        raise ValueError(
            f"Connection {conn_id!r} has conn_type {connection.conn_type!r}, whose hook is not a SQL hook; "
            "the MES database needs conn_type 'sqlite' or 'postgres'"
        )
    engine = hook.get_sqlalchemy_engine(engine_kwargs=engine_kwargs or None)
    if engine.dialect.name == "sqlite" and connection.host and engine.url.database != connection.host:
        # SqliteHook pastes the path into a URL unescaped: "a?b.db" would silently become "a".
        engine.dispose()
        raise ValueError(
            f"Connection {conn_id!r}: SqliteHook cannot express the file path in host as a URL "
            f"(it became {engine.url.database!r}); use a path without '?', '#' or '%'"
        )
    return configure_engine(engine)


def engine_from_url(url: str | sa.URL, **engine_kwargs: Any) -> Engine:
    """An engine for a SQLAlchemy URL, e.g. ``sqlite:////tmp/mes.sqlite3``, configured like :func:`mes_engine`."""
    return configure_engine(sa.create_engine(url, **engine_kwargs))


def configure_engine(engine: Engine) -> Engine:
    """Per-connection settings the MES layer relies on; returns *engine*.

    On SQLite: enforce foreign keys (off by default in SQLite), wait up to
    :data:`SQLITE_BUSY_TIMEOUT_MS` for a concurrent writer, and use write-ahead logging so that
    readers in parallel tasks do not block the writer. On PostgreSQL with psycopg 3: no
    server-side prepared statements (see :func:`_no_server_prepare`).
    """
    if engine.dialect.name == "sqlite" and not sa.event.contains(engine, "connect", _sqlite_pragmas):
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    if engine.dialect.name == "postgresql" and not sa.event.contains(engine, "connect", _no_server_prepare):
        sa.event.listen(engine, "connect", _no_server_prepare)
    return engine


def _no_server_prepare(dbapi_connection: Any, _connection_record: Any) -> None:
    # psycopg 3 turns a statement into a server-side prepared statement after a few runs, and
    # PostgreSQL may then keep a generic plan made while a table was still empty: a sync's
    # "id IN (...)" lookups went from milliseconds to ~100 ms each right after the first sync.
    # Planning each statement afresh costs far less than that.
    if hasattr(dbapi_connection, "prepare_threshold"):
        dbapi_connection.prepare_threshold = None


def _sqlite_pragmas(dbapi_connection: Any, _connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # An in-memory database answers "memory" and keeps its mode; that is fine.
        cursor.execute("PRAGMA journal_mode=WAL")
    finally:
        cursor.close()
