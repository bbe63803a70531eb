"""The requests of every kind synced from the gateway, and the items set aside."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from include.mes import schema
from include.mes.models import (
    REQUEST_ID_RE,
    REQUEST_STATUSES,
    InvalidRequestItemError,
    OrderRequest,
    PartnerRequest,
    StoredRequest,
    UpsertResult,
)
from include.mes.repositories.base import RepositoryBase, _chunks, _dialect_insert, _serialise_writers
from include.mes.request_kinds import StoredKind, stored_kind


class RequestsRepository(RepositoryBase):
    """The requests of every stored kind: upserted by the syncs, read by the flows and the page."""

    def upsert_requests(self, kind: str, items: Iterable[Mapping[str, Any]]) -> UpsertResult:
        """Store *kind* requests as listed by the gateway (PROTOCOL.md 3.1, 3.2 for partners and orders).

        Items are checked one by one; an item given twice counts once, and its last occurrence
        wins. An invalid item (a bad field, a NUL, a lone surrogate, an oversized text) is not
        stored: it is set aside in ``rejected_items`` with the reason, and listed in the result's
        ``new_rejected`` the first time only. Ledger items are permanent: one bad item must not
        stop every later sync.
        """
        return self._upsert(stored_kind(kind), items)

    def upsert_partner_requests(self, items: Iterable[Mapping[str, Any]]) -> UpsertResult:
        """Store partner requests as listed by the gateway; see :meth:`upsert_requests`."""
        return self.upsert_requests("partner", items)

    def upsert_order_requests(self, items: Iterable[Mapping[str, Any]]) -> UpsertResult:
        """Store order requests as listed by the gateway; see :meth:`upsert_requests`."""
        return self.upsert_requests("order", items)

    def _upsert(self, stored: StoredKind, items: Iterable[Mapping[str, Any]]) -> UpsertResult:
        table, key, kind = stored.table, stored.key, stored.name
        latest: dict[str, tuple[dict[str, Any], Mapping[str, Any]]] = {}
        bad: dict[str, dict[str, Any]] = {}
        for index, item in enumerate(items):
            try:
                row = stored.to_row(item, index)
            except InvalidRequestItemError as exc:
                bad[_fingerprint(item)] = {"item_id": _item_id(item, key), "reason": _reason(exc)}
                continue
            latest[row[key]] = (row, item)
        if not latest:
            if not bad:
                return UpsertResult()
            with self.engine.begin() as conn:
                _serialise_writers(conn, table.name)
                new_rejected = self._set_aside(conn, kind, bad, schema.utcnow())
            return UpsertResult(rejected=len(bad), new_rejected=new_rejected)
        compared = [column for column in next(iter(latest.values()))[0] if column != key]
        key_column = table.c[key]
        select_columns = [key_column, *(table.c[column] for column in compared)]
        inserted: list[dict[str, Any]] = []
        changed: list[dict[str, Any]] = []
        new_open: list[Mapping[str, Any]] = []
        unchanged = 0
        with self.engine.begin() as conn:
            _serialise_writers(conn, table.name)
            existing: dict[str, tuple[Any, ...]] = {}
            for ids in _chunks(list(latest), self.chunk_size):
                for row in conn.execute(sa.select(*select_columns).where(key_column.in_(ids))):
                    existing[row[0]] = tuple(row[1:])
            now = schema.utcnow()
            for item_id, (row, item) in latest.items():
                old = existing.get(item_id)
                if old is None:
                    inserted.append({**row, "first_seen_at": now, "updated_at": now})
                    if row["status"] == "OPEN":
                        new_open.append(item)
                elif old != tuple(row[column] for column in compared):
                    changed.append({**row, "first_seen_at": now, "updated_at": now})
                else:
                    unchanged += 1
            self._write(conn, table, key, compared, inserted, changed)
            new_rejected = self._set_aside(conn, kind, bad, now)
        return UpsertResult(
            inserted=len(inserted),
            updated=len(changed),
            unchanged=unchanged,
            new_open=[dict(item) for item in new_open],
            new_open_ids=[item[key] for item in new_open],
            rejected=len(bad),
            new_rejected=new_rejected,
        )

    def _set_aside(
        self, conn: Connection, kind: str, bad: dict[str, dict[str, Any]], now: datetime
    ) -> list[dict[str, Any]]:
        """Record the rejected items; return those not recorded before."""
        if not bad:
            return []
        table = schema.rejected_items
        seen: set[str] = set()
        for fingerprints in _chunks(list(bad), self.chunk_size):
            rows = conn.execute(
                sa.select(table.c.fingerprint).where(
                    table.c.kind == kind, table.c.fingerprint.in_(fingerprints)
                )
            )
            seen.update(row[0] for row in rows)
        new = [
            {
                "kind": kind,
                "fingerprint": fp,
                **entry,
                "times_seen": 1,
                "first_seen_at": now,
                "last_seen_at": now,
            }
            for fp, entry in bad.items()
            if fp not in seen
        ]
        if new:
            conn.execute(sa.insert(table), new)
        if seen:
            conn.execute(
                sa.update(table)
                .where(table.c.kind == kind, table.c.fingerprint.in_(sorted(seen)))
                .values(times_seen=table.c.times_seen + 1, last_seen_at=now)
            )
        return [{"item_id": row["item_id"], "reason": row["reason"]} for row in new]

    def rejected_items(self, kind: str) -> list[dict[str, Any]]:
        """The items of *kind* set aside by syncs, oldest first."""
        table = schema.rejected_items
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(table)
                .where(table.c.kind == kind)
                .order_by(table.c.first_seen_at, table.c.fingerprint)
            ).mappings()
            return [
                {
                    "item_id": row["item_id"],
                    "reason": row["reason"],
                    "times_seen": row["times_seen"],
                    "first_seen_at": schema.aware(row["first_seen_at"]),
                    "last_seen_at": schema.aware(row["last_seen_at"]),
                }
                for row in rows
            ]

    @staticmethod
    def _write(
        conn: Connection,
        table: sa.Table,
        key: str,
        compared: list[str],
        inserted: list[dict[str, Any]],
        changed: list[dict[str, Any]],
    ) -> None:
        rows = inserted + changed
        if not rows:
            return
        stmt = _dialect_insert(conn, table)
        if stmt is not None:
            # first_seen_at is not in the update set: it keeps the time of the first sync.
            upsert = stmt.on_conflict_do_update(
                index_elements=[table.c[key]],
                set_={column: stmt.excluded[column] for column in [*compared, "updated_at"]},
            )
            conn.execute(upsert, rows)
            return
        if inserted:
            conn.execute(sa.insert(table), inserted)
        if changed:
            params = [{f"b_{name}": value for name, value in row.items()} for row in changed]
            update = (
                sa.update(table)
                .where(table.c[key] == sa.bindparam(f"b_{key}"))
                .values({column: sa.bindparam(f"b_{column}") for column in [*compared, "updated_at"]})
            )
            conn.execute(update, params)

    def partner_request(self, partner_request_id: str) -> PartnerRequest | None:
        """The stored partner request with this id, or ``None``."""
        return self.request("partner", partner_request_id)  # type: ignore[return-value]

    def order_request(self, abs_action_id: str) -> OrderRequest | None:
        """The stored order request with this id, or ``None``."""
        return self.request("order", abs_action_id)  # type: ignore[return-value]

    def request(self, kind: str, request_id: str) -> StoredRequest | None:
        """The stored *kind* request with this id, or ``None``."""
        stored = stored_kind(kind)
        query = sa.select(stored.table).where(stored.table.c[stored.key] == _request_id(request_id))
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else stored.to_item(row)

    def requests_first_seen(
        self, kind: str, since: datetime, status: str | None = "OPEN"
    ) -> list[StoredRequest]:
        """The *kind* requests the MES first stored at or after *since* (with *status*, only those),
        in the order it stored them."""
        stored = stored_kind(kind)
        table = stored.table
        since = since.astimezone(UTC) if since.tzinfo is not None else since.replace(tzinfo=UTC)
        query = _by_status(table, status).where(table.c.first_seen_at >= since)
        query = query.order_by(table.c.first_seen_at, table.c.timestamp, table.c[stored.key])
        with self.engine.connect() as conn:
            return [stored.to_item(row) for row in conn.execute(query).mappings()]

    def requests(self, kind: str, status: str | None = None) -> list[StoredRequest]:
        """Stored *kind* requests, newest first, optionally only those with *status*."""
        stored = stored_kind(kind)
        table = stored.table
        query = _by_status(table, status).order_by(table.c.timestamp.desc(), table.c[stored.key])
        with self.engine.connect() as conn:
            return [stored.to_item(row) for row in conn.execute(query).mappings()]

    def partner_requests(self, status: str | None = None) -> list[PartnerRequest]:
        """Stored partner requests, newest first, optionally only those with *status*."""
        return self.requests("partner", status)  # type: ignore[return-value]

    def order_requests(self, status: str | None = None) -> list[OrderRequest]:
        """Stored order requests, newest first, optionally only those with *status*."""
        return self.requests("order", status)  # type: ignore[return-value]

    def request_page(
        self, kind: str, status: str | None = None, *, offset: int = 0, limit: int = 25
    ) -> tuple[int, list[StoredRequest]]:
        """One page of stored *kind* requests, newest first, and how many there are in all (with
        *status*, only those)."""
        stored = stored_kind(kind)
        for name, value, least in (("offset", offset, 0), ("limit", limit, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"Invalid {name} {value!r}: expected an integer >= {least}")
        table = stored.table
        key = table.c[stored.key]
        query = _by_status(table, status)
        count = sa.select(sa.func.count()).select_from(query.subquery())
        page = query.order_by(table.c.timestamp.desc(), key).offset(offset).limit(limit)
        with self.engine.connect() as conn:
            total = conn.execute(count).scalar_one()
            return total, [stored.to_item(row) for row in conn.execute(page).mappings()]


def _fingerprint(item: object) -> str:
    """A digest that tells one listed item from another (any value, lone surrogates included)."""
    try:
        text = json.dumps(item, sort_keys=True, ensure_ascii=True, default=repr)
    except (TypeError, ValueError, RecursionError):
        text = repr(item)
    return hashlib.sha256(text.encode("ascii", "backslashreplace")).hexdigest()


def _item_id(item: object, key: str) -> str | None:
    value = item.get(key) if isinstance(item, Mapping) else None
    return value if isinstance(value, str) and REQUEST_ID_RE.fullmatch(value) else None


def _reason(exc: Exception) -> str:
    """The error text, storable anywhere: no NUL, no lone surrogate, at most 1,000 characters."""
    text = str(exc).replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= 1000 else text[:997] + "..."


def _request_id(value: object) -> str:
    if not isinstance(value, str) or not REQUEST_ID_RE.match(value):
        raise ValueError(f"Invalid request id {value!r}: expected 32 lowercase hex characters")
    return value


def _by_status(table: sa.Table, status: str | None) -> sa.Select:
    query = sa.select(table)
    if status is None:
        return query
    if status not in REQUEST_STATUSES:
        raise ValueError(f"Invalid status {status!r}: expected one of {', '.join(REQUEST_STATUSES)}")
    return query.where(table.c.status == status)
