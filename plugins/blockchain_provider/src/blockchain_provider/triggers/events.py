"""What a request comes to, and the events that carry it from the triggerer to the task.

An :class:`Outcome` is a successful answer. A deferred request's trigger yields one event, a
JSON object, in one of three statuses; every event names ``topic`` (the request topic),
``request_id`` and ``response_topic``, and hands back ``resume``, what the task resumes with,
when the task gave the trigger one:

* ``success``: ``kind`` (``data`` or ``message``), ``value``, ``public_key`` (or ``None``);
* ``gateway_error``: ``text``, the gateway's refusal with the token and password removed;
* ``timeout``: ``waited``, seconds from sending to giving up (``None`` when the send time is
  unknown), and ``late_answer``, the kind of an answer that came after the deadline, if any.

A wait for many requests at once yields one ``batch`` event: ``response_topic``, ``answers``
(one event of the three statuses above per request, in the order they were sent) and ``resume``.

:func:`success_event`, :func:`gateway_error_event` and :func:`timeout_event` build them;
:func:`outcome_from_event` turns one back into an :class:`Outcome` or raises what it reports;
:func:`batch_event` and :func:`outcomes_from_batch` do the same for a batch.
No event ever carries a token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from blockchain_provider.exceptions import (
    BlockchainConfigError,
    BlockchainGatewayError,
    BlockchainTimeoutError,
)

SUCCESS: Final = "success"
GATEWAY_ERROR: Final = "gateway_error"
TIMEOUT: Final = "timeout"
STATUSES: Final = (SUCCESS, GATEWAY_ERROR, TIMEOUT)
BATCH: Final = "batch"


@dataclass(frozen=True)
class Outcome:
    """A successful answer: ``kind`` is ``data`` (a list or get) or ``message`` (a write)."""

    kind: str
    value: Any
    topic: str
    request_id: str
    public_key: str | None = None


@dataclass(frozen=True)
class RequestRef:
    """What every event names: the request topic, the request's id and the response topic, and
    what the task resumes with (``None``: nothing)."""

    topic: str
    request_id: str
    response_topic: str
    resume: Mapping[str, Any] | None = None

    def _event(self, status: str, **fields: Any) -> dict[str, Any]:
        event = {
            "status": status,
            "topic": self.topic,
            "request_id": self.request_id,
            "response_topic": self.response_topic,
            **fields,
        }
        if self.resume is not None:
            event["resume"] = dict(self.resume)
        return event


def success_event(
    request: RequestRef, kind: str, value: Any, public_key: str | None = None
) -> dict[str, Any]:
    """The gateway answered *request* with *value*.

    :param kind: ``data`` or ``message``.
    :param public_key: the answer's ``public_key`` header, defaults to ``None``.
    """
    return request._event(SUCCESS, kind=kind, value=value, public_key=public_key)


def gateway_error_event(request: RequestRef, text: str) -> dict[str, Any]:
    """The gateway refused *request*; *text* must already be free of secrets."""
    return request._event(GATEWAY_ERROR, text=text)


def timeout_event(
    request: RequestRef, waited: float | None, late_answer: str | None = None
) -> dict[str, Any]:
    """No answer to *request* by its deadline.

    :param waited: seconds from sending the request to giving up; ``None`` when unknown.
    :param late_answer: the kind of an answer that came after the deadline, defaults to ``None``.
    """
    fields: dict[str, Any] = {"waited": None if waited is None else max(0.0, float(waited))}
    if late_answer:
        fields["late_answer"] = late_answer
    return request._event(TIMEOUT, **fields)


def gateway_refusal(topic: str, request_id: str, text: str) -> BlockchainGatewayError:
    """The error a refusal of request *request_id* on *topic* raises, in a task or after a trigger."""
    return BlockchainGatewayError(
        f"The gateway refused request {request_id} on {topic}: {text}",
        topic=topic,
        request_id=request_id,
        gateway_text=text,
    )


def outcome_from_event(event: Mapping[str, Any]) -> Outcome:
    """The :class:`Outcome` a ``success`` event carries.

    :raises BlockchainGatewayError: a ``gateway_error`` event.
    :raises BlockchainTimeoutError: a ``timeout`` event; its message says how long the request
        waited, and its ``timeout`` is that time (0 when unknown).
    :raises BlockchainConfigError: an event of no known status.
    """
    status = event.get("status")
    topic = event.get("topic", "?")
    request_id = event.get("request_id", "?")
    if status == SUCCESS:
        return Outcome(event["kind"], event.get("value"), topic, request_id, event.get("public_key"))
    if status == GATEWAY_ERROR:
        raise gateway_refusal(topic, request_id, event.get("text", ""))
    if status == TIMEOUT:
        # events of earlier versions carry no ``waited``
        waited = event.get("waited")
        late = event.get("late_answer")
        when = f"within {float(waited):.1f} s of sending it" if waited is not None else "by the deadline"
        raise BlockchainTimeoutError(
            f"No answer on {event.get('response_topic', 'BLK_Res')} {when} to request {request_id} sent "
            f"to {topic}" + (f"; a late answer ({late}) came after it, and was not taken" if late else ""),
            topic=topic,
            request_id=request_id,
            timeout=float(waited or 0),
        )
    raise BlockchainConfigError(
        f"Waiting for request {request_id} on {topic} ended with an event of unknown status {status!r}"
    )


def batch_event(
    response_topic: str, answers: list[dict[str, Any]], resume: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """What became of each of many requests awaited together: one event per request, in order."""
    event: dict[str, Any] = {"status": BATCH, "response_topic": response_topic, "answers": list(answers)}
    if resume is not None:
        event["resume"] = dict(resume)
    return event


def outcomes_from_batch(
    event: Mapping[str, Any],
) -> list[Outcome | BlockchainGatewayError | BlockchainTimeoutError]:
    """Each request's :class:`Outcome` of a ``batch`` event, or the refusal or timeout it reports,
    in the order the requests were sent.

    :raises BlockchainConfigError: not a batch event, or an answer of no known status.
    """
    if event.get("status") != BATCH or not isinstance(event.get("answers"), list):
        raise BlockchainConfigError(
            f"Expected a batch of answers, got an event of status {event.get('status')!r}"
        )
    outcomes: list[Outcome | BlockchainGatewayError | BlockchainTimeoutError] = []
    for answer in event["answers"]:
        try:
            outcomes.append(outcome_from_event(answer))
        except (BlockchainGatewayError, BlockchainTimeoutError) as exc:
            outcomes.append(exc)
    return outcomes
