"""The MES does not write into a record type another agent declared with other properties."""

from __future__ import annotations

import pytest

from blockchain_provider.exceptions import BlockchainConfigError
from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook
from tests.provider.responder import ScriptedResponder
from tests.provider.test_hook import ERP

pytestmark = pytest.mark.broker

OURS = [
    {"name": "Status", "data_type": "STRING", "dynamic": True},
    {"name": "ProcessName", "data_type": "STRING", "dynamic": True},
]


def gateway(properties, creator=ERP):
    created = []

    def handler(topic, header, body):
        if topic == "BLK_Rty" and body["action"] == "get":
            return {"data": {"name": body["name"], "creator": creator, "properties": properties}}
        created.append(body)
        return {"message": "created"}

    return handler, created


def test_a_record_type_declared_with_other_properties_is_refused_and_named(gateway_env):
    from blockchain_common import flows

    theirs = [{"name": "Status", "data_type": "NUMBER", "dynamic": False}]
    handler, created = gateway(theirs)
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, handler):
        with KafkaBlockchainHook(timeout=10) as hook, pytest.raises(BlockchainConfigError) as info:
            flows.ensure_record_type(hook, "ProductionUnit", OURS)
    text = str(info.value)
    assert "ProductionUnit" in text and "other properties" in text and ERP[:12] in text
    assert not created


def test_the_same_declaration_is_used_whoever_made_it(gateway_env):
    from blockchain_common import flows

    handler, created = gateway(list(reversed(OURS)))
    with ScriptedResponder(gateway_env.bootstrap, gateway_env.prefix, handler):
        with KafkaBlockchainHook(timeout=10) as hook:
            assert flows.ensure_record_type(hook, "ProductionUnit", OURS) is False
    assert not created
