"""`blockchain-provider token create`: an interrupted run never leaves an agent nobody can use, and
the new password is never shown, not even inside a gateway error."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from blockchain_provider import cli
from blockchain_provider.exceptions import BlockchainGatewayError
from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook
from local_services.responder import ScriptedResponder
from tests.conftest import prefixed_topics
from tests.provider.test_hook import ERP

pytestmark = pytest.mark.broker


def test_the_new_password_is_scrubbed_from_a_gateway_error(gateway_env):
    def handler(topic, header, body):
        return {"error": f"password {body['password']} is too weak"}

    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, handler):
        with KafkaBlockchainHook(timeout=10) as hook, pytest.raises(BlockchainGatewayError) as info:
            hook.create_agent("ERP", "a-secret-new-password")
    assert "a-secret-new-password" not in str(info.value)
    assert "a-secret-new-password" not in info.value.gateway_text
    assert "too weak" in str(info.value)


@pytest.fixture
def new_connection(gateway_env, monkeypatch):
    """A token connection with its topics and no agent yet."""
    conn = {
        "conn_type": "blockchain_token",
        "extra": {"topics": json.dumps(prefixed_topics(gateway_env.prefix))},
    }
    monkeypatch.setenv("AIRFLOW_CONN_BLOCKCHAIN_NEW", json.dumps(conn))
    monkeypatch.setattr(
        cli.common, "read_connection", lambda conn_id: conn if conn_id == "blockchain_new" else None
    )
    return conn


def test_when_the_connection_cannot_be_written_the_credentials_are_kept_privately(
    gateway_env, new_connection, monkeypatch, capsys
):
    created = {}

    def handler(topic, header, body):
        created.update(body)
        return {"_auth": "new-agent-token-123", "data": {"public_key": ERP, "token": "new-agent-token-123"}}

    def unreachable(conn_id, conn, api_url):
        raise cli.CommandError("the REST API refused the connection update: HTTP 503")

    monkeypatch.setattr(cli.common, "write_connection", unreachable)
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, handler):
        code = cli.main(
            ["token", "create", "--conn-id", "blockchain_new", "--name", "MES", "--timeout", "10", "--json"]
        )
    assert code == cli.EXIT_FAILED
    out = capsys.readouterr()
    outcome = json.loads(out.out)
    message = out.err
    password = created["password"]
    for text in (out.out, out.err):
        assert "new-agent-token-123" not in text and password not in text
    kept = Path(os.environ["AIRFLOW_HOME"]) / "blockchain-provider" / "blockchain_new.json"
    assert str(kept) in message and "airflow connections import" in message and "HTTP 503" in message
    assert outcome["ok"] is False and outcome["error"] == "failed" and outcome["exit_code"] == code
    assert outcome["public_key"] == ERP and outcome["kept"] == str(kept)
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    saved = json.loads(kept.read_text())["blockchain_new"]
    assert saved["login"] == ERP and saved["password"] == "new-agent-token-123"
    assert saved["extra"]["agent_password"] == password


def test_a_broken_connection_fails_before_anything_is_sent(gateway_env, monkeypatch):
    broken = {"conn_type": "blockchain_token", "extra": "{not json"}
    monkeypatch.setenv("AIRFLOW_CONN_BLOCKCHAIN_NEW", json.dumps({"conn_type": "blockchain_token"}))
    monkeypatch.setattr(cli.common, "read_connection", lambda conn_id: broken)
    seen = []
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, lambda *a: seen.append(a)):
        code = cli.main(["token", "create", "--conn-id", "blockchain_new", "--name", "MES", "--timeout", "5"])
    assert code == cli.EXIT_CONFIG
    assert seen == []
