"""What a request comes to: an answer (:class:`Outcome`) or the gateway's refusal.

The request engine (:mod:`.hooks.gateway_client`) and the trigger
(:mod:`.triggers.await_response`) both import it; it imports neither.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final

from blockchain_provider import protocol
from blockchain_provider.answer_matcher import Positions
from blockchain_provider.exceptions import BlockchainGatewayError

#: The longest refusal text a trigger event carries (characters; it is at most 4 bytes each).
REFUSAL_TEXT_LIMIT: Final = 500
# a lone surrogate (no UTF-8 encoder takes it) or a NUL (no PostgreSQL text takes it)
_UNENCODABLE = re.compile("[\ud800-\udfff\x00]")


@dataclass(frozen=True)
class Outcome:
    """A successful answer: ``kind`` is ``data`` (a list or get) or ``message`` (a write)."""

    kind: str
    value: Any
    topic: str
    request_id: str
    public_key: str | None = None


@dataclass(frozen=True)
class AnswerAt:
    """Where the answer to request *request_id* (sent to *topic*) is: the message at *offset* of
    *partition* of *response_topic*, whose value has the SHA-256 *digest* (hex). A deferred task
    reads it back from there when it resumes; the trigger event carries only this."""

    topic: str
    request_id: str
    response_topic: str
    partition: int
    offset: int
    digest: str


def bounded_text(text: str, limit: int = REFUSAL_TEXT_LIMIT) -> str:
    """*text* cut to *limit* characters, with what no UTF-8 encoder takes (a lone surrogate, a NUL)
    replaced: it can go into a trigger event, a log line or the metadata database."""
    return _UNENCODABLE.sub("\ufffd", str(text)[:limit])


def gateway_refusal(topic: str, request_id: str, text: str) -> BlockchainGatewayError:
    """The error a refusal of request *request_id* on *topic* raises, in a task or after a trigger.

    :param text: the gateway's text, already free of secrets.
    """
    return BlockchainGatewayError(
        f"The gateway refused request {request_id} on {topic}: {text}",
        topic=topic,
        request_id=request_id,
        gateway_text=text,
    )


def refusal(
    response: protocol.Response, topic: str, request_id: str, secrets: tuple[str | None, ...]
) -> BlockchainGatewayError:
    """The error an ``error`` answer raises: the gateway's text without *secrets*, bounded."""
    return gateway_refusal(topic, request_id, refusal_text(response, secrets))


def refusal_text(response: protocol.Response, secrets: tuple[str | None, ...]) -> str:
    """The gateway's text of an ``error`` answer without *secrets*, bounded (:func:`bounded_text`)."""
    return bounded_text(protocol.error_text(response, secrets))


@dataclass(frozen=True)
class PendingRequest:
    """A request sent but not yet answered, as a deferred task hands it to the trigger.

    ``start_positions``: where its answer is looked for (:data:`.answer_matcher.Positions`);
    ``sent_at``: when it was sent, and ``deadline``: when its wait ends, in seconds since the epoch.
    """

    topic: str
    request_id: str
    response_topic: str
    start_positions: Positions
    deadline: float
    by_request_id_only: bool
    expect: dict[str, Any] = field(default_factory=protocol.ANY_ANSWER.to_primitives)
    late_answer_grace: float = 0.0
    sent_at: float | None = None
