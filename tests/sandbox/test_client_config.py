"""The sandbox reaches a Kafka cluster that needs TLS and SASL: client settings from the environment."""

from __future__ import annotations

import json

import pytest

from gateway_sandbox import cli


def test_the_client_config_comes_from_the_environment(monkeypatch):
    settings = {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.username": "gateway"}
    monkeypatch.setenv("GATEWAY_SANDBOX_KAFKA_CONFIG", json.dumps(settings))
    assert cli.kafka_client_config() == settings
    monkeypatch.delenv("GATEWAY_SANDBOX_KAFKA_CONFIG")
    assert cli.kafka_client_config() == {}


@pytest.mark.parametrize("bad", ["not json", "[1, 2]", '{"bootstrap.servers": "elsewhere:9092"}'])
def test_a_bad_client_config_is_refused_by_name(monkeypatch, bad):
    monkeypatch.setenv("GATEWAY_SANDBOX_KAFKA_CONFIG", bad)
    with pytest.raises(SystemExit, match="GATEWAY_SANDBOX_KAFKA_CONFIG"):
        cli.kafka_client_config()
