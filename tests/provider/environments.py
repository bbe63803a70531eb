"""What the provider's tests set up around a gateway: the connections of a scripted gateway, the
MES agent on a sandbox ledger, the MES database."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from gateway_sandbox.ledger import Ledger
from tests.conftest import set_connections
from tests.provider import conftest as provider

if TYPE_CHECKING:
    from include.mes.repository import MesRepository


def reconnect(monkeypatch: pytest.MonkeyPatch, env: provider.GatewayEnv, **extra: Any) -> None:
    """Define the connections of *env* again, with *extra* fields of the token connection
    (``timeout``, ``late_answer_grace``, ``echo_request_id``, ``reads``...)."""
    provider.set_connections(monkeypatch, env.bootstrap, env.prefix, env.token, **extra)


@dataclass
class MesAgent:
    """The MES agent on a sandbox ledger: the ledger (open), the agent's key, token and password."""

    ledger_path: str
    ledger: Ledger
    public_key: str
    token: str = field(repr=False)
    password: str = field(repr=False)


def mes_agent(
    monkeypatch: pytest.MonkeyPatch, bootstrap: str, prefix: str, tmp_path: Path, **extra: Any
) -> MesAgent:
    """A new sandbox ledger in *tmp_path* holding the MES agent, and the connections naming that
    agent on the broker at *bootstrap* (topics prefixed with *prefix*; *extra*: fields of the token
    connection)."""
    ledger_path = str(tmp_path / "ledger.sqlite3")
    password = secrets.token_urlsafe(24)
    ledger = Ledger(ledger_path)
    public_key, token = ledger.create_agent("MES", password)
    set_connections(
        monkeypatch, bootstrap, prefix, token, public_key=public_key, agent_password=password, **extra
    )
    return MesAgent(ledger_path, ledger, public_key, token, password)


@contextmanager
def mes_database(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[MesRepository]:
    """A new MES database in *tmp_path* as connection ``mes_db``, and a Fernet key of Airflow's
    for the reporters' secrets."""
    from airflow.sdk.crypto import get_fernet
    from cryptography.fernet import Fernet

    from include.mes.db import engine_from_url
    from include.mes.repository import MesRepository

    mes_path = tmp_path / "mes.sqlite3"
    monkeypatch.setenv("AIRFLOW_CONN_MES_DB", json.dumps({"conn_type": "sqlite", "host": str(mes_path)}))
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", Fernet.generate_key().decode())
    get_fernet.cache_clear()
    repository = MesRepository(engine_from_url(f"sqlite:///{mes_path}"))
    repository.create_schema()
    try:
        yield repository
    finally:
        repository.engine.dispose()
        get_fernet.cache_clear()
