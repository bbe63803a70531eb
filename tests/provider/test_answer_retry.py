"""The answer task is retry-safe: a retry reads the request's status before sending anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from blockchain_provider.exceptions import BlockchainTimeoutError
from local_services.responder import ScriptedResponder
from tests.operator_runs import dag_task, run_operator, task_context
from tests.provider.environments import reconnect
from tests.provider.test_hook import partner

ROOT = Path(__file__).resolve().parents[2]
PID = f"{1:032x}"


class Gateway:
    """One partner request; answers may be applied without an answer (a lost reply)."""

    def __init__(self, status: str = "OPEN", answer_silently: bool = False):
        self.status = status
        self.answer_silently = answer_silently
        self.answers = 0

    def __call__(self, topic, header, body):
        if topic == "BLK_Part_Lst":
            items = [partner(1, self.status)]
            return {"data": items[header["start"] :][: header["limit"]]}
        if topic == "BLK_Part_Ans":
            self.answers += 1
            if self.status != "OPEN":
                return {"error": f"partner request {body['id']} is already {self.status}"}
            self.status = "ACCEPTED" if body["response"] else "REJECTED"
            return None if self.answer_silently else {"message": f"{body['id']} {self.status}"}
        raise AssertionError(topic)


@pytest.fixture
def short_timeout(gateway_env, monkeypatch):
    reconnect(monkeypatch, gateway_env, timeout=2, late_answer_grace=0)
    return gateway_env


def test_a_retry_after_a_lost_reply_finds_our_decision_and_succeeds(short_timeout):
    """The answer DAG's task: its first try is applied but its reply is lost; the retry reads the
    status, finds our decision and succeeds without sending it again. (What a retry does with
    each status it may find is in test_operators.py.)"""
    gateway = Gateway(answer_silently=True)
    params = {"request_id": PID, "decision": "accept"}
    with ScriptedResponder(short_timeout.bootstrap, short_timeout.prefix, gateway):
        for try_number in (1, 2):
            context = task_context(try_number=try_number, params=params)
            task = dag_task("blockchain_partner_answer", "answer_partner_request")
            task.render_template_fields(context)
            if try_number == 1:
                with pytest.raises(BlockchainTimeoutError):
                    run_operator(task, context)
            else:
                message = run_operator(task, context)
    assert gateway.answers == 1  # not sent again
    assert message == f"{PID} already ACCEPTED (applied by an earlier try)"


def test_the_answer_task_has_the_retries_of_every_task():
    from airflow.dag_processing.dagbag import DagBag
    from blockchain_common import default_args

    dags = DagBag(str(ROOT / "dags")).dags
    for kind in ("partner", "order"):
        task = dags[f"blockchain_{kind}_answer"].get_task(f"answer_{kind}_request")
        assert task.retries == default_args()["retries"] > 0


class HostileGateway(Gateway):
    """Its confirmation holds a line break and terminal escapes."""

    def __call__(self, topic, header, body):
        answer = super().__call__(topic, header, body)
        if topic == "BLK_Part_Ans":
            return {"message": "done\nFORGED-LOG-LINE: all good\x1b]0;pwned\x07"}
        return answer


def test_the_gateway_confirmation_is_quoted_escaped_in_the_task_log(short_timeout, capsys):
    params = {"request_id": PID, "decision": "accept"}
    with ScriptedResponder(short_timeout.bootstrap, short_timeout.prefix, HostileGateway()):
        context = task_context(params=params)
        task = dag_task("blockchain_partner_answer", "answer_partner_request")
        task.render_template_fields(context)
        run_operator(task, context)
    log = capsys.readouterr().out  # the task logger writes the task log's lines there
    assert "\x1b" not in log and "\x07" not in log
    assert not any(line.startswith("FORGED") for line in log.splitlines())
    assert "answered: done FORGED-LOG-LINE: all good\\x1b]0;pwned\\x07" in log
