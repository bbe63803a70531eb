"""Every message of PROTOCOL.md §3 sent by the provider's hook to the gateway sandbox, over a real
broker: the provider and the sandbox were written from the protocol separately, so each checks
the other."""

from __future__ import annotations

import secrets

import pytest

from blockchain_provider.exceptions import BlockchainGatewayError
from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook
from gateway_sandbox.server import GatewayServer
from tests.provider.environments import mes_agent

pytestmark = pytest.mark.broker

UNIT_TYPE = [
    {"name": "Code", "data_type": "STRING", "dynamic": False},
    {"name": "Status", "data_type": "STRING", "dynamic": True},
]


@pytest.mark.parametrize("echo", [False, True], ids=["original gateway", "echo"])
def test_every_message_against_the_sandbox(kafka_bootstrap, topic_prefix, tmp_path, monkeypatch, echo):
    agent = mes_agent(monkeypatch, kafka_bootstrap, topic_prefix, tmp_path, echo_request_id=echo, timeout=20)
    ledger, mes_pk = agent.ledger, agent.public_key
    erp, _ = ledger.create_agent("ERP", "erp-password-0123")
    partner_ids = [ledger.create_partner_request(erp, mes_pk)]
    other = [ledger.create_agent(f"ERP {i}", "erp-password-0123")[0] for i in range(6)]
    partner_ids += [ledger.create_partner_request(agent, mes_pk) for agent in other]
    ledger.answer_partner_request(mes_pk, partner_ids[1], True)
    order = ledger.create_order(other[0], mes_pk, "production", "Operator's order", {"Part": "wheel"})
    with GatewayServer(kafka_bootstrap, agent.ledger_path, topic_prefix=topic_prefix, echo=echo, page_cap=5):
        with KafkaBlockchainHook() as hook:
            # BLK_Part_Lst / BLK_Act_Lst, paged past the gateway's cap of 5 to the empty page
            listed = list(hook.iter_partner_requests(page_size=100))
            assert [item["partner_request_id"] for item in listed] == partner_ids
            assert [item["abs_action_id"] for item in hook.iter_order_requests()] == [order]
            # the same, by the kind's name
            first = hook.list_requests("partner", 0, 3)
            assert [item["partner_request_id"] for item in first] == partner_ids[:3]
            assert [item["abs_action_id"] for item in hook.iter_requests("order", page_size=2)] == [order]
            # BLK_Part_Ans / BLK_Act_Ans
            assert "ACCEPTED" in hook.answer_partner_request(partner_ids[0], True)
            assert "REJECTED" in hook.answer_order_request(order, False)
            # BLK_Rty and BLK_Rty_Get
            assert hook.get_record_type("ProductionUnit") is None
            assert (
                hook.create_record_type("ProductionUnit", "Units", UNIT_TYPE)
                == "record type ProductionUnit created"
            )
            assert "identical" in hook.create_record_type("ProductionUnit", "Units", UNIT_TYPE)
            assert hook.get_record_type("ProductionUnit") == {
                "name": "ProductionUnit",
                "description": "Units",
                "properties": UNIT_TYPE,
            }
            # BLK_Rec_<record type>: a non-dynamic record, a dynamic one with its reporter, updates
            assert (
                hook.create_record("PU_PT09", "ProductionUnit", "PT09", {"Code": "PT09"})
                == "record PU_PT09 created"
            )
            reporter = hook.create_dynamic_record(
                "PU_PT10",
                "ProductionUnit",
                "PT10",
                {"Code": "PT10", "Status": "IDLE"},
                secrets.token_urlsafe(32),
            )
            assert ledger.agent_for_token(reporter.token) == reporter.public_key
            assert hook.update_record(
                "ProductionUnit", "PU_PT10", {"Status": "RUNNING"}, token=reporter.token
            ) == ("record PU_PT10 updated")
            with pytest.raises(BlockchainGatewayError, match="not dynamic"):
                hook.update_record("ProductionUnit", "PU_PT09", {"Status": "RUNNING"})
            with pytest.raises(BlockchainGatewayError, match="record type Nope not found"):
                hook.create_record("X1", "Nope", "x", {"Code": "X"})
            # BLK_Rec_Get
            record = hook.get_record("PU_PT10")
            assert record["reporters"] == [reporter.public_key] and record["owner"] == mes_pk
            assert record["properties"] == {"Code": "PT10", "Status": "RUNNING"}
            assert hook.get_record("PU_PT99") is None
            # BLK_Agt: create, then a fresh token, which revokes the earlier one; a refusal is an error
            agent_pk, agent_token = hook.create_agent("Line 2", "line-2-password-0123")
            fresh = hook.get_token(agent_pk, "line-2-password-0123")
            assert ledger.agent_for_token(fresh) == agent_pk
            assert ledger.agent_for_token(agent_token) is None
            # (a password holding "password" would have it removed from "wrong password": every
            # run of 8 characters of a password is removed from the texts quoted)
            with pytest.raises(BlockchainGatewayError, match="wrong password"):
                hook.get_token(agent_pk, "not-the-s3cret-0123")
    assert ledger.verify() == []
    ledger.close()
