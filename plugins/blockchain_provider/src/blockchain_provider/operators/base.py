"""The common shape of every BLK operator: check arguments, make calls, blocking or deferred.

An operator is a small state machine of calls: :meth:`~BaseBlockchainOperator.first_step` gives
the first call, and :meth:`~BaseBlockchainOperator.next_step` turns each answer into either the
next call or the result. A list walks its pages this way; "ensure record type" creates, then
reads what the ledger holds when the creation is refused. The same machine runs in the worker or,
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
    BlockchainProtocolError,
    InvalidIdentifierError,
)
from blockchain_provider.hooks.gateway_client import PendingRequest
from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook
from blockchain_provider.outcomes import AnswerAt, Outcome
from blockchain_provider.quoting import quote
from blockchain_provider.request_kinds import RequestKind
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


def parse_decision(value: Any, what: str = "decision") -> bool:
    """``True``/``"accept"``/``1`` → accept, ``False``/``"reject"``/``0`` → reject, else raise."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("accept", "reject"):
        return value.strip().lower() == "accept"
    raise BlockchainConfigError(f"Invalid {what} {value!r}: expected 'accept' or 'reject'")


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
        """By default the first answer is the result, and a refusal fails the task.

        *error* is the gateway's refusal, or for an optional step any error of the wait.
        """
        if error is not None:
            raise error
        assert outcome is not None
        return Done(outcome.value)

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
        token_source: tuple[str, dict[str, Any]] | None = None,
    ) -> NoReturn:
        """Hand the wait for the answers to *pending* (sent together) to the triggerer; the task
        resumes in :meth:`execute_complete`, which reads them with :meth:`answers_from`.

        :param resume: what the task resumes with (small: positions, counts, ids); it goes through
            the trigger and comes back in its event, as the deferral's own kwargs are dropped by
            ``airflow dags test``.
        :param token_source: where the triggerer reads the token they were signed with, when no
            connection holds it (a record's reporter's): a dotted path and its keyword arguments.
        """
        trigger = AwaitResponsesTrigger.for_pending(
            pending,
            token_conn_id=self.token_conn_id,
            kafka_config_id=self.kafka_config_id,
            resume=resume,
            token_source=token_source,
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


def _page_of(outcome: Outcome | None) -> list[Any]:
    assert outcome is not None
    page = outcome.value
    if not isinstance(page, list):
        raise BlockchainProtocolError(f"{outcome.topic} answered {type(page).__name__}, not a list")
    return page


def _turn_page(
    kind: RequestKind, state: dict[str, Any], page: list[Any], max_pages: int = protocol.MAX_LIST_PAGES
) -> protocol.PageTurn:
    """What follows *page*, read at ``state["start"]`` (:func:`~blockchain_provider.protocol.turn_page`:
    an empty page ends a list; so do a page identical to the one before and the page cap)."""
    return protocol.turn_page(
        state["start"], page, state.get("digest"), int(state.get("pages", 0)), max_pages
    )


def _next_page(
    kind: RequestKind, state: dict[str, Any], turn: protocol.PageTurn, page_size: int
) -> Step | None:
    """The request for the page after *turn*'s, with *state* carried on; ``None`` when the listing
    ended."""
    if turn.start is None:
        return None
    carried = {**state, "start": turn.start, "digest": turn.digest, "pages": turn.pages}
    return Step(protocol.list_call(kind.list_topic, turn.start, page_size), carried)


def _end_early(
    operator: BaseOperator,
    kind: RequestKind,
    state: dict[str, Any],
    turn: protocol.PageTurn,
    alert_context: Mapping[str, Any] | None,
) -> None:
    """Warn when a listing ended on a repeated page or at its cap; with *alert_context* (the task's
    context), also send one alert."""
    if turn.ended_by is None:
        return
    text = protocol.listing_end_warning(kind.list_topic, turn, state["start"])
    operator.log.warning("%s", text)
    if alert_context is not None:
        from blockchain_provider.notifications import send_alert

        send_alert(text, alert_context)


def _find(kind: RequestKind, request_id: str, page: list[Any]) -> dict[str, Any] | None:
    return next((item for item in page if kind.item_id(item) == request_id), None)


class BaseListOperator(BaseBlockchainOperator):
    """Read every page of a list topic; return a summary: ``{"count", "by_status", ...}``.

    The items go to *apply_function_batch*, page by page, as they are read (for instance into a
    database); they are never pushed to XCom nor kept between pages.

    :param page_size: items per request, defaults to 100; templated.
    :param apply_function_batch: called with each page's items (a list of dicts) and the task's
        context, a callable or a dotted path to one. It may return a dict of numbers and lists:
        numbers are summed over the pages and lists joined (first 20 entries kept), into the
        summary. Defaults to None (the items are only counted).
    :param max_pages: the most pages read; defaults to
        :data:`~blockchain_provider.protocol.MAX_LIST_PAGES` (1,000).

    An empty page ends a list (a page shorter than ``page_size`` does not). A gateway that
    ignores ``start`` answers the same page again: that page is neither stored nor counted, the
    listing ends there with a warning and one alert, and the task succeeds with what it read; so
    it does at its page cap.
    """

    kind: RequestKind
    template_fields = (*BaseBlockchainOperator.template_fields, "page_size")

    def __init__(
        self,
        *,
        page_size: int = 100,
        apply_function_batch: str | Callable[[list[dict[str, Any]], Mapping[str, Any]], Any] | None = None,
        max_pages: int = protocol.MAX_LIST_PAGES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not is_template(page_size):
            protocol.list_call(self.kind.list_topic, 0, page_size)  # validates page_size early
        self.page_size = page_size
        self.max_pages = protocol.validate_max_pages(max_pages)
        resolve_callable(apply_function_batch, "apply_function_batch")
        self.apply_function_batch = apply_function_batch

    def first_step(self, context: Mapping[str, Any]) -> Step:
        call = protocol.list_call(self.kind.list_topic, 0, int(self.page_size))
        return Step(call, {"start": 0, "summary": {"count": 0, "by_status": {}}})

    def next_step(
        self,
        context: Mapping[str, Any],
        state: dict[str, Any],
        outcome: Outcome | None,
        error: BlockchainError | None,
    ) -> Step | Done:
        if error is not None:
            raise error
        page = _page_of(outcome)
        self.log.info("%s: %d item(s) from position %d", self.kind.list_topic, len(page), state["start"])
        turn = _turn_page(self.kind, state, page, self.max_pages)
        if turn.ended_by == protocol.REPEATED_PAGE:
            _end_early(self, self.kind, state, turn, context)
            return Done(state["summary"])  # read and stored already
        summary = dict(state["summary"])
        by_status = dict(summary["by_status"])
        for item in page:
            status = str(item.get("status")) if isinstance(item, dict) else "?"
            by_status[status] = by_status.get(status, 0) + 1
        summary.update(count=summary["count"] + len(page), by_status=by_status)
        apply = resolve_callable(self.apply_function_batch, "apply_function_batch")
        if apply is not None and page:
            summary = merge_summary(summary, apply(page, context), "apply_function_batch")
        _end_early(self, self.kind, state, turn, context)
        following = _next_page(self.kind, {**state, "summary": summary}, turn, int(self.page_size))
        return Done(summary) if following is None else following


class BaseGetRequestOperator(BaseBlockchainOperator):
    """Find one request by id on its list topic; fail when it is not there or not as required.

    Returns ``{"request_id", "status", "issuing_agent"}``; the whole item goes to *apply_function*.

    :param request_id: the request's id (32 lowercase hex); templated.
    :param expected_status: fail unless the request has this status (e.g. ``"OPEN"``), defaults
        to None (any status).
    :param addressed_to_us: fail unless the request is addressed to the agent of
        ``token_conn_id`` (its public key), defaults to False.
    :param apply_function: called with the item and the task's context once it is found, a
        callable or a dotted path to one; defaults to None.
    :param page_size: items per list request, defaults to 100.
    """

    kind: RequestKind
    template_fields = (*BaseBlockchainOperator.template_fields, "request_id")

    def __init__(
        self,
        *,
        request_id: str,
        expected_status: str | None = None,
        addressed_to_us: bool = False,
        apply_function: str | Callable[[dict[str, Any], Mapping[str, Any]], Any] | None = None,
        page_size: int = 100,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not is_template(request_id):
            protocol.validate_request_id(request_id, f"{self.kind.label} id")
        protocol.list_call(self.kind.list_topic, 0, page_size)
        self.request_id = request_id
        self.expected_status = expected_status
        self.addressed_to_us = addressed_to_us
        resolve_callable(apply_function, "apply_function")
        self.apply_function = apply_function
        self.page_size = page_size

    def first_step(self, context: Mapping[str, Any]) -> Step:
        protocol.validate_request_id(self.request_id, f"{self.kind.label} id")
        return Step(protocol.list_call(self.kind.list_topic, 0, self.page_size), {"start": 0})

    def next_step(
        self,
        context: Mapping[str, Any],
        state: dict[str, Any],
        outcome: Outcome | None,
        error: BlockchainError | None,
    ) -> Step | Done:
        if error is not None:
            raise error
        page = _page_of(outcome)
        item = _find(self.kind, self.request_id, page)
        if item is not None:
            return Done(self._found(item, context))
        turn = _turn_page(self.kind, state, page)
        _end_early(self, self.kind, state, turn, None)
        following = _next_page(self.kind, state, turn, self.page_size)
        if following is None:
            raise AirflowFailException(
                f"{self.kind.label.capitalize()} {self.request_id} "
                + (
                    "does not exist on the ledger"
                    if turn.ended_by is None
                    else "was not found in the pages read"
                )
            )
        return following

    def _found(self, item: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
        what = f"{self.kind.label.capitalize()} {self.request_id}"
        if self.addressed_to_us:
            ours = self.hook.settings.public_key
            if not ours:
                raise AirflowFailException(
                    f"Connection {self.token_conn_id} has no public key: cannot tell whether {what} is "
                    "addressed to this MES"
                )
            if item.get("receiving_agent") != ours:
                raise AirflowFailException(
                    f"{what} is addressed to {item.get('receiving_agent')}, not to this MES ({ours})"
                )
        if self.expected_status is not None and item.get("status") != self.expected_status:
            raise AirflowFailException(
                f"{what} is {item.get('status')}, not {self.expected_status}: nothing to do"
            )
        apply = resolve_callable(self.apply_function, "apply_function")
        if apply is not None:
            apply(item, context)
        return {
            "request_id": self.request_id,
            "status": item.get("status"),
            "issuing_agent": item.get("issuing_agent"),
        }


class BaseAnswerOperator(BaseBlockchainOperator):
    """Accept or reject one request by id; returns the gateway's confirmation.

    Retry-safe: a retry (the earlier try may have been applied without its answer arriving)
    reads the request's status first. Our decision already there is success, nothing sent;
    still OPEN is answered again; any other status fails the task. An answer is final on the
    ledger, so a blind second answer would only be refused.

    :param request_id: the request's id (32 lowercase hex); templated.
    :param decision: ``"accept"``/``"reject"`` or a boolean; templated.
    :param page_size: items per list request when a retry reads the status, defaults to 100.
    """

    kind: RequestKind
    template_fields = (*BaseBlockchainOperator.template_fields, "request_id", "decision")

    def __init__(self, *, request_id: str, decision: str | bool, page_size: int = 100, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.request_id = request_id
        self.decision = decision
        self.page_size = page_size
        if not is_template(request_id):
            protocol.validate_request_id(request_id, f"{self.kind.label} id")
        if not is_template(decision):
            parse_decision(decision)

    def _answer(self) -> Step:
        accept = parse_decision(self.decision)
        return Step(
            protocol.answer_call(self.kind.answer_topic, self.request_id, accept), {"phase": "answer"}
        )

    def first_step(self, context: Mapping[str, Any]) -> Step:
        protocol.validate_request_id(self.request_id, f"{self.kind.label} id")
        parse_decision(self.decision)
        ti = context.get("ti")
        if ti is not None and getattr(ti, "try_number", 1) > 1:
            call = protocol.list_call(self.kind.list_topic, 0, self.page_size)
            return Step(call, {"phase": "read", "start": 0})
        return self._answer()

    def next_step(
        self,
        context: Mapping[str, Any],
        state: dict[str, Any],
        outcome: Outcome | None,
        error: BlockchainError | None,
    ) -> Step | Done:
        if error is not None:
            raise error
        if state.get("phase") != "read":
            assert outcome is not None
            self.log.info(
                "%s %s answered: %s", self.kind.label.capitalize(), self.request_id, quote(outcome.value)
            )
            return Done(outcome.value)
        page = _page_of(outcome)
        item = _find(self.kind, self.request_id, page)
        what = f"{self.kind.label.capitalize()} {self.request_id}"
        if item is None:
            turn = _turn_page(self.kind, state, page)
            _end_early(self, self.kind, state, turn, None)
            following = _next_page(self.kind, state, turn, self.page_size)
            if following is None:
                raise AirflowFailException(
                    f"{what} "
                    + (
                        "does not exist on the ledger"
                        if turn.ended_by is None
                        else "was not found in the pages read"
                    )
                )
            return following
        accept = parse_decision(self.decision)
        wanted = "ACCEPTED" if accept else "REJECTED"
        status = item.get("status")
        if status == wanted:
            self.log.info("%s is already %s: the earlier try was applied", what, status)
            return Done(f"{self.request_id} already {status} (applied by an earlier try)")
        if status != "OPEN":
            raise AirflowFailException(
                f"{what} is {status}, not OPEN: cannot {'accept' if accept else 'reject'} it"
            )
        return self._answer()
