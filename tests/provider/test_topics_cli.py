"""``blockchain-provider topics ensure`` on the session's broker: the request and answer topics
and the record types' topics, each with a replica per broker, up to three."""

from __future__ import annotations

import json
import uuid

import pytest
from confluent_kafka.admin import AdminClient

from blockchain_provider import cli
from local_services.ports import free_port
from tests.conftest import prefixed_topics

pytestmark = pytest.mark.broker


def test_new_topics_get_a_replica_per_broker_up_to_three(gateway_env, monkeypatch, capsys):
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    conn = {"conn_type": "blockchain_token", "extra": {"topics": json.dumps(prefixed_topics(prefix))}}
    monkeypatch.setattr(
        cli.common, "read_connection", lambda conn_id: conn if conn_id == "blockchain_t" else None
    )
    record_types = ["--record-type", "ProductionUnit", "--record-type", "DayReportIndicator"]
    assert cli.main(["topics", "ensure", "--conn-id", "blockchain_t", "--json", *record_types]) == cli.EXIT_OK
    created = json.loads(capsys.readouterr().out)
    assert created["ok"] is True and created["command"] == "topics ensure"
    metadata = AdminClient({"bootstrap.servers": gateway_env.bootstrap}).list_topics(timeout=30)
    ours = {name: topic for name, topic in metadata.topics.items() if name.startswith(prefix)}
    assert {
        prefix + "BLK_Res",
        prefix + "BLK_Rec_ProductionUnit",
        prefix + "BLK_Rec_DayReportIndicator",
    } <= set(ours)
    assert set(created["created"]) == set(ours) and created["present"] == []
    # a second run finds them all
    assert cli.main(["topics", "ensure", "--conn-id", "blockchain_t", "--json", *record_types]) == cli.EXIT_OK
    again = json.loads(capsys.readouterr().out)
    assert again["created"] == [] and set(again["present"]) == set(ours)
    replicas = min(3, len(metadata.brokers))
    assert {name: len(topic.partitions[0].replicas) for name, topic in ours.items()} == dict.fromkeys(
        ours, replicas
    )


def test_a_replication_below_one_is_refused_by_name(gateway_env, capsys):
    assert cli.main(["topics", "ensure", "--replication", "0"]) == cli.EXIT_USAGE
    assert "--replication 0: at least 1" in capsys.readouterr().err


def test_a_broker_that_does_not_answer_is_a_broker_failure(monkeypatch, capsys):
    monkeypatch.setenv(
        "AIRFLOW_CONN_KAFKA_DEFAULT",
        json.dumps({"conn_type": "kafka", "extra": {"bootstrap.servers": f"127.0.0.1:{free_port()}"}}),
    )
    monkeypatch.setattr(cli.common, "read_connection", lambda conn_id: None)
    assert cli.main(["topics", "ensure", "--timeout", "2", "--json"]) == cli.EXIT_BROKER
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["ok"] is False and outcome["error"] == "broker" and outcome["exit_code"] == cli.EXIT_BROKER
