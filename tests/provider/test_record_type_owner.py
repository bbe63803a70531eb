"""The MES does not write into a record type another agent declared with other properties.

Against the gateway sandbox: the MES creates its record types without reading the ledger first
(PROTOCOL.md 3.3); a creation refused because the name is taken is followed by the optional read
(``BLK_Rty_Get``), which says whether the declaration there can be used.
"""

from __future__ import annotations

import secrets

import pytest

from blockchain_provider.exceptions import BlockchainConfigError
from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook
from gateway_sandbox.ledger import Ledger
from gateway_sandbox.server import GatewayServer
from include.mes.db import engine_from_url
from include.mes.repository import MesRepository
from tests.conftest import set_connections

pytestmark = pytest.mark.broker

OURS = [
    {"name": "Status", "data_type": "STRING", "dynamic": True},
    {"name": "ProcessName", "data_type": "STRING", "dynamic": True},
]


@pytest.fixture
def sandbox(kafka_bootstrap, topic_prefix, tmp_path, monkeypatch):
    ledger_path = str(tmp_path / "ledger.sqlite3")
    password = secrets.token_urlsafe(24)
    ledger = Ledger(ledger_path)
    mes_pk, token = ledger.create_agent("MES", password)
    erp, _ = ledger.create_agent("ERP", "erp-password-0123")
    set_connections(
        monkeypatch,
        kafka_bootstrap,
        topic_prefix,
        token,
        public_key=mes_pk,
        agent_password=password,
        timeout=20,
    )
    repository = MesRepository(engine_from_url(f"sqlite:///{tmp_path / 'mes.sqlite3'}"))
    repository.create_schema()
    with GatewayServer(kafka_bootstrap, ledger_path, topic_prefix=topic_prefix):
        yield ledger, erp, repository
    ledger.close()


def test_a_record_type_declared_with_other_properties_is_refused_and_named(sandbox):
    from blockchain_common import flows

    ledger, erp, repository = sandbox
    theirs = [{"name": "Status", "data_type": "NUMBER", "dynamic": False}]
    ledger.create_record_type(erp, "ProductionUnit", theirs, "ERP's units")
    with KafkaBlockchainHook() as hook, pytest.raises(BlockchainConfigError) as info:
        flows.ensure_record_type(hook, repository, "ProductionUnit", "Production units", OURS)
    text = str(info.value)
    assert "ProductionUnit" in text and "other properties" in text
    assert not repository.record_type_created("ProductionUnit")
    assert ledger.record_type("ProductionUnit")["properties"][0]["data_type"] == "NUMBER"


def test_the_same_properties_are_used_whoever_declared_them(sandbox):
    from blockchain_common import flows

    ledger, erp, repository = sandbox
    ledger.create_record_type(erp, "ProductionUnit", list(reversed(OURS)), "ERP's units")
    with KafkaBlockchainHook() as hook:
        assert flows.ensure_record_type(hook, repository, "ProductionUnit", "Production units", OURS) is False
    assert repository.record_type_created("ProductionUnit")
    assert ledger.record_type("ProductionUnit")["description"] == "ERP's units"
