"""A kind of request the project does not have, declared in the test tree (tests/third_kind.py) the
way the README's "Adding a request kind" tells a deployment to: its sync and its answer run as
the partner and order DAGs do, against a real broker and a gateway that answers in its own time."""

from __future__ import annotations

import threading
import time
from typing import Any

from local_services.responder import ScriptedResponder
from tests.dags.conftest import task_states
from tests.third_kind import QUOTE, use_quote_kind, write_quote_dags

#: Seconds the scripted gateway takes for every answer, so that waits are deferred.
ANSWER_DELAY = 2.0


class QuoteGateway:
    """The quote topics of a gateway: lists its quotes page by page, accepts or rejects one."""

    def __init__(self, quotes: list[dict[str, Any]]) -> None:
        self.quotes = {quote["quote_request_id"]: quote for quote in quotes}
        self.answers: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, topic: str, header: dict[str, Any], body: dict[str, Any] | None) -> dict[str, Any]:
        time.sleep(ANSWER_DELAY)
        with self._lock:
            if topic == QUOTE.list_topic:
                items = list(self.quotes.values())
                return {"data": items[header["start"] : header["start"] + header["limit"]]}
            assert topic == QUOTE.answer_topic and body is not None
            self.answers.append(body)
            quote = self.quotes.get(body["id"])
            if quote is None or quote["status"] != "OPEN":
                return {"error": f"quote request {body['id']} cannot be answered"}
            quote.update(
                status="ACCEPTED" if body["response"] == 1 else "REJECTED", answer_timestamp=1_700_000_100
            )
            return {"message": f"quote request {body['id']} answered"}


def quote(n: int, receiver: str, issuer: str, status: str = "OPEN") -> dict[str, Any]:
    return {
        "quote_request_id": f"{n:032x}",
        "issuing_agent": issuer,
        "receiving_agent": receiver,
        "status": status,
        "timestamp": 1_700_000_000 + n,
        "answer_timestamp": 0,
        "transaction_ids": [],
        "product": f"Steering wheel, model {n}",
    }


def test_a_third_kind_declared_in_the_tests_is_synced_and_answered(stack, monkeypatch, tmp_path):
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    mes = stack.mes()
    use_quote_kind(monkeypatch, mes.engine, stack.prefix)
    erp = "03" + "e1" * 32
    gateway = QuoteGateway(
        [
            quote(1, stack.mes_public_key, erp),
            quote(2, stack.mes_public_key, erp, "REJECTED"),
            quote(3, "02" + "c3" * 32, erp),  # addressed to another MES
        ]
    )
    dags = DagBag(str(write_quote_dags(tmp_path / "dags")))
    assert not dags.import_errors
    # stored as the DAG processor stores them (in the bundle of dags/), for dag.test() to run
    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(dags, "dags-folder", None)
    topics = (QUOTE.list_topic, QUOTE.answer_topic)
    with ScriptedResponder(stack.bootstrap, stack.prefix, gateway, topics=topics):
        synced = dags.dags["blockchain_quote_sync"].test()
        assert synced.state == "success", task_states(synced)
        stored = {item.quote_request_id: item for item in mes.requests("quote")}
        assert {i: (item.status, item.product) for i, item in stored.items()} == {
            f"{n:032x}": (gateway.quotes[f"{n:032x}"]["status"], f"Steering wheel, model {n}")
            for n in (1, 2, 3)
        }
        # two quotes were new and OPEN: announced (the alert's line is tests/include/test_request_alerts.py's)
        assert synced.get_task_instance("announce_new_open_quote_requests").state == "success"

        answer = dags.dags["blockchain_quote_answer"]
        refused = answer.test(run_conf={"request_id": f"{3:032x}", "decision": "accept"})
        assert task_states(refused)["answer_quote_request"] == "upstream_failed"  # not addressed to us
        accepted = answer.test(run_conf={"request_id": f"{1:032x}", "decision": "accept"})
        assert accepted.state == "success", task_states(accepted)
    assert gateway.answers == [{"id": f"{1:032x}", "response": 1}]
    assert gateway.quotes[f"{1:032x}"]["status"] == "ACCEPTED"
    assert mes.request("quote", f"{1:032x}").status == "ACCEPTED"  # refreshed in the MES
