from __future__ import annotations

import secrets
from dataclasses import dataclass

import pytest

from tests.conftest import set_connections as shared_set_connections

MES_PUBKEY = "02" + "ab" * 32


@dataclass
class GatewayEnv:
    bootstrap: str
    prefix: str
    token: str
    token_conn_id: str = "blockchain_master"
    kafka_config_id: str = "kafka_default"


def set_connections(
    monkeypatch: pytest.MonkeyPatch, bootstrap: str, prefix: str, token: str, **extra
) -> None:
    """The connections of the provider's tests: the MES agent's public key, a test agent password."""
    shared_set_connections(
        monkeypatch,
        bootstrap,
        prefix,
        token,
        public_key=MES_PUBKEY,
        agent_password="agent-password-1234",
        **extra,
    )


@pytest.fixture
def gateway_env(kafka_bootstrap: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch) -> GatewayEnv:
    token = "tok-" + secrets.token_urlsafe(24)
    set_connections(monkeypatch, kafka_bootstrap, topic_prefix, token)
    return GatewayEnv(kafka_bootstrap, topic_prefix, token)
