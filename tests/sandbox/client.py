"""A plain confluent-kafka client of the BLK protocol, written for these tests from PROTOCOL.md.

It does not use the provider's hook nor the sandbox's own wire module, so the contract tests
check the sandbox against the protocol document, not against itself.
"""

from __future__ import annotations

import ast
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from tests.conftest import prefixed_topics

#: The record type the sandbox tests create records of: one dynamic STRING property, Status.
UNIT = [{"name": "Status", "data_type": "STRING", "dynamic": True}]
#: A record creation's header besides the token: on its record type's topic, isRecord true
#: (PROTOCOL.md 3.3).
CREATE = {"isRecord": True}


def unit_record(record_id: str) -> dict:
    """The body creating non-dynamic record *record_id* of type ``Unit``, Status ``idle``."""
    return {
        "record_id": record_id,
        "record_type": "Unit",
        "description": f"unit {record_id}",
        "dynamic": False,
        "password": "",
        "properties": [{"name": "Status", "value": "idle"}],
    }


@dataclass
class Raw:
    """One ``BLK_Res`` message as read, with its decoding when it is well-formed."""

    value: bytes | None
    key: bytes | None
    headers: dict[str, bytes]
    envelope: list[Any] | None
    received_at: float

    @property
    def header(self) -> dict[str, Any]:
        assert self.envelope is not None
        return self.envelope[0]

    @property
    def outcome(self) -> dict[str, Any]:
        assert self.envelope is not None
        return self.envelope[1]


def decode(value: bytes | None, encoding: str) -> list[Any]:
    """Strict decoding of a response in the sandbox's configured *encoding*; raises on anything else."""
    assert value is not None
    outer = json.loads(value.decode("utf-8"))
    if encoding == "python-literal":
        assert isinstance(outer, str), f"python-literal response is not a JSON string: {outer!r:.80}"
        envelope = ast.literal_eval(outer)
    else:
        assert isinstance(outer, list), f"json response is not a JSON array: {outer!r:.80}"
        envelope = outer
    return envelope


def well_formed(value: bytes | None, encoding: str) -> list[Any] | None:
    """The envelope if *value* is a well-formed response (PROTOCOL.md section 1), else ``None``."""
    try:
        envelope = decode(value, encoding)
    except (AssertionError, ValueError, SyntaxError, TypeError, UnicodeDecodeError):
        return None
    if not isinstance(envelope, list) or len(envelope) != 2:
        return None
    header, outcome = envelope
    if not isinstance(header, dict) or not isinstance(outcome, dict):
        return None
    if not isinstance(header.get("auth"), str) or not header["auth"]:
        return None
    if sum(kind in outcome for kind in ("data", "message", "error")) != 1:
        return None
    if not _plain(envelope):
        return None
    return envelope


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, str | bool | int | float):
        return True
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


class BlkClient:
    """Sends requests on the prefixed BLK topics and reads ``BLK_Res`` from where it stood at creation."""

    def __init__(self, bootstrap: str, prefix: str, *, encoding: str = "python-literal") -> None:
        self.topics = prefixed_topics(prefix)
        self.prefix = prefix
        self.encoding = encoding
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"test-client-{prefix}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 2,
                "auto.offset.reset": "earliest",
            }
        )
        responses = self.topics["BLK_Res"]
        metadata = self.consumer.list_topics(responses, timeout=10)
        assignment = []
        for partition in metadata.topics[responses].partitions:
            _, high = self.consumer.get_watermark_offsets(TopicPartition(responses, partition), timeout=10)
            assignment.append(TopicPartition(responses, partition, high))
        self.consumer.assign(assignment)
        self.received: list[Raw] = []
        self._seen: set[tuple[int, int]] = set()
        self._used = 0

    def close(self) -> None:
        self.producer.flush(5)
        # an open producer connection makes tansu wait 5 s on SIGTERM at the end of the session
        self.producer.close()
        self.consumer.close()

    # ---- sending -------------------------------------------------------------------------

    def send(
        self,
        topic: str,
        header: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        *,
        raw: bytes | None = None,
        request_id: str | None = None,
        flush: bool = True,
    ) -> str:
        """Send ``[header + request_id, body]`` (or *raw* bytes) to the prefixed *topic*; return the id."""
        rid = request_id or uuid.uuid4().hex
        if raw is None:
            envelope: list[Any] = [{**(header or {}), "request_id": rid}]
            if body is not None:
                envelope.append(body)
            raw = json.dumps(envelope).encode()
        # a record topic (BLK_Rec_<record type>) carries the same prefix
        self.producer.produce(
            self.topics.get(topic, self.prefix + topic),
            value=raw,
            key=rid.encode(),
            headers=[("blk-request-id", rid.encode())],
        )
        if flush:
            self.producer.flush(10)
        else:
            self.producer.poll(0)
        return rid

    # ---- receiving -----------------------------------------------------------------------

    def poll(self, timeout: float = 0.1, *, until_quiet: bool = False) -> list[Raw]:
        """Read what arrives within *timeout*, returning early once something new came (unless
        *until_quiet*); return the new messages."""
        new: list[Raw] = []
        deadline = time.monotonic() + timeout
        while True:
            wait = 0.0 if new and not until_quiet else max(0.0, min(0.05, deadline - time.monotonic()))
            message = self.consumer.poll(wait)
            if message is None and new and not until_quiet:
                return new
            if message is not None and message.error() is None:
                where = (message.partition(), message.offset())
                if where not in self._seen:
                    self._seen.add(where)
                    raw = Raw(
                        message.value(),
                        message.key(),
                        dict(message.headers() or []),
                        well_formed(message.value(), self.encoding),
                        time.monotonic(),
                    )
                    self.received.append(raw)
                    new.append(raw)
                continue
            if time.monotonic() >= deadline:
                return new

    def wait(self, predicate, timeout: float = 15.0, what: str = "a response") -> Raw:
        """The first received message (old or new) matching *predicate*; fail after *timeout*.

        Token matching (:meth:`next_for_token`) then starts after it."""
        deadline = time.monotonic() + timeout
        while True:
            for index, raw in enumerate(self.received):
                if predicate(raw):
                    self._used = max(self._used, index + 1)
                    return raw
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {what} within {timeout} s; received {len(self.received)} message(s)"
                )
            self.poll(0.05)

    def response_to(self, request_id: str, timeout: float = 15.0) -> Raw:
        return self.wait(
            lambda r: r.envelope is not None and r.header.get("request_id") == request_id,
            timeout,
            f"response with request_id {request_id}",
        )

    def next_for_token(self, token: str, timeout: float = 15.0) -> Raw:
        """The next well-formed response addressed to *token* not returned before (no echo)."""
        start = self._used

        def mine(raw: Raw) -> bool:
            return raw.envelope is not None and raw.header.get("auth") == token

        deadline = time.monotonic() + timeout
        while True:
            for index in range(start, len(self.received)):
                if mine(self.received[index]):
                    self._used = index + 1
                    return self.received[index]
            if time.monotonic() > deadline:
                raise AssertionError(f"no response for the token within {timeout} s")
            self.poll(0.05)

    def request(
        self, topic: str, header: dict[str, Any], body: dict[str, Any] | None = None, timeout: float = 15.0
    ) -> Raw:
        """Send and wait for the response echoing the request id (echo on, or BLK_Agt)."""
        return self.response_to(self.send(topic, header, body), timeout)

    def quiet_for(self, seconds: float) -> list[Raw]:
        """Everything that arrives in the next *seconds*."""
        return self.poll(seconds, until_quiet=True)
