"""Every DAG against the strictest gateway the sources allow: the sandbox's ``original`` profile.

It refuses any second creation of a record type or record, has no read topic and answers each
write a second later (so deferred waits are the normal path); once more with ``start`` ignored.
Every DAG runs with the ``airflow dags test`` command, the sync with ``start`` ignored with
``dag.test()`` in this process (what the command runs). The runs' times are printed (``-s`` shows
them).

The same runs under the scheduler, supervised tasks and a triggerer:
``tests/supervised/test_original_gateway_supervised.py``.
"""

from __future__ import annotations

import json
import os
import time
from datetime import date, timedelta

import pytest

from gateway_sandbox.trace import requests_by_topic
from include.day_report_keys import DAY_REPORT_RECORD_TYPE, PRODUCTION_UNIT_RECORD_TYPE
from tests.conftest import airflow
from tests.dags.conftest import erp_agent, mes_connection, run_dag, start_stack, task_states

pytestmark = [pytest.mark.broker, pytest.mark.airflow_db, pytest.mark.timeout(900)]

DAY = date(2026, 11, 27)


@pytest.fixture
def original(request, monkeypatch, tmp_path, kafka_bootstrap, topic_prefix, airflow_db):
    """Broker + the sandbox's ``original`` profile (no echo, Python-literal answers) + MES DB
    (``start(mes="postgres")`` for one on PostgreSQL)."""
    stacks = []

    def start(mes: str = "sqlite", **options):
        running = start_stack(
            monkeypatch,
            tmp_path,
            kafka_bootstrap,
            topic_prefix,
            mes_connection(mes, tmp_path, request),
            profile="original",
            trace_path=str(tmp_path / "trace.jsonl"),
            **options,
        )
        stacks.append(running)
        return running

    yield start
    for running in stacks:
        running.server.stop()
    from airflow.sdk.crypto import get_fernet

    get_fernet.cache_clear()


def timed_run(dag_id: str, conf: dict | None = None) -> tuple[object, float]:
    """Run *dag_id* in this process with ``dag.test()``; the finished DagRun and its seconds."""
    started = time.monotonic()
    run = run_dag(dag_id, conf)
    elapsed = time.monotonic() - started
    print(f"dag.test() {dag_id} {json.dumps(conf)}: {run.state} in {elapsed:.1f} s")
    return run, elapsed


def command_run(dag_id: str, conf: dict | None = None) -> tuple[object, float]:
    """Run *dag_id* as a data engineer first does, with ``airflow dags test`` (the deadline alert
    off: the command exits 1 after any successful run of a DAG with one, apache/airflow#73428; the
    last test below covers that), and fail unless it exits 0; the finished DagRun and its seconds."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    started = time.monotonic()
    config = ("-c", json.dumps(conf)) if conf else ()
    env = {**os.environ, "BLOCKCHAIN_DEADLINE_ALERTS": "off"}
    result = airflow("dags", "test", dag_id, *config, check=False, env=env)
    elapsed = time.monotonic() - started
    print(f"airflow dags test {dag_id} {json.dumps(conf)}: exit {result.returncode} in {elapsed:.1f} s")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    with create_session() as session:
        newest = select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()).limit(1)
        run = session.scalars(newest).one()
        session.expunge(run)
    return run, elapsed


def test_every_dag_on_the_original_gateway(original, tmp_path):
    from include.mes.db import mes_engine
    from include.sample_data import generate_plant

    stack = original()
    generate_plant(mes_engine("mes_db"), units=1, weeks=1, end_date=DAY)
    ledger = stack.ledger()
    mes = stack.mes()

    # two consecutive days of reports: the record type is sent once, on the first day only
    for day in (DAY - timedelta(days=1), DAY):
        report, _elapsed = command_run("blockchain_day_report", {"day": day.isoformat()})
        assert report.state == "success", task_states(report)
    assert ledger.count_records(DAY_REPORT_RECORD_TYPE) == 2 * 28
    sent = requests_by_topic(tmp_path / "trace.jsonl")
    assert sent["BLK_Rty"] == 1
    assert sent["BLK_Rty_Get"] == sent["BLK_Rec_Get"] == 0

    # two updates of one unit: the record type once, the record and its reporter once
    unit = mes.production_units()[0]
    for status in ("RUNNING", "STOPPED"):
        conf = {"production_unit_id": unit.id, "status": status, "process_name": "Stamping"}
        update, _elapsed = command_run("blockchain_production_unit_update", conf)
        assert update.state == "success", task_states(update)
    assert ledger.record(f"PU_{unit.code}")["properties"]["Status"] == "STOPPED"
    sent = requests_by_topic(tmp_path / "trace.jsonl")
    assert sent["BLK_Rty"] == 2  # DayReportIndicator, ProductionUnit: each once
    assert sent["BLK_Rec_ProductionUnit"] == 3  # one creation, two updates
    assert sent["BLK_Rty_Get"] == sent["BLK_Rec_Get"] == 0
    assert mes.record_type_created(
        f"{','.join(sorted(stack.bootstrap.split(',')))}|{stack.mes_public_key}", PRODUCTION_UNIT_RECORD_TYPE
    )

    # both syncs, then an accept and a reject
    erp = erp_agent(ledger, "ERP")
    partner_request = ledger.create_partner_request(erp, stack.mes_public_key)
    customer = erp_agent(ledger, "Customer")
    accepted = ledger.create_partner_request(customer, stack.mes_public_key)
    ledger.answer_partner_request(stack.mes_public_key, accepted, True)
    order = ledger.create_order(customer, stack.mes_public_key, "part", "Operator's order", {})
    for dag_id in ("blockchain_partner_sync", "blockchain_order_sync"):
        sync, _elapsed = command_run(dag_id)
        assert sync.state == "success", task_states(sync)
    assert {r.partner_request_id for r in mes.partner_requests()} == {partner_request, accepted}
    assert [o.abs_action_id for o in mes.order_requests()] == [order]
    accept, _ = command_run(
        "blockchain_partner_answer", {"request_id": partner_request, "decision": "accept"}
    )
    reject, _ = command_run("blockchain_order_answer", {"request_id": order, "decision": "reject"})
    assert (accept.state, reject.state) == ("success", "success"), (task_states(accept), task_states(reject))
    assert ledger.partner_request(partner_request)["status"] == "ACCEPTED"
    assert ledger.order(order)["status"] == "REJECTED"
    assert mes.order_request(order).status == "REJECTED"
    assert ledger.verify() == []
    listed = requests_by_topic(tmp_path / "trace.jsonl")["BLK_Part_Lst"]
    check, _ = command_run("blockchain_token_check")
    assert check.state == "success", task_states(check)
    assert requests_by_topic(tmp_path / "trace.jsonl")["BLK_Part_Lst"] == listed + 1  # one list request


def test_a_sync_ends_on_a_gateway_that_ignores_start(original, tmp_path, caplog):
    stack = original(ignore_start=True)
    ledger = stack.ledger()
    issued = {erp_agent(ledger, f"ERP {n}") for n in range(3)}
    ids = {ledger.create_partner_request(erp, stack.mes_public_key) for erp in issued}
    with caplog.at_level("WARNING"):
        sync, elapsed = timed_run("blockchain_partner_sync")
    assert sync.state == "success", task_states(sync)
    # the first page, then the same page again (start ignored): stored once, then the end
    assert requests_by_topic(tmp_path / "trace.jsonl")["BLK_Part_Lst"] == 2
    assert {r.partner_request_id for r in stack.mes().partner_requests()} == ids
    alerts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ALERT")]
    assert any("ignore 'start'" in text for text in alerts), alerts
    assert elapsed < 120


def test_airflow_dags_test_of_the_day_report_with_the_deadline_workaround(original):
    """`airflow dags test` on Airflow 3.3.2 exits 1 after a successful run of a DAG with a deadline
    alert (apache/airflow#73428); with BLOCKCHAIN_DEADLINE_ALERTS=off the day report carries none
    and the command exits 0. Should the second assertion fail, Airflow is fixed: drop the workaround."""
    from include.mes.db import mes_engine
    from include.sample_data import generate_plant

    stack = original()
    generate_plant(mes_engine("mes_db"), units=1, weeks=1, end_date=DAY)
    conf = json.dumps({"day": DAY.isoformat()})
    worked = airflow(
        "dags", "test", "blockchain_day_report", "-c", conf, check=False,
        env={**os.environ, "BLOCKCHAIN_DEADLINE_ALERTS": "off"},
    )  # fmt: skip
    assert worked.returncode == 0, (worked.stdout + worked.stderr)[-4000:]
    assert stack.ledger().count_records(DAY_REPORT_RECORD_TYPE) == 28
    # without it, the same successful run exits 1 (the upstream bug, until Airflow ships the fix)
    failed = airflow("dags", "test", "blockchain_day_report", "-c", conf, check=False)
    output = failed.stdout + failed.stderr
    assert failed.returncode == 1 and "'dict' object has no attribute 'hex'" in output, output[-4000:]
