"""The common shape of every BLK operator: check arguments, make calls, blocking or deferred.

An operator is a small state machine of calls: :meth:`~BaseBlockchainOperator.first_step` gives
the first call, and :meth:`~BaseBlockchainOperator.next_step` turns each answer into either the
next call or the result: an answer by way of :meth:`~BaseBlockchainOperator.answered`, a refusal
by way of :meth:`~BaseBlockchainOperator.refused` (which fails the task unless overridden). A
list walks its pages this way; "ensure record type" creates, then reads what the ledger holds
when the creation is refused. The same machine runs in the worker or,
deferred, sends each call from the worker and waits for its answer in the triggerer, holding no
worker slot while it waits. ``deferrable`` defaults to Airflow's ``[operators]
default_deferrable``, as in Airflow's own providers.

What a step carries from one call to the next is resumed from the database: it stays small
(positions, counts, an id), never the items read so far. A task's XCom is a summary too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from typing import Any, NoReturn

from airflow.providers.common.compat.sdk import conf
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException
from airflow.sdk.module_loading import import_string

from blockchain_provider import protocol
from blockchain_provider.answer_matcher import positions_to_primitives
from blockchain_provider.exceptions import (
    BlockchainConfigError,
    BlockchainError,
    BlockchainGatewayError,
    InvalidIdentifierError,
)
from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook
from blockchain_provider.outcomes import AnswerAt, Outcome, PendingRequest
from blockchain_provider.triggers import events
from blockchain_provider.triggers.await_response import AwaitResponsesTrigger

#: At most this many entries of a list an apply function returns are kept in a summary.
SUMMARY_LIST_LIMIT = 20
#: Seconds a deferral may outlast its wait's deadline (and late-answer grace) before Airflow
#: fails it: the trigger reports a timeout itself, this only catches a trigger that never ends.
DEFERRAL_MARGIN = 60.0


def deferral_timeout(deadline: float, late_answer_grace: float) -> timedelta:
    """How long a deferral waiting for answers by *deadline* (seconds since the epoch) may last."""
    return timedelta(seconds=max(1.0, deadline - time.time()) + late_answer_grace + DEFERRAL_MARGIN)


@dataclass
class Step:
    """The next call to make, and the JSON-serialisable state to resume with.

    :param optional: the call is one the gateway may not implement (``BLK_Rty_Get``): a timeout
        or broker error is handed to :meth:`BaseBlockchainOperator.next_step` instead of failing.
    :param timeout: seconds to wait for this call's answer, defaults to the connection's.
    """

    call: protocol.Call
    state: dict[str, Any] = field(default_factory=dict)
    optional: bool = False
    timeout: float | None = None


@dataclass
class Done:
    """The operator's result (pushed as its XCom return value)."""

    value: Any


def is_template(value: Any) -> bool:
    """Whether *value* is only known once the task renders it (a Jinja template, another task's
    output), so it is checked then, not when the DAG is parsed."""
    if isinstance(value, str):
        return "{{" in value
    return not isinstance(value, (int, float, bool)) and value is not None


def seconds_argument(name: str, value: Any) -> float:
    """*value*, an operator's argument *name*, as seconds >= 0; anything else is refused, naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise BlockchainConfigError(f"{name} must be a number of seconds >= 0, not {value!r}")
    return float(value)


def resolve_callable(value: str | Callable[..., Any] | None, what: str) -> Callable[..., Any] | None:
    """*value* itself, or the callable a dotted path (``"package.module.function"``) names."""
    if value is None or callable(value):
        return value
    if isinstance(value, str) and "." in value:
        try:
            found = import_string(value)
        except ImportError as exc:
            raise BlockchainConfigError(f"{what} {value!r} cannot be imported: {exc}") from None
        if callable(found):
            return found
    raise BlockchainConfigError(f"{what} must be a callable or a dotted path to one, not {value!r}")


def merge_summary(total: dict[str, Any], part: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    """Add what an apply function returned for one page to the running summary.

    Numbers are summed; lists are joined, keeping the first :data:`SUMMARY_LIST_LIMIT` entries
    (the summary is an XCom and resume state, so it stays small); anything else is refused.
    """
    if part is None:
        return total
    if not isinstance(part, Mapping):
        raise BlockchainConfigError(f"{what} must return a dict of counts or None, not {type(part).__name__}")
    merged = dict(total)
    for key, value in part.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, list)):
            raise BlockchainConfigError(
                f"{what} returned {key}={value!r:.60}: only numbers and lists are summed"
            )
        if isinstance(value, list):
            merged[key] = [*merged.get(key, []), *value][:SUMMARY_LIST_LIMIT]
        else:
            merged[key] = merged.get(key, 0) + value
    return merged


class BaseBlockchainOperator(BaseOperator):
    """Base of the BLK operators.

    :param kafka_config_id: the ``kafka`` connection, defaults to ``kafka_default``; templated.
    :param token_conn_id: the ``blockchain_token`` connection, defaults to ``blockchain_master``;
        templated.
    :param response_timeout: seconds to wait for each answer; defaults to the connection's (30).
    :param deferrable: wait for answers in the triggerer instead of the worker, defaults to
        ``[operators] default_deferrable`` (False).
    """

    ui_color = "#e8f0fe"
    template_fields: tuple[str, ...] = ("kafka_config_id", "token_conn_id")
    #: Deferrable, seconds :meth:`ask` waits in the worker for an answer before it defers; an
    #: operator that asks takes it as its ``defer_after`` argument.
    defer_after: float = 1.0

    def __init__(
        self,
        *,
        kafka_config_id: str = "kafka_default",
        token_conn_id: str = "blockchain_master",
        response_timeout: float | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
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
    def first_step(self, context: Mapping[str, Any]) -> Step | Done:
        raise NotImplementedError

    def next_step(
        self,
        context: Mapping[str, Any],
        state: dict[str, Any],
        outcome: Outcome | None,
        error: BlockchainError | None,
    ) -> Step | Done:
        """Hand an answer to :meth:`answered`, a refusal to :meth:`refused`.

        *error* is the gateway's refusal, or for an optional step any error of the wait.
        """
        if error is not None:
            return self.refused(context, state, error)
        assert outcome is not None
        return self.answered(context, state, outcome)

    def answered(self, context: Mapping[str, Any], state: dict[str, Any], outcome: Outcome) -> Step | Done:
        """The step after an answer; by default the first answer is the result."""
        return Done(outcome.value)

    def refused(
        self, context: Mapping[str, Any], state: dict[str, Any], error: BlockchainError
    ) -> Step | Done:
        """The step after the gateway's refusal (or an optional step's failed wait); by default
        the task fails with it."""
        raise error

    # --------------------------------------------------------------- running
    def execute(self, context: Mapping[str, Any]) -> Any:
        try:
            step = self.first_step(context)
        except InvalidIdentifierError as exc:
            # a rendered argument out of its format: no retry can fix it, and nothing was sent
            raise AirflowFailException(str(exc)) from None
        if isinstance(step, Done):
            return step.value
        if self.deferrable:
            return self._defer(step)
        try:
            return self.run_steps(context, step, self.hook)
        finally:
            self.hook.close()

    def run_steps(self, context: Mapping[str, Any], step: Step, hook: KafkaBlockchainHook) -> Any:
        """Make *step*'s call and the ones after it with *hook*, waiting in this process; return
        the result. Another operator may run this one's steps inside its own task this way."""
        while True:
            try:
                outcome, error = hook.client.call(step.call, timeout=step.timeout), None
            except BlockchainGatewayError as exc:
                outcome, error = None, exc
            except BlockchainError as exc:
                if not step.optional:
                    raise
                outcome, error = None, exc
            result = self.next_step(context, step.state, outcome, error)
            if isinstance(result, Done):
                return result.value
            step = result

    def _defer(self, step: Step) -> NoReturn:
        try:
            pending = self.hook.client.send(step.call, timeout=step.timeout)
        finally:
            self.hook.close()
        self.defer_for_answers([pending], {"state": step.state, "optional": step.optional})

    def defer_for_answers(
        self,
        pending: list[PendingRequest],
        resume: dict[str, Any],
        reporter_record_id: str | None = None,
    ) -> NoReturn:
        """Hand the wait for the answers to *pending* (sent together) to the triggerer; the task
        resumes in :meth:`execute_complete`, which reads them with :meth:`answers_from`.

        :param resume: what the task resumes with (small: positions, counts, ids); it goes through
            the trigger and comes back in its event, as the deferral's own kwargs are dropped by
            ``airflow dags test``.
        :param reporter_record_id: they were signed by this record's reporter, whose token the
            triggerer reads from the deployment's reporter registry.
        """
        trigger = AwaitResponsesTrigger.for_pending(
            pending,
            token_conn_id=self.token_conn_id,
            kafka_config_id=self.kafka_config_id,
            resume=resume,
            reporter_record_id=reporter_record_id,
        )
        self.log.info("%d request(s) sent, their answers awaited in the triggerer", len(pending))
        self.defer(
            trigger=trigger,
            method_name="execute_complete",
            timeout=deferral_timeout(trigger.deadline, trigger.late_answer_grace),
        )

    def defer_conversation(
        self, calls: list[protocol.Call], pending: PendingRequest, resume: dict[str, Any]
    ) -> NoReturn:
        """Hand a serial conversation to the triggerer: wait for the answer to ``calls[0]``, sent
        by this task as *pending*, then send each of the other *calls* when the answer before it
        has come (:class:`~blockchain_provider.triggers.serial_requests.SerialRequestsTrigger`, at
        most :data:`~blockchain_provider.triggers.serial_requests.MAX_CONVERSATION` calls). The
        task resumes once, in :meth:`execute_complete`, with an answer (or the refusal or timeout)
        for each request sent, in order (:meth:`answers_from`): a conversation ends at its first
        timeout, and what comes after it was not sent.

        :param resume: what the task resumes with (small: counts, ids).
        """
        from blockchain_provider.hooks.kafka_clients import topic_ends
        from blockchain_provider.triggers.serial_requests import SerialRequestsTrigger

        hook = self.hook
        consumer = hook.new_response_consumer()
        try:
            # a restarted trigger finds what it sent past these positions, and sends none again
            ends = topic_ends(consumer, pending.topic, hook.settings.timeout)
        finally:
            consumer.close()
        request_ids = [pending.request_id, *(protocol.new_request_id() for _ in calls[1:])]
        trigger = SerialRequestsTrigger(
            calls=[
                {"topic": call.topic, "header": dict(call.header), "body": call.body, "request_id": rid}
                for call, rid in zip(calls, request_ids, strict=True)
            ],
            response_topic=pending.response_topic,
            start_positions=positions_to_primitives(pending.start_positions),
            request_positions={pending.topic: positions_to_primitives(ends)},
            timeout=pending.deadline - (pending.sent_at or time.time()),
            by_request_id_only=pending.by_request_id_only,
            sent={pending.request_id: pending.sent_at or time.time()},
            token_conn_id=self.token_conn_id,
            kafka_config_id=self.kafka_config_id,
            late_answer_grace=pending.late_answer_grace,
            resume=resume,
        )
        self.log.info(
            "%d request(s) handed to the triggerer, sent one at a time as the answers come", len(calls)
        )
        self.defer(
            trigger=trigger,
            method_name="execute_complete",
            timeout=deferral_timeout(trigger.deadline, 0.0),
        )

    def ask(
        self,
        hook: KafkaBlockchainHook,
        key: str,
        call: protocol.Call,
        state: dict[str, Any],
        token: str | None = None,
        reporter_record_id: str | None = None,
        timeout: float | None = None,
    ) -> Outcome | BlockchainError:
        """Make *call* (signed with *token*, the connection's when ``None``) and return its answer
        or the gateway's refusal. Deferrable, an answer not come within the operator's
        ``defer_after`` seconds defers the task to ``execute_complete`` (resumed with *state*, and
        the answer under *key*: :func:`answer_for`), unless the triggerer could not read the token
        (a reporter's, without *reporter_record_id*)."""
        if not self.deferrable or (token is not None and reporter_record_id is None):
            try:
                return hook.client.call(call, token=token, timeout=timeout)
            except BlockchainGatewayError as exc:
                return exc
        (result,) = hook.client.send_batch([call], timeout=timeout, wait=self.defer_after, token=token)
        if not isinstance(result, PendingRequest):
            return result
        self.log.info("%s: sent, its answer awaited in the triggerer", key)
        self.defer_for_answers([result], {"state": {**state, "asking": key}}, reporter_record_id)

    def answers_from(self, event: Any) -> tuple[dict[str, Any], list[Outcome | BlockchainError]]:
        """What a wait for answers came to (:func:`.events.results`): its ``resume`` and, in the
        order sent, each answer, read back from the response topic, or the refusal or timeout."""
        resume, results = events.results(event)
        located = [result for result in results if isinstance(result, AnswerAt)]
        read = iter(self.hook.client.answers_at(located) if located else [])
        answers: list[Outcome | BlockchainError] = []
        for result in results:
            if isinstance(result, AnswerAt):
                answers.append(next(read))
            elif isinstance(result, BlockchainError):
                answers.append(result)
            else:
                raise result
        return resume, answers

    def execute_complete(self, context: Mapping[str, Any], event: Any = None, **_: Any) -> Any:
        """Resume after the trigger's event: finish, or send the next call and defer again."""
        resume, (answer,) = self.answers_from(event)
        state = resume.get("state") or {}
        outcome: Outcome | None = None
        error: BlockchainError | None = None
        if isinstance(answer, Outcome):
            outcome = answer
        elif isinstance(answer, BlockchainGatewayError) or resume.get("optional"):
            error = answer
        else:
            raise answer
        result = self.next_step(context, state, outcome, error)
        if isinstance(result, Done):
            return result.value
        return self._defer(result)


def answer_for(answer: tuple[str | None, Any] | None, key: str) -> Any:
    """What became of the request the task deferred on, if it is the one named *key*."""
    if answer is None or answer[0] != key:
        return None
    return answer[1]
