"""``blockchain-provider topics ensure`` on the session's broker: the request and answer topics
and the record types' topics, each with a replica per broker, up to three."""

from __future__ import annotations

import json
import uuid

import pytest
from confluent_kafka.admin import AdminClient

from blockchain_provider import cli
from tests.conftest import prefixed_topics

pytestmark = pytest.mark.broker


def test_new_topics_get_a_replica_per_broker_up_to_three(gateway_env, monkeypatch, capsys):
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    conn = {"conn_type": "blockchain_token", "extra": {"topics": json.dumps(prefixed_topics(prefix))}}
    monkeypatch.setattr(cli, "read_connection", lambda conn_id: conn if conn_id == "blockchain_t" else None)
    assert cli.main(["topics", "ensure", "--conn-id", "blockchain_t"]) == 0
    metadata = AdminClient({"bootstrap.servers": gateway_env.bootstrap}).list_topics(timeout=30)
    ours = {name: topic for name, topic in metadata.topics.items() if name.startswith(prefix)}
    assert {
        prefix + "BLK_Res",
        prefix + "BLK_Rec_ProductionUnit",
        prefix + "BLK_Rec_DayReportIndicator",
    } <= set(ours)
    replicas = min(3, len(metadata.brokers))
    assert {name: len(topic.partitions[0].replicas) for name, topic in ours.items()} == dict.fromkeys(
        ours, replicas
    )


def test_a_replication_below_one_is_refused_by_name(gateway_env):
    with pytest.raises(SystemExit, match="--replication 0: at least 1"):
        cli.main(["topics", "ensure", "--replication", "0"])
