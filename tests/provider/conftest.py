from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

import pytest

from tests.conftest import prefixed_topics

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
    """Define ``kafka_default`` and ``blockchain_master`` as Airflow does from the environment."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_KAFKA_DEFAULT",
        json.dumps({"conn_type": "kafka", "extra": {"bootstrap.servers": bootstrap}}),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_BLOCKCHAIN_MASTER",
        json.dumps(
            {
                "conn_type": "blockchain_token",
                "login": MES_PUBKEY,
                "password": token,
                "extra": {
                    "agent_password": "agent-password-1234",
                    "instance_type": "Master",
                    "topics": json.dumps(prefixed_topics(prefix)),
                    **extra,
                },
            }
        ),
    )


@pytest.fixture
def gateway_env(kafka_bootstrap: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch) -> GatewayEnv:
    token = "tok-" + secrets.token_urlsafe(24)
    set_connections(monkeypatch, kafka_bootstrap, topic_prefix, token)
    return GatewayEnv(kafka_bootstrap, topic_prefix, token)
