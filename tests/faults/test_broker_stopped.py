"""The broker stops while a sync DAG runs; the task fails naming it; once it is back, a retry completes.

The broker is a dedicated tansu on a fixed port, stopped and started again on that port. tansu
keeps topics in memory, so a restarted broker has none: they are created again, as an operator
would. A running sandbox does not notice that the topics it reads started again from offset 0 (it
waits at its old offsets), so it is restarted too, on the same ledger; at start it sees that its
stored offsets are gone from the broker and reads the topics from their beginning. The check is on
the data: after the retry, the MES holds exactly the ledger's orders, each once, with the ledger's
status.
"""

from __future__ import annotations

import math
import time

import pytest
from blockchain_common.factories import SYNC_PAGE_SIZE

from blockchain_provider.exceptions import BlockchainBrokerError
from blockchain_provider.hooks import kafka_blockchain
from gateway_sandbox.broker import DEFAULT_TOPICS, TansuBroker, ensure_topics, free_port
from tests.faults.conftest import erp_agent, load_dag, task_tries
from tests.operator_runs import dag_task, run_operator

# tansu's in-memory topics are what this case meets: the tansu pass of `make test`.
pytestmark = [pytest.mark.broker, pytest.mark.airflow_db, pytest.mark.slow, pytest.mark.tansu]


def mes_orders(stack) -> dict[str, str]:
    orders = stack.mes().order_requests()
    ids = [order.abs_action_id for order in orders]
    assert len(ids) == len(set(ids)), "an order is stored twice"
    return {order.abs_action_id: order.status for order in orders}


def ledger_orders(stack) -> dict[str, str]:
    with stack.ledger() as ledger:
        return {item["abs_action_id"]: item["status"] for item in ledger.orders(stack.mes_public_key)}


def test_a_sync_fails_naming_the_stopped_broker_and_its_retry_completes(
    make_stack, airflow_db, tmp_path, monkeypatch
):
    broker = TansuBroker(port=free_port(), log_path=tmp_path / "tansu.log").start()
    try:
        stack = make_stack(bootstrap=broker.bootstrap_servers, timeout=10)
        with stack.ledger() as ledger:
            partner = erp_agent(ledger, "Partner")
            pid = ledger.create_partner_request(partner, stack.mes_public_key)
            ledger.answer_partner_request(stack.mes_public_key, pid, True)
            first_orders = [
                ledger.create_order(partner, stack.mes_public_key, "part", f"Order {i}", {"Size": i})
                for i in range(150)
            ]
        # a first sync, before the fault: the sync DAG's task
        assert run_operator(dag_task("blockchain_order_sync", "sync_order_requests"))["inserted"] == 150
        assert mes_orders(stack) == ledger_orders(stack)

        broker.stop()
        # While the broker is down the ERP goes on: new orders, and some answered elsewhere.
        with stack.ledger() as ledger:
            for order_id in first_orders[:10]:
                ledger.answer_order(stack.mes_public_key, order_id, True)
            for i in range(120):
                ledger.create_order(partner, stack.mes_public_key, "part", f"Late order {i}", {"Size": i})

        failures: list[BaseException] = []
        restarted: list[float] = []

        def broker_back(context) -> None:
            """on_retry_callback: the try failed and will be retried; the operator restarts the broker."""
            failures.append(context.get("exception"))
            if not restarted:
                broker.start()
                ensure_topics(broker.bootstrap_servers, [stack.prefix + name for name in DEFAULT_TOPICS])
                stack.stop()
                stack.serve()
                restarted.append(time.monotonic())

        # Fail fast: the hook waits this long for the broker before its first request (default 30 s).
        monkeypatch.setattr(kafka_blockchain, "READER_START_TIMEOUT", 5.0)
        dag = load_dag("blockchain_order_sync", retries=2, retry_delay=3.0)
        dag.get_task("sync_order_requests").on_retry_callback = [broker_back]
        run = dag.test()

        tries = task_tries(run)
        assert tries["sync_order_requests"] == ["failed", "success"], tries
        assert run.state == "success"
        (error,) = failures
        assert isinstance(error, BlockchainBrokerError)
        assert broker.bootstrap_servers in str(error)

        # the data: every order of the ledger, once, with the ledger's status
        expected = ledger_orders(stack)
        assert len(expected) == 270
        assert mes_orders(stack) == expected
        assert sum(status == "ACCEPTED" for status in expected.values()) == 10
        # the restarted gateway served the retry from the topics created again
        assert stack.server.running
        # the pages of the 270 orders, and the empty page at 270 that ends the list
        assert stack.server.counters["requests"] == math.ceil(270 / SYNC_PAGE_SIZE) + 1
    finally:
        broker.stop()
