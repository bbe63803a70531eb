"""A listed item the MES cannot store is set aside and alerted once; the others are stored."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from include.mes.repository import MesRepository
from local_services.responder import ScriptedResponder
from tests.provider.conftest import MES_PUBKEY
from tests.provider.test_hook import ERP, TX, paging_handler

pytestmark = pytest.mark.broker


def order(i: int, **overrides) -> dict:
    item = {
        "abs_action_id": f"{i:032x}",
        "type": "produce",
        "description": "three wheels",
        "metadata": {"Part": "steering wheel"},
        "files": [],
        "issuing_agent": ERP,
        "receiving_agent": MES_PUBKEY,
        "status": "OPEN",
        "timestamp": 1638789846,
        "answer_timestamp": 0,
        "transaction_ids": [TX],
    }
    item.update(overrides)
    return item


def test_a_sync_stores_the_good_items_and_alerts_once_per_new_bad_one(gateway_env, tmp_path, caplog):
    from blockchain_common import flows

    repository = MesRepository(sa.create_engine(f"sqlite:///{tmp_path / 'mes.sqlite3'}"))
    repository.create_schema()
    items = [order(1), order(2, description="NUL \x00 here"), order(3, type="t\ud800"), order(4)]
    caplog.set_level(logging.ERROR)
    with ScriptedResponder(
        gateway_env.bootstrap, gateway_env.prefix, paging_handler(items), encoding="python-literal"
    ):
        from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook

        with KafkaBlockchainHook(timeout=10) as hook:
            first = flows.sync_requests(hook, repository, "order")
            assert (first.inserted, first.rejected) == (2, 2)
            assert [r["item_id"] for r in first.new_rejected] == [f"{2:032x}", f"{3:032x}"]
            flows.alert_rejected_items("order", first.new_rejected)
            again = flows.sync_requests(hook, repository, "order")
            assert (again.unchanged, again.rejected, again.new_rejected) == (2, 2, [])
            flows.alert_rejected_items("order", again.new_rejected)
    assert [o.abs_action_id for o in repository.order_requests()] == [f"{1:032x}", f"{4:032x}"]
    alerts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ALERT")]
    assert len(alerts) == 1
    assert f"{2:032x}" in alerts[0] and "NUL" in alerts[0] and "surrogate" in alerts[0]
    assert "\x00" not in alerts[0]
