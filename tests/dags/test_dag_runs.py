"""Every DAG end to end: a real broker, the gateway sandbox and the MES database (SQLite, PostgreSQL).

Runs use ``dag.test()`` (tasks in this process). Assertions are on the sandbox's ledger and the
MES tables, not only on task states.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from datetime import date
from typing import Any

import pytest
from blockchain_common.factories import SYNC_PAGE_SIZE

from blockchain_provider.exceptions import BlockchainGatewayError
from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook
from include.day_report_keys import (
    DAY_REPORT_RECORD_PROPERTIES,
    DAY_REPORT_RECORD_TYPE,
    day_report_keys,
    flow_id,
)
from tests.dags.conftest import erp_agent, run_dag, task_states

pytestmark = [pytest.mark.broker, pytest.mark.airflow_db]

DAY = date(2026, 11, 27)


def _ops(ledger, op: str) -> list[tuple[str, dict]]:
    """The ledger's transactions of kind *op*: ``(signer, payload)``."""
    rows = ledger._conn.execute("SELECT signer, payload FROM transactions WHERE op = ? ORDER BY seq", (op,))
    return [(signer, json.loads(payload)) for signer, payload in rows]


def _description(ledger, record_id: str) -> str:
    return ledger._conn.execute(
        "SELECT description FROM records WHERE record_id = ?", (record_id,)
    ).fetchone()[0]


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
    assert record["reporters"] == []  # non-dynamic: written once
    # one indicator, one property, described with the sources' labels
    assert record["properties"] == {"Value": pytest.approx(report.value(key.shift, key.indicator))}
    assert _description(ledger, key.record_id) == f"{flow_id(DAY, report.unit_code)} Turno A Disponibilty"
    assert len(record["transaction_ids"][0]) == 128
    # the record type, declared by the MES as the DAG declares it
    assert ledger.record_type(DAY_REPORT_RECORD_TYPE)["properties"] == DAY_REPORT_RECORD_PROPERTIES
    (created,) = _ops(ledger, "record_type.create")
    assert created[0] == stack.mes_public_key and created[1]["name"] == DAY_REPORT_RECORD_TYPE

    # a rerun sends nothing: the MES remembers the record type it created on this gateway, and
    # which records it wrote
    assert stack.mes().record_type_created(KafkaBlockchainHook().gateway_id, DAY_REPORT_RECORD_TYPE)
    requests = stack.server.counters.get("requests", 0)
    second = run_dag("blockchain_day_report", {"day": DAY.isoformat()})
    assert second.state == "success", task_states(second)
    assert stack.server.counters.get("requests", 0) - requests == 0
    assert ledger.count_records(DAY_REPORT_RECORD_TYPE) == 84
    assert len(_ops(ledger, "record.create")) == 84
    assert len(_ops(ledger, "record_type.create")) == 1
    assert ledger.verify() == []


def test_day_report_rerun_after_the_mes_forgot_is_confirmed_not_duplicated(stack):
    """A crash between the gateway's answers and the MES's notes: the rerun sends the same
    creations again, and the gateway confirms them as identical."""
    import sqlalchemy as sa

    from include.mes import schema
    from include.mes.db import mes_engine
    from include.sample_data import generate_plant

    generate_plant(mes_engine("mes_db"), units=1, weeks=1, end_date=DAY)
    assert run_dag("blockchain_day_report", {"day": DAY.isoformat()}).state == "success"
    with mes_engine("mes_db").begin() as conn:
        conn.execute(sa.delete(schema.day_report_submissions))
    again = run_dag("blockchain_day_report", {"day": DAY.isoformat()})
    assert again.state == "success", task_states(again)
    ledger = stack.ledger()
    assert len(_ops(ledger, "record.create")) == 28
    assert len(_ops(ledger, "record_type.create")) == 1
    assert len(stack.mes().submitted_record_ids(stack.mes().day_reports(DAY)[0].report_id)) == 28


def test_day_report_and_sync_on_a_gateway_that_caps_its_pages_at_5(
    request, monkeypatch, tmp_path, kafka_bootstrap, topic_prefix, airflow_db
):
    from tests.dags.conftest import mes_connection, start_stack

    capped = start_stack(
        monkeypatch,
        tmp_path,
        kafka_bootstrap,
        topic_prefix,
        mes_connection("sqlite", tmp_path, request),
        page_cap=5,
    )
    try:
        from include.mes.db import mes_engine
        from include.sample_data import generate_plant

        generate_plant(mes_engine("mes_db"), units=2, weeks=1, end_date=DAY)
        ledger = capped.ledger()
        partner = erp_agent(ledger, "Customer")
        pid = ledger.create_partner_request(partner, capped.mes_public_key)
        ledger.answer_partner_request(capped.mes_public_key, pid, True)
        ids = {
            ledger.create_order(partner, capped.mes_public_key, "part", f"Order {i}", {}) for i in range(12)
        }

        report = run_dag("blockchain_day_report", {"day": DAY.isoformat()})
        assert report.state == "success", task_states(report)
        assert ledger.count_records(DAY_REPORT_RECORD_TYPE) == 56
        requests = capped.server.counters.get("requests", 0)
        sync = run_dag("blockchain_order_sync")
        assert sync.state == "success", task_states(sync)
        assert {o.abs_action_id for o in capped.mes().order_requests()} == ids  # none lost to a short page
        assert capped.server.counters.get("requests", 0) - requests == 4  # 5 + 5 + 2 + the empty page
    finally:
        capped.server.stop()
        from airflow.sdk.crypto import get_fernet

        get_fernet.cache_clear()


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


def test_production_unit_update_then_another(stack, caplog):
    import sqlalchemy as sa

    from include.mes import schema
    from include.mes.db import mes_engine
    from include.sample_data import generate_plant

    generate_plant(mes_engine("mes_db"), units=2, weeks=1, end_date=DAY)
    unit = stack.mes().production_units()[0]
    record_id = f"PU_{unit.code}"
    ledger = stack.ledger()
    agents = len(ledger.agents())
    first = run_dag(
        "blockchain_production_unit_update",
        {"production_unit_id": unit.id, "status": "RUNNING", "process_name": "Stamping"},
    )
    assert first.state == "success", task_states(first)
    record = ledger.record(record_id)
    assert record["properties"]["Status"] == "RUNNING"
    assert record["properties"]["ProcessName"] == "Stamping"
    assert record["properties"]["Code"] == unit.code
    assert ledger.record_type("ProductionUnit") is not None

    # the unit's own reporter: created with its dynamic record, stored by the MES
    reporter = stack.mes().reporter_of_unit(unit.code)
    assert reporter.record_id == record_id and reporter.instance_type == "Reporter"
    assert reporter.topic == stack.prefix + "BLK_Rec_ProductionUnit"
    assert record["reporters"] == [reporter.public_key]
    assert len(ledger.agents()) == agents + 1
    assert ledger.check_password(reporter.public_key, reporter.password.reveal())
    first_token = reporter.token.reveal()
    assert ledger.agent_for_token(first_token) == reporter.public_key
    with mes_engine("mes_db").connect() as conn:
        row = conn.execute(sa.select(schema.kafka_tokens)).mappings().one()
    assert first_token not in row["token"] and reporter.password.reveal() not in row["password"]

    second = run_dag(
        "blockchain_production_unit_update",
        {"production_unit_id": unit.id, "status": "STOPPED", "process_name": "Maintenance"},
    )
    assert second.state == "success", task_states(second)
    record = ledger.record(record_id)
    assert (record["properties"]["Status"], record["properties"]["ProcessName"]) == ("STOPPED", "Maintenance")
    assert record["properties"]["Code"] == unit.code
    # one reporter, two updates, both signed by it; the second with the token stored by the first run
    assert len(ledger.agents()) == agents + 1
    assert stack.mes().reporter_of_unit(unit.code).token.reveal() == first_token
    creates = [(signer, p) for signer, p in _ops(ledger, "record.create") if p["record_id"] == record_id]
    assert [signer for signer, _ in creates] == [stack.mes_public_key]  # the master token only creates
    updates = [(signer, p) for signer, p in _ops(ledger, "record.update") if p["record_id"] == record_id]
    assert [signer for signer, _ in updates] == [reporter.public_key, reporter.public_key]
    assert [p["properties"]["Status"] for _, p in updates] == ["RUNNING", "STOPPED"]
    assert len(record["transaction_ids"]) == 3  # create, then two updates
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        xcoms = [
            str(row.value)
            for row in session.query(XComModel).filter(
                XComModel.dag_id == "blockchain_production_unit_update"
            )
        ]
    assert xcoms  # the runs did push their results
    for secret in (first_token, reporter.password.reveal()):
        assert secret not in caplog.text
        assert not [x for x in xcoms if secret in x]
    assert ledger.verify() == []


def test_production_unit_run_applies_the_units_noted_backlog_in_order(stack, monkeypatch):
    from include.mes.db import mes_engine
    from include.sample_data import generate_plant

    generate_plant(mes_engine("mes_db"), units=2, weeks=1, end_date=DAY)
    mes = stack.mes()
    unit, other = mes.production_units()[:2]
    record_id = f"PU_{unit.code}"
    # three changes the MES noted whose runs have not started (or whose trigger failed), and one
    # of another unit, which this unit's run leaves alone
    for n in (1, 2, 3):
        mes.set_production_unit_state(unit.id, f"S{n}", f"P{n}", dag_run_id=f"mes__backlog{n}")
    mes.set_production_unit_state(other.id, "OTHER", "", dag_run_id="mes__other")

    def update(status: str, process_name: str) -> Any:
        """The unit's update run to *status* (it must succeed)."""
        run = run_dag(
            "blockchain_production_unit_update",
            {"production_unit_id": unit.id, "status": status, "process_name": process_name},
        )
        assert run.state == "success", task_states(run)
        return run

    run = update("S4", "P4")
    ledger = stack.ledger()
    updates = ledger.record_updates(record_id)
    assert [(u["Status"], u["ProcessName"]) for u in updates] == [(f"S{n}", f"P{n}") for n in (1, 2, 3, 4)]
    assert ledger.record(record_id)["properties"]["Status"] == "S4"
    # each noted applied, by this run; its own change noted when it started, after the backlog
    changes = mes.unit_changes(unit.id)
    assert [c.status for c in changes] == ["S1", "S2", "S3", "S4"]
    assert {(c.outcome, c.applied_by_run) for c in changes} == {("applied", run.run_id)}
    assert changes[-1].dag_run_id == run.run_id
    assert [c.status for c in mes.unit_changes(other.id, pending_only=True)] == ["OTHER"]
    assert ledger.record(f"PU_{other.code}") is None

    # a change sent by a run that died before noting it applied (the record holds its values, it
    # is noted attempted). Without reads (the default) the next run cannot know: it sends it again
    def lose(status: str, run_id: str) -> None:
        mes.set_production_unit_state(unit.id, status, "P4", dag_run_id=run_id)
        lost = mes.unit_change(run_id)
        drain = mes.drain_unit_changes(unit.id, lost.seq, run_id)
        with drain:
            drain.mark_attempted(lost.seq)

    lose("S4", "mes__lost")
    again = update("S5", "P5")
    assert [u["Status"] for u in ledger.record_updates(record_id)] == ["S1", "S2", "S3", "S4", "S4", "S5"]
    lost = mes.unit_change("mes__lost")
    assert (lost.outcome, lost.detail, lost.applied_by_run) == (
        "applied",
        "record PU_" + unit.code + " updated",
        again.run_id,
    )
    # where the gateway answers reads (the sandbox does), the run reads the record first and does
    # not send values it already holds
    conn = json.loads(os.environ["AIRFLOW_CONN_BLOCKCHAIN_MASTER"])
    monkeypatch.setenv(
        "AIRFLOW_CONN_BLOCKCHAIN_MASTER", json.dumps({**conn, "extra": {**conn["extra"], "reads": True}})
    )
    mes.set_production_unit_state(unit.id, "S4", "P4", dag_run_id="mes__reset")
    lose("S4", "mes__lost2")
    again = update("S6", "P6")
    statuses = [u["Status"] for u in ledger.record_updates(record_id)]
    assert statuses == ["S1", "S2", "S3", "S4", "S4", "S5", "S4", "S6"]
    lost = mes.unit_change("mes__lost2")
    assert (lost.outcome, lost.detail, lost.applied_by_run) == ("applied", "already up to date", again.run_id)
    assert mes.unit_change(again.run_id).applied_by_run == again.run_id
    assert ledger.verify() == []


def test_deferred_unit_updates_keep_the_units_lock_and_apply_in_order(stack):
    """Answers 1.5 s late: the first run's update defers (its requests wait in the triggerer, which
    reads the reporter's token from the MES) and keeps the unit's lock, which its claim took and its
    creation of the unit's reporter handed on. The second run finds the reporter and goes to the
    drain, whose trigger waits while the first run holds the unit, then takes the lock and applies
    its change: the changes reach the ledger in order."""
    import threading

    from airflow.sdk.exceptions import DownstreamTasksSkipped, TaskDeferred

    from gateway_sandbox.faults import Faults
    from include.mes.db import mes_engine
    from include.mes.unit_drain import UnitsDrainTrigger
    from include.mes.unit_updates import unit_lock_holder
    from include.sample_data import generate_plant
    from tests.operator_runs import dag_task, first_event, resume, run_operator, stored, task_context

    generate_plant(mes_engine("mes_db"), units=1, weeks=1, end_date=DAY)
    mes = stack.mes()
    unit = mes.production_units()[0]
    runs = {}
    for n in (1, 2):
        run_id = f"mes__deferred{n}"
        params = {"production_unit_id": unit.id, "status": f"D{n}", "process_name": f"P{n}"}
        mes.set_production_unit_state(unit.id, params["status"], params["process_name"], dag_run_id=run_id)
        tasks = [
            dag_task("blockchain_production_unit_update", t)
            for t in ("claim_unit", "create_unit_record", "update_unit_record", "drain_unit_changes")
        ]
        assert tasks[2].deferrable
        runs[n] = [(task, task_context(run_id=run_id, params=params, task=task)) for task in tasks]

    with pytest.raises(DownstreamTasksSkipped) as skipped:
        runs[1][0][0].execute(runs[1][0][1])  # the unit's first update: its creation
    assert [task for task, _ in skipped.value.tasks] == ["drain_unit_changes"]
    run_operator(*runs[1][1])
    assert unit_lock_holder(mes.engine, unit.id) == "mes__deferred1"  # handed on to the update
    stack.server.faults = Faults(delay_ms=1500)
    with pytest.raises(TaskDeferred) as first:
        runs[1][2][0].execute(runs[1][2][1])
    assert type(first.value.trigger).__name__ == "AwaitResponsesTrigger"
    assert unit_lock_holder(mes.engine, unit.id) == "mes__deferred1"  # kept while it waits

    # the second run: the reporter exists, so no creation and no lock of its own; its drain defers
    with pytest.raises(DownstreamTasksSkipped) as skipped:
        runs[2][0][0].execute(runs[2][0][1])
    assert [task for task, _ in skipped.value.tasks] == ["create_unit_record"]
    with pytest.raises(TaskDeferred) as second:
        runs[2][3][0].execute(runs[2][3][1])
    classpath, drain_kwargs = second.value.trigger.serialize()
    assert isinstance(second.value.trigger, UnitsDrainTrigger)
    drained: list = []
    draining = threading.Thread(
        target=lambda: drained.append(asyncio.run(first_event(UnitsDrainTrigger(**drain_kwargs))))
    )
    draining.start()  # it waits: the first run holds the unit
    waits: list = []
    first_result = resume(*runs[1][2], first.value, waits)
    draining.join(60)
    assert not draining.is_alive()
    second_result = runs[2][3][0].execute_complete(runs[2][3][1], event=stored(drained[0])[0])
    assert first_result["Status"] == "D1"
    assert first_result["applied"] == [f"change {mes.unit_change('mes__deferred1').seq}"]
    assert second_result["applied_by"] == "mes__deferred2"
    assert unit_lock_holder(mes.engine, unit.id) is None

    ledger = stack.ledger()
    record_id = f"PU_{unit.code}"
    updates = [
        p["properties"]["Status"] for _, p in _ops(ledger, "record.update") if p["record_id"] == record_id
    ]
    assert updates == ["D1", "D2"]
    assert [c.outcome for c in mes.unit_changes(unit.id)] == ["applied", "applied"]
    # the waits read the reporter's token in the triggerer; no trigger carries a token
    reporter = mes.reporter_of_unit(unit.code)
    signed_by_reporter = [kwargs for _, kwargs in waits if kwargs.get("reporter_record_id")]
    assert signed_by_reporter and all(
        kwargs["reporter_record_id"] == record_id for kwargs in signed_by_reporter
    )
    assert not [
        kwargs for _, kwargs in [*waits, (classpath, drain_kwargs)] if reporter.token.reveal() in str(kwargs)
    ]
    assert ledger.verify() == []


def test_a_unit_update_whose_wait_fails_in_the_triggerer_lets_the_lock_go(stack):
    """The trigger failed or the deferral timed out: the task fails without resuming its steps,
    and still lets go of the unit's lock; on its last try it gives its change up."""
    from airflow.sdk.bases.operator import TriggerFailureReason
    from airflow.sdk.exceptions import (
        DownstreamTasksSkipped,
        TaskDeferralError,
        TaskDeferralTimeout,
        TaskDeferred,
    )

    from gateway_sandbox.faults import Faults
    from include.mes.db import mes_engine
    from include.mes.unit_updates import unit_lock_holder
    from include.sample_data import generate_plant
    from tests.operator_runs import dag_task, run_unit_update, task_context

    generate_plant(mes_engine("mes_db"), units=1, weeks=1, end_date=DAY)
    mes = stack.mes()
    unit = mes.production_units()[0]
    # the unit's first update creates its record and reporter
    run_unit_update({"production_unit_id": unit.id, "status": "F0", "process_name": ""}, run_id="mes__first")
    stack.server.faults = Faults(delay_ms=1500)
    for try_number, failure, outcome in ((1, TaskDeferralTimeout, None), (4, TaskDeferralError, "failed")):
        run_id = f"mes__failing{try_number}"
        params = {"production_unit_id": unit.id, "status": f"F{try_number}", "process_name": ""}
        mes.set_production_unit_state(unit.id, params["status"], "", dag_run_id=run_id)
        claim = dag_task("blockchain_production_unit_update", "claim_unit")
        with pytest.raises(DownstreamTasksSkipped):  # the creation: the unit has its reporter
            claim.execute(task_context(run_id=run_id, params=params, task=claim, try_number=try_number))
        task = dag_task("blockchain_production_unit_update", "update_unit_record")
        context = task_context(run_id=run_id, params=params, task=task, try_number=try_number)
        before = stack.server.counters
        with pytest.raises(TaskDeferred):
            task.execute(context)
        assert unit_lock_holder(mes.engine, unit.id) == run_id
        error = TriggerFailureReason.TRIGGER_TIMEOUT if failure is TaskDeferralTimeout else "Trigger failure"
        with pytest.raises(failure):
            task.resume_execution("__fail__", {"error": error}, context)
        assert unit_lock_holder(mes.engine, unit.id) is None  # the unit's next run need not wait
        assert mes.unit_change(run_id).outcome == outcome  # pending for a retry; given up on the last
        # the abandoned request's answer (no echo: told by the token) comes before the next request
        assert stack.server.wait_for(lambda now, before=before: answered_since(before, now), timeout=60)


def answered_since(before: dict[str, int], now: dict[str, int]) -> bool:
    """The sandbox received requests since *before* and has sent an answer to each of them."""
    received = now.get("requests", 0) - before.get("requests", 0)
    return received > 0 and now.get("sent", 0) - before.get("sent", 0) >= received


def test_sync_of_250_orders_reads_to_the_empty_page(stack):
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
    # the pages of the 250 orders and the empty page at 250: a short page is not the end
    expected_requests = math.ceil(250 / SYNC_PAGE_SIZE) + 1
    assert stack.server.counters.get("requests", 0) - requests_before == expected_requests

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
