"""``KAFKA=apache make run``: the same stack on one Apache Kafka node from the cached jars.

The stack runs without Airflow (``--no-airflow``; the Airflow side is the same as on tansu, which
``test_run_stack.py`` covers) and with ``--check``: it starts, reports healthy and stops. Two
runs on one ``STACK_DIR``: the second reuses the node's data (its cluster, topics and the
answers on them) and the ledger, as ``make run`` does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway_sandbox.ledger import Ledger
from local_services.kafka import kafka_version
from local_services.ports import free_port
from tests.e2e.conftest import RUN_STACK, stack_environment

pytestmark = [pytest.mark.slow, pytest.mark.broker, pytest.mark.airflow, pytest.mark.timeout(900)]


def run_check(stack_dir: Path, broker_port: int) -> subprocess.CompletedProcess[str]:
    env = stack_environment(stack_dir, free_port(), broker_port) | {"KAFKA": "apache"}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    return subprocess.run(
        [sys.executable, str(RUN_STACK), "--check", "--no-airflow"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def mes_agent_of(output: str) -> str:
    lines = [line.split()[-1] for line in output.splitlines() if line.strip().startswith("MES agent ")]
    assert lines, output
    return lines[-1]


def kafka_processes(stack_dir: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", "kafka.Kafka"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(stack_dir) in line]


def test_the_stack_runs_on_one_apache_kafka_node_and_restarts_on_its_data(tmp_path):
    stack_dir = tmp_path / "stack"
    port = free_port()
    first = run_check(stack_dir, port)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"Apache Kafka {kafka_version()}, one KRaft node on 127.0.0.1:{port}" in first.stdout
    assert "The integration is up" in first.stdout
    assert kafka_processes(stack_dir) == [], "the broker outlived the stack"
    cluster_id = (stack_dir / "kafka" / "cluster.id").read_text()
    mes_agent = mes_agent_of(first.stdout)
    with Ledger(str(stack_dir / "ledger.sqlite3")) as ledger:
        # the agent was created through the broker: `blockchain-provider token create` asked the sandbox
        assert ledger.agent(mes_agent) is not None

    second = run_check(stack_dir, port)
    assert second.returncode == 0, second.stdout + second.stderr
    assert (
        stack_dir / "kafka" / "cluster.id"
    ).read_text() == cluster_id  # the same cluster, not formatted again
    assert "The integration is up" in second.stdout
    # the token kept in the connection still works: `token check` went through the broker
    assert mes_agent_of(second.stdout) == mes_agent
    assert kafka_processes(stack_dir) == []
    state_file = stack_dir / "stack.json"
    assert not state_file.exists() or json.loads(state_file.read_text()).get("ready") is False
