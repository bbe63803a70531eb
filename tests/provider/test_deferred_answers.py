"""A deferred wait, against a real broker and a gateway that answers 2 s late: its trigger event
carries no gateway data, the task reads the answer back from the topic, and poisoned items and
hostile messages are set aside as on the worker's path."""

from __future__ import annotations

import json
import time

import pytest
import sqlalchemy as sa
from confluent_kafka import Producer

from blockchain_provider.operators import ListOrderRequestsOperator
from blockchain_provider.triggers import events
from include.mes.repository import MesRepository
from local_services.responder import ScriptedResponder
from tests.operator_runs import dag_task, run_operator, task_context
from tests.provider.conftest import set_connections
from tests.provider.test_hook import paging_handler
from tests.provider.test_poisoned_items import order

pytestmark = pytest.mark.broker

#: The gateway answers each request this late: the deferred path is the one walked.
LATE = 2.0


def late(_producer, _topic, _header) -> None:
    time.sleep(LATE)


def test_a_deferred_sync_stores_the_good_orders_and_sets_the_poisoned_ones_aside(
    gateway_env, tmp_path, monkeypatch
):
    mes_path = tmp_path / "mes.sqlite3"
    monkeypatch.setenv("AIRFLOW_CONN_MES_DB", json.dumps({"conn_type": "sqlite", "host": str(mes_path)}))
    repository = MesRepository(sa.create_engine(f"sqlite:///{mes_path}"))
    repository.create_schema()
    items = [order(i, description=f"{i:04d} " + "x" * 1019) for i in range(1, 601)]
    items[99]["description"] = "NUL \x00 here"
    items[399]["description"] = "lone \ud800 surrogate"
    triggers: list = []
    sizes: list[int] = []
    with ScriptedResponder(
        gateway_env.bootstrap,
        gateway_env.prefix,
        paging_handler(items),
        before=late,
    ):
        task = dag_task("blockchain_order_sync", "sync_order_requests")
        assert task.deferrable
        summary = run_operator(task, task_context(), triggers, sizes)
    assert (summary["inserted"], summary["rejected"]) == (598, 2)
    assert len(triggers) == 3  # two pages of 500 and the empty page that ends the list, each deferred
    assert max(sizes) < events.MAX_EVENT_BYTES, sizes
    assert sorted(r["item_id"] for r in repository.rejected_items("order")) == [f"{100:032x}", f"{400:032x}"]
    assert len(repository.order_requests()) == 598


#: A Python-literal answer to our token of about 1 MiB: under the broker's message limit, over
#: the reader's literal cap.
HUGE = 1_000_000


def hostile_messages(token: str, request_id: str | None) -> list[bytes]:
    """Messages written to ``BLK_Res`` in front of an answer, each holding the request's token or
    id, so that each is read and matched."""
    rid = request_id or "9df8888dea6df991f86e0e61b2379e46"
    # a megabyte literal only a literal parser reads (a tuple): without echo, a plain one holding
    # the token is an answer like any other
    huge = json.dumps(repr([{"auth": token}, {"data": [("x" * HUGE,)]}])).encode()
    assert HUGE < len(huge) < 1024 * 1024
    return [
        json.dumps([{"auth": "\ud800" + token}, {"data": []}]).encode(),  # a lone surrogate auth
        json.dumps([{"auth": token, "request_id": rid + "\ud800"}, {"data": []}]).encode(),
        json.dumps([{"auth": token + "\x00"}, {"data": ["\x00"]}]).encode(),  # a NUL
        b"\xff\xfe" + token.encode() + rid.encode(),  # invalid UTF-8
        huge,
    ]


@pytest.mark.parametrize("echo", [False, True])
def test_hostile_messages_in_front_of_the_answer_do_not_end_a_deferred_wait(gateway_env, monkeypatch, echo):
    if echo:
        env = gateway_env
        set_connections(monkeypatch, env.bootstrap, env.prefix, env.token, echo_request_id=True)
    items = [order(1), order(2)]

    # the responder's producer keeps librdkafka's 1,000,000-byte limit: this one takes the literal
    producer = Producer({"bootstrap.servers": gateway_env.bootstrap, "message.max.bytes": 1024 * 1024})

    def noise(_producer, topic, header) -> None:
        for value in hostile_messages(header["auth"], header.get("request_id")):
            producer.produce(topic, value)
        assert producer.flush(10) == 0
        time.sleep(LATE)

    kept: list = []
    sizes: list[int] = []
    with ScriptedResponder(
        gateway_env.bootstrap, gateway_env.prefix, paging_handler(items), echo=echo, before=noise
    ):
        operator = ListOrderRequestsOperator(
            task_id="lo", deferrable=True, apply_function_batch=lambda page, _ctx: kept.extend(page)
        )
        summary = run_operator(operator, task_context(), event_sizes=sizes)
    assert summary["count"] == 2
    assert kept == items
    assert len(sizes) == 2  # the page and the empty page, both deferred
