"""Fixtures of the gateway sandbox tests: a server on a fresh topic prefix, a ledger, a client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway_sandbox.ledger import Ledger
from gateway_sandbox.server import GatewayServer
from tests.sandbox.client import BlkClient

MES_PASSWORD = "mes-password-0123"
ERP_PASSWORD = "erp-password-0123"


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "ledger.db")


@pytest.fixture
def ledger(db_path: str) -> Iterator[Ledger]:
    """The test's own connection to the ledger the server uses (WAL: both may write)."""
    with Ledger(db_path) as opened:
        yield opened


@pytest.fixture
def make_server(
    kafka_bootstrap: str, topic_prefix: str, db_path: str
) -> Iterator[Callable[..., GatewayServer]]:
    """Start a GatewayServer on the test's topic prefix and ledger; stopped at teardown."""
    servers: list[GatewayServer] = []

    def make(**kwargs: Any) -> GatewayServer:
        kwargs.setdefault("topic_prefix", topic_prefix)
        path = kwargs.pop("db_path", db_path)
        server = GatewayServer(kafka_bootstrap, path, **kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def make_client(kafka_bootstrap: str, topic_prefix: str) -> Iterator[Callable[..., BlkClient]]:
    clients: list[BlkClient] = []

    def make(encoding: str = "python-literal", prefix: str | None = None) -> BlkClient:
        client = BlkClient(kafka_bootstrap, prefix or topic_prefix, encoding=encoding)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def mes(ledger: Ledger) -> tuple[str, str]:
    """The MES agent: ``(public key, token)``."""
    return ledger.create_agent("MES", MES_PASSWORD)
