"""A gateway that never answers: every wait ends by its deadline, and nothing is left running.

The data side: each timed-out request was sent exactly once (the error names the request id that
is on the topic), nothing is resent behind the caller's back, and a gateway that applies requests
without answering leaves the ledger as a retry expects (an identical record is confirmed, never
duplicated).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from blockchain_provider import protocol
from blockchain_provider.exceptions import BlockchainTimeoutError
from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook
from blockchain_provider.triggers import events
from blockchain_provider.triggers.await_response import AwaitResponsesTrigger
from gateway_sandbox.faults import Faults
from tests.faults.conftest import kafka_client_threads, requests_sent

pytestmark = pytest.mark.broker

TIMEOUT = 1.0
#: Only a hang guard, far above TIMEOUT so that no loaded machine reaches it. That a wait ends by
#: its own deadline shows in what happened: the error names the deadline it kept (``timeout``), and
#: the counts of requests sent show that nothing was sent, or waited for, after it.
HANG = 30 * TIMEOUT

ITEM_ID = "ab" * 16
UNIT_TYPE = [{"name": "Status", "data_type": "STRING", "dynamic": True}]

#: One call of every kind the hook offers, with the request topic it writes to.
CALLS: list[tuple[str, str, Callable[[KafkaBlockchainHook], object]]] = [
    ("request", "BLK_Part_Lst", lambda h: h.request("BLK_Part_Lst", header={"start": 0, "limit": 1})),
    ("call", "BLK_Rty_Get", lambda h: h.client.call(protocol.record_type_get_call("Unit"))),
    ("list_partner_requests", "BLK_Part_Lst", lambda h: h.list_partner_requests()),
    ("iter_partner_requests", "BLK_Part_Lst", lambda h: list(h.iter_partner_requests())),
    ("list_order_requests", "BLK_Act_Lst", lambda h: h.list_order_requests()),
    ("iter_order_requests", "BLK_Act_Lst", lambda h: list(h.iter_order_requests())),
    ("answer_partner_request", "BLK_Part_Ans", lambda h: h.answer_partner_request(ITEM_ID, True)),
    ("answer_order_request", "BLK_Act_Ans", lambda h: h.answer_order_request(ITEM_ID, False)),
    ("get_record_type", "BLK_Rty_Get", lambda h: h.get_record_type("Unit")),
    ("create_record_type", "BLK_Rty", lambda h: h.create_record_type("Unit", "Units", UNIT_TYPE)),
    ("get_record", "BLK_Rec_Get", lambda h: h.get_record("PU_PT10")),
    (
        "create_record",
        "BLK_Rec_Unit",
        lambda h: h.create_record("PU_PT10", "Unit", "PT10", {"Status": "IDLE"}),
    ),
    (
        "create_dynamic_record",
        "BLK_Rec_Unit",
        lambda h: h.create_dynamic_record("PU_PT11", "Unit", "PT11", {"Status": "IDLE"}, "p" * 20),
    ),
    ("update_record", "BLK_Rec_Unit", lambda h: h.update_record("Unit", "PU_PT10", {"Status": "RUNNING"})),
    ("create_agent", "BLK_Agt", lambda h: h.create_agent("ERP", "a-long-password")),
    ("get_token", "BLK_Agt", lambda h: h.get_token()),
]


def timed(action: Callable[[], object]) -> tuple[BlockchainTimeoutError, float]:
    started = time.monotonic()
    with pytest.raises(BlockchainTimeoutError) as info:
        action()
    return info.value, time.monotonic() - started


def blk_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("blk-")]


@pytest.mark.parametrize("echo", [False, True], ids=["echo-off", "echo-on"])
def test_every_wait_ends_by_its_deadline_and_leaves_nothing_behind(make_stack, echo):
    # topics, no gateway; no grace period for late answers: each call here times out on its own
    stack = make_stack(echo=echo, timeout=TIMEOUT, serve=False, late_answer_grace=0)
    clients_before = kafka_client_threads()
    errors: dict[str, BlockchainTimeoutError] = {}

    with KafkaBlockchainHook() as hook:
        for name, topic, call in CALLS:
            error, elapsed = timed(lambda call=call: call(hook))
            assert TIMEOUT <= elapsed < HANG, f"{name} waited {elapsed:.2f} s"
            assert error.timeout == TIMEOUT, name
            assert error.topic == stack.topic(topic)
            assert error.request_id in str(error) and stack.topic(topic) in str(error)
            errors[name] = error
        assert hook._reader.waiting() == 0  # no waiter left registered

        # 40 calls at once: pipelined with echo, one by one without; either way the first
        # timeout ends the batch, and no call is sent after the caller has given up.
        batch = [protocol.record_get_call(f"R{i}") for i in range(40)]
        error, elapsed = timed(lambda: hook.client.call_many(batch, max_in_flight=16))
        assert elapsed < HANG, f"call_many waited {elapsed:.2f} s"
        assert error.timeout == TIMEOUT
        batch_sent = len(requests_sent(stack)["BLK_Rec_Get"]) - 1  # the get_record call above
        assert 1 <= batch_sent <= (16 if echo else 1)

        # Concurrent callers with one token: without echo they queue for the token; each one's
        # wait, queueing included, still ends by its own deadline.
        with ThreadPoolExecutor(5) as pool:
            concurrent = list(pool.map(lambda _: timed(hook.list_partner_requests), range(5)))
        waits = [round(elapsed, 2) for _, elapsed in concurrent]
        assert max(waits) < HANG, f"concurrent waits: {waits}"
        assert {error.timeout for error, _ in concurrent} == {TIMEOUT}
        assert hook._reader.waiting() == 0
        concurrent_sent = [error.request_id for error, _ in concurrent if error.request_id != "(not sent)"]
        # with echo all five are in flight at once; without, each waits for the one before it, so
        # within one deadline a second can only start as the first gives up
        assert len(concurrent_sent) == 5 if echo else 1 <= len(concurrent_sent) <= 2

    # closed: no reader thread, no pool thread, no Kafka client of the hook's
    assert blk_threads() == []
    assert kafka_client_threads() == clients_before

    # A deferred task's wait (the trigger, in the triggerer) ends by its deadline too.
    with KafkaBlockchainHook() as hook:
        pending = hook.client.send(protocol.list_call(protocol.ORDER_LIST, 0, 10))
    trigger = AwaitResponsesTrigger.for_pending([pending])
    started = time.monotonic()
    event = asyncio.run(first_event(trigger))
    elapsed = time.monotonic() - started
    _resume, (silent,) = events.results(event.payload)
    assert isinstance(silent, BlockchainTimeoutError)
    assert silent.request_id == pending.request_id
    assert elapsed < HANG
    assert kafka_client_threads() == clients_before

    # Every timed-out request was sent exactly once, under the id its error names.
    sent = requests_sent(stack)
    keys = {s.key.decode() for messages in sent.values() for s in messages}
    for name, error in errors.items():
        assert error.request_id in keys, name
    assert set(concurrent_sent) <= keys
    assert len(sent["BLK_Agt"]) == 2
    assert len(sent["BLK_Part_Ans"]) == len(sent["BLK_Act_Ans"]) == 1
    assert len(sent["BLK_Rty"]) == 1
    assert len(sent["BLK_Rty_Get"]) == 2
    assert len(sent["BLK_Rec_Unit"]) == 3
    assert len(sent["BLK_Act_Lst"]) == 3  # two lists and the deferred one
    assert len(sent["BLK_Part_Lst"]) == 3 + len(concurrent_sent)


async def first_event(trigger: AwaitResponsesTrigger):
    try:
        async for event in trigger.run():
            return event
    finally:
        await trigger.cleanup()


def test_a_gateway_that_applies_without_answering_leaves_a_retry_nothing_to_duplicate(make_stack):
    # the dropped answer never comes: no grace period to wait out before the retry
    stack = make_stack(echo=False, timeout=TIMEOUT, faults=Faults(drop_rate=1.0, seed=7), late_answer_grace=0)
    with stack.ledger() as ledger:
        ledger.create_record_type(stack.mes_public_key, "Unit", UNIT_TYPE)

    with KafkaBlockchainHook() as hook:
        error, elapsed = timed(lambda: hook.create_record("PU_PT10", "Unit", "PT10", {"Status": "IDLE"}))
        assert elapsed < HANG
        assert error.timeout == TIMEOUT
        assert error.topic == stack.topic("BLK_Rec_Unit")
        # the gateway applied it: a timeout says "no answer", never "not done"
        with stack.ledger() as ledger:
            assert ledger.record("PU_PT10")["properties"] == {"Status": "IDLE"}

        stack.server.faults = Faults()  # the gateway answers again
        assert hook.create_record("PU_PT10", "Unit", "PT10", {"Status": "IDLE"})  # identical: confirmed
        assert hook.get_record("PU_PT10")["properties"] == {"Status": "IDLE"}

    with stack.ledger() as ledger:
        record = ledger.record("PU_PT10")
        assert len(record["transaction_ids"]) == 1  # created once, not twice
        assert ledger.count_records("Unit") == 1
        assert ledger.verify() == []
    assert stack.server.counters["fault_drop"] == 1
