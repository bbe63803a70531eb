"""Every DAG end to end: a real broker, the gateway sandbox and the MES database (SQLite, PostgreSQL).

Runs use ``dag.test()`` (tasks in this process). Assertions are on the sandbox's ledger and the
MES tables, not only on task states.
"""

from __future__ import annotations

import json
from datetime import date

import pytest

from blockchain_provider.exceptions import BlockchainGatewayError
from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook
from include.day_report_keys import DAY_REPORT_RECORD_TYPE, day_report_keys, flow_id
from tests.dags.conftest import erp_agent, run_dag, task_states

pytestmark = [pytest.mark.broker, pytest.mark.airflow_db]

DAY = date(2026, 11, 27)


def test_day_report_for_three_units_twice_is_still_84_records(stack):
    from include.mes.db import mes_engine
    from include.sample_data import generate_plant

    generate_plant(mes_engine("mes_db"), units=3, weeks=1, end_date=DAY)
    first = run_dag("blockchain_day_report", {"day": DAY.isoformat()})
    assert first.state == "success", task_states(first)
    ledger = stack.ledger()
    assert ledger.count_records(DAY_REPORT_RECORD_TYPE) == 84

    report = stack.mes().day_reports(DAY)[0]
    key = day_report_keys(report.report_id)[0]
    record = ledger.record(key.record_id)
    assert record["record_type"] == DAY_REPORT_RECORD_TYPE
    assert record["owner"] == stack.mes_public_key
    assert record["properties"]["Value"] == pytest.approx(report.value(key.shift, key.indicator))
    assert record["properties"]["FlowId"] == flow_id(DAY, report.unit_code)
    assert len(record["transaction_ids"][0]) == 128

    second = run_dag("blockchain_day_report", {"day": DAY.isoformat()})
    assert second.state == "success", task_states(second)
    assert ledger.count_records(DAY_REPORT_RECORD_TYPE) == 84
    assert stack.ledger().record_type(DAY_REPORT_RECORD_TYPE) is not None
    assert ledger.verify() == []


def test_partner_request_accepted_then_a_second_answer_refused(stack):
    ledger = stack.ledger()
    erp = erp_agent(ledger)
    pid = ledger.create_partner_request(erp, stack.mes_public_key)

    accepted = run_dag("blockchain_partner_answer", {"request_id": pid, "decision": "accept"})
    assert accepted.state == "success", task_states(accepted)
    assert ledger.partner_request(pid)["status"] == "ACCEPTED"
    assert stack.mes().partner_request(pid).status == "ACCEPTED"

    again = run_dag("blockchain_partner_answer", {"request_id": pid, "decision": "reject"})
    states = task_states(again)
    assert again.state == "failed"
    assert states["check_partner_request"] == "failed"
    assert states["answer_partner_request"] == "upstream_failed"
    assert ledger.partner_request(pid)["status"] == "ACCEPTED"

    # and the gateway itself refuses a second answer, should one get through
    with KafkaBlockchainHook() as hook, pytest.raises(BlockchainGatewayError, match="ACCEPTED"):
        hook.answer_partner_request(pid, False)


def test_answer_to_an_unknown_or_foreign_request_sends_nothing(stack):
    ledger = stack.ledger()
    erp, other = erp_agent(ledger, "ERP"), erp_agent(ledger, "Other MES")
    foreign = ledger.create_partner_request(erp, other)
    before = ledger.counts()
    for request_id in (foreign, "f" * 32):
        run = run_dag("blockchain_partner_answer", {"request_id": request_id, "decision": "accept"})
        assert task_states(run)["answer_partner_request"] == "upstream_failed"
    assert ledger.partner_request(foreign)["status"] == "OPEN"
    assert ledger.counts() == before


def test_order_from_a_non_partner_is_refused_and_a_partners_order_is_answered(stack):
    from gateway_sandbox.ledger import LedgerError

    ledger = stack.ledger()
    stranger = erp_agent(ledger, "Stranger")
    with pytest.raises(LedgerError, match=r"(?i)partner"):
        ledger.create_order(
            stranger, stack.mes_public_key, "dummy_action", "Test dummy action", {"Part": "x"}
        )

    partner = erp_agent(ledger, "Partner")
    pid = ledger.create_partner_request(partner, stack.mes_public_key)
    ledger.answer_partner_request(stack.mes_public_key, pid, True)
    oid = ledger.create_order(
        partner,
        stack.mes_public_key,
        "dummy_action",
        "Operator's order",
        {"Part": "steering wheel", "Size": 3},
    )
    run = run_dag("blockchain_order_answer", {"request_id": oid, "decision": "reject"})
    assert run.state == "success", task_states(run)
    assert ledger.order(oid)["status"] == "REJECTED"
    stored = stack.mes().order_request(oid)
    assert stored.status == "REJECTED"
    assert stored.description == "Operator's order"
    assert stored.metadata == {"Part": "steering wheel", "Size": 3}


def test_production_unit_update_then_another(stack):
    from include.mes.db import mes_engine
    from include.sample_data import generate_plant

    generate_plant(mes_engine("mes_db"), units=2, weeks=1, end_date=DAY)
    unit = stack.mes().production_units()[0]
    first = run_dag(
        "blockchain_production_unit_update",
        {"production_unit_id": unit.id, "status": "RUNNING", "process_name": "Stamping"},
    )
    assert first.state == "success", task_states(first)
    ledger = stack.ledger()
    record = ledger.record(f"PU_{unit.code}")
    assert record["properties"]["Status"] == "RUNNING"
    assert record["properties"]["ProcessName"] == "Stamping"
    assert record["properties"]["Code"] == unit.code
    assert ledger.record_type("ProductionUnit") is not None

    second = run_dag(
        "blockchain_production_unit_update",
        {"production_unit_id": unit.id, "status": "STOPPED", "process_name": "Maintenance"},
    )
    assert second.state == "success", task_states(second)
    record = ledger.record(f"PU_{unit.code}")
    assert (record["properties"]["Status"], record["properties"]["ProcessName"]) == ("STOPPED", "Maintenance")
    assert record["properties"]["Code"] == unit.code
    assert len(record["transaction_ids"]) >= 3  # create, then two updates


def test_sync_of_250_orders_across_three_pages(stack):
    ledger = stack.ledger()
    partner = erp_agent(ledger, "Big customer")
    pid = ledger.create_partner_request(partner, stack.mes_public_key)
    ledger.answer_partner_request(stack.mes_public_key, pid, True)
    ids = {
        ledger.create_order(partner, stack.mes_public_key, "part", f"Order {i}", {"Size": i})
        for i in range(250)
    }
    requests_before = stack.server.counters.get("requests", 0)

    first = run_dag("blockchain_order_sync")
    assert first.state == "success", task_states(first)
    assert task_states(first)["announce_new_open_order_requests"] == "success"
    stored = stack.mes().order_requests()
    assert {o.abs_action_id for o in stored} == ids
    assert all(o.status == "OPEN" for o in stored)
    assert stack.server.counters.get("requests", 0) - requests_before == 3  # pages 0, 100, 200

    partner_sync = run_dag("blockchain_partner_sync")
    assert partner_sync.state == "success", task_states(partner_sync)
    assert stack.mes().partner_request(pid).status == "ACCEPTED"

    again = run_dag("blockchain_order_sync")
    assert again.state == "success"
    assert task_states(again)["announce_new_open_order_requests"] == "skipped"  # nothing new
    assert len(stack.mes().order_requests()) == 250


def test_token_check_passes_and_alerts_on_a_refused_token(stack, monkeypatch, caplog):
    ok = run_dag("blockchain_token_check")
    assert ok.state == "success", task_states(ok)

    conn = json.loads(__import__("os").environ["AIRFLOW_CONN_BLOCKCHAIN_MASTER"])
    conn["password"] = "a-token-the-gateway-never-issued"
    monkeypatch.setenv("AIRFLOW_CONN_BLOCKCHAIN_MASTER", json.dumps(conn))
    refused = run_dag("blockchain_token_check")
    assert refused.state == "failed"
    assert "refused the token" in caplog.text
    assert "ALERT" in caplog.text
    assert "a-token-the-gateway-never-issued" not in caplog.text
