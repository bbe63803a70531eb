"""The common shape of every BLK operator: check arguments, make calls, blocking or deferred.

An operator is a small state machine of calls: :meth:`first_step` gives the first call, and
:meth:`next_step` turns each answer into either the next call or the result. A list walks its
pages this way; "ensure record type" gets, then creates when missing. The same machine runs
in the worker (the default) or, with ``deferrable=True``, sends each call from the worker and
waits for its answer in the triggerer, holding no worker slot while it waits.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator

from blockchain_provider import protocol
from blockchain_provider.exceptions import BlockchainConfigError, BlockchainGatewayError
from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook, Outcome
from blockchain_provider.triggers.await_response import AwaitResponseTrigger


@dataclass
class Step:
    """The next call to make, and the JSON-serialisable state to resume with."""

    call: protocol.Call
    state: dict[str, Any] = field(default_factory=dict)


@dataclass
class Done:
    """The operator's result (pushed as its XCom return value)."""

    value: Any


def is_template(value: Any) -> bool:
    """Whether *value* is still a Jinja template, checked only after rendering."""
    return isinstance(value, str) and "{{" in value


def parse_decision(value: Any, what: str = "decision") -> bool:
    """``True``/``"accept"``/``1`` → accept, ``False``/``"reject"``/``0`` → reject, else raise."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("accept", "reject"):
        return value.strip().lower() == "accept"
    raise BlockchainConfigError(f"Invalid {what} {value!r}: expected 'accept' or 'reject'")


class BaseBlockchainOperator(BaseOperator):
    """Base of the BLK operators.

    :param kafka_config_id: the ``kafka`` connection, defaults to ``kafka_default``.
    :param token_conn_id: the ``blockchain_token`` connection, defaults to ``blockchain_master``.
    :param response_timeout: seconds to wait for each answer; defaults to the connection's (30).
    :param deferrable: wait for answers in the triggerer instead of the worker, defaults to False.
    """

    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        kafka_config_id: str = "kafka_default",
        token_conn_id: str = "blockchain_master",
        response_timeout: float | None = None,
        deferrable: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if response_timeout is not None and response_timeout <= 0:
            raise BlockchainConfigError(f"response_timeout must be positive, not {response_timeout!r}")
        self.kafka_config_id = kafka_config_id
        self.token_conn_id = token_conn_id
        self.response_timeout = response_timeout
        self.deferrable = deferrable

    @cached_property
    def hook(self) -> KafkaBlockchainHook:
        return KafkaBlockchainHook(self.kafka_config_id, self.token_conn_id, timeout=self.response_timeout)

    # ----------------------------------------------------------- to implement
    def first_step(self, context: Mapping[str, Any]) -> Step:
        raise NotImplementedError

    def next_step(
        self, state: dict[str, Any], outcome: Outcome | None, error: BlockchainGatewayError | None
    ) -> Step | Done:
        """By default the first answer is the result, and a refusal fails the task."""
        if error is not None:
            raise error
        assert outcome is not None
        return Done(outcome.value)

    # --------------------------------------------------------------- running
    def execute(self, context: Mapping[str, Any]) -> Any:
        step = self.first_step(context)
        if self.deferrable:
            return self._defer(step)
        try:
            while True:
                try:
                    outcome, error = self.hook.call(step.call), None
                except BlockchainGatewayError as exc:
                    outcome, error = None, exc
                result = self.next_step(step.state, outcome, error)
                if isinstance(result, Done):
                    return result.value
                step = result
        finally:
            self.hook.close()

    def _defer(self, step: Step) -> None:
        try:
            pending = self.hook.send(step.call)
        finally:
            self.hook.close()
        trigger = AwaitResponseTrigger(
            topic=pending.topic,
            request_id=pending.request_id,
            response_topic=pending.response_topic,
            start_offsets=pending.start_offsets,
            deadline=pending.deadline,
            by_request_id_only=pending.by_request_id_only,
            expect=pending.expect,
            late_answer_grace=pending.late_answer_grace,
            token_conn_id=self.token_conn_id,
            kafka_config_id=self.kafka_config_id,
        )
        wait = max(1.0, pending.deadline - time.time()) + pending.late_answer_grace + 60
        self.defer(
            trigger=trigger,
            method_name="execute_complete",
            kwargs={"state": step.state},
            timeout=timedelta(seconds=wait),
        )

    def execute_complete(
        self,
        context: Mapping[str, Any],
        event: dict[str, Any] | None = None,
        state: dict[str, Any] | None = None,
    ) -> Any:
        """Resume after the trigger's event: finish, or send the next call and defer again."""
        if event is None:
            raise BlockchainConfigError("The trigger ended without an event")
        try:
            outcome, error = self.hook.outcome_from_event(event), None
        except BlockchainGatewayError as exc:
            outcome, error = None, exc
        result = self.next_step(state or {}, outcome, error)
        if isinstance(result, Done):
            return result.value
        return self._defer(result)


class BaseListOperator(BaseBlockchainOperator):
    """Read every page of a list topic; return the items, or a summary with counts.

    :param page_size: items per request, defaults to 100.
    :param summary: return ``{"count", "by_status"}`` instead of the items, defaults to False.
    """

    list_topic: str = ""
    template_fields = ("page_size",)

    def __init__(self, *, page_size: int = 100, summary: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        protocol.list_call(self.list_topic, 0, page_size)  # validates page_size early
        self.page_size = page_size
        self.summary = summary

    def first_step(self, context: Mapping[str, Any]) -> Step:
        return Step(protocol.list_call(self.list_topic, 0, int(self.page_size)), {"start": 0, "items": []})

    def next_step(
        self, state: dict[str, Any], outcome: Outcome | None, error: BlockchainGatewayError | None
    ) -> Step | Done:
        if error is not None:
            raise error
        assert outcome is not None
        page = outcome.value
        if not isinstance(page, list):
            raise BlockchainConfigError(f"{outcome.topic} answered {type(page).__name__}, not a list")
        items = [*state["items"], *page]
        self.log.info("%s: %d item(s) from position %d", outcome.topic, len(page), state["start"])
        # only an empty page ends the list: a gateway may cap its pages below page_size
        start = protocol.next_start(state["start"], len(page))
        if start is None:
            return Done(self._result(items))
        return Step(
            protocol.list_call(self.list_topic, start, int(self.page_size)), {"start": start, "items": items}
        )

    def _result(self, items: list[dict[str, Any]]) -> Any:
        if not self.summary:
            return items
        by_status: dict[str, int] = {}
        for item in items:
            status = str(item.get("status"))
            by_status[status] = by_status.get(status, 0) + 1
        return {"count": len(items), "by_status": by_status}


class BaseAnswerOperator(BaseBlockchainOperator):
    """Accept or reject one request by id.

    :param request_id: the partner request or order id (32 hex); templated.
    :param decision: ``"accept"``/``"reject"`` or a boolean; templated.
    """

    answer_topic: str = ""
    id_name: str = "request id"
    template_fields = ("request_id", "decision")

    def __init__(self, *, request_id: str, decision: str | bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.request_id = request_id
        self.decision = decision
        if not is_template(request_id):
            protocol.validate_request_id(request_id, self.id_name)
        if not is_template(decision):
            parse_decision(decision)

    def first_step(self, context: Mapping[str, Any]) -> Step:
        accept = parse_decision(self.decision)
        return Step(protocol.answer_call(self.answer_topic, self.request_id, accept))
