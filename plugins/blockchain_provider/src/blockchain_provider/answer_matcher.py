"""Which request a message on ``BLK_Res`` answers: one rule for the worker's reader and the trigger.

:class:`AnswerMatcher` is pure: no I/O, no thread, no clock. Given one raw message (its partition,
offset and value) it says whether it is the answer to a waiting request, an answer that names one
but does not fit it (forged, or of another token), or noise to set aside, and counts it. It never
raises: whatever the message holds (bad UTF-8, a lone surrogate anywhere, wrong types, a huge
literal) is counted and set aside.

Offsets have one vocabulary here, in the reader, :class:`~.outcomes.PendingRequest`
and the trigger: a *position* is the offset of the next message to read in a partition, and
:data:`Positions` maps each partition to one. A request's *start positions* are fixed before it is
sent: an answer matched by its token is taken only at or after them, so it cannot be an answer
that was on the topic before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeAlias

from blockchain_provider import protocol
from blockchain_provider.exceptions import MalformedResponseError

#: Partition -> position: the offset of the next message to read there.
Positions: TypeAlias = dict[int, int]

#: Of each count, the first this many messages are worth a warning, then one in :data:`WARN_EVERY`.
WARN_FIRST = 10
WARN_EVERY = 100


def positions_to_primitives(positions: Positions) -> dict[str, int]:
    """*positions* with text keys, as JSON (a trigger's serialised arguments) holds them."""
    return {str(partition): int(offset) for partition, offset in positions.items()}


def positions_from_primitives(value: dict[str, int] | dict[int, int]) -> Positions:
    """Positions from their JSON form (text keys), or from positions."""
    return {int(partition): int(offset) for partition, offset in value.items()}


@dataclass(frozen=True)
class Wait:
    """A request waiting for its answer.

    :param token: the token it was sent with, ``None`` for an agent request.
    :param by_request_id_only: take only an answer that echoes *request_id*; otherwise one
        addressed to *token*, read at or after *start_positions*.
    """

    request_id: str
    token: str | None
    by_request_id_only: bool
    start_positions: Positions = field(default_factory=dict)
    expect: protocol.Expectation = protocol.ANY_ANSWER


class Verdict(Enum):
    ANSWER = "answer"  #: the answer to a waiting request
    IGNORED = "ignored"  #: names no waiting request (nor its token): not decoded
    MALFORMED = "malformed"  #: names one, but is no answer the protocol knows
    UNCLAIMED = "unclaimed"  #: a decoded answer to no waiting request
    FORGED = "forged"  #: names a waiting request but does not fit it (other token, other kind)


@dataclass(frozen=True)
class Match:
    """What one message is. ``warning``: a line worth logging (the first few of each count, then
    one in a hundred), ``None`` otherwise."""

    verdict: Verdict
    request_id: str | None = None
    response: protocol.Response | None = None
    warning: str | None = None


class AnswerMatcher:
    """Decides, message by message, which waiting request each answers; see the module.

    :param topic: the response topic, to name it in warnings.
    """

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._by_id: dict[str, Wait] = {}
        self.needles: tuple[bytes, ...] = ()
        self.ignored = 0
        self.malformed = 0
        self.skipped = 0
        #: answers that named one of our requests but did not fit it (other auth, other kind)
        self.forged = 0

    # ------------------------------------------------------------ the waits
    def add(self, wait: Wait) -> None:
        """Wait for *wait*'s answer (replacing a wait of the same request id)."""
        self._by_id[wait.request_id] = wait
        self._update_needles()

    def remove(self, request_id: str) -> None:
        """Stop waiting for request *request_id*'s answer; nothing when it is not waiting."""
        if self._by_id.pop(request_id, None) is not None:
            self._update_needles()

    def wait(self, request_id: str) -> Wait | None:
        """The wait of request *request_id*, ``None`` when it is not waiting."""
        return self._by_id.get(request_id)

    def waiting(self) -> list[str]:
        """The ids of the requests waiting, in the order they were added."""
        return list(self._by_id)

    def _update_needles(self) -> None:
        """What a message must hold to be decoded at all: a waiting request's id, or the token of
        one matched by token. Anyone can write ``BLK_Res``; the rest is not read further."""
        tokens = {w.token for w in self._by_id.values() if w.token and not w.by_request_id_only}
        self.needles = protocol.needles_of(*self._by_id, *tokens)

    # ------------------------------------------------------------- deciding
    def match(self, partition: int, offset: int, value: Any) -> Match:
        """What the message at *partition*/*offset* with *value* is, counted. Never raises."""
        try:
            return self._match(partition, offset, value)
        except Exception as exc:
            return self._malformed(partition, offset, f"unreadable ({type(exc).__name__})")

    def _match(self, partition: int, offset: int, value: Any) -> Match:
        if not isinstance(value, bytes | bytearray) or not protocol.mentions(value, self.needles):
            self.ignored += 1
            return Match(Verdict.IGNORED)
        try:
            response = protocol.decode_response(value)
        except MalformedResponseError as exc:
            return self._malformed(partition, offset, str(exc))
        candidates = self._candidates(partition, offset, response)
        for wait in candidates:
            if protocol.fits(response, wait.token, wait.expect):
                return Match(Verdict.ANSWER, wait.request_id, response)
        if not candidates:
            self.skipped += 1
            return Match(Verdict.UNCLAIMED)
        self.forged += 1
        return Match(
            Verdict.FORGED,
            candidates[0].request_id,
            warning=(
                f"Set aside an answer at {self.topic}[{partition}]@{offset} that names request "
                f"{candidates[0].request_id} but does not fit it ({response.kind} answer, other token or "
                f"agent); {self.forged} so far"
            ),
        )

    def _candidates(self, partition: int, offset: int, response: protocol.Response) -> list[Wait]:
        """The waits *response* names: the one whose id it echoes; without an echoed id, those
        matched by token that it is addressed to, read at or after their start positions."""
        if response.request_id is not None:
            wait = self._by_id.get(response.request_id)
            return [] if wait is None else [wait]
        return [
            wait
            for wait in self._by_id.values()
            if not wait.by_request_id_only
            and wait.token
            and offset >= wait.start_positions.get(partition, 0)
            and protocol.same_text(response.auth, wait.token)
        ]

    def _malformed(self, partition: int, offset: int, reason: str) -> Match:
        self.malformed += 1
        count = self.malformed
        warn = count <= WARN_FIRST or count % WARN_EVERY == 0
        return Match(
            Verdict.MALFORMED,
            warning=(
                f"Skipped malformed response at {self.topic}[{partition}]@{offset}: {reason} "
                f"({count} malformed so far)"
            )
            if warn
            else None,
        )
