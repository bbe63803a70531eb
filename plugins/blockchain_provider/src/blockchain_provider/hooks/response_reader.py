"""Read ``BLK_Res`` from fixed positions in a background thread and hand each answer to the
request it belongs to; :class:`~blockchain_provider.answer_matcher.AnswerMatcher` decides which.

The offsets vocabulary (*positions*, *start positions*) is :mod:`blockchain_provider.answer_matcher`'s.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from blockchain_provider import protocol
from blockchain_provider.answer_matcher import AnswerMatcher, Positions, Verdict, Wait
from blockchain_provider.exceptions import (
    BlockchainBrokerError,
    BlockchainConfigError,
    BlockchainProtocolError,
)
from blockchain_provider.hooks.kafka_clients import consume_available

if TYPE_CHECKING:
    from blockchain_provider.outcomes import AnswerAt

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Waiter:
    wait: Wait
    event: threading.Event = field(default_factory=threading.Event)
    response: protocol.Response | None = None
    # set once the request timed out and its token stays blocked for a late answer
    release: Callable[[], None] | None = None
    timer: threading.Timer | None = None
    late_until: float = 0.0
    settled: threading.Event = field(default_factory=threading.Event)

    @property
    def request_id(self) -> str:
        return self.wait.request_id

    @property
    def expect(self) -> protocol.Expectation:
        return self.wait.expect

    @property
    def start_positions(self) -> Positions:
        return self.wait.start_positions


# Where each response topic is known to end, per broker, from what every reader of the process
# has fetched. A request matched by its token must not take an answer that was on the topic
# before it was sent, even one its own reader has not read yet: another hook's answer to the same
# token, or a duplicate that came in the same fetch as the answer before it.
_KNOWN_ENDS: dict[tuple[str, str], Positions] = {}
_KNOWN_ENDS_GUARD = threading.Lock()


class ResponseReader:
    """Reads ``BLK_Res`` from fixed positions and hands each answer to the request it belongs to.

    :param consumer: a consumer that is not subscribed to anything; the reader assigns it.
    :param topic: the response topic.
    :param broker: names the cluster, to share what is known of the topic's end between readers,
        defaults to ``""``.
    """

    def __init__(self, consumer: Consumer, topic: str, broker: str = "") -> None:
        self._consumer = consumer
        self.topic = topic
        with _KNOWN_ENDS_GUARD:
            self._known_ends = _KNOWN_ENDS.setdefault((broker, topic), {})
        self._lock = threading.Lock()
        self._positions: Positions = {}
        self._by_id: dict[str, _Waiter] = {}
        self._matcher = AnswerMatcher(topic)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: answers that came after their request had timed out
        self.late = 0

    @property
    def malformed(self) -> int:
        """Messages that named a waiting request but were no answer the protocol knows."""
        return self._matcher.malformed

    @property
    def skipped(self) -> int:
        """Answers to no waiting request."""
        return self._matcher.skipped

    @property
    def forged(self) -> int:
        """Answers that named one of our requests but did not fit it (other auth, other kind)."""
        return self._matcher.forged

    @property
    def ignored(self) -> int:
        """Messages not decoded: they hold neither a token nor a request id of a waiting request."""
        return self._matcher.ignored

    # ---------------------------------------------------------------- positioning
    def read_to_end(self, timeout: float) -> Positions:
        """Assign every partition at its end and read up to it; return the positions.

        Reading to the end (not only trusting the high watermark) keeps the positions right on
        brokers whose watermark lags behind batched writes.

        :param timeout: seconds the metadata request and the reading may take together.
        :raises BlockchainConfigError: the topic does not exist.
        :raises BlockchainBrokerError: the end was not reached in time.
        """
        deadline = time.monotonic() + timeout
        metadata = self._consumer.list_topics(self.topic, timeout=timeout)
        topic_meta = metadata.topics.get(self.topic)
        if topic_meta is None or topic_meta.error is not None or not topic_meta.partitions:
            raise BlockchainConfigError(
                f"Response topic {self.topic} does not exist on the broker: create it or fix the "
                "connection's topic overrides"
            )
        positions: Positions = {}
        for partition in sorted(topic_meta.partitions):
            _low, high = self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=max(0.1, deadline - time.monotonic())
            )
            positions[partition] = high
        self._consumer.assign([TopicPartition(self.topic, p, off) for p, off in positions.items()])
        at_end: set[int] = set()
        while at_end != set(positions) and time.monotonic() < deadline:
            for message in consume_available(self._consumer, 0.1):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        at_end.add(message.partition())
                    continue
                positions[message.partition()] = message.offset() + 1
        if at_end != set(positions):
            raise BlockchainBrokerError(f"Could not read to the end of {self.topic} within {timeout:.0f} s")
        self._positions = positions
        with _KNOWN_ENDS_GUARD:
            # read to the end just now: the truth, even below what was known (a broker that lost
            # its data, like tansu after a restart, starts the topic again from 0)
            self._known_ends.update(positions)
        return dict(positions)

    def start(self, timeout: float) -> None:
        """Read to the end (:meth:`read_to_end`), then keep reading in a background thread.

        :param timeout: seconds reading to the end may take.
        """
        self.read_to_end(timeout)
        self._thread = threading.Thread(target=self._run, name=f"blk-reader-{self.topic}", daemon=True)
        self._thread.start()

    def positions(self) -> Positions:
        """How far the reader has read."""
        with self._lock:
            return dict(self._positions)

    def start_positions(self) -> Positions:
        """Where a request sent now starts looking for an answer matched by its token: the reader's
        positions, or beyond them where the topic is known to end further."""
        positions = self.positions()
        with _KNOWN_ENDS_GUARD:
            for partition, end in self._known_ends.items():
                if partition in positions:
                    positions[partition] = max(positions[partition], end)
        return positions

    def _note_ends(self, partitions: set[int]) -> None:
        """Record the high watermarks of the last fetch (a local lookup, no request to the broker)."""
        for partition in partitions:
            try:
                _low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), cached=True
                )
            except KafkaException:  # not known yet: the positions still hold
                continue
            if high >= 0:
                with _KNOWN_ENDS_GUARD:
                    self._known_ends[partition] = max(self._known_ends.get(partition, 0), high)

    # ------------------------------------------------------------------- waiting
    def register(
        self,
        request_id: str,
        token: str | None,
        by_request_id_only: bool,
        expect: protocol.Expectation = protocol.ANY_ANSWER,
    ) -> _Waiter:
        """Wait for the answer to request *request_id*, about to be sent; its waiter's ``event`` is
        set when the answer is in its ``response``. Call :meth:`unregister` when done with it.

        :param token: the token it is sent with, ``None`` for an agent request.
        :param by_request_id_only: take only an answer that echoes *request_id*; otherwise one
            addressed to *token* read at or after the start positions fixed now.
        :param expect: what the answer may be, defaults to any answer.
        """
        start = self.start_positions()
        with self._lock:
            waiter = _Waiter(Wait(request_id, token, by_request_id_only, start, expect))
            self._by_id[request_id] = waiter
            self._matcher.add(waiter.wait)
            return waiter

    def unregister(self, waiter: _Waiter) -> None:
        """Stop waiting for *waiter*'s answer."""
        with self._lock:
            self._forget(waiter)

    def waiting(self) -> int:
        """Requests waiting for their answer (not those that timed out and wait for a late one)."""
        with self._lock:
            return sum(1 for waiter in self._by_id.values() if waiter.release is None)

    def hold_late(self, waiter: _Waiter, grace: float, release: Callable[[], None]) -> bool:
        """After *waiter*'s request timed out, keep waiting for its late answer for *grace* seconds,
        and call *release* (unblocking the token) when it comes or the grace period is over.

        Returns False, holding nothing, when the answer came in the meantime.
        """
        with self._lock:
            if waiter.response is not None:
                return False
            waiter.release = release
            waiter.late_until = time.monotonic() + grace
            waiter.timer = threading.Timer(grace, self._expire_late, (waiter,))
            waiter.timer.daemon = True
            waiter.timer.start()
            return True

    def _expire_late(self, waiter: _Waiter) -> None:
        with self._lock:
            pending = self._by_id.get(waiter.request_id) is waiter
            self._forget(waiter)
        if pending:
            log.info(
                "No late answer on %s to request %s within the grace period; its token is free again",
                self.topic,
                waiter.request_id,
            )
        if waiter.release is not None:
            waiter.release()
        waiter.settled.set()

    def wait_for_late_answers(self) -> None:
        """Block until every request that timed out got its late answer or its grace period is
        over. A task calls it (through :meth:`KafkaBlockchainHook.close`) before it ends, so that
        the token's pool slot stays taken as long as the token is blocked."""
        with self._lock:
            late = [waiter for waiter in self._by_id.values() if waiter.release is not None]
        for waiter in late:
            remaining = waiter.late_until - time.monotonic()
            if remaining > 0 and not waiter.settled.is_set():
                log.info(
                    "Waiting up to %.0f s for the late answer to request %s before closing: its token "
                    "stays blocked until then",
                    remaining,
                    waiter.request_id,
                )
                waiter.settled.wait(remaining + 1)

    def _forget(self, waiter: _Waiter) -> None:
        if self._by_id.get(waiter.request_id) is waiter:
            del self._by_id[waiter.request_id]
            self._matcher.remove(waiter.request_id)

    # ------------------------------------------------------------------- reading
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.read_once(0.1)
            except Exception:  # the consumer was closed under us, or librdkafka failed
                if not self._stop.is_set():
                    log.exception("Reading %s failed; retrying", self.topic)
                    time.sleep(0.5)

    def read_once(self, timeout: float) -> None:
        """Read what one poll brings (waiting up to *timeout* seconds for it) and hand each answer
        to its request. The background thread calls it in a loop; a message the reader fails on is
        logged and skipped, never fatal.

        :raises KafkaException: the poll itself failed.
        """
        messages = consume_available(self._consumer, timeout)
        if messages:
            # before any answer of the batch wakes its caller, who may send the next request
            self._note_ends({message.partition() for message in messages})
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("Error reading %s: %s", self.topic, error)
                continue
            try:
                self._dispatch(message.partition(), message.offset(), message.value())
            except Exception:  # a reader that dies would leave every request to time out
                log.exception(
                    "Skipped the response at %s[%d]@%d", self.topic, message.partition(), message.offset()
                )

    def _dispatch(self, partition: int, offset: int, value: bytes | None) -> None:
        late: _Waiter | None = None
        with self._lock:
            self._positions[partition] = offset + 1
            match = self._matcher.match(partition, offset, value)
            if match.verdict is Verdict.ANSWER:
                waiter = self._by_id[match.request_id or ""]
                self._forget(waiter)
                if waiter.release is None:
                    waiter.response = match.response
                    waiter.event.set()
                    return
                self.late += 1
                late = waiter
        if match.warning is not None:
            log.warning("%s", match.warning)
        if late is None:
            return
        if late.timer is not None:
            late.timer.cancel()
        assert match.response is not None
        log.warning(
            "A late answer (%s) to request %s came at %s[%d]@%d after the request had timed out; "
            "%d late answer(s) so far",
            match.response.kind,
            late.request_id,
            self.topic,
            partition,
            offset,
            self.late,
        )
        assert late.release is not None
        late.release()
        late.settled.set()

    def close(self) -> None:
        """Stop the background thread; the consumer is the caller's to close."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def read_at(
    consumer: Consumer, topic: str, wanted: list[tuple[int, int]], timeout: float
) -> dict[tuple[int, int], bytes | None]:
    """The values of the messages of *topic* at *wanted* ``(partition, offset)`` places.

    :param consumer: a consumer that is not subscribed to anything; this assigns it.
    :param timeout: seconds the reading may take.
    :raises BlockchainBrokerError: a message was not read in time, or is no longer on the topic.
    """
    missing = set(wanted)
    first: dict[int, int] = {}
    for partition, offset in missing:
        first[partition] = min(offset, first.get(partition, offset))
    consumer.assign([TopicPartition(topic, p, off) for p, off in first.items()])
    found: dict[tuple[int, int], bytes | None] = {}
    deadline = time.monotonic() + timeout
    while missing and time.monotonic() < deadline:
        for message in consume_available(consumer, min(0.5, max(0.0, deadline - time.monotonic()))):
            error = message.error()
            partition = message.partition()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    # at the partition's end: what was not read on the way is not on the topic
                    missing = {(p, o) for p, o in missing if p != partition}
                continue
            place = (partition, message.offset())
            if place in missing:
                missing.discard(place)
                found[place] = message.value()
    lost = sorted(set(wanted) - set(found))
    if lost:
        partition, offset = lost[0]
        raise BlockchainBrokerError(
            f"Could not read back the answer at {topic}[{partition}]@{offset} within {timeout:.0f} s"
            + (f" ({len(lost)} answers in all)" if len(lost) > 1 else "")
            + ": it is no longer on the topic, or the broker did not answer"
        )
    return found


def read_answers_at(consumer: Consumer, located: list[AnswerAt], timeout: float) -> list[protocol.Response]:
    """Read back, in order, the answers a trigger found (a deferred task resuming).

    Each is the message at its offset whose value has the digest the trigger noted: the answer
    it matched, decoded here as a reader decodes it.

    :raises BlockchainBrokerError: an answer could not be read back (no longer on the topic).
    :raises BlockchainProtocolError: the message there is not the one the trigger matched.
    """
    places = [(answer.partition, answer.offset) for answer in located]
    values = read_at(consumer, located[0].response_topic, places, timeout)
    responses = []
    for answer in located:
        value = values[(answer.partition, answer.offset)]
        if hashlib.sha256(value or b"").hexdigest() != answer.digest:
            raise BlockchainProtocolError(
                f"The message at {answer.response_topic}[{answer.partition}]@{answer.offset} is not the "
                f"answer to request {answer.request_id} found there before (the topic was rewritten)"
            )
        responses.append(protocol.decode_response(value))
    return responses
