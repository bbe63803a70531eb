"""Read ``BLK_Res`` from fixed positions and hand each answer to the request it belongs to.

Offsets have one vocabulary here and in the hook, :class:`PendingRequest` and the trigger: a
*position* is the offset of the next message to read in a partition, and :data:`Positions`
maps each partition to one. A partition's *end* is the position after its last message. A
request's *start positions* are fixed before it is sent: an answer matched by its token is
taken only at or after them, so it cannot be an answer that was on the topic before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from blockchain_provider import protocol
from blockchain_provider.exceptions import (
    BlockchainBrokerError,
    BlockchainConfigError,
    MalformedResponseError,
)

log = logging.getLogger(__name__)

#: Partition -> position: the offset of the next message to read there.
Positions: TypeAlias = dict[int, int]


def positions_to_primitives(positions: Positions) -> dict[str, int]:
    """*positions* with text keys, as JSON (a trigger's serialised arguments) holds them."""
    return {str(partition): int(offset) for partition, offset in positions.items()}


def positions_from_primitives(value: dict[str, int] | dict[int, int]) -> Positions:
    """Positions from their JSON form (text keys), or from positions."""
    return {int(partition): int(offset) for partition, offset in value.items()}


@dataclass(eq=False)
class _Waiter:
    request_id: str
    token: str | None
    by_request_id_only: bool
    start_positions: Positions
    expect: protocol.Expectation = protocol.ANY_ANSWER
    event: threading.Event = field(default_factory=threading.Event)
    response: protocol.Response | None = None
    # set once the request timed out and its token stays blocked for a late answer
    release: Callable[[], None] | None = None
    timer: threading.Timer | None = None
    late_until: float = 0.0
    settled: threading.Event = field(default_factory=threading.Event)


def consume_available(consumer: Consumer, timeout: float, batch: int = 500) -> list[Any]:
    """Wait up to *timeout* for one message, then take what else is already fetched.

    ``Consumer.consume(n, timeout)`` waits the whole timeout unless *n* messages arrive, which
    would add that timeout to every round trip.

    :param batch: the most messages taken, defaults to 500.
    """
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(num_messages=batch - 1, timeout=0)]


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
        self._by_token: list[_Waiter] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.malformed = 0
        self.skipped = 0
        #: answers that named one of our requests but did not fit it (other auth, other kind)
        self.forged = 0
        #: answers that came after their request had timed out
        self.late = 0
        #: messages not decoded: they hold neither a token nor a request id of a waiting request
        self.ignored = 0
        self._needles: tuple[bytes, ...] = ()

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
            waiter = _Waiter(request_id, token, by_request_id_only, start, expect)
            self._by_id[request_id] = waiter
            if not by_request_id_only and token:
                self._by_token.append(waiter)
            self._update_needles()
            return waiter

    def _update_needles(self) -> None:
        """What a message must hold to be decoded at all: a waiting request's id, or the token of
        one matched by token. Anyone can write ``BLK_Res``; the rest is not read further."""
        self._needles = protocol.needles_of(
            *self._by_id, *{waiter.token for waiter in self._by_token if waiter.token}
        )

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
        if waiter in self._by_token:
            self._by_token.remove(waiter)
        self._update_needles()

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
        if not protocol.mentions(value, self._needles):
            with self._lock:
                self._positions[partition] = offset + 1
                self.ignored += 1
            return
        try:
            response = protocol.decode_response(value)
        except MalformedResponseError as exc:
            response = None
            reason = str(exc)
        late: _Waiter | None = None
        with self._lock:
            self._positions[partition] = offset + 1
            if response is None:
                self.malformed += 1
                count = self.malformed
            else:
                waiter = self._match(partition, offset, response)
                if waiter is None:
                    self.skipped += 1
                    return
                self._forget(waiter)
                if waiter.release is None:
                    waiter.response = response
                    waiter.event.set()
                    return
                self.late += 1
                late = waiter
        if late is not None:
            if late.timer is not None:
                late.timer.cancel()
            log.warning(
                "A late answer (%s) to request %s came at %s[%d]@%d after the request had timed out; "
                "%d late answer(s) so far",
                response.kind,
                late.request_id,
                self.topic,
                partition,
                offset,
                self.late,
            )
            assert late.release is not None
            late.release()
            late.settled.set()
            return
        if count <= 10 or count % 100 == 0:
            log.warning(
                "Skipped malformed response at %s[%d]@%d: %s (%d malformed so far)",
                self.topic,
                partition,
                offset,
                reason,
                count,
            )

    def _match(self, partition: int, offset: int, response: protocol.Response) -> _Waiter | None:
        if response.request_id is not None:
            waiter = self._by_id.get(response.request_id)
            candidates = [] if waiter is None else [waiter]
        else:
            candidates = [
                waiter
                for waiter in self._by_token
                if offset >= waiter.start_positions.get(partition, 0)
                and protocol.matches(
                    response, request_id=waiter.request_id, token=waiter.token, by_request_id_only=False
                )
            ]
        for waiter in candidates:
            if protocol.fits(response, waiter.token, waiter.expect):
                return waiter
        if candidates:
            self.forged += 1
            log.warning(
                "Set aside an answer at %s[%d]@%d that names request %s but does not fit it (%s answer, "
                "other token or agent); %d so far",
                self.topic,
                partition,
                offset,
                candidates[0].request_id,
                response.kind,
                self.forged,
            )
        return None

    def close(self) -> None:
        """Stop the background thread; the consumer is the caller's to close."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
