"""``mes_engine``: the engine of the Airflow connection ``mes_db``, built by its SQL hook."""

from __future__ import annotations

import json
import urllib.parse

import pytest
import sqlalchemy as sa

from include.mes import schema
from include.mes.db import mes_engine
from include.mes.repository import MesRepository
from tests.conftest import PostgresServer


def _use_the_engine(engine: sa.Engine) -> None:
    repo = MesRepository(engine)
    repo.create_schema()
    repo.create_schema()
    unit = repo.add_production_unit("PT10", "Press line 10", "Running", "Stamping")
    assert repo.production_unit(unit.id) == unit


@pytest.mark.parametrize("form", ["json", "uri"])
def test_sqlite_connection(monkeypatch: pytest.MonkeyPatch, tmp_path, form: str) -> None:
    path = tmp_path / "mes db" / "mes.sqlite3"  # a space in the path, too
    path.parent.mkdir()
    if form == "json":
        value = json.dumps({"conn_type": "sqlite", "host": str(path)})
    else:
        value = "sqlite://" + urllib.parse.quote(str(path), safe="")
    monkeypatch.setenv("AIRFLOW_CONN_MES_DB", value)

    engine = mes_engine()
    try:
        assert engine.dialect.name == "sqlite"
        assert engine.url.database == str(path)
        _use_the_engine(engine)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        engine.dispose()
    assert path.exists() and path.stat().st_size > 0


@pytest.mark.postgres
def test_postgres_connection(
    monkeypatch: pytest.MonkeyPatch, postgres_server: PostgresServer, postgres_database: str
) -> None:
    value = {
        "conn_type": "postgres",
        "host": postgres_server.host,
        "port": postgres_server.port,
        "login": postgres_server.user,
        "schema": postgres_database,
    }
    monkeypatch.setenv("AIRFLOW_CONN_MES_DB", json.dumps(value))
    engine = mes_engine("mes_db")
    try:
        schema.metadata.drop_all(engine)  # the session's database: an earlier test's units may be there
        assert engine.dialect.name == "postgresql"
        assert engine.dialect.driver == "psycopg"
        assert engine.url.database == postgres_database
        with engine.connect() as conn:
            assert conn.connection.dbapi_connection.prepare_threshold is None
        _use_the_engine(engine)
    finally:
        engine.dispose()


def test_a_sqlite_path_the_hook_would_truncate_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    path = tmp_path / "what?.sqlite3"
    monkeypatch.setenv("AIRFLOW_CONN_MES_DB", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    with pytest.raises(ValueError, match=r"SqliteHook cannot express the file path"):
        mes_engine()


def test_a_connection_without_a_sql_hook_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_NOT_SQL", json.dumps({"conn_type": "kafka", "extra": {}}))
    with pytest.raises(ValueError, match="Connection 'not_sql' has conn_type 'kafka'"):
        mes_engine("not_sql")
