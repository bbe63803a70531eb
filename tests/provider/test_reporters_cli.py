"""``blockchain-provider reporters``: the command an operator runs, against the sandbox on a real
broker and the MES database, with Airflow's Fernet key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from gateway_sandbox.server import GatewayServer
from tests.operator_runs import run_unit_update
from tests.provider.environments import mes_agent, mes_database

pytestmark = pytest.mark.broker


def blockchain_provider(*args: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("blockchain-provider")), *args]
    return subprocess.run(command, capture_output=True, text=True, env=os.environ.copy(), timeout=120)


@pytest.fixture
def plant(kafka_bootstrap, topic_prefix, tmp_path, monkeypatch):
    """The sandbox, the MES database with two units, the connections and the Fernet key."""
    agent = mes_agent(monkeypatch, kafka_bootstrap, topic_prefix, tmp_path)
    with mes_database(monkeypatch, tmp_path) as repository:
        repository.add_production_unit("PT10", "Press line 10", "IDLE")
        repository.add_production_unit("PT11", "Press line 11", "IDLE")
        with GatewayServer(kafka_bootstrap, agent.ledger_path, topic_prefix=topic_prefix) as server:
            yield repository, agent.ledger, server
    agent.ledger.close()


def update_unit(unit_id: int, status: str, process_name: str, *, try_number: int = 1, run: str = "1") -> dict:
    """A try of the production-unit update DAG's task in run *run* of this change (a retry of
    that run when *try_number* > 1)."""
    params = {"production_unit_id": unit_id, "status": status, "process_name": process_name}
    run_id = f"manual__{unit_id}_{status}_{process_name}_{run}"
    return run_unit_update(params, run_id=run_id, try_number=try_number)


def test_reporters_list_and_rotate(plant):
    repository, ledger, _server = plant
    listed = blockchain_provider("reporters", "list")
    assert listed.returncode == 0, listed.stderr
    assert "No reporters" in listed.stdout

    unit = repository.production_unit_by_code("PT10")
    update_unit(unit.id, "RUNNING", "Stamping")
    reporter = repository.reporter_of_unit("PT10")
    old_token = reporter.token.reveal()

    listed = blockchain_provider("reporters", "list")
    assert listed.returncode == 0, listed.stderr
    assert "PT10" in listed.stdout and "PU_PT10" in listed.stdout and reporter.public_key in listed.stdout
    assert old_token not in listed.stdout + listed.stderr
    assert reporter.password.reveal() not in listed.stdout + listed.stderr
    as_json = json.loads(blockchain_provider("reporters", "list", "--json").stdout)
    assert as_json == {
        "ok": True,
        "command": "reporters list",
        "reporters": [
            {
                "unit": "PT10",
                "record_id": "PU_PT10",
                "topic": reporter.topic,
                "public_key": reporter.public_key,
                "has_token": True,
            }
        ],
    }

    rotated = blockchain_provider("reporters", "rotate", "--unit", "PT10", "--json")
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout) == {
        "ok": True,
        "command": "reporters rotate",
        "unit": "PT10",
        "record_id": "PU_PT10",
        "public_key": reporter.public_key,
    }
    new_token = repository.reporter_of_unit("PT10").token.reveal()
    assert new_token != old_token
    for secret in (old_token, new_token, reporter.password.reveal()):
        assert secret not in rotated.stdout + rotated.stderr
    # the gateway revoked the old token; the stored one signs the next update
    assert ledger.agent_for_token(old_token) is None
    assert ledger.agent_for_token(new_token) == reporter.public_key
    update_unit(unit.id, "STOPPED", "")
    assert ledger.record("PU_PT10")["properties"]["Status"] == "STOPPED"
    assert len(ledger.agents()) == 2  # the MES and the one reporter

    missing = blockchain_provider("reporters", "rotate", "--unit", "PT11")
    assert missing.returncode == 6 and "has no reporter yet" in missing.stderr
    missing = blockchain_provider("reporters", "rotate", "--unit", "PT11", "--json")
    assert missing.returncode == 6
    assert json.loads(missing.stdout)["error"] == "config"


def test_reporters_need_airflows_fernet_key(plant, monkeypatch):
    repository, _ledger, _server = plant
    repository.prepare_reporter("PT10", "PU_PT10", "BLK_Rec_ProductionUnit", "a-password-for-pt10")
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", Fernet.generate_key().decode())  # not the one used
    refused = blockchain_provider("reporters", "rotate", "--unit", "PT10")
    assert refused.returncode == 6
    assert refused.stderr.startswith("error: ") and "cannot be decrypted" in refused.stderr
    assert "Traceback" not in refused.stderr and "a-password-for-pt10" not in refused.stderr


def test_a_retried_update_the_record_already_holds_is_not_sent_again(plant):
    """A retry of a run whose change was applied sends nothing; a change never sent is sent, by a
    retry too."""
    repository, ledger, _server = plant
    unit = repository.production_unit_by_code("PT10")
    update_unit(unit.id, "RUNNING", "Stamping")
    again = update_unit(unit.id, "RUNNING", "Stamping", try_number=2)
    first_run = f"manual__{unit.id}_RUNNING_Stamping_1"
    assert again["message"] == f"applied by run {first_run}" and again["applied_by"] == first_run
    changed = update_unit(unit.id, "STOPPED", "", try_number=2)
    assert changed["message"] != "already up to date"
    # another run with the same values: sent as the MES asked, even when the record holds them
    update_unit(unit.id, "STOPPED", "", run="2")
    assert ledger.record_updates("PU_PT10") == [
        {"Status": "RUNNING", "ProcessName": "Stamping"},
        {"Status": "STOPPED", "ProcessName": ""},
        {"Status": "STOPPED", "ProcessName": ""},
    ]
