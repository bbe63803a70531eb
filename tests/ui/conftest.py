"""Airflow's API server app (``create_app``) with the provider's plugin mounted, on the test
session's metadata database, with the simple auth manager and one user per role."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import airflow

SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
#: username -> simple auth manager role
USERS = {"admin": "admin", "operator": "op", "worker": "user", "reader": "viewer"}
MES_AGENT = "02" + "a1" * 32
OTHER_AGENT = "03" + "b2" * 32


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory, airflow_db: str) -> Iterator[Any]:
    """The API server's FastAPI app, created as ``airflow api-server`` creates it, on the
    session's metadata database."""
    settings = {
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(
            tmp_path_factory.mktemp("auth") / "passwords.json"
        ),
        "AIRFLOW__API_AUTH__JWT_SECRET": "test-ui-jwt-secret-" + "x" * 64,
    }
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        airflow("dags", "reserialize")
        from airflow.api_fastapi.app import create_app, purge_cached_app

        purge_cached_app()
        yield create_app("core")
        purge_cached_app()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def token(api_server: Any):
    """``token(username)``: a JWT of that user, as the login page issues it."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    def make(username: str) -> str:
        return get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=username, role=USERS[username]))

    return make


@pytest.fixture
def mes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh MES database (connection ``mes_db``), this MES's agent on ``blockchain_master``."""
    from blockchain_provider.ui import api as ui_app
    from include.mes.db import engine_from_url
    from include.mes.repository import MesRepository

    path = tmp_path / "mes.sqlite3"
    monkeypatch.setenv("AIRFLOW_CONN_MES_DB", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    monkeypatch.setenv(
        "AIRFLOW_CONN_BLOCKCHAIN_MASTER",
        json.dumps({"conn_type": "blockchain_token", "login": MES_AGENT, "password": "not-used"}),
    )
    ui_app.reset_caches()
    repository = MesRepository(engine_from_url(f"sqlite:///{path}"))
    repository.create_schema()
    yield repository
    ui_app.reset_caches()
