"""Fixtures of the gateway sandbox tests: a server on a fresh topic prefix, a ledger, a client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gateway_sandbox.ledger import Ledger
from gateway_sandbox.server import GatewayServer
from tests.sandbox.client import BlkClient

MES_PASSWORD = "mes-password-0123"
ERP_PASSWORD = "erp-password-0123"

_T = TypeVar("_T")


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "ledger.db")


@pytest.fixture
def ledger(db_path: str) -> Iterator[Ledger]:
    """The test's own connection to the ledger the server uses (WAL: both may write)."""
    with Ledger(db_path) as opened:
        yield opened


def _closed_at_teardown(
    open_one: Callable[..., _T], close: Callable[[_T], None]
) -> Iterator[Callable[..., _T]]:
    """A fixture's body: yield *open_one*, then *close* everything it opened, in order."""
    opened: list[_T] = []

    def make(*args: Any, **kwargs: Any) -> _T:
        made = open_one(*args, **kwargs)
        opened.append(made)
        return made

    yield make
    for made in opened:
        close(made)


@pytest.fixture
def make_server(
    kafka_bootstrap: str, topic_prefix: str, db_path: str
) -> Iterator[Callable[..., GatewayServer]]:
    """Start a GatewayServer on the test's topic prefix and ledger; stopped at teardown."""

    def start(**kwargs: Any) -> GatewayServer:
        kwargs.setdefault("topic_prefix", topic_prefix)
        path = kwargs.pop("db_path", db_path)
        return GatewayServer(kafka_bootstrap, path, **kwargs).start()

    yield from _closed_at_teardown(start, GatewayServer.stop)


@pytest.fixture
def make_client(kafka_bootstrap: str, topic_prefix: str) -> Iterator[Callable[..., BlkClient]]:
    """A client on the test's topic prefix (or *prefix*); closed at teardown."""

    def connect(encoding: str = "python-literal", prefix: str | None = None) -> BlkClient:
        return BlkClient(kafka_bootstrap, prefix or topic_prefix, encoding=encoding)

    yield from _closed_at_teardown(connect, BlkClient.close)


@pytest.fixture
def mes(ledger: Ledger) -> tuple[str, str]:
    """The MES agent: ``(public key, token)``."""
    return ledger.create_agent("MES", MES_PASSWORD)
