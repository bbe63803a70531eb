"""Putting a request on Kafka: one request per token at a time, and the broker's confirmation.

Without request-id echo a token may have one request in flight: :func:`token_lock` serialises
them across every client of the process (an Airflow pool per token does it across workers).
:func:`deliver` produces a request and waits until the broker takes it; the worker's client and
the triggerer's serial conversation both send this way.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

from confluent_kafka import KafkaError, Producer

from blockchain_provider import protocol
from blockchain_provider.exceptions import BlockchainDeliveryError

__all__ = ["ReleaseOnce", "deliver", "token_lock"]


class ReleaseOnce:
    """Releases a lock the first time it is called, from whichever thread."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._guard = threading.Lock()
        self._done = False

    def __call__(self) -> None:
        with self._guard:
            if self._done:
                return
            self._done = True
        self._lock.release()


# Requests of one token are serialised across every hook instance of the process when the
# gateway does not echo request ids. Keyed by a digest, so the token itself is not kept here.
_TOKEN_LOCKS: dict[str, threading.Lock] = {}
_TOKEN_LOCKS_GUARD = threading.Lock()


def token_lock(scope: str, token: str) -> threading.Lock:
    """The process's lock of *token*'s requests within *scope* (a broker and response topic)."""
    key = hashlib.sha256(f"{scope}\0{token}".encode()).hexdigest()
    with _TOKEN_LOCKS_GUARD:
        return _TOKEN_LOCKS.setdefault(key, threading.Lock())


def deliver(producer: Producer, request: protocol.Request, topic: str, timeout: float, broker: str) -> None:
    """Produce *request* on *topic* and wait until the broker confirms it, or raise naming the
    topic and *broker* (the bootstrap servers). The worker's client and the triggerer's serial
    conversation send this way.

    :raises BlockchainDeliveryError: the broker did not take the request.
    """
    outcome: dict[str, Any] = {}
    delivered = threading.Event()

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        outcome["error"] = err
        delivered.set()

    try:
        producer.produce(
            topic,
            value=request.encode(),
            key=request.kafka_key(),
            headers=request.kafka_headers(),
            on_delivery=on_delivery,
        )
    except (BufferError, ValueError, Exception) as exc:
        raise BlockchainDeliveryError(
            f"Could not send request {request.request_id} to topic {topic} on broker {broker}: {exc}",
            topic=topic,
            request_id=request.request_id,
        ) from None
    deadline = time.monotonic() + max(timeout, 1.0) + 10
    while not delivered.is_set():
        producer.poll(0.005)
        if time.monotonic() > deadline:
            break
    error = outcome.get("error")
    if not delivered.is_set() or error is not None:
        reason = error.str() if error is not None else "no delivery report"
        raise BlockchainDeliveryError(
            f"The broker {broker} did not take request {request.request_id} for topic {topic}: {reason}",
            topic=topic,
            request_id=request.request_id,
        )
