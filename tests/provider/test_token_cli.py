"""``blockchain-provider token`` against the sandbox on the session's broker: each outcome has its
own exit code, and ``--json`` prints one object describing it, never a token or a password."""

from __future__ import annotations

import json
import os
import secrets
from typing import Any

import pytest

from blockchain_provider import cli
from gateway_sandbox.server import GatewayServer
from tests.conftest import prefixed_topics, set_connections
from tests.provider.environments import mes_agent

pytestmark = pytest.mark.broker


class Store:
    """The connections the commands read and write, kept here instead of Airflow's database."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.connections: dict[str, dict[str, Any]] = {}
        monkeypatch.setattr(cli.common, "read_connection", self.connections.get)
        monkeypatch.setattr(cli.common, "write_connection", self.write)

    def write(self, conn_id: str, conn: dict[str, Any], api_url: str | None) -> None:
        self.connections[conn_id] = json.loads(json.dumps(conn))


def done_on_master(command: str, public_key: str) -> dict[str, Any]:
    """The object ``--json`` prints when *command* succeeded for agent *public_key* on the MES's
    connection."""
    return {"ok": True, "command": command, "public_key": public_key, "conn_id": "blockchain_master"}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any], str]:
    """Exit code, the one JSON object on stdout, and stderr."""
    code = cli.main(list(argv))
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert len(lines) == 1, out.out
    return code, json.loads(lines[0]), out.out + out.err


@pytest.fixture
def gateway(kafka_bootstrap, topic_prefix, tmp_path, monkeypatch):
    """The sandbox on fresh topics, its ledger with the MES agent, and the connections naming it."""
    agent = mes_agent(monkeypatch, kafka_bootstrap, topic_prefix, tmp_path)
    store = Store(monkeypatch)
    store.connections["blockchain_master"] = json.loads(os.environ["AIRFLOW_CONN_BLOCKCHAIN_MASTER"])
    with GatewayServer(kafka_bootstrap, agent.ledger_path, topic_prefix=topic_prefix):
        yield store, agent.ledger, agent.public_key, agent.token, agent.password
    agent.ledger.close()


def test_create_reports_the_new_agent_and_refuses_a_second_one(gateway, topic_prefix, capsys):
    store, ledger, _mes, _token, _password = gateway
    store.connections["blockchain_new"] = {
        "conn_type": "blockchain_token",
        "extra": {"topics": json.dumps(prefixed_topics(topic_prefix))},
    }
    code, outcome, text = run(
        capsys, "token", "create", "--conn-id", "blockchain_new", "--name", "ERP", "--timeout", "20", "--json"
    )
    assert code == cli.EXIT_OK, text
    stored = store.connections["blockchain_new"]
    assert outcome == {
        "ok": True,
        "command": "token create",
        "public_key": stored["login"],
        "name": "ERP",
        "instance_type": "Master",
        "conn_id": "blockchain_new",
    }
    assert ledger.agent(stored["login"]) is not None
    assert stored["password"] not in text and stored["extra"]["agent_password"] not in text

    code, outcome, text = run(
        capsys, "token", "create", "--conn-id", "blockchain_new", "--name", "ERP", "--json"
    )
    assert code == cli.EXIT_CONFIG
    assert outcome["ok"] is False and outcome["error"] == "config" and outcome["exit_code"] == code
    assert outcome["public_key"] == stored["login"] and "already holds agent" in outcome["message"]


def test_check_says_ok_or_refused_by_exit_code_and_json(gateway, monkeypatch, capsys):
    store, _ledger, public_key, _token, _password = gateway
    code, outcome, text = run(capsys, "token", "check", "--timeout", "20", "--json")
    assert code == cli.EXIT_OK, text
    assert outcome == done_on_master("token check", public_key)

    forged = {**store.connections["blockchain_master"], "password": "tok-" + secrets.token_urlsafe(24)}
    monkeypatch.setenv("AIRFLOW_CONN_BLOCKCHAIN_MASTER", json.dumps(forged))
    code, outcome, text = run(capsys, "token", "check", "--timeout", "20", "--json")
    assert code == cli.EXIT_REFUSED == outcome["exit_code"]
    assert outcome["ok"] is False and outcome["error"] == "refused" and "unknown token" in outcome["message"]
    assert forged["password"] not in text

    # without --json: the line a person reads, and the same exit code
    assert cli.main(["token", "check", "--timeout", "20"]) == cli.EXIT_REFUSED
    assert capsys.readouterr().out.startswith("FAILED: ")


def test_rotate_reports_the_agent_and_a_refusal(gateway, capsys):
    store, ledger, public_key, token, password = gateway
    code, outcome, text = run(capsys, "token", "rotate", "--timeout", "20", "--json")
    assert code == cli.EXIT_OK, text
    assert outcome == done_on_master("token rotate", public_key)
    fresh = store.connections["blockchain_master"]["password"]
    assert fresh != token and ledger.agent_for_token(fresh) == public_key
    for secret in (token, fresh, password):
        assert secret not in text

    # an agent the gateway does not know (its ledger was replaced): refused, not "no answer"
    stranger = {**store.connections["blockchain_master"], "login": "03" + "cd" * 32}
    store.connections["blockchain_master"] = stranger
    code, outcome, _text = run(capsys, "token", "rotate", "--timeout", "20", "--json")
    assert code == cli.EXIT_REFUSED and outcome["error"] == "refused"


def test_rotate_without_a_stored_agent_sends_nothing(gateway, capsys):
    store, _ledger, _mes, _token, _password = gateway
    store.connections["blockchain_master"] = {"conn_type": "blockchain_token"}
    code, outcome, _text = run(capsys, "token", "rotate", "--json")
    assert code == cli.EXIT_CONFIG and outcome["error"] == "config"
    assert "run `token create` first" in outcome["message"]


def test_a_gateway_that_does_not_answer_is_no_answer(kafka_bootstrap, topic_prefix, monkeypatch, capsys):
    # the topics exist, nobody reads them; no late answer is waited for after the timeout
    set_connections(
        monkeypatch,
        kafka_bootstrap,
        topic_prefix,
        "tok-" + secrets.token_urlsafe(24),
        public_key="02" + "ab" * 32,
        agent_password="agent-password-1234",
        late_answer_grace=0,
    )
    code, outcome, _text = run(capsys, "token", "check", "--timeout", "2", "--json")
    assert code == cli.EXIT_NO_ANSWER and outcome["error"] == "no_answer"


def test_a_connection_that_is_not_defined_is_config(capsys, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_BLOCKCHAIN_NOPE", raising=False)
    monkeypatch.setattr(cli.common, "read_connection", lambda conn_id: None)
    code, outcome, _text = run(capsys, "token", "check", "--conn-id", "blockchain_nope", "--json")
    assert code == cli.EXIT_CONFIG
    assert outcome["error"] == "config" and "blockchain_nope is not defined" in outcome["message"]


def test_json_and_show_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["token", "create", "--name", "MES", "--show", "--json"])
    assert info.value.code == cli.EXIT_USAGE
    out = capsys.readouterr()
    assert json.loads(out.out) == {"ok": False, "error": "usage", "exit_code": cli.EXIT_USAGE}
    assert "not allowed with argument --show" in out.err


def test_pools_ensure_reports_the_pool(tmp_path, monkeypatch, capsys):
    """The pool's outcome, with an ``airflow`` that has no such pool and takes the new one."""
    calls = tmp_path / "calls"
    airflow = tmp_path / "airflow"
    airflow.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n[ "$2" = get ] && exit 1\nexit 0\n')
    airflow.chmod(0o755)
    monkeypatch.setattr(cli.common.shutil, "which", lambda name, path=None: str(airflow))
    code, outcome, _text = run(capsys, "pools", "ensure", "--conn-id", "blockchain_master", "--json")
    assert code == cli.EXIT_OK
    assert outcome == {
        "ok": True,
        "command": "pools ensure",
        "pool": "blockchain_master_requests",
        "set": True,
        "slots": 1,
        "reporter_pool": "blockchain_master_reporter_requests",
        "reporter_set": True,
        "reporter_slots": 16,
    }
    sets = [line for line in calls.read_text().splitlines() if line.startswith("pools set ")]
    assert [line.split()[2:4] for line in sets] == [
        ["blockchain_master_requests", "1"],
        ["blockchain_master_reporter_requests", "16"],
    ]
    assert all(line.endswith("--include-deferred") for line in sets)

    airflow.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n[ "$2" = set ] && exit 1\nexit 0\n')
    code, outcome, _text = run(capsys, "pools", "ensure", "--json")
    assert code == cli.EXIT_OK and outcome["set"] is False and outcome["reporter_set"] is False
