"""Every DAG as production runs it (scheduler, LocalExecutor, supervised tasks, a triggerer)
against the strictest gateway the sources allow: the sandbox's ``original`` profile refuses any
second creation of a record type or record, has no read topic, matches no request id (no echo)
and answers each write a second later, so the waits are deferred to the triggerer; then once
more with ``start`` ignored. The runs' times are printed (``-s`` shows them).

``tests/dags/test_original_gateway.py`` runs the same flows in-process (``dag.test()`` and
``airflow dags test``)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from blockchain_provider.protocol import gateway_identity
from gateway_sandbox.trace import requests_by_topic
from include.day_report_keys import DAY_REPORT_RECORD_TYPE, PRODUCTION_UNIT_RECORD_TYPE
from include.mes.db import engine_from_url
from include.mes.repository import MesRepository
from tests.conftest import needs
from tests.dags.conftest import erp_agent
from tests.supervised.conftest import DAY, Deployed, failed_task_logs, project_deployment
from tests.supervised.deployment import AirflowDeployment

# broker, postgres, airflow_db and airflow: from the fixtures the deployment starts
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
@needs("airflow")
def original(tmp_path_factory, kafka_bootstrap, metadata_database) -> Iterator[tuple[Deployed, Path]]:
    tmp = tmp_path_factory.mktemp("supervised_original")
    trace = tmp / "trace.jsonl"
    with project_deployment(
        tmp, kafka_bootstrap, metadata_database, "--profile", "original", "--trace", str(trace), units=1
    ) as deployed:
        yield deployed, trace


def run(
    airflow: AirflowDeployment, dag_id: str, conf: dict[str, Any] | None = None, run_id: str | None = None
) -> float:
    """Trigger *dag_id* through the REST API, wait for its run to end, fail with the failed tasks'
    stored logs unless it succeeded; the seconds it took (printed)."""
    started = time.monotonic()
    run_id = airflow.trigger(dag_id, conf, run_id)
    state = airflow.wait_for_run(dag_id, run_id, timeout=900)
    elapsed = time.monotonic() - started
    print(f"supervised, original gateway: {dag_id} {json.dumps(conf)}: {state} in {elapsed:.1f} s")
    if state != "success":
        details = {dag_id: airflow.task_states(dag_id, run_id)}
        pytest.fail(f"{dag_id} {conf}: {state}: {details}\n{failed_task_logs(airflow, details)}")
    return elapsed


def test_every_dag_supervised_on_the_original_gateway(original):
    deployed, trace = original
    airflow, ledger = deployed.airflow, deployed.ledger
    mes = MesRepository(engine_from_url(f"sqlite:///{deployed.mes_path}"))
    master = json.loads(airflow.airflow("connections", "get", "blockchain_master", "-o", "json").stdout)[0]
    mes_key = master["login"]

    # two consecutive days of reports: the record type is sent once, on the first day only
    for day in (DAY - timedelta(days=1), DAY):
        run(airflow, "blockchain_day_report", {"day": day.isoformat()})
    assert ledger.count_records(DAY_REPORT_RECORD_TYPE) == 2 * 28
    sent = requests_by_topic(trace)
    assert sent["BLK_Rty"] == 1
    assert sent["BLK_Rty_Get"] == sent["BLK_Rec_Get"] == 0

    # two updates of one unit, noted and triggered as the MES does: the record type, the record
    # and its reporter are each created once
    unit = mes.production_units()[0]
    for status in ("RUNNING", "STOPPED"):
        run_id = f"mes__original-{status}-{uuid.uuid4().hex[:8]}"
        mes.set_production_unit_state(unit.id, status, "Stamping", dag_run_id=run_id)
        conf = {"production_unit_id": unit.id, "status": status, "process_name": "Stamping"}
        run(airflow, "blockchain_production_unit_update", conf, run_id)
    assert ledger.record(f"PU_{unit.code}")["properties"]["Status"] == "STOPPED"
    sent = requests_by_topic(trace)
    assert sent["BLK_Rty"] == 2  # DayReportIndicator, ProductionUnit: each once
    assert sent["BLK_Rec_ProductionUnit"] == 3  # one creation, two updates
    assert sent["BLK_Rty_Get"] == sent["BLK_Rec_Get"] == 0
    bootstrap = json.loads(airflow.env["AIRFLOW_CONN_KAFKA_DEFAULT"])["extra"]["bootstrap.servers"]
    assert mes.record_type_created(gateway_identity(bootstrap, mes_key), PRODUCTION_UNIT_RECORD_TYPE)

    # both syncs, then an accept and a reject, then the token check
    erp = erp_agent(ledger, "ERP")
    partner_request = ledger.create_partner_request(erp, mes_key)
    customer = erp_agent(ledger, "Customer")
    accepted = ledger.create_partner_request(customer, mes_key)
    ledger.answer_partner_request(mes_key, accepted, True)
    order = ledger.create_order(customer, mes_key, "part", "Operator's order", {})
    for dag_id in ("blockchain_partner_sync", "blockchain_order_sync"):
        run(airflow, dag_id)
    assert {r.partner_request_id for r in mes.partner_requests()} == {partner_request, accepted}
    assert [o.abs_action_id for o in mes.order_requests()] == [order]
    run(airflow, "blockchain_partner_answer", {"request_id": partner_request, "decision": "accept"})
    run(airflow, "blockchain_order_answer", {"request_id": order, "decision": "reject"})
    assert ledger.partner_request(partner_request)["status"] == "ACCEPTED"
    assert ledger.order(order)["status"] == "REJECTED"
    assert mes.order_request(order).status == "REJECTED"
    assert ledger.verify() == []
    listed = requests_by_topic(trace)["BLK_Part_Lst"]
    run(airflow, "blockchain_token_check")  # one list request, signed by the master
    assert requests_by_topic(trace)["BLK_Part_Lst"] == listed + 1

    # the partner sync once more, on a gateway that answers every listing with its first page
    deployed.sandbox.restart("--profile", "original", "--trace", str(trace), "--ignore-start")
    newer = ledger.create_partner_request(erp_agent(ledger, "Supplier"), mes_key)
    listed = requests_by_topic(trace)["BLK_Part_Lst"]
    run(airflow, "blockchain_partner_sync")
    # the first page, then the same page again (start ignored): stored once, then the end
    assert requests_by_topic(trace)["BLK_Part_Lst"] == listed + 2
    assert {r.partner_request_id for r in mes.partner_requests()} == {partner_request, accepted, newer}
    logs = [text for path, text in airflow.task_logs().items() if "blockchain_partner_sync" in str(path)]
    assert any("ignore 'start'" in text and "ALERT" in text for text in logs)
