"""Every DAG run as production runs it: scheduler, LocalExecutor, supervised tasks, triggerer, pools.

Connections live where operators keep them: ``kafka_default`` and ``mes_db`` in the environment
of the services, ``blockchain_master`` in the metadata database, written by the provider's
``token create`` command. After the runs, neither the token nor the agent password appears in
any stored task log, service log, XCom or the sandbox's log.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy

from gateway_sandbox.trace import in_flight_overlaps, read_trace
from include.day_report_keys import DAY_REPORT_RECORD_TYPE
from include.mes.db import engine_from_url
from include.mes.repository import MesRepository
from tests.conftest import needs
from tests.dags.conftest import erp_agent, product_dag_confs
from tests.supervised.conftest import DAY, Deployed, failed_task_logs, project_deployment
from tests.supervised.deployment import AirflowDeployment

# broker, postgres, airflow_db and airflow: from the fixtures the deployment starts
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
@needs("airflow")
def deployment(tmp_path_factory, kafka_bootstrap, metadata_database) -> Iterator[Deployed]:
    tmp = tmp_path_factory.mktemp("supervised")
    with project_deployment(tmp, kafka_bootstrap, metadata_database) as deployed:
        yield deployed


def stored_connection(airflow: AirflowDeployment) -> dict:
    result = airflow.airflow("connections", "get", "blockchain_master", "-o", "json")
    return json.loads(result.stdout)[0]


def fail_unless_succeeded(airflow: AirflowDeployment, dag_id: str, states: dict[str, str]) -> None:
    """Fail with the task states and stored logs of the runs of *dag_id* in *states* (run id:
    final state) that did not succeed."""
    failed = [run_id for run_id, state in states.items() if state != "success"]
    if failed:
        details = {dag_id: {t: s for r in failed for t, s in airflow.task_states(dag_id, r).items()}}
        pytest.fail(f"runs did not succeed: {details}\n{failed_task_logs(airflow, details)}")


def test_every_dag_supervised_with_the_token_masked(deployment):
    airflow, ledger, mes_path, sandbox_log, _sandbox = deployment
    conn = stored_connection(airflow)
    mes_key, token = conn["login"], conn["password"]
    agent_password = conn["extra_dejson"]["agent_password"]
    assert ledger.agent(mes_key)["name"] == "MES"

    erp = erp_agent(ledger, "ERP")
    partner_request = ledger.create_partner_request(erp, mes_key)
    other = erp_agent(ledger, "Customer")
    accepted = ledger.create_partner_request(other, mes_key)
    ledger.answer_partner_request(mes_key, accepted, True)
    order = ledger.create_order(
        other, mes_key, "dummy_action", "Operator's order", {"Part": "steering wheel"}
    )

    repository = MesRepository(engine_from_url(f"sqlite:///{mes_path}"))
    unit = repository.production_units()[0]
    runs = {
        **product_dag_confs(
            day=DAY, partner_request_id=partner_request, order_id=order, production_unit_id=unit.id
        ),
        "blockchain_secret_probe": None,
    }
    started = {dag_id: airflow.trigger(dag_id, conf) for dag_id, conf in runs.items()}
    states = {dag_id: airflow.wait_for_run(dag_id, run_id, timeout=600) for dag_id, run_id in started.items()}
    details = {d: airflow.task_states(d, r) for d, r in started.items() if states[d] != "success"}
    if details:  # the stored (masked) logs of the failed tasks say why
        pytest.fail(f"runs did not succeed: {details}\n{failed_task_logs(airflow, details)}")

    # what the runs did
    assert ledger.count_records(DAY_REPORT_RECORD_TYPE) == 2 * 28
    assert ledger.partner_request(partner_request)["status"] == "ACCEPTED"
    assert ledger.order(order)["status"] == "REJECTED"
    assert ledger.record(f"PU_{unit.code}")["properties"]["Status"] == "RUNNING"
    # the unit's reporter, stored by a supervised task (no ORM, no REST API) with the deployment's
    # Fernet key, signed the update; the master only created the record
    from cryptography.fernet import Fernet

    fernet_key = airflow.airflow("config", "get-value", "core", "fernet_key").stdout.strip()
    reporters = MesRepository(engine_from_url(f"sqlite:///{mes_path}"), fernet=Fernet(fernet_key.encode()))
    reporter = reporters.reporter_of_unit(unit.code)
    assert ledger.record(f"PU_{unit.code}")["reporters"] == [reporter.public_key]
    assert ledger.agent_for_token(reporter.token.reveal()) == reporter.public_key
    signers = ledger._conn.execute(
        "SELECT op, signer FROM transactions WHERE json_extract(payload, '$.record_id') = ? ORDER BY seq",
        (f"PU_{unit.code}",),
    ).fetchall()
    assert signers == [("record.create", mes_key), ("record.update", reporter.public_key)]
    assert repository.partner_request(partner_request).status == "ACCEPTED"
    assert repository.order_request(order).status == "REJECTED"
    probe_states = airflow.task_states("blockchain_secret_probe", started["blockchain_secret_probe"])
    assert probe_states["list_partner_requests_deferred"] == "success"

    # the secrets: masked where printed on purpose, absent everywhere else
    logs = airflow.task_logs()
    probe_log = next(text for path, text in logs.items() if "print_secrets" in str(path))
    assert "token: ***" in probe_log
    assert "agent password: ***" in probe_log
    trigger_log = next(text for path, text in logs.items() if "list_partner_requests_deferred" in str(path))
    assert "defer" in trigger_log.lower()
    # The services' consoles echo what tasks log as it happens, before masking (Airflow 3.3.2,
    # LocalExecutor): the probe's deliberate lines are there in clear. Nothing else may be.
    service_logs = {
        path: "\n".join(
            line for line in path.read_text(errors="replace").splitlines() if "print_secrets" not in line
        )
        for path in (airflow.home / "service-logs").glob("*.log")
    }
    texts = {**logs, **service_logs, sandbox_log: sandbox_log.read_text(errors="replace")}
    for secret in (token, agent_password, reporter.token.reveal(), reporter.password.reveal()):
        leaks = [
            f"{path}: {line.replace(secret, '<SECRET>')[:400]}"
            for path, text in texts.items()
            for line in text.splitlines()
            if secret in line
        ]
        assert leaks == []
    engine = sqlalchemy.create_engine(airflow.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    with engine.connect() as db:
        xcoms = [str(value) for (value,) in db.execute(sqlalchemy.text("SELECT value FROM xcom"))]
    engine.dispose()
    assert xcoms  # the runs did push results
    secrets = (token, agent_password, reporter.token.reveal(), reporter.password.reveal())
    assert not [x for x in xcoms if any(secret in x for secret in secrets)]


def test_token_rotation_keeps_the_agent_and_the_pipeline_working(deployment):
    airflow, ledger, _mes_path, _sandbox_log, _sandbox = deployment
    before = stored_connection(airflow)
    rotated = airflow.command("blockchain-provider", "token", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    assert before["password"] not in rotated.stdout + rotated.stderr
    after = stored_connection(airflow)
    assert after["login"] == before["login"]
    assert after["password"] != before["password"]
    # the new token is the one the pipeline uses now: a real check run through the scheduler
    run_id = airflow.trigger("blockchain_token_check")
    assert airflow.wait_for_run("blockchain_token_check", run_id) == "success"
    assert ledger.agent_for_token(after["password"]) == after["login"]


def test_a_trigger_with_an_invalid_unit_update_is_refused_with_400(deployment):
    """The Params schema is checked by the REST API: nothing runs, nothing reaches Kafka."""
    import urllib.error

    airflow, *_ = deployment
    good = {"production_unit_id": 1, "status": "RUNNING", "process_name": "Stamping"}
    for change in (
        {"production_unit_id": 10**30},
        {"status": "   "},
        {"status": "RUN\x00NING"},
        {"status": "RUN\ud800"},
        {"process_name": "Stamp\x07ing"},
    ):
        with pytest.raises(urllib.error.HTTPError) as info:
            airflow.trigger("blockchain_production_unit_update", {**good, **change})
        assert info.value.code == 400, change


def test_a_slow_gateway_hands_unit_updates_to_the_triggerer_in_order(deployment):
    """Answers 2.5 s late: each run's requests wait in the triggerer, which reads the reporter's
    token from the MES; the unit's lock outlives the deferrals, so the second run, noted after the
    first, waits (deferred too) and applies its change after the first's."""
    airflow, ledger, mes_path, _sandbox_log, sandbox = deployment
    from cryptography.fernet import Fernet

    fernet_key = airflow.airflow("config", "get-value", "core", "fernet_key").stdout.strip()
    repository = MesRepository(engine_from_url(f"sqlite:///{mes_path}"), fernet=Fernet(fernet_key.encode()))
    unit = repository.production_units()[1]
    dag_id = "blockchain_production_unit_update"
    runs = [f"mes__slow-{n}-{uuid.uuid4().hex[:8]}" for n in (1, 2)]
    sandbox.restart("--delay-ms", "2500")
    try:
        for n, run_id in enumerate(runs, start=1):
            conf = {"production_unit_id": unit.id, "status": f"SLOW_{n}", "process_name": f"Step {n}"}
            repository.set_production_unit_state(
                unit.id, conf["status"], conf["process_name"], dag_run_id=run_id
            )
            airflow.post(
                f"/api/v2/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": None, "conf": conf}
            )
        states = {run_id: airflow.wait_for_run(dag_id, run_id, timeout=600) for run_id in runs}
    finally:
        sandbox.restart()
    fail_unless_succeeded(airflow, dag_id, states)

    record_id = f"PU_{unit.code}"
    reporter = repository.reporter_of_unit(unit.code)
    assert [u["Status"] for u in ledger.record_updates(record_id)] == ["SLOW_1", "SLOW_2"]
    assert ledger.record(record_id)["properties"]["Status"] == "SLOW_2"
    assert [c.outcome for c in repository.unit_changes(unit.id)][-2:] == ["applied", "applied"]
    logs = {path: text for path, text in airflow.task_logs().items() if any(r in str(path) for r in runs)}
    waits = [
        line
        for text in logs.values()
        for line in text.splitlines()
        if "answer awaited in the triggerer" in line
    ]
    assert any("update change" in line for line in waits), waits  # signed with the reporter's token
    secret = reporter.token.reveal()
    service_logs = [p.read_text(errors="replace") for p in (airflow.home / "service-logs").glob("*.log")]
    assert not [text for text in [*logs.values(), *service_logs] if secret in text]


def test_a_run_waiting_for_its_units_lock_keeps_no_pool_slot_from_the_holder(deployment):
    """The production-unit livelock, played through the scheduler with answers 1 s late and a pool
    of one slot: the run holding the unit's lock (kept through its deferral) is back from the
    triggerer and needs the pool's slot, while an earlier-triggered run of the unit waits for the
    lock. The waiting run must wait outside the pool (once it took the slot, waited in it for the
    lock and deferred on a timer holding it, and was scheduled again first, for minutes)."""
    from include.mes.unit_updates import claim_unit

    airflow, ledger, mes_path, _sandbox_log, sandbox = deployment
    engine = engine_from_url(f"sqlite:///{mes_path}")
    repository = MesRepository(engine)
    unit = repository.production_units()[0]
    dag_id = "blockchain_production_unit_update"
    tag = uuid.uuid4().hex[:8]
    waiter, holder = f"mes__waiter-{tag}", f"mes__holder-{tag}"
    confs = {
        run_id: {"production_unit_id": unit.id, "status": f"{name}_{tag}", "process_name": name}
        for run_id, name in ((waiter, "WAITER"), (holder, "HOLDER"))
    }
    for run_id, conf in confs.items():  # the waiter's change first
        repository.set_production_unit_state(unit.id, conf["status"], conf["process_name"], dag_run_id=run_id)
    # the holder's task deferred on its gateway answer, keeping the unit's lock
    assert claim_unit(engine, unit.id, holder)
    sandbox.restart("--delay-ms", "1000")
    try:
        airflow.post(
            f"/api/v2/dags/{dag_id}/dagRuns",
            {"dag_run_id": waiter, "logical_date": None, "conf": confs[waiter]},
        )
        # the waiter is waiting for the lock before the holder comes back for the pool's slot
        deadline = time.monotonic() + 180
        while "deferred" not in airflow.task_states(dag_id, waiter).values():
            assert time.monotonic() < deadline, airflow.task_states(dag_id, waiter)
            time.sleep(0.5)
        airflow.post(
            f"/api/v2/dags/{dag_id}/dagRuns",
            {"dag_run_id": holder, "logical_date": None, "conf": confs[holder]},
        )
        started = time.monotonic()
        states = {run_id: airflow.wait_for_run(dag_id, run_id, timeout=240) for run_id in (holder, waiter)}
        took = time.monotonic() - started
    finally:
        sandbox.restart()
        engine.dispose()
    fail_unless_succeeded(airflow, dag_id, states)

    # the holder drained both changes, in order (a try retried without reads may send its values
    # again, README: the same values twice in a row, never an older value after a newer one)
    record_id = f"PU_{unit.code}"
    statuses = [
        status for status, _ in itertools.groupby(u["Status"] for u in ledger.record_updates(record_id))
    ]
    assert statuses[-2:] == [confs[waiter]["status"], confs[holder]["status"]]
    assert {repository.unit_change(r).applied_by_run for r in (waiter, holder)} == {holder}
    # no task of the waiter waited for the lock in a slot of the pool
    waiter_logs = "\n".join(text for path, text in airflow.task_logs().items() if waiter in str(path))
    assert "lock not free" not in waiter_logs
    assert "claiming again" not in waiter_logs
    print(f"holder and waiter done {took:.1f} s after the holder's trigger")


def test_units_updates_run_side_by_side_one_request_per_reporter_token(deployment, tmp_path):
    """Answers 2 s late, no echo: each unit's updates are signed by its own reporter, so two units'
    updates are in flight at once (not one request at a time for the whole deployment, as in the
    master token's one-slot pool), while no token ever has two requests in flight, and each unit's
    changes reach the ledger in the order the MES made them."""
    airflow, ledger, mes_path, _sandbox_log, sandbox = deployment
    engine = engine_from_url(f"sqlite:///{mes_path}")
    repository = MesRepository(engine)
    units = repository.production_units()[:2]
    dag_id = "blockchain_production_unit_update"
    tag = uuid.uuid4().hex[:8]
    changes = {
        unit.id: [(f"mes__side-{unit.code}-{n}-{tag}", f"SIDE_{n}_{tag}") for n in (1, 2, 3)]
        for unit in units
    }
    trace_path = tmp_path / "trace.jsonl"
    sandbox.restart("--delay-ms", "2000", "--trace", str(trace_path))
    try:
        started = time.monotonic()
        for n in range(3):  # the units' changes interleaved, as a plant makes them
            for unit in units:
                run_id, status = changes[unit.id][n]
                conf = {"production_unit_id": unit.id, "status": status, "process_name": "Side"}
                repository.set_production_unit_state(unit.id, status, "Side", dag_run_id=run_id)
                airflow.post(
                    f"/api/v2/dags/{dag_id}/dagRuns",
                    {"dag_run_id": run_id, "logical_date": None, "conf": conf},
                )
        runs = [run_id for unit in units for run_id, _ in changes[unit.id]]
        states = {run_id: airflow.wait_for_run(dag_id, run_id, timeout=400) for run_id in runs}
        took = time.monotonic() - started
    finally:
        sandbox.restart()
        engine.dispose()
    fail_unless_succeeded(airflow, dag_id, states)

    for unit in units:
        statuses = [u["Status"] for u in ledger.record_updates(f"PU_{unit.code}")]
        # a try retried without reads may send its values again (README): the same values twice
        # in a row, never an older value after a newer one
        assert [status for status, _ in itertools.groupby(statuses)][-3:] == [s for _, s in changes[unit.id]]
    trace = read_trace(trace_path)
    same_token, across = in_flight_overlaps(trace)
    assert same_token == []
    master = hashlib.sha256(stored_connection(airflow)["password"].encode()).hexdigest()[:16]
    reporters = {entry["token"] for entry in trace if entry["topic"] == "BLK_Rec_ProductionUnit"} - {master}
    assert len(reporters) == 2  # each unit's updates signed by its own reporter
    assert any(pair <= reporters for pair in across), "no two units' updates were ever in flight at once"
    print(f"6 changes of 2 units, answers 2 s late: all applied {took:.1f} s after the first trigger")
