"""The production shape as ``make production`` starts it: CeleryExecutor with Redis and two
workers, Airflow's metadata on PostgreSQL, 3 Apache Kafka brokers, the gateway sandbox.

One deployment for every case, in order: every DAG runs; a Celery worker is SIGKILLed while it
holds a gateway task (a unit's creation, awaited in the worker); 20 production-unit updates for 5 units arrive at once through the MES's path
without echo (one request of the token in flight at a time, measured at the sandbox), then again
with echo and an 8-slot pool (both durations printed; ``bench/unit_updates.py`` measures them).
Each case asserts what happened to the data, in the ledger and in the MES.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from blockchain_provider import protocol
from gateway_sandbox.ledger import Ledger
from gateway_sandbox.trace import in_flight_overlaps, read_trace
from include.day_report_keys import PRODUCTION_UNIT_RECORD_TYPE, day_report_keys
from include.mes.db import engine_from_url
from include.mes.repository import MesRepository
from include.mes_client import MesAirflowClient, patch_production_unit
from local_services.kafka import missing_prerequisites
from local_services.ports import free_port
from scripts.production_stack import ProductionStack
from scripts.stack.airflow_api import admin_password, http_json
from scripts.stack.processes import session_members
from scripts.stack.settings import ADMIN_USER, Settings
from tests import airflow_rest
from tests.conftest import needs
from tests.dags.conftest import PRODUCT_DAG_IDS, erp_agent, product_dag_confs

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.kafka_cluster,
    pytest.mark.timeout(2400),
]

ROOT = Path(__file__).resolve().parents[2]
UPDATE_DAG = "blockchain_production_unit_update"
#: Where production-unit records are created and updated (PROTOCOL.md 3.3).
UNIT_TOPIC = protocol.record_topic(PRODUCTION_UNIT_RECORD_TYPE)


@dataclass
class Production:
    stack: ProductionStack
    ledger: Ledger
    repository: MesRepository
    trace: Path
    hold: Path
    token: str = ""

    # -- REST API
    def api(self, path: str, body: dict[str, Any] | None = None, method: str | None = None) -> Any:
        if not self.token:
            password = admin_password(self.stack.settings)
            self.token = http_json(
                f"{self.stack.settings.url}/auth/token", {"username": ADMIN_USER, "password": password}
            )["access_token"]
        return http_json(f"{self.stack.settings.url}{path}", body, self.token, method)

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        return self.api(f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})[
            "dag_run_id"
        ]

    def api_get(self, path: str) -> Any:
        return self.api(f"/api/v2{path}")

    def wait_for_runs(self, runs: dict[str, tuple[str, str]], timeout: float) -> dict[str, str]:
        finished = airflow_rest.wait_for_runs(self.api_get, runs, timeout, interval=3)
        return {name: run["state"] for name, run in finished.items()}

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self.api(f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}/taskInstances")["task_instances"]

    # -- the gateway's side
    def trace_entries(self, since: float = 0.0) -> list[dict[str, Any]]:
        return [e for e in read_trace(self.trace) if e["received"] >= since]


def _quote(run_id: str) -> str:
    from urllib.parse import quote

    return quote(run_id, safe="")


@pytest.fixture(scope="module")
@needs("kafka_cluster", "postgres", "airflow")
def production(tmp_path_factory) -> Iterator[Production]:
    missing = missing_prerequisites()
    assert not missing, f"the production shape needs {missing}"
    tmp = tmp_path_factory.mktemp("production")
    trace, hold = tmp / "sandbox-trace.jsonl", tmp / "hold"
    settings = Settings(
        root=ROOT, stack_dir=tmp / "stack", airflow_port=free_port(), kafka="apache", timeout=600.0
    )
    out = open(tmp / "stack.out", "w")  # noqa: SIM115 (closed below)
    stack = ProductionStack(
        settings,
        out=out,
        sandbox_options=("--trace", str(trace), "--hold-file", str(hold)),
        extra_env={
            # a killed worker's task is declared lost after a minute, not the default five
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        },
    )
    try:
        stack.up()
        engine = engine_from_url(stack.mes_url())
        yield Production(stack, Ledger(str(settings.ledger)), MesRepository(engine), trace, hold)
        engine.dispose()
    except BaseException:
        out.flush()
        sys.stderr.write((tmp / "stack.out").read_text())
        raise
    finally:
        stack.down()
        out.close()


def wait_for_dags(production: Production, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dags = {d["dag_id"] for d in production.api("/api/v2/dags?limit=100")["dags"]}
        if dags >= PRODUCT_DAG_IDS:
            return
        time.sleep(3)
    raise TimeoutError(f"DAGs not parsed: {sorted(PRODUCT_DAG_IDS - dags)}")


def test_every_dag_runs_on_celery_workers(production: Production) -> None:
    wait_for_dags(production)
    # the MES is on PostgreSQL, as a plant's: what the tasks write below is read back from there
    assert production.repository.engine.dialect.name == "postgresql"
    ledger, repository = production.ledger, production.repository
    mes_key = production.stack.public_key
    erp = erp_agent(ledger, "ERP")
    partner_request = ledger.create_partner_request(erp, mes_key)
    customer = erp_agent(ledger, "Customer")
    accepted = ledger.create_partner_request(customer, mes_key)
    ledger.answer_partner_request(mes_key, accepted, True)
    order = ledger.create_order(customer, mes_key, "dummy_action", "Operator's order", {"Part": "wheel"})
    unit = repository.production_units()[0]
    day = date.today() - timedelta(days=1)  # the sample data's last day
    runs = product_dag_confs(
        day=day, partner_request_id=partner_request, order_id=order, production_unit_id=unit.id
    )
    assert set(runs) == PRODUCT_DAG_IDS
    started = {dag_id: (dag_id, production.trigger(dag_id, conf)) for dag_id, conf in runs.items()}
    states = production.wait_for_runs(started, timeout=900)
    failed = {d: production.task_instances(d, r) for d, (_, r) in started.items() if states[d] != "success"}
    assert set(states.values()) == {"success"}, failed

    # every BLK topic, the record types' too, has a replica on each of the 3 brokers
    from confluent_kafka.admin import AdminClient

    topics = AdminClient({"bootstrap.servers": production.stack.bootstrap}).list_topics(timeout=30).topics
    blk = {name: meta for name, meta in topics.items() if name.startswith("BLK_")}
    assert {UNIT_TOPIC, "BLK_Rec_DayReportIndicator", "BLK_Res"} <= set(blk)
    assert {name: len(meta.partitions[0].replicas) for name, meta in blk.items()} == dict.fromkeys(blk, 3)
    # the tasks ran on the Celery workers, as the CeleryExecutor queued them
    workers_logs = "".join(
        (production.stack.settings.logs / f"airflow-worker-{n}.log").read_text(errors="replace")
        for n in (1, 2)
    )
    assert "execute_workload" in workers_logs
    # what the runs did
    # the day's 28 records of each unit (the scheduled day report, unpaused, may add another day's)
    reports = repository.day_reports(day)
    assert len(reports) == len(repository.production_units())
    for report in reports:
        assert all(ledger.record(key.record_id) for key in day_report_keys(report.report_id)), (
            report.report_id
        )
    assert ledger.partner_request(partner_request)["status"] == "ACCEPTED"
    assert ledger.order(order)["status"] == "REJECTED"
    assert ledger.record(f"PU_{unit.code}")["properties"]["Status"] == "RUNNING"
    assert repository.partner_request(partner_request).status == "ACCEPTED"
    assert repository.order_request(order).status == "REJECTED"


def _worker_of(production: Production, pid: int) -> int | None:
    for number in (1, 2):
        worker = production.stack.worker(number)
        if worker.alive() and pid in session_members(worker.pid):
            return number
    return None


def reporter_rows(repository: MesRepository, record_id: str) -> list[dict[str, Any]]:
    """The MES's rows of *record_id*'s reporter, as ``reporters list`` shows them (nothing decrypted:
    the test process has not the workers' Fernet key)."""
    return [row for row in repository.reporters() if row["record_id"] == record_id]


def _creation_task(production: Production, run_id: str) -> dict[str, Any]:
    """The task instance of a unit's first update run that creates its record and reporter."""
    (ti,) = [t for t in production.task_instances(UPDATE_DAG, run_id) if t["task_id"] == "create_unit_record"]
    return ti


def test_worker_killed_holding_a_gateway_task_is_retried_on_the_other(production: Production) -> None:
    """A unit's first update creates its record and reporter, and awaits that answer in the worker
    (it holds the reporter's token): the gateway applies the creation but keeps its answer, and the
    worker running the task is killed. The retry, on the other worker, creates no second reporter."""
    stack, ledger, repository = production.stack, production.ledger, production.repository
    unit = repository.production_units()[1]
    record_id = f"PU_{unit.code}"
    assert ledger.record(record_id) is None and not reporter_rows(repository, record_id)  # its first update
    if ledger.record_type(PRODUCTION_UNIT_RECORD_TYPE) is None:
        # run alone: another unit's first update creates the record type, so that the held answer
        # below is the record's creation, awaited in the worker
        other = repository.production_units()[2]
        run = production.trigger(
            UPDATE_DAG, {"production_unit_id": other.id, "status": "TYPE", "process_name": "Welding"}
        )
        assert production.wait_for_runs({"type": (UPDATE_DAG, run)}, timeout=300)["type"] == "success"
    status = "KILLED-WORKER"
    production.hold.write_text("create\n")
    try:
        run_id = production.trigger(
            UPDATE_DAG, {"production_unit_id": unit.id, "status": status, "process_name": "Welding"}
        )
        deadline = time.monotonic() + 300
        while ledger.record(record_id) is None:
            if time.monotonic() > deadline:
                raise AssertionError("the creation never reached the gateway")
            time.sleep(0.05)
        ti = _creation_task(production, run_id)
        assert ti["state"] == "running" and ti["pid"], ti  # waiting in the worker for the held answer
        victim = _worker_of(production, ti["pid"])
        assert victim is not None, f"task process {ti['pid']} is under no worker"
        stack.worker(victim).kill()
        assert not stack.worker(victim).alive()
        reporters = ledger.record(record_id)["reporters"]
        assert len(reporters) == 1
    finally:
        production.hold.unlink(missing_ok=True)
    # the scheduler finds the task's heartbeat gone, and the retry runs on the worker left
    assert production.wait_for_runs({"run": (UPDATE_DAG, run_id)}, timeout=600)["run"] == "success"
    ti = _creation_task(production, run_id)
    assert ti["try_number"] >= 2
    survivor = 3 - victim
    assert stack.worker(survivor).alive()
    # the retry sent the password it had stored before the first try: the same reporter, whose
    # token the MES now holds; then the update, signed with it
    assert ledger.record(record_id)["reporters"] == reporters
    assert [row["has_token"] for row in reporter_rows(repository, record_id)] == [True]
    assert ledger.record(record_id)["properties"]["Status"] == status
    assert repository.unit_change(run_id).outcome == "applied"
    # bring the killed worker back for what follows
    stack.services.remove(stack.worker(victim))
    stack.start_worker(victim)
    stack.wait_until(stack.workers_answer, "both workers answer", stack.services)


def _twenty_updates(production: Production, tag: str) -> tuple[float, dict[str, list[str]]]:
    """Make 4 changes of each of 5 units at once through the MES's path (save, note, trigger
    through the REST API; each unit's in order, from its own thread); return the seconds until
    all 20 runs finished and the statuses sent per unit."""
    units = production.repository.production_units()[:5]
    assert len(units) == 5
    sent = {f"PU_{u.code}": [f"{tag}-{n}" for n in range(1, 5)] for u in units}
    runs: dict[str, tuple[str, str]] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []
    client = MesAirflowClient(
        production.stack.settings.url, ADMIN_USER, admin_password(production.stack.settings)
    )

    def post(unit: Any) -> None:
        """What the MES's PATCH view does for each change: save and note it, trigger its run."""
        try:
            for status in sent[f"PU_{unit.code}"]:
                run_id = patch_production_unit(production.repository, client, unit.id, status, f"P {status}")
                with lock:
                    runs[status + unit.code] = (UPDATE_DAG, run_id)
        except BaseException as exc:  # reported below
            errors.append(exc)

    begin = time.monotonic()
    threads = [threading.Thread(target=post, args=(unit,)) for unit in units]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    states = production.wait_for_runs(runs, timeout=1200)
    elapsed = time.monotonic() - begin
    assert list(states.values()).count("success") == 20, states
    # every change noted applied, each by one run of its unit (its own or a later one's drain)
    run_ids = {run_id for _dag_id, run_id in runs.values()}
    for unit in units:
        changes = [c for c in production.repository.unit_changes(unit.id) if c.dag_run_id in run_ids]
        assert [c.status for c in changes] == sent[f"PU_{unit.code}"]
        assert all(c.outcome == "applied" and c.applied_by_run in run_ids for c in changes), changes
    drained = sum(
        c.dag_run_id != c.applied_by_run
        for u in units
        for c in production.repository.unit_changes(u.id)
        if c.dag_run_id in run_ids
    )
    print(f"\n{tag}: {drained} of 20 changes applied by a later run of their unit")
    return elapsed, sent


def _assert_applied_in_order(production: Production, sent: dict[str, list[str]]) -> None:
    for record_id, statuses in sent.items():
        applied = [
            u["Status"] for u in production.ledger.record_updates(record_id) if u["Status"] in statuses
        ]
        assert applied == statuses, record_id
        assert production.ledger.record(record_id)["properties"]["Status"] == statuses[-1]


def _overlaps(entries: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Pairs of requests of one token that were in flight at the same time at the gateway."""
    return in_flight_overlaps(entries)[0]


RESULTS: dict[str, Any] = {}


def test_twenty_updates_without_echo_one_request_in_flight_per_token(production: Production) -> None:
    since = time.time()
    elapsed, sent = _twenty_updates(production, "NOECHO")
    _assert_applied_in_order(production, sent)
    entries = production.trace_entries(since)
    updates = [e for e in entries if e["action"] == "update" and e["topic"] == UNIT_TOPIC]
    assert len(updates) == 20
    assert not any(e["echoed"] for e in updates)  # the original gateway's way: no id sent back
    overlaps = _overlaps(entries)
    gaps = [
        (a["topic"], a["action"], b["topic"], b["action"], round(a["answered"] - b["received"], 4))
        for a, b in overlaps
    ]
    assert gaps == []
    RESULTS["no_echo"] = elapsed
    RESULTS["requests_no_echo"] = len(entries)
    print(f"\n20 updates, echo off, pool 1 slot: {elapsed:.1f} s ({len(entries)} gateway requests)")


def test_twenty_updates_with_echo_and_eight_slots(production: Production) -> None:
    production.stack.restart_sandbox(echo=True, pool_slots=8)
    since = time.time()
    elapsed, sent = _twenty_updates(production, "ECHO")
    _assert_applied_in_order(production, sent)
    entries = production.trace_entries(since)
    assert len([e for e in entries if e["action"] == "update"]) == 20
    assert all(e["request_id"] and e["echoed"] for e in entries)  # every request's id, echoed back
    RESULTS["echo"] = elapsed
    before = RESULTS.get("no_echo")
    overlapping = len(_overlaps(entries))
    print(
        f"\n20 updates, echo on, pool 8 slots: {elapsed:.1f} s ({len(entries)} gateway requests, "
        f"{overlapping} overlapping pairs); echo off took {before:.1f} s"
        if before
        else f"\n20 updates, echo on, pool 8 slots: {elapsed:.1f} s"
    )
