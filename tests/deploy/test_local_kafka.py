"""The local Apache Kafka harness (local_services/kafka.py), what it decides before starting a node."""

from __future__ import annotations

import uuid

from local_services import kafka


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch):
    """``kafka-storage format -t -Xy...`` would take the id for an option: Kafka's own ids avoid it."""
    drawn = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x01" * 16)])
    monkeypatch.setattr(kafka.uuid, "uuid4", lambda: next(drawn))
    assert kafka._cluster_id() == "AQEBAQEBAQEBAQEBAQEBAQ"
