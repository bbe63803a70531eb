"""The one event a wait for answers yields, and its one parser.

A trigger event is stored in the metadata database (Airflow's triggerer encodes it with msgpack
first) and sent through the execution API to the resumed task: it names what happened and where
the answer is, never what the answer holds. It is a JSON object::

    {"status": "batch", "response_topic": ..., "answers": [...], "resume": ...}

with one entry per request awaited, in the order they were sent, in one of four statuses; each
names ``topic`` (the request topic) and ``request_id``:

* ``success``: ``partition``, ``offset`` and ``digest`` (SHA-256 of the message's value) of the
  answer on ``response_topic``; the task reads it back from there
  (:meth:`~blockchain_provider.hooks.gateway_client.GatewayClient.answers_at`);
* ``gateway_error``: ``text``, the gateway's refusal with the token and password removed, at most
  :data:`~blockchain_provider.outcomes.REFUSAL_TEXT_LIMIT` characters;
* ``timeout``: ``waited``, seconds from sending to giving up (``None`` when unknown), and
  ``late_answer``, the kind of an answer that came after the deadline, if any;
* ``undelivered``: ``text``, why the broker did not take a request the triggerer sent (a serial
  conversation, :mod:`.serial_requests`); whether it reached the gateway is not known.

A serial conversation ends at its first timeout or undelivered request: the requests after it
were not sent, and have no entry.

``resume`` is what the task resumes with (small: positions, counts, ids). No event carries a
token, an item, a description or any other value of an answer; one stays under
:data:`MAX_EVENT_BYTES` for one request, whatever the size of its answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from blockchain_provider.exceptions import (
    BlockchainConfigError,
    BlockchainDeliveryError,
    BlockchainTimeoutError,
)
from blockchain_provider.outcomes import AnswerAt, bounded_text, gateway_refusal

SUCCESS: Final = "success"
GATEWAY_ERROR: Final = "gateway_error"
TIMEOUT: Final = "timeout"
UNDELIVERED: Final = "undelivered"
STATUSES: Final = (SUCCESS, GATEWAY_ERROR, TIMEOUT, UNDELIVERED)
BATCH: Final = "batch"
#: What an event of one request is kept under, encoded (bytes).
MAX_EVENT_BYTES: Final = 8 * 1024

#: What became of one request: where its answer is, or the refusal or timeout it came to.
Result = AnswerAt | Exception


@dataclass(frozen=True)
class RequestRef:
    """What every answer of an event names: the request topic and the request's id."""

    topic: str
    request_id: str


def success(request: RequestRef, at: AnswerAt) -> dict[str, Any]:
    """The gateway answered *request*; the answer is *at*."""
    return {
        "status": SUCCESS,
        "topic": request.topic,
        "request_id": request.request_id,
        "partition": int(at.partition),
        "offset": int(at.offset),
        "digest": str(at.digest),
    }


def gateway_error(request: RequestRef, text: str) -> dict[str, Any]:
    """The gateway refused *request*; *text* must already be free of secrets (it is bounded here)."""
    return {
        "status": GATEWAY_ERROR,
        "topic": request.topic,
        "request_id": request.request_id,
        "text": bounded_text(text),
    }


def timeout(request: RequestRef, waited: float | None, late_answer: str | None = None) -> dict[str, Any]:
    """No answer to *request* by its deadline.

    :param waited: seconds from sending the request to giving up; ``None`` when unknown.
    :param late_answer: the kind of an answer that came after the deadline, defaults to ``None``.
    """
    answer: dict[str, Any] = {
        "status": TIMEOUT,
        "topic": request.topic,
        "request_id": request.request_id,
        "waited": None if waited is None else max(0.0, float(waited)),
    }
    if late_answer:
        answer["late_answer"] = late_answer
    return answer


def undelivered(request: RequestRef, text: str) -> dict[str, Any]:
    """The broker did not take *request* (*text* says why, and holds no secret: it names the topic,
    the broker and the request id)."""
    return {
        "status": UNDELIVERED,
        "topic": request.topic,
        "request_id": request.request_id,
        "text": bounded_text(text),
    }


def batch(
    response_topic: str, answers: list[dict[str, Any]], resume: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The event: what became of each request awaited, in the order they were sent."""
    event: dict[str, Any] = {"status": BATCH, "response_topic": response_topic, "answers": list(answers)}
    if resume is not None:
        event["resume"] = dict(resume)
    return event


def results(event: Any) -> tuple[dict[str, Any], list[Result]]:
    """The event's ``resume`` and, in order, each request's result: where its answer is
    (:class:`~blockchain_provider.outcomes.AnswerAt`), or the refusal
    (:class:`~blockchain_provider.exceptions.BlockchainGatewayError`),
    :class:`~blockchain_provider.exceptions.BlockchainTimeoutError` or
    :class:`~blockchain_provider.exceptions.BlockchainDeliveryError` it came to.

    :raises BlockchainConfigError: no event, or not one of a wait for answers.
    """
    if (
        not isinstance(event, Mapping)
        or event.get("status") != BATCH
        or not isinstance(event.get("answers"), list)
    ):
        status = event.get("status") if isinstance(event, Mapping) else None
        raise BlockchainConfigError(f"Expected the answers of a wait, got an event of status {status!r}")
    response_topic = str(event.get("response_topic", "BLK_Res"))
    return dict(event.get("resume") or {}), [_result(a, response_topic) for a in event["answers"]]


def _result(answer: Mapping[str, Any], response_topic: str) -> Result:
    status = answer.get("status")
    topic = str(answer.get("topic", "?"))
    request_id = str(answer.get("request_id", "?"))
    if status == SUCCESS:
        return AnswerAt(
            topic,
            request_id,
            response_topic,
            int(answer["partition"]),
            int(answer["offset"]),
            answer["digest"],
        )
    if status == GATEWAY_ERROR:
        return gateway_refusal(topic, request_id, str(answer.get("text", "")))
    if status == TIMEOUT:
        waited = answer.get("waited")
        late = answer.get("late_answer")
        when = f"within {float(waited):.1f} s of sending it" if waited is not None else "by the deadline"
        return BlockchainTimeoutError(
            f"No answer on {response_topic} {when} to request {request_id} sent to {topic}"
            + (f"; a late answer ({late}) came after it, and was not taken" if late else ""),
            topic=topic,
            request_id=request_id,
            timeout=float(waited or 0),
        )
    if status == UNDELIVERED:
        return BlockchainDeliveryError(str(answer.get("text", "")), topic=topic, request_id=request_id)
    raise BlockchainConfigError(
        f"Waiting for request {request_id} on {topic} ended with an answer of unknown status {status!r}"
    )
