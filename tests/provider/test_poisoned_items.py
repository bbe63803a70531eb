"""A listed item the MES cannot store is set aside and alerted once; the others are stored."""

from __future__ import annotations

import json
import logging

import pytest
import sqlalchemy as sa

from include.mes.repository import MesRepository
from local_services.responder import ScriptedResponder
from tests.operator_runs import dag_task, run_operator, task_context
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


def test_a_sync_stores_the_good_items_and_alerts_once_per_new_bad_one(
    gateway_env, tmp_path, caplog, monkeypatch
):
    mes_path = tmp_path / "mes.sqlite3"
    monkeypatch.setenv("AIRFLOW_CONN_MES_DB", json.dumps({"conn_type": "sqlite", "host": str(mes_path)}))
    repository = MesRepository(sa.create_engine(f"sqlite:///{mes_path}"))
    repository.create_schema()
    items = [order(1), order(2, description="NUL \x00 here"), order(3, type="t\ud800"), order(4)]
    caplog.set_level(logging.ERROR)

    def sync() -> dict:
        """The order sync DAG's task: each page stored in the MES as it comes."""
        return run_operator(dag_task("blockchain_order_sync", "sync_order_requests"), task_context())

    with ScriptedResponder(
        gateway_env.bootstrap, gateway_env.prefix, paging_handler(items), encoding="python-literal"
    ):
        first = sync()
        assert (first["inserted"], first["rejected"]) == (2, 2)
        again = sync()
        assert (again["unchanged"], again["rejected"]) == (2, 2)
    assert sorted(r["item_id"] for r in repository.rejected_items("order")) == [f"{2:032x}", f"{3:032x}"]
    assert [o.abs_action_id for o in repository.order_requests()] == [f"{1:032x}", f"{4:032x}"]
    alerts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ALERT")]
    assert len(alerts) == 1
    assert f"{2:032x}" in alerts[0] and "NUL" in alerts[0] and "surrogate" in alerts[0]
    assert "\x00" not in alerts[0]
