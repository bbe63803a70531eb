"""The gateway server's bookkeeping in the ledger file: consumed offsets and the response outbox.

Neither is part of the chain. They live in the ledger's database so that one SQLite transaction
holds a request's effect, its responses and the partition's next offset: the server's
exactly-once processing (:mod:`gateway_sandbox.server`). :class:`GatewayBookkeeping` is a base
of :class:`~gateway_sandbox.ledger.Ledger` and writes through the ledger's own connection.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any


class GatewayBookkeeping:
    """Consumed offsets and unsent responses, on the ledger's connection and in its transactions."""

    # provided by the ledger
    _conn: sqlite3.Connection
    _lock: threading.RLock
    _depth: int

    def transaction(self) -> AbstractContextManager[Any]:  # pragma: no cover - the ledger's
        raise NotImplementedError

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:  # pragma: no cover
        raise NotImplementedError

    def stored_offsets(self) -> dict[tuple[str, int], tuple[int, str]]:
        """``(topic, partition) -> (next offset, fingerprint of the last consumed message)``."""
        rows = self._all("SELECT topic, partition, next_offset, fingerprint FROM consumer_offsets")
        return {(r[0], r[1]): (r[2], r[3]) for r in rows}

    def _write(self, sql: str, params: Sequence[Any], *, many: bool = False) -> sqlite3.Cursor:
        """One bookkeeping statement: joins the caller's transaction without a savepoint (a single
        statement cannot half-fail), else commits on its own."""
        with self._lock:
            run = self._conn.executemany if many else self._conn.execute
            if self._depth:
                return run(sql, params)
            with self.transaction():
                return run(sql, params)

    def store_offset(self, topic: str, partition: int, next_offset: int, fingerprint: str) -> None:
        """Record that *topic*'s *partition* is consumed up to *next_offset* (excluded).

        :param topic: the actual topic name.
        :param partition: the partition.
        :param next_offset: the offset of the next message to consume.
        :param fingerprint: the fingerprint of the message just before *next_offset*.
        """
        self._write(
            "INSERT INTO consumer_offsets (topic, partition, next_offset, fingerprint, updated_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (topic, partition) DO UPDATE SET"
            " next_offset = excluded.next_offset, fingerprint = excluded.fingerprint,"
            " updated_at = excluded.updated_at",
            (topic, partition, next_offset, fingerprint, time.time()),
        )

    def outbox_add(
        self, topic: str, key: bytes | None, value: bytes, headers: Sequence[tuple[str, str]], due_at: float
    ) -> int:
        """Queue one response to produce; return its row id.

        :param topic: the actual topic name.
        :param key: the message key, or ``None``.
        :param value: the message value.
        :param headers: the Kafka headers.
        :param due_at: when to produce it (``time.time()`` clock).
        """
        cursor = self._write(
            "INSERT INTO outbox (topic, key, value, headers, due_at, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (topic, key, value, json.dumps(list(headers)), due_at, time.time()),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def outbox_pending(self) -> list[tuple[int, str, bytes | None, bytes, list[tuple[str, str]], float]]:
        """Unsent responses, oldest first: ``(id, topic, key, value, headers, due_at)``."""
        rows = self._all("SELECT id, topic, key, value, headers, due_at FROM outbox ORDER BY id")
        return [(r[0], r[1], r[2], r[3], [tuple(h) for h in json.loads(r[4])], r[5]) for r in rows]

    def outbox_delete(self, ids: Sequence[int]) -> None:
        """Forget the responses the broker confirmed.

        :param ids: their row ids.
        """
        if ids:
            self._write("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids], many=True)
