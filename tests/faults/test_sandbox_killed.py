"""The gateway is killed (SIGKILL) with requests in flight, then started again on the same ledger.

Its answers are delayed (``--delay-ms``), so the kill falls between applying a request and
answering it. What must hold: no partner answer is applied twice, every request sent gets its
answer after the restart, and rerunning the day report leaves exactly 28 records per unit.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from datetime import date

import pytest

from blockchain_provider import protocol
from blockchain_provider.exceptions import BlockchainGatewayError, BlockchainTimeoutError
from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook
from include.day_report_keys import DAY_REPORT_RECORD_TYPE
from tests.faults.conftest import SandboxProcess, erp_agent, load_dag, run_outcome, task_tries, wait_for
from tests.operator_runs import dag_task, run_operator

pytestmark = [pytest.mark.broker, pytest.mark.slow]

DAY = date(2026, 11, 27)


def answer_transactions(stack, partner_request_id: str) -> int:
    """How many transactions of the ledger's log answered this partner request."""
    with closing(sqlite3.connect(f"file:{stack.ledger_path}?mode=ro", uri=True)) as conn:
        (count,) = conn.execute(
            "SELECT COUNT(*) FROM transactions WHERE op = 'partner_request.answer'"
            " AND json_extract(payload, '$.partner_request_id') = ?",
            (partner_request_id,),
        ).fetchone()
    return count


def test_partner_answers_in_flight_when_the_gateway_is_killed_are_applied_once(make_stack, tmp_path):
    stack = make_stack(echo=True, timeout=60, serve=False)
    with stack.ledger() as ledger:
        pids = [
            ledger.create_partner_request(erp_agent(ledger, f"ERP {i}"), stack.mes_public_key)
            for i in range(6)
        ]
    in_flight, while_down = pids[:4], pids[4:]
    log = tmp_path / "sandbox.log"
    sandbox = SandboxProcess(stack, log, "--echo", "--delay-ms", "3000").start()
    results: dict[str, object] = {}

    def answer(ids: list[str]) -> None:
        with KafkaBlockchainHook() as hook:
            calls = [protocol.answer_call(protocol.PARTNER_ANSWER, pid, True) for pid in ids]
            for pid, outcome in zip(ids, hook.client.call_many(calls), strict=True):
                results[pid] = outcome if isinstance(outcome, Exception) else outcome.value

    first = threading.Thread(target=answer, args=(in_flight,))
    second = threading.Thread(target=answer, args=(while_down,))
    try:
        first.start()

        def applied() -> bool:
            with stack.ledger() as ledger:
                return all(ledger.partner_request(pid)["status"] == "ACCEPTED" for pid in in_flight)

        assert wait_for(applied, 20), "the gateway did not apply the answers"
        assert results == {}  # applied, not answered yet: their answers wait 3 s in the outbox
        sandbox.kill()
        second.start()  # sent while no gateway runs: they wait on the topic
        sandbox = SandboxProcess(stack, log, "--echo").start()
        first.join(60)
        second.join(60)
    finally:
        sandbox.stop()

    assert results == {pid: f"partner request {pid} ACCEPTED" for pid in pids}
    assert "resending 4 unsent response(s) from the outbox" in sandbox.log()
    with stack.ledger() as ledger:
        for pid in pids:
            item = ledger.partner_request(pid)
            assert item["status"] == "ACCEPTED"
            assert len(item["transaction_ids"]) == 2  # created, answered once
            assert answer_transactions(stack, pid) == 1

    # The gateway refuses a second answer; nothing changes.
    sandbox = SandboxProcess(stack, log, "--echo").start()
    try:
        with KafkaBlockchainHook(timeout=20) as hook, pytest.raises(BlockchainGatewayError, match="ACCEPTED"):
            hook.answer_partner_request(pids[0], False)
    finally:
        sandbox.stop()
    with stack.ledger() as ledger:
        assert [answer_transactions(stack, pid) for pid in pids] == [1] * 6
        assert ledger.partner_request(pids[0])["status"] == "ACCEPTED"


@pytest.mark.airflow_db
def test_a_day_report_cut_by_a_killed_gateway_is_completed_by_a_rerun(make_stack, tmp_path, airflow_db):
    from include.mes.db import mes_engine
    from include.sample_data import generate_plant

    # the original gateway: no echo. The late answer of the request cut by the kill comes when the
    # sandbox restarts, before the rerun; the rerun runs in this same process, so no grace period
    # (which would hold the token after the cut request's timeout) is waited out here.
    stack = make_stack(echo=False, timeout=3, serve=False, late_answer_grace=0)
    generate_plant(mes_engine("mes_db"), units=3, weeks=1, end_date=DAY)
    repository = stack.mes()
    reports = repository.day_reports(DAY)
    log = tmp_path / "sandbox.log"
    sandbox = SandboxProcess(stack, log, "--delay-ms", "40").start()
    failures: list[BaseException] = []

    def submit() -> None:
        """The day report DAG's tasks, run one after the other as a worker would."""
        run_operator(dag_task("blockchain_day_report", "ensure_record_type"))
        try:
            for report in reports:
                mapped = {"report_id": report.report_id, "unit": report.unit_code, "day": DAY.isoformat()}
                run_operator(
                    dag_task("blockchain_day_report", "send_unit_report", {"records_kwargs": mapped})
                )
        except BlockchainTimeoutError as exc:
            failures.append(exc)

    def written() -> int:
        with stack.ledger() as ledger:
            return ledger.count_records(DAY_REPORT_RECORD_TYPE)

    worker = threading.Thread(target=submit)
    try:
        worker.start()
        assert wait_for(lambda: written() >= 40, 30)
        sandbox.kill()  # in the middle of the second unit's 28 records
        worker.join(30)
        cut_at = written()
        assert 40 <= cut_at < 84 and len(failures) == 1
        sandbox = SandboxProcess(stack, log).start()

        dag = load_dag("blockchain_day_report")
        run = dag.test(run_conf={"day": DAY.isoformat()})
    finally:
        sandbox.stop()

    tries = task_tries(run)
    assert run.state == "success", run_outcome(run)
    assert [tries[f"send_unit_report[{i}]"] for i in range(3)] == [["success"]] * 3
    stack.assert_day_reports_written_once(reports)
    assert [len(repository.submitted_record_ids(r.report_id)) for r in reports] == [28, 28, 28]
