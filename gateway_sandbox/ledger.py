"""The sandbox's ledger: agents, partner requests, orders, record types and records in SQLite.

Every state change is a *transaction*: a JSON payload (``op``, ``seq``, ``signer``,
``timestamp`` and the op's fields) signed by the acting agent's secp256k1 key. Its id is the
signature, 128 hex. The transactions of one :meth:`Ledger.transaction` (one request, or one
call of a public method) form one *block*; a block's hash is SHA-256 of the previous block's
hash followed by the canonical JSON of its transactions, so the blocks form a hash chain from
:data:`~gateway_sandbox.crypto.GENESIS_HASH`.

The state tables (``agents``, ``partner_requests``, ``orders``, ``record_types``,
``records``) are a materialised view of the transaction log:
:func:`~gateway_sandbox.transactions.apply_transaction` is the only code that writes them, both live and when :meth:`Ledger.verify` replays the log into an
empty database and compares. ``verify`` therefore reports a broken chain, a bad signature, and
any state row edited without a transaction.

Not part of the chain (secrets, and the gateway's own bookkeeping): ``agent_secrets`` (private
keys, stored as hex because this is a sandbox, and scrypt password hashes), ``tokens`` (SHA-256
of each token only), ``consumer_offsets`` and ``outbox``.

SQLite runs in WAL mode with ``synchronous=NORMAL`` (durable across a killed process, which is
what the gateway's exactly-once processing relies on) and a busy timeout, so admin commands may
write beside a running server.

This module holds the ledger's state and its API. The rest of the ledger has a module each:

- :mod:`gateway_sandbox.schema`: the SQLite schema, and the tables of the request kinds;
- :mod:`gateway_sandbox.validation`: the checks of incoming values, and :class:`LedgerError`;
- :mod:`gateway_sandbox.transactions`: applying a signed transaction to the state tables;
- :mod:`gateway_sandbox.outbox`: the gateway server's consumed offsets and response outbox;
- :mod:`gateway_sandbox.verification`: what :meth:`Ledger.verify` checks.

The names that moved out of this module are still importable from it.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from coincurve import PrivateKey

from gateway_sandbox import crypto, schema, verification
from gateway_sandbox.outbox import GatewayBookkeeping
from gateway_sandbox.schema import (
    ACCEPTED,
    OPEN,
    ORDER,
    PARTNER_REQUEST,
    REJECTED,
    SCHEMA,
    STATE_SCHEMA,
    STATE_TABLES,
    RequestKind,
)
from gateway_sandbox.transactions import apply_transaction
from gateway_sandbox.validation import (
    MAX_AGENT_NAME,
    MAX_PASSWORD,
    MIN_PASSWORD,
    PROPERTY_TYPES,
    LedgerError,
    check_agent_name,
    check_agent_password,
    check_description,
    check_item_id,
    check_name,
    check_order,
    check_property_declarations,
    check_property_values,
    check_public_key,
    check_reporter_password,
    check_response,
    check_value,
    short,
    shown,
)
from gateway_sandbox.wire import ITEM_ID_RE, NAME_RE, PUBLIC_KEY_RE

# The names that moved to the modules above, still importable from here.
__all__ = [
    "ACCEPTED",
    "ANCHOR_SUFFIX",
    "ITEM_ID_RE",
    "MAX_AGENT_NAME",
    "MAX_PASSWORD",
    "MIN_PASSWORD",
    "NAME_RE",
    "OPEN",
    "PROPERTY_TYPES",
    "PUBLIC_KEY_RE",
    "REJECTED",
    "SCHEMA",
    "STATE_SCHEMA",
    "STATE_TABLES",
    "Ledger",
    "LedgerError",
    "apply_transaction",
    "check_description",
    "check_item_id",
    "check_name",
    "check_property_declarations",
    "check_public_key",
    "short",
]

#: Beside the database, ``<db>.anchor`` holds the height and hash of the last block committed, so
#: that a ledger whose last blocks were removed (with everything they did) fails ``verify``.
ANCHOR_SUFFIX = ".anchor"


class Ledger(GatewayBookkeeping):
    """The SQLite ledger at *db_path* (created if missing). Thread-safe; one connection.

    Public methods that change state raise :class:`LedgerError` with a readable reason when
    they refuse, and otherwise commit one block (or join the caller's :meth:`transaction`). The
    gateway server's offsets and outbox methods come from
    :class:`~gateway_sandbox.outbox.GatewayBookkeeping`.
    """

    def __init__(self, db_path: str | Path, *, busy_timeout: float = 10.0) -> None:
        self.db_path = str(db_path)
        self.anchor_path: Path | None = None
        if self.db_path != ":memory:":
            Path(self.db_path).parent.mkdir(parents=True, exist_ok=True)
            # owner-only: agents' private keys and password hashes live here. SQLite creates the
            # -wal and -shm files with the database file's permissions.
            os.close(os.open(self.db_path, os.O_RDWR | os.O_CREAT, 0o600))
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(self.db_path + suffix):
                    os.chmod(self.db_path + suffix, 0o600)
            self.anchor_path = Path(self.db_path + ANCHOR_SUFFIX)
        self._sealed: tuple[int, str] | None = None
        self._conn = sqlite3.connect(
            self.db_path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.RLock()
        self._depth = 0
        self._pending: list[tuple[int, str, str, str, str]] = []
        self._next_seq = 0
        self._token_cache: dict[str, str] = {}
        self._data_version = -1
        self._key_cache: dict[str, PrivateKey] = {}
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            schema.create_or_upgrade(self._conn)

    # ---- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[Ledger]:
        """One SQLite transaction; its ledger transactions become one block when it commits.

        Nested uses are savepoints: a nested block that raises is rolled back on its own, and its
        ledger transactions are discarded with it.
        """
        with self._lock:
            if self._depth == 0:
                self._conn.execute("BEGIN IMMEDIATE")
                self._pending = []
                self._next_seq = 0
                self._depth = 1
                self._sealed = None
                try:
                    yield self
                    self._seal_block()
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                finally:
                    self._pending = []
                    self._depth = 0
                if self._sealed is not None:
                    self._write_anchor(*self._sealed)
            else:
                name = f"sp{self._depth}"
                mark = len(self._pending)
                self._conn.execute(f"SAVEPOINT {name}")
                self._depth += 1
                try:
                    yield self
                    self._conn.execute(f"RELEASE {name}")
                except BaseException:
                    self._conn.execute(f"ROLLBACK TO {name}")
                    self._conn.execute(f"RELEASE {name}")
                    del self._pending[mark:]
                    raise
                finally:
                    self._depth -= 1

    def _transact(self, signer: str, op: str, **fields: Any) -> str:
        """Sign, apply and queue one ledger transaction; return its id. Call inside :meth:`transaction`."""
        assert self._depth > 0, "ledger transactions are made inside Ledger.transaction()"
        if not self._next_seq:
            (last,) = self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM transactions").fetchone()
            self._next_seq = last + 1
        seq = self._next_seq + len(self._pending)
        payload = {"op": op, "seq": seq, "signer": signer, "timestamp": int(time.time()), **fields}
        text = crypto.canonical_json(payload)
        txid = crypto.sign(self._private_key(signer), text.encode("utf-8"))
        apply_transaction(self._conn, txid, payload)
        self._pending.append((seq, txid, signer, op, text))
        return txid

    def _seal_block(self) -> None:
        if not self._pending:
            return
        row = self._conn.execute("SELECT height, hash FROM blocks ORDER BY height DESC LIMIT 1").fetchone()
        height, previous = (row[0] + 1, row[1]) if row else (1, crypto.GENESIS_HASH)
        entries = [
            {"txid": txid, "signer": signer, "payload": json.loads(text)}
            for _, txid, signer, _, text in self._pending
        ]
        digest = crypto.block_hash(previous, entries)
        self._conn.executemany(
            "INSERT INTO transactions (seq, txid, block_height, signer, op, payload) VALUES (?, ?, ?, ?, ?, ?)",
            [(seq, txid, height, signer, op, text) for seq, txid, signer, op, text in self._pending],
        )
        self._conn.execute(
            "INSERT INTO blocks (height, prev_hash, hash, created_at, tx_count) VALUES (?, ?, ?, ?, ?)",
            (height, previous, digest, time.time(), len(self._pending)),
        )
        self._pending = []
        self._sealed = (height, digest)

    def _write_anchor(self, height: int, digest: str) -> None:
        """Record the last committed block outside the database (atomically, owner-only)."""
        if self.anchor_path is None:
            return
        temporary = self.anchor_path.with_name(f"{self.anchor_path.name}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"height": height, "hash": digest}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.anchor_path)

    def _one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        with self._lock:
            return self._conn.execute(sql, params).fetchone()

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # ---- agents and tokens ---------------------------------------------------------------

    def _private_key(self, public_key: str) -> PrivateKey:
        key = self._key_cache.get(public_key)
        if key is None:
            row = self._one("SELECT private_key FROM agent_secrets WHERE public_key = ?", (public_key,))
            if row is None:
                raise LedgerError(f"agent {short(public_key)} has no key in this ledger")
            key = PrivateKey.from_hex(row[0])
            self._key_cache[public_key] = key
        return key

    def create_agent(self, name: str, password: str) -> tuple[str, str]:
        """Create an agent with a fresh key pair; return ``(public_key, token)``."""
        check_agent_name(name)
        check_agent_password(password)
        key = crypto.new_private_key()
        public_key = crypto.public_key_hex(key)
        salt, digest = crypto.hash_password(password)
        with self.transaction():
            self._conn.execute(
                "INSERT INTO agent_secrets (public_key, private_key, password_salt, password_hash)"
                " VALUES (?, ?, ?, ?)",
                (public_key, key.to_hex(), salt, digest),
            )
            self._key_cache[public_key] = key
            self._transact(public_key, "agent.create", public_key=public_key, name=name)
            token = self._new_token(public_key)
        return public_key, token

    def _new_token(self, public_key: str) -> str:
        token = crypto.new_token()
        with self.transaction():
            self._conn.execute(
                "INSERT INTO tokens (token_hash, public_key, created_at) VALUES (?, ?, ?)",
                (crypto.token_hash(token), public_key, time.time()),
            )
        return token

    def check_password(self, public_key: str, password: str) -> bool:
        row = self._one(
            "SELECT password_salt, password_hash FROM agent_secrets WHERE public_key = ?", (public_key,)
        )
        if row is None or not isinstance(password, str):
            return False
        return crypto.check_password(password, row[0], row[1])

    def issue_token(self, public_key: str, password: str) -> str:
        """A fresh token for an existing agent whose password matches; its earlier tokens are revoked."""
        if not self.check_password(public_key, password):
            raise LedgerError("unknown agent or wrong password")
        return self._rotate_token(public_key)

    def _rotate_token(self, public_key: str) -> str:
        with self.transaction():
            self._conn.execute("DELETE FROM tokens WHERE public_key = ?", (public_key,))
            for digest in [d for d, pk in self._token_cache.items() if pk == public_key]:
                del self._token_cache[digest]
            return self._new_token(public_key)

    def agent_for_token(self, token: str) -> str | None:
        """The public key of the agent holding *token*, or ``None``."""
        if not isinstance(token, str) or not token:
            return None
        digest = crypto.token_hash(token)
        with self._lock:
            # another connection (a second process, an admin command) committed: it may have
            # revoked a cached token. Own commits do not change data_version.
            (version,) = self._conn.execute("PRAGMA data_version").fetchone()
            if version != self._data_version:
                self._token_cache.clear()
                self._data_version = version
        public_key = self._token_cache.get(digest)
        if public_key is None:
            row = self._one("SELECT public_key FROM tokens WHERE token_hash = ?", (digest,))
            if row is None:
                return None
            public_key = row[0]
            self._token_cache[digest] = public_key
        return public_key

    def agent(self, public_key: str) -> dict[str, Any] | None:
        row = self._one("SELECT public_key, name, created_at FROM agents WHERE public_key = ?", (public_key,))
        return {"public_key": row[0], "name": row[1], "created_at": row[2]} if row else None

    def agents(self, name: str | None = None) -> list[dict[str, Any]]:
        """Public keys and names (never secrets), oldest first; only those called *name* if given."""
        sql = "SELECT public_key, name, created_at FROM agents"
        params: tuple[Any, ...] = ()
        if name is not None:
            sql += " WHERE name = ?"
            params = (name,)
        rows = self._all(sql + " ORDER BY seq", params)
        return [{"public_key": r[0], "name": r[1], "created_at": r[2]} for r in rows]

    def _require_agent(self, public_key: object, what: str = "agent") -> str:
        check_public_key(public_key, f"{what} public key")
        if self._one("SELECT 1 FROM agents WHERE public_key = ?", (public_key,)) is None:
            raise LedgerError(f"{what} {short(public_key)} not found")
        return public_key  # type: ignore[return-value]

    # ---- partner requests and orders -----------------------------------------------------

    def are_partners(self, a: str, b: str) -> bool:
        return (
            self._one(
                "SELECT 1 FROM partner_requests WHERE status = 'ACCEPTED' AND ((issuing_agent = ?"
                " AND receiving_agent = ?) OR (issuing_agent = ? AND receiving_agent = ?))",
                (a, b, b, a),
            )
            is not None
        )

    def create_partner_request(self, issuer_pk: str, receiver_pk: str) -> str:
        """*issuer* asks *receiver* to become partners; return the partner request id."""
        with self.transaction():
            self._require_agent(issuer_pk, "issuing agent")
            self._require_agent(receiver_pk, "receiving agent")
            if issuer_pk == receiver_pk:
                raise LedgerError("an agent cannot send a partner request to itself")
            if self.are_partners(issuer_pk, receiver_pk):
                raise LedgerError(f"agents {short(issuer_pk)} and {short(receiver_pk)} are already partners")
            row = self._conn.execute(
                "SELECT partner_request_id FROM partner_requests WHERE status = 'OPEN'"
                " AND issuing_agent = ? AND receiving_agent = ?",
                (issuer_pk, receiver_pk),
            ).fetchone()
            if row:
                raise LedgerError(f"partner request {row[0]} to {short(receiver_pk)} is already OPEN")
            item_id = secrets.token_hex(16)
            self._transact(
                issuer_pk, "partner_request.create", partner_request_id=item_id, receiving_agent=receiver_pk
            )
        return item_id

    def _answer(self, kind: RequestKind, agent_pk: str, item_id: object, accept: object) -> dict[str, Any]:
        key = check_item_id(item_id, f"{kind.noun} id")
        check_response(accept)
        with self.transaction():
            row = self._conn.execute(
                f"SELECT receiving_agent, status FROM {kind.table} WHERE {kind.id_column} = ?", (key,)
            ).fetchone()
            if row is None:
                raise LedgerError(f"{kind.noun} {key} not found")
            receiver, status = row
            if receiver != agent_pk:
                raise LedgerError(f"{kind.noun} {key} is addressed to another agent")
            if status != OPEN:
                raise LedgerError(f"{kind.noun} {key} is already {status}")
            new_status = ACCEPTED if accept else REJECTED
            self._transact(agent_pk, f"{kind.name}.answer", **{kind.id_column: key, "status": new_status})
            item = self._item(kind, key)
        assert item is not None
        return item

    def answer_partner_request(
        self, agent_pk: str, partner_request_id: str, accept: bool | int
    ) -> dict[str, Any]:
        """The receiving agent accepts (``True``/1) or rejects an OPEN partner request; return it."""
        return self._answer(PARTNER_REQUEST, agent_pk, partner_request_id, accept)

    def answer_order(self, agent_pk: str, abs_action_id: str, accept: bool | int) -> dict[str, Any]:
        """The receiving agent accepts or rejects an OPEN order request; return it."""
        return self._answer(ORDER, agent_pk, abs_action_id, accept)

    def create_order(
        self,
        issuer_pk: str,
        receiver_pk: str,
        type: str,
        description: str,
        metadata: Mapping[str, Any] | None = None,
        files: Sequence[str] = (),
    ) -> str:
        """*issuer* asks its partner *receiver* to produce something; return the order id."""
        type, description, metadata, files = check_order(type, description, metadata, files)
        with self.transaction():
            self._require_agent(issuer_pk, "issuing agent")
            self._require_agent(receiver_pk, "receiving agent")
            if not self.are_partners(issuer_pk, receiver_pk):
                raise LedgerError(
                    f"agent {short(issuer_pk)} is not an accepted partner of {short(receiver_pk)}:"
                    " orders need an accepted partner request"
                )
            item_id = secrets.token_hex(16)
            self._transact(
                issuer_pk,
                "order.create",
                abs_action_id=item_id,
                receiving_agent=receiver_pk,
                type=type,
                description=description,
                metadata=metadata,
                files=files,
            )
        return item_id

    def _items(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        rows = self._all(sql, params)
        return json.loads("[" + ",".join(row[0] for row in rows) + "]")

    def _item(self, kind: RequestKind, item_id: str) -> dict[str, Any] | None:
        items = self._items(
            f"SELECT {kind.item_json} FROM {kind.table} WHERE {kind.id_column} = ?", (item_id,)
        )
        return items[0] if items else None

    def partner_request(self, partner_request_id: str) -> dict[str, Any] | None:
        return self._item(PARTNER_REQUEST, partner_request_id)

    def order(self, abs_action_id: str) -> dict[str, Any] | None:
        return self._item(ORDER, abs_action_id)

    @staticmethod
    def _filters(
        receiver_pk: str | None, issuer_pk: str | None, agent_pk: str | None, status: str | None
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if receiver_pk is not None:
            clauses.append("receiving_agent = ?")
            params.append(receiver_pk)
        if issuer_pk is not None:
            clauses.append("issuing_agent = ?")
            params.append(issuer_pk)
        if agent_pk is not None:
            clauses.append("(receiving_agent = ? OR issuing_agent = ?)")
            params += [agent_pk, agent_pk]
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def requests(
        self,
        kind: RequestKind,
        receiver_pk: str | None = None,
        *,
        issuer_pk: str | None = None,
        agent_pk: str | None = None,
        status: str | None = None,
        start: int = 0,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """*kind*'s items in creation order (stable), filtered and paged."""
        where, params = self._filters(receiver_pk, issuer_pk, agent_pk, status)
        return self._page(kind, where, params, start, limit)

    def partner_requests(self, receiver_pk: str | None = None, **filters: Any) -> list[dict[str, Any]]:
        """Partner requests in creation order (stable), filtered and paged (see :meth:`requests`)."""
        return self.requests(PARTNER_REQUEST, receiver_pk, **filters)

    def orders(self, receiver_pk: str | None = None, **filters: Any) -> list[dict[str, Any]]:
        """Order requests in creation order (stable), filtered and paged (see :meth:`requests`)."""
        return self.requests(ORDER, receiver_pk, **filters)

    def _page(
        self, kind: RequestKind, where: str, params: list[Any], start: int, limit: int | None
    ) -> list[dict[str, Any]]:
        """One page of *kind*'s items in creation order."""
        return self._items(
            f"SELECT {kind.item_json} FROM (SELECT * FROM {kind.table}{where} ORDER BY seq LIMIT ? OFFSET ?)"
            " ORDER BY seq",
            [*params, -1 if limit is None else limit, start],
        )

    # ---- record types and records --------------------------------------------------------

    def record_type(self, name: str) -> dict[str, Any] | None:
        row = self._one("SELECT name, description, properties FROM record_types WHERE name = ?", (name,))
        return {"name": row[0], "description": row[1], "properties": json.loads(row[2])} if row else None

    def record_types(self) -> list[dict[str, Any]]:
        rows = self._all("SELECT name, description, properties FROM record_types ORDER BY seq")
        return [{"name": r[0], "description": r[1], "properties": json.loads(r[2])} for r in rows]

    def create_record_type(
        self, agent_pk: str, name: str, properties: list[dict[str, Any]], description: str = ""
    ) -> bool:
        """Declare a record type; ``True`` if created, ``False`` if it exists identically (an existing
        name with other properties or description is refused)."""
        check_name(name, "record type name")
        declared = check_property_declarations(properties)
        check_description(description)
        with self.transaction():
            existing = self.record_type(name)
            if existing is not None:
                if existing["properties"] == declared and existing["description"] == description:
                    return False
                raise LedgerError(f"record type {name} exists with different values")
            self._transact(
                agent_pk, "record_type.create", name=name, description=description, properties=declared
            )
        return True

    def _declared(self, record_type: str) -> dict[str, dict[str, Any]]:
        rtype = self.record_type(record_type)
        if rtype is None:
            raise LedgerError(f"record type {record_type} not found")
        return {p["name"]: p for p in rtype["properties"]}

    def create_record(
        self,
        agent_pk: str,
        record_id: str,
        record_type: str,
        properties: Mapping[str, Any] | list[dict[str, Any]],
        *,
        description: str = "",
    ) -> bool:
        """Create a non-dynamic record owned by *agent*; ``True`` if created, ``False`` if it exists
        identically. Every non-dynamic property must be given (it is final)."""
        created, _ = self._create_record(agent_pk, record_id, record_type, properties, description, None)
        return created

    def create_dynamic_record(
        self,
        agent_pk: str,
        record_id: str,
        record_type: str,
        properties: Mapping[str, Any] | list[dict[str, Any]],
        password: str,
        *,
        description: str = "",
    ) -> tuple[str, str]:
        """Create a dynamic record owned by *agent* and its reporter agent, whose password is
        *password*; return the reporter's ``(public_key, token)``.

        Creating it again with the same record type, non-dynamic values and password answers the
        reporter again, with a fresh token (its earlier ones are revoked); with anything else it is
        refused.
        """
        check_reporter_password(password)
        with self.transaction():
            _, reporter = self._create_record(
                agent_pk, record_id, record_type, properties, description, password
            )
            assert reporter is not None
            if reporter[1] is None:  # it existed identically: answer the reporter again
                return reporter[0], self._rotate_token(reporter[0])
            return reporter[0], reporter[1]

    def _create_record(
        self,
        agent_pk: str,
        record_id: str,
        record_type: str,
        properties: Mapping[str, Any] | list[dict[str, Any]],
        description: str,
        password: str | None,
    ) -> tuple[bool, tuple[str, str | None] | None]:
        check_name(record_id, "record id")
        check_name(record_type, "record type name")
        check_description(description)
        values = check_property_values(properties)
        dynamic = password is not None
        with self.transaction():
            declared = self._declared(record_type)
            final = {n: v for n, v in values.items() if n in declared and not declared[n]["dynamic"]}
            existing = self._one(
                "SELECT record_type, created_properties, dynamic, reporters FROM records WHERE record_id = ?",
                (record_id,),
            )
            if existing is not None:
                stored = json.loads(existing[1])
                stored_final = {
                    n: v for n, v in stored.items() if n in declared and not declared[n]["dynamic"]
                }
                reporters = json.loads(existing[3])
                same = existing[0] == record_type and bool(existing[2]) == dynamic and stored_final == final
                if dynamic:
                    # identical only with the same password: only the MES that created it knows it
                    same = same and bool(reporters) and self.check_password(reporters[0], password)
                    if same:
                        return False, (reporters[0], None)
                elif same and stored == values:
                    return False, None
                raise LedgerError(f"record {record_id} exists with different values")
            for name, value in values.items():
                if name not in declared:
                    raise LedgerError(f"record type {record_type} has no property {shown(name)}")
                check_value(record_type, name, declared[name]["data_type"], value)
            missing = [n for n, p in declared.items() if not p["dynamic"] and n not in values]
            if missing:
                raise LedgerError(
                    f"record {record_id} lacks the non-dynamic properties {', '.join(sorted(missing))}"
                )
            if dynamic and not any(p["dynamic"] for p in declared.values()):
                raise LedgerError(
                    f"record type {record_type} has no dynamic property: a record of it cannot be dynamic"
                )
            fields: dict[str, Any] = {
                "record_id": record_id,
                "record_type": record_type,
                "description": description,
                "dynamic": dynamic,
                "properties": values,
            }
            reporter: tuple[str, str | None] | None = None
            if dynamic:
                assert password is not None
                reporter = self.create_agent(f"Reporter of record {record_id}", password)
                fields["reporter"] = reporter[0]
            self._transact(agent_pk, "record.create", **fields)
        return True, reporter

    def _record_row(self, record_id: str) -> tuple[Any, ...]:
        row = self._one(
            "SELECT record_type, owner, reporters, dynamic FROM records WHERE record_id = ?", (record_id,)
        )
        if row is None:
            raise LedgerError(f"record {record_id} not found")
        return row

    def update_record(
        self,
        agent_pk: str,
        record_id: str,
        properties: Mapping[str, Any] | list[dict[str, Any]],
        *,
        record_type: str | None = None,
    ) -> dict[str, Any]:
        """The record's reporter (or its owner) sets dynamic properties of a dynamic record; return
        the record. With *record_type*, the record must be of that type (its topic's)."""
        check_name(record_id, "record id")
        values = check_property_values(properties)
        with self.transaction():
            stored_type, owner, reporters, dynamic = self._record_row(record_id)
            if record_type is not None and stored_type != record_type:
                raise LedgerError(
                    f"record {record_id} is of record type {stored_type}: update it on that type's topic"
                )
            if agent_pk != owner and agent_pk not in json.loads(reporters):
                raise LedgerError(
                    f"agent {short(agent_pk)} is neither the reporter nor the owner of record {record_id}"
                )
            if not dynamic and not json.loads(reporters):
                raise LedgerError(f"record {record_id} is not dynamic: its values are final")
            declared = self._declared(stored_type)
            for name, value in values.items():
                if name not in declared:
                    raise LedgerError(f"record type {stored_type} has no property {shown(name)}")
                if not declared[name]["dynamic"]:
                    raise LedgerError(
                        f"property {name} of record {record_id} is not dynamic: its value is final"
                    )
                check_value(stored_type, name, declared[name]["data_type"], value)
            self._transact(agent_pk, "record.update", record_id=record_id, properties=values)
            record = self.record(record_id)
        assert record is not None
        return record

    def add_reporter(self, agent_pk: str, record_id: str, reporter_pk: str) -> bool:
        """The owner authorises *reporter*; ``True`` if added, ``False`` if already authorised."""
        check_name(record_id, "record id")
        check_public_key(reporter_pk, "reporter public key")
        with self.transaction():
            _, owner, reporters, _ = self._record_row(record_id)
            if agent_pk != owner:
                raise LedgerError(f"only the owner of record {record_id} may add reporters")
            self._require_agent(reporter_pk, "reporter")
            if reporter_pk == owner or reporter_pk in json.loads(reporters):
                return False
            self._transact(agent_pk, "record.add_reporter", record_id=record_id, reporter=reporter_pk)
        return True

    def record(self, record_id: str) -> dict[str, Any] | None:
        row = self._one(
            "SELECT record_id, record_type, owner, reporters, properties, transaction_ids FROM records"
            " WHERE record_id = ?",
            (record_id,),
        )
        if row is None:
            return None
        return {
            "record_id": row[0],
            "record_type": row[1],
            "owner": row[2],
            "reporters": json.loads(row[3]),
            "properties": json.loads(row[4]),
            "transaction_ids": json.loads(row[5]),
        }

    def record_updates(self, record_id: str) -> list[dict[str, Any]]:
        """The properties each update of record *record_id* set, in ledger order."""
        rows = self._all("SELECT payload FROM transactions WHERE op = 'record.update' ORDER BY seq")
        updates = [json.loads(payload) for (payload,) in rows]
        return [u["properties"] for u in updates if u.get("record_id") == record_id]

    def records(
        self, record_type: str | None = None, *, start: int = 0, limit: int | None = None
    ) -> list[dict]:
        sql = "SELECT record_id FROM records"
        params: list[Any] = []
        if record_type is not None:
            sql += " WHERE record_type = ?"
            params.append(record_type)
        rows = self._all(
            sql + " ORDER BY seq LIMIT ? OFFSET ?", [*params, -1 if limit is None else limit, start]
        )
        return [r for r in (self.record(row[0]) for row in rows) if r is not None]

    def count_records(self, record_type: str | None = None) -> int:
        if record_type is None:
            row = self._one("SELECT COUNT(*) FROM records")
        else:
            row = self._one("SELECT COUNT(*) FROM records WHERE record_type = ?", (record_type,))
        assert row is not None
        return int(row[0])

    # ---- chain ---------------------------------------------------------------------------

    def blocks(self) -> list[dict[str, Any]]:
        with self._snapshot() as conn:
            rows = conn.execute(
                "SELECT height, prev_hash, hash, created_at, tx_count FROM blocks ORDER BY height"
            ).fetchall()
            tx_rows = conn.execute(
                "SELECT seq, txid, block_height, signer, op FROM transactions ORDER BY seq"
            )
            txs: dict[int, list[dict[str, Any]]] = {}
            for seq, txid, height, signer, op in tx_rows.fetchall():
                txs.setdefault(height, []).append({"seq": seq, "txid": txid, "signer": signer, "op": op})
        return [
            {
                "height": r[0],
                "prev_hash": r[1],
                "hash": r[2],
                "created_at": r[3],
                "tx_count": r[4],
                "transactions": txs.get(r[0], []),
            }
            for r in rows
        ]

    def counts(self) -> dict[str, int]:
        tables = ("agents", "partner_requests", "orders", "record_types", "records", "transactions", "blocks")
        with self._snapshot() as conn:
            return {
                table: int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]) for table in tables
            }

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """Several reads seeing one state, though another process commits meanwhile (WAL)."""
        with self._lock:
            if self._depth:
                yield self._conn
                return
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("ROLLBACK")

    def verify(self) -> list[str]:
        """Recompute the hash chain, check every signature, replay the log; return the problems found."""
        with self._snapshot() as conn:
            return verification.verify(conn, self.anchor_path)
