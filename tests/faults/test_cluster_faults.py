"""Brokers of a real Apache Kafka cluster fail under the product: killed, restarted one by one, frozen.

The cases run on a 3-node KRaft cluster of their own (replication factor 3,
``min.insync.replicas=2``), never on the session's broker, since they break it. Each asserts
what became of the data: every request got its own answer or a retryable error, the ledger
holds each effect once, the MES matches the ledger, a day report has its 28 records per unit.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from blockchain_provider import protocol
from blockchain_provider.exceptions import BlockchainBrokerError, BlockchainTimeoutError
from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook
from gateway_sandbox.broker import DEFAULT_TOPICS, _wait_for_leaders, ensure_topics
from include.day_report_keys import DAY_REPORT_RECORD_TYPE
from local_services.kafka import KafkaCluster
from tests.conftest import apache_kafka_cluster
from tests.faults.conftest import erp_agent, load_dag, read_topics, run_outcome, task_tries

pytestmark = [pytest.mark.broker, pytest.mark.kafka_cluster, pytest.mark.slow]

UNIT = [{"name": "Status", "data_type": "STRING", "dynamic": False}]
#: The records' topic (PROTOCOL.md 3.3: ``BLK_Rec_<record type>``).
UNIT_TOPIC = protocol.record_topic("Unit")
DAY = date(2026, 11, 27)
#: What a caller may meet while a broker fails: retryable, and each names topic and broker.
RETRYABLE = (BlockchainBrokerError, BlockchainTimeoutError)


@pytest.fixture(scope="module")
def cluster() -> Iterator[KafkaCluster]:
    cluster = apache_kafka_cluster(3)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def healthy(cluster: KafkaCluster) -> Iterator[KafkaCluster]:
    """The cluster with every node running before a case, and again after it, whatever it did."""

    def heal() -> None:
        for node in cluster.nodes:
            if node.pid is not None:
                cluster.resume(node.node_id)
        for node in cluster.nodes:
            if node.pid is None:
                cluster.start_node(node.node_id)
        cluster.wait_ready()

    heal()
    yield cluster
    heal()


def create_topics_led_by(cluster: KafkaCluster, prefix: str, leader: int, led: tuple[str, ...]) -> None:
    """The stack's topics, *led* ones with *leader* as their preferred (and so first) leader."""
    others = [n.node_id for n in cluster.nodes if n.node_id != leader]
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers})
    new = [NewTopic(prefix + name, num_partitions=1, replica_assignment=[[leader, *others]]) for name in led]
    for future in admin.create_topics(new, operation_timeout=30).values():
        future.result()
    _wait_for_leaders(cluster.bootstrap_servers, [(prefix + name, 0) for name in led])
    ensure_topics(cluster.bootstrap_servers, [prefix + name for name in (*DEFAULT_TOPICS, UNIT_TOPIC)])
    for name in led:
        assert cluster.leader(prefix + name) == leader


def partner_requests(ledger: Any, receiver: str, n: int) -> list[str]:
    """Make *n* OPEN partner requests to *receiver*, each from an ERP agent of its own (an agent
    has one open request to another at a time). The ERP agents' passwords are never checked, so
    they are hashed at a trivial cost."""
    from gateway_sandbox import crypto

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(crypto, "SCRYPT_N", 2)
        return [
            ledger.create_partner_request(erp_agent(ledger, f"ERP {secrets.token_hex(6)}"), receiver)
            for _ in range(n)
        ]


def with_retries(action: Callable[[], Any], errors: list[BaseException], tries: int = 6) -> Any:
    """Call *action* until it returns; each failure must be a retryable error naming its topic."""
    for attempt in range(tries):
        try:
            return action()
        except RETRYABLE as exc:
            assert "BLK_" in str(exc), f"the error does not name its topic: {exc}"
            errors.append(exc)
            if attempt == tries - 1:
                raise
            time.sleep(1)
    raise AssertionError("unreachable")


def test_killing_the_leader_of_blk_res_and_blk_part_lst_loses_and_duplicates_nothing(make_stack, healthy):
    """500 sequential requests (250 record creations on BLK_Rec_Unit, 250 one-item pages of
    BLK_Part_Lst); halfway through, SIGKILL of the node leading BLK_Res and BLK_Part_Lst."""
    cluster = healthy
    prefix = f"k{time.monotonic_ns() % 10**8}_"
    victim = cluster.nodes[1].node_id
    create_topics_led_by(cluster, prefix, victim, ("BLK_Res", "BLK_Part_Lst"))
    stack = make_stack(bootstrap=cluster.bootstrap_servers, prefix=prefix, echo=True, timeout=30)
    with stack.ledger() as ledger:
        partners = partner_requests(ledger, stack.mes_public_key, 25)
        ledger.create_record_type(stack.mes_public_key, "Unit", UNIT)
    record_ids = [f"K{i:04d}" for i in range(250)]

    done = {"count": 0}
    killed: list[float] = []

    def killer() -> None:
        while done["count"] < 250:
            time.sleep(0.005)
        cluster.kill(victim)  # while request 251 is in flight
        killed.append(time.monotonic())

    errors: list[BaseException] = []
    answers: list[Any] = []
    calls_per_record: Counter[str] = Counter()
    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    with KafkaBlockchainHook() as hook:
        for i in range(500):
            k = i // 2
            if i % 2 == 0:
                record_id = record_ids[k]

                def create(record_id: str = record_id) -> Any:
                    calls_per_record[record_id] += 1
                    return hook.client.call(
                        protocol.record_create_call(
                            record_id, "Unit", f"Unit {record_id}", {"Status": f"S-{record_id}"}
                        )
                    )

                outcome = with_retries(create, errors)
                # its own answer: created, or (when an earlier try was applied and its answer came
                # too late) the same record found identical
                assert outcome.value in (
                    f"record {record_id} created",
                    f"record {record_id} exists with identical values",
                )
            else:
                start = k % len(partners)
                page = with_retries(lambda start=start: hook.list_partner_requests(start, 1), errors)
                assert [item["partner_request_id"] for item in page] == [partners[start]]
                outcome = page
            answers.append(outcome)
            done["count"] = i + 1
    thread.join(30)
    assert killed, "the leader was never killed"
    assert len(answers) == 500
    new_leaders = {cluster.leader(prefix + name, other_than=victim) for name in ("BLK_Res", "BLK_Part_Lst")}
    assert victim not in new_leaders

    # the ledger: every record once (0 lost), each created by one transaction (0 duplicated)
    with stack.ledger() as ledger:
        assert ledger.count_records("Unit") == 250
        for record_id in record_ids:
            record = ledger.record(record_id)
            assert record["properties"] == {"Status": f"S-{record_id}"}
            assert len(record["transaction_ids"]) == 1, record_id
        assert ledger.verify() == []
    # the request topic: each creation at least once and at most as often as the caller sent it
    # (a try whose delivery failed wrote nothing): none duplicated by the producer's retries
    # across the failover (idempotent producer)
    sent: Counter[str] = Counter()
    for seen in read_topics(cluster.bootstrap_servers, [prefix + UNIT_TOPIC], timeout=60):
        found = re.search(rb"K\d{4}", seen.value or b"")
        assert found, seen.value
        sent[found.group().decode()] += 1
    assert sorted(sent) == record_ids
    assert all(sent[rid] <= calls_per_record[rid] for rid in record_ids), {
        rid: (sent[rid], calls_per_record[rid]) for rid in record_ids if sent[rid] > calls_per_record[rid]
    }
    print(f"retryable errors during the failover: {len(errors)}; {Counter(type(e).__name__ for e in errors)}")


def test_a_rolling_restart_of_all_brokers_under_partner_syncs(make_stack, healthy, airflow_db):
    """Each node in turn is stopped (SIGTERM) and started again while partner sync DAG runs go on;
    every run succeeds (retries allowed) and the MES ends up matching the ledger."""
    cluster = healthy
    stack = make_stack(bootstrap=cluster.bootstrap_servers, timeout=20)
    with stack.ledger() as ledger:
        pids = partner_requests(ledger, stack.mes_public_key, 150)

    restarted: list[int] = []

    def rolling_restart() -> None:
        for node in cluster.nodes:
            time.sleep(3)
            cluster.restart(node.node_id)
            restarted.append(node.node_id)

    thread = threading.Thread(target=rolling_restart, daemon=True)
    runs = []
    thread.start()
    try:
        batch = 0
        # two runs at least, however long one takes on a loaded machine
        while thread.is_alive() or len(runs) < 2:
            # the ERP goes on: new requests, some answered elsewhere, between the runs
            with stack.ledger() as ledger:
                for pid in pids[batch * 5 : batch * 5 + 5]:
                    ledger.answer_partner_request(stack.mes_public_key, pid, batch % 2 == 0)
                pids += partner_requests(ledger, stack.mes_public_key, 10)
            batch += 1
            dag = load_dag("blockchain_partner_sync", retries=4, retry_delay=3.0)
            run = dag.test()
            assert run.state == "success", run_outcome(run)
            runs.append(run)
    finally:
        thread.join(300)
    assert restarted == [1, 2, 3]
    assert len(runs) >= 2

    with stack.ledger() as ledger:
        expected = {
            item["partner_request_id"]: item["status"]
            for item in ledger.partner_requests(stack.mes_public_key)
        }
    stored = stack.mes().partner_requests()
    assert len(stored) == len({p.partner_request_id for p in stored}), "a partner request is stored twice"
    assert {p.partner_request_id: p.status for p in stored} == expected
    assert len(expected) == len(pids)
    print(f"{len(runs)} sync runs; tries: {[task_tries(r) for r in runs]}")


def test_a_broker_frozen_for_20_s_during_a_day_report(make_stack, healthy, airflow_db):
    """SIGSTOP of the node leading BLK_Rec for 20 s while the day report DAG writes its records:
    the run completes with exactly 28 records per unit, each written once."""
    from include.mes.db import mes_engine
    from include.sample_data import generate_plant

    cluster = healthy
    prefix = f"d{time.monotonic_ns() % 10**8}_"
    victim = cluster.nodes[2].node_id
    create_topics_led_by(cluster, prefix, victim, ("BLK_Rec",))
    stack = make_stack(bootstrap=cluster.bootstrap_servers, prefix=prefix, timeout=30)
    generate_plant(mes_engine("mes_db"), units=3, weeks=1, end_date=DAY)
    repository = stack.mes()
    reports = repository.day_reports(DAY)
    assert len(reports) == 3

    def written() -> int:
        with stack.ledger() as ledger:
            return ledger.count_records(DAY_REPORT_RECORD_TYPE)

    frozen: list[int] = []

    def freezer() -> None:
        deadline = time.monotonic() + 120
        while written() < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        frozen.append(written())
        cluster.pause(victim)
        try:
            time.sleep(20)
        finally:
            cluster.resume(victim)

    thread = threading.Thread(target=freezer, daemon=True)
    thread.start()
    try:
        dag = load_dag("blockchain_day_report", retries=4, retry_delay=3.0)
        run = dag.test(run_conf={"day": DAY.isoformat()})
    finally:
        thread.join(60)
    tries = task_tries(run)
    assert run.state == "success", run_outcome(run)
    assert frozen and frozen[0] < 84, f"the broker was frozen after the report ({frozen})"

    stack.assert_day_reports_written_once(reports)
    with stack.ledger() as ledger:
        assert ledger.verify() == []
    assert [len(repository.submitted_record_ids(r.report_id)) for r in reports] == [28, 28, 28]
    print(f"frozen after {frozen[0]} records; tries: {tries}")
