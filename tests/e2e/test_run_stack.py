"""``make run`` end to end: the stack comes up healthy and scheduled, stops cleanly on Ctrl-C, and a
second start reuses everything the first one made.

The tests of this module run in order on one stack: start, inspect, stop, start again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import RunningStack, new_stack

# make run's own stack on its embedded broker: the tansu pass of `make test`.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.broker,
    pytest.mark.airflow,
    pytest.mark.tansu,
    pytest.mark.timeout(900),
]

DAG_IDS = {
    "blockchain_day_report",
    "blockchain_order_answer",
    "blockchain_order_sync",
    "blockchain_partner_answer",
    "blockchain_partner_sync",
    "blockchain_production_unit_update",
    "blockchain_token_check",
}
SCHEDULED = {
    "blockchain_day_report",
    "blockchain_order_sync",
    "blockchain_partner_sync",
    "blockchain_token_check",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    started = time.monotonic()
    running = new_stack(tmp_path_factory).start()
    print(f"\nstack up in {time.monotonic() - started:.0f} s")
    try:
        yield running
    finally:
        if running.process is not None and running.process.poll() is None:
            running.stop()


def wait_for_dags(stack: RunningStack, timeout: float = 180.0) -> dict[str, dict[str, Any]]:
    """The blockchain DAGs once the DAG processor has parsed all seven."""
    deadline = time.monotonic() + timeout
    dags: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        dags = {d["dag_id"]: d for d in stack.api("/dags?limit=100")["dags"]}
        if set(dags) >= DAG_IDS:
            return dags
        time.sleep(2)
    pytest.fail(f"DAGs missing after {timeout:.0f} s: {sorted(DAG_IDS - set(dags))}")


def test_every_dag_is_parsed_unpaused_and_scheduled(stack: RunningStack) -> None:
    assert set(stack.api("/monitor/health").keys()) >= {
        "metadatabase",
        "scheduler",
        "dag_processor",
        "triggerer",
    }
    dags = wait_for_dags(stack)
    assert not [dag_id for dag_id in DAG_IDS if dags[dag_id]["is_paused"]]
    assert not [dag_id for dag_id in DAG_IDS if dags[dag_id]["has_import_errors"]]
    assert not stack.api("/importErrors")["import_errors"]
    for dag_id in SCHEDULED:
        assert dags[dag_id]["next_dagrun_run_after"], f"{dag_id} has no next run"


def test_partner_sync_runs_on_its_own(stack: RunningStack) -> None:
    """Unpaused without catch-up, the sync's latest interval is scheduled at once; it must succeed."""
    deadline = time.monotonic() + 300
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        runs = stack.api("/dags/blockchain_partner_sync/dagRuns?run_type=scheduled")["dag_runs"]
        if runs:
            break
        time.sleep(2)
    assert runs, "the scheduler created no run of blockchain_partner_sync"
    run = stack.wait_for_run("blockchain_partner_sync", runs[0]["dag_run_id"])
    assert run["state"] == "success", stack.task_states("blockchain_partner_sync", run["dag_run_id"])
    assert run["run_type"] == "scheduled"


def test_sandbox_holds_the_demo_data(stack: RunningStack) -> None:
    agents = {agent["public_key"]: agent["name"] for agent in stack.sandbox("show", "agents")}
    assert agents[stack.state["mes_public_key"]] == "MES"
    requests = stack.partner_requests()
    assert {item["status"] for item in requests} >= {"OPEN", "ACCEPTED", "REJECTED"}
    assert all(item["receiving_agent"] == stack.state["mes_public_key"] for item in requests)
    orders = stack.sandbox("show", "orders", "--agent", stack.state["mes_public_key"])
    assert any(order["status"] == "OPEN" for order in orders)


def test_ctrl_c_stops_every_process(stack: RunningStack) -> None:
    stack_json = stack.stack_dir / "stack.json"
    expected = {
        "sandbox",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
    }
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        expected.add("broker")
    assert set(stack.state["services"]) == expected
    started = time.monotonic()
    assert stack.stop() == 0, stack.console()[-3000:]
    print(f"\nstopped in {time.monotonic() - started:.0f} s")
    assert stack.leftovers() == {}
    assert not stack_json.exists()
    assert "Stopped." in stack.console()


def test_second_start_reuses_everything(stack: RunningStack) -> None:
    """Same MES agent and token connection, same ledger, same Airflow history, same admin password."""
    assert stack.process is not None and stack.process.poll() is not None, "runs after the Ctrl-C test"
    first = dict(stack.state)
    password = stack.password
    ledger_before = stack.sandbox("show", "summary")
    started = time.monotonic()
    stack.start()
    print(f"\nsecond start in {time.monotonic() - started:.0f} s")
    try:
        assert stack.state["mes_public_key"] == first["mes_public_key"]
        assert stack.password == password
        assert "already there" in stack.console()
        ledger_after = stack.sandbox("show", "summary")
        assert ledger_after["transactions"] >= ledger_before["transactions"] > 0
        # no second MES agent, no second set of demo requests
        assert ledger_after["agents"] == ledger_before["agents"]
        assert ledger_after["partner_requests"] == ledger_before["partner_requests"]
        runs = stack.api("/dags/blockchain_partner_sync/dagRuns?run_type=scheduled")["dag_runs"]
        assert any(run["state"] == "success" for run in runs), "the first start's runs are gone"
        dags = wait_for_dags(stack)
        assert not [dag_id for dag_id in DAG_IDS if dags[dag_id]["is_paused"]]
    finally:
        assert stack.stop() == 0
    assert stack.leftovers() == {}
