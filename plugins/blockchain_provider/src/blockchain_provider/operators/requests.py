"""The list, get and answer operators of every request kind
(:class:`~blockchain_provider.request_kinds.RequestKind`): each takes the kind as ``kind`` (the
kind or its name); the partner and order operators are these with ``kind`` set.

A list walks its pages (an empty page ends it; so do a page identical to the one before and the
page cap); a get walks them until it finds its request; an answer finds the request first, then
sends the decision.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from blockchain_provider import protocol
from blockchain_provider.exceptions import BlockchainConfigError, BlockchainProtocolError
from blockchain_provider.operators.base import (
    BaseBlockchainOperator,
    Done,
    Step,
    is_template,
    merge_summary,
    resolve_callable,
)
from blockchain_provider.outcomes import Outcome
from blockchain_provider.quoting import quote
from blockchain_provider.request_kinds import RequestKind, request_kind


def parse_decision(value: Any, what: str = "decision") -> bool:
    """``True``/``"accept"``/``1`` → accept, ``False``/``"reject"``/``0`` → reject, else raise."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("accept", "reject"):
        return value.strip().lower() == "accept"
    raise BlockchainConfigError(f"Invalid {what} {value!r}: expected 'accept' or 'reject'")


def _page_of(outcome: Outcome) -> list[Any]:
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


def _seek(
    operator: _KindOperator, request_id: str, page_size: int, state: dict[str, Any], outcome: Outcome
) -> dict[str, Any] | Step:
    """Request *request_id* if the page *outcome* holds it, else the step that reads the next page;
    fails the task when the listing has ended without it."""
    kind = operator.kind
    page = _page_of(outcome)
    item = _find(kind, request_id, page)
    if item is not None:
        return item
    turn = _turn_page(kind, state, page)
    _end_early(operator, kind, state, turn, None)
    following = _next_page(kind, state, turn, page_size)
    if following is None:
        missing = (
            "does not exist on the ledger" if turn.ended_by is None else "was not found in the pages read"
        )
        raise AirflowFailException(f"{kind.label.capitalize()} {request_id} {missing}")
    return following


class _KindOperator(BaseBlockchainOperator):
    """An operator of one request kind: ``kind`` from the argument, else from the class."""

    kind: RequestKind

    def __init__(self, *, kind: RequestKind | str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if kind is not None:
            self.kind = request_kind(kind)
        elif not isinstance(getattr(self, "kind", None), RequestKind):
            raise BlockchainConfigError(
                f"{type(self).__name__} needs a request kind: pass kind= (a RequestKind or its name)"
            )


class ListRequestsOperator(_KindOperator):
    """Read every page of a list topic; return a summary: ``{"count", "by_status", ...}``.

    The items go to *apply_function_batch*, page by page, as they are read (for instance into a
    database); they are never pushed to XCom nor kept between pages.

    :param kind: the request kind, a :class:`RequestKind` or its name (the partner and order
        operators set it).
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

    def answered(self, context: Mapping[str, Any], state: dict[str, Any], outcome: Outcome) -> Step | Done:
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


class GetRequestOperator(_KindOperator):
    """Find one request by id on its list topic; fail when it is not there or not as required.

    Returns ``{"request_id", "status", "issuing_agent"}``; the whole item goes to *apply_function*.

    :param kind: the request kind, a :class:`RequestKind` or its name (the partner and order
        operators set it).
    :param request_id: the request's id (32 lowercase hex); templated.
    :param expected_status: fail unless the request has this status (e.g. ``"OPEN"``), defaults
        to None (any status).
    :param addressed_to_us: fail unless the request is addressed to the agent of
        ``token_conn_id`` (its public key), defaults to False.
    :param apply_function: called with the item and the task's context once it is found, a
        callable or a dotted path to one; defaults to None.
    :param page_size: items per list request, defaults to 100.
    """

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

    def answered(self, context: Mapping[str, Any], state: dict[str, Any], outcome: Outcome) -> Step | Done:
        item = _seek(self, self.request_id, self.page_size, state, outcome)
        return item if isinstance(item, Step) else Done(self._found(item, context))

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


class AnswerRequestOperator(_KindOperator):
    """Accept or reject one request by id; returns the gateway's confirmation.

    Retry-safe: a retry (the earlier try may have been applied without its answer arriving)
    reads the request's status first. Our decision already there is success, nothing sent;
    still OPEN is answered again; any other status fails the task. An answer is final on the
    ledger, so a blind second answer would only be refused.

    :param kind: the request kind, a :class:`RequestKind` or its name (the partner and order
        operators set it).
    :param request_id: the request's id (32 lowercase hex); templated.
    :param decision: ``"accept"``/``"reject"`` or a boolean; templated.
    :param page_size: items per list request when a retry reads the status, defaults to 100.
    """

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

    def answered(self, context: Mapping[str, Any], state: dict[str, Any], outcome: Outcome) -> Step | Done:
        if state.get("phase") != "read":
            self.log.info(
                "%s %s answered: %s", self.kind.label.capitalize(), self.request_id, quote(outcome.value)
            )
            return Done(outcome.value)
        item = _seek(self, self.request_id, self.page_size, state, outcome)
        if isinstance(item, Step):
            return item
        what = f"{self.kind.label.capitalize()} {self.request_id}"
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


# The names of 0.2.0, which a deployment may subclass with ``kind`` set.
BaseListOperator = ListRequestsOperator
BaseGetRequestOperator = GetRequestOperator
BaseAnswerOperator = AnswerRequestOperator
