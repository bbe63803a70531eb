"""The sandbox's ledger: agents, partner requests, orders, record types and records in SQLite.

Every state change is a *transaction*: a JSON payload (``op``, ``seq``, ``signer``,
``timestamp`` and the op's fields) signed by the acting agent's secp256k1 key. Its id is the
signature, 128 hex. The transactions of one :meth:`Ledger.transaction` (one request, or one
call of a public method) form one *block*; a block's hash is SHA-256 of the previous block's
hash followed by the canonical JSON of its transactions, so the blocks form a hash chain from
:data:`~gateway_sandbox.crypto.GENESIS_HASH`.

The state tables (``agents``, ``partner_requests``, ``orders``, ``record_types``,
``records``) are a materialised view of the transaction log: :func:`apply_transaction` is the
only code that writes them, both live and when :meth:`Ledger.verify` replays the log into an
empty database and compares. ``verify`` therefore reports a broken chain, a bad signature, and
any state row edited without a transaction.

Not part of the chain (secrets, and the gateway's own bookkeeping): ``agent_secrets`` (private
keys, stored as hex because this is a sandbox, and scrypt password hashes), ``tokens`` (SHA-256
of each token only), ``consumer_offsets`` and ``outbox``.

SQLite runs in WAL mode with ``synchronous=NORMAL`` (durable across a killed process, which is
what the gateway's exactly-once processing relies on) and a busy timeout, so admin commands may
write beside a running server.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from coincurve import PrivateKey

from gateway_sandbox import crypto

OPEN = "OPEN"
ACCEPTED = "ACCEPTED"
REJECTED = "REJECTED"

PROPERTY_TYPES = ("STRING", "NUMBER", "BOOLEAN")

PUBLIC_KEY_RE = re.compile(r"^0[23][0-9a-f]{64}$")
ITEM_ID_RE = re.compile(r"^[0-9a-f]{32}$")
NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")

MAX_AGENT_NAME = 200
MAX_PASSWORD = 1024
MIN_PASSWORD = 12

#: Beside the database, ``<db>.anchor`` holds the height and hash of the last block committed, so
#: that a ledger whose last blocks were removed (with everything they did) fails ``verify``.
ANCHOR_SUFFIX = ".anchor"


class LedgerError(Exception):
    """A refusal with a human-readable reason; the gateway answers it as ``error``. Never holds a secret."""


#: The state tables, written only by :func:`apply_transaction`.
STATE_SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    public_key TEXT PRIMARY KEY, name TEXT NOT NULL, created_at INTEGER NOT NULL,
    seq INTEGER NOT NULL, transaction_ids TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS agents_name ON agents (name);
CREATE TABLE IF NOT EXISTS partner_requests (
    partner_request_id TEXT PRIMARY KEY, seq INTEGER NOT NULL UNIQUE,
    issuing_agent TEXT NOT NULL, receiving_agent TEXT NOT NULL, status TEXT NOT NULL,
    timestamp INTEGER NOT NULL, answer_timestamp INTEGER NOT NULL, transaction_ids TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS partner_requests_receiver ON partner_requests (receiving_agent, seq);
CREATE INDEX IF NOT EXISTS partner_requests_issuer ON partner_requests (issuing_agent, seq);
CREATE TABLE IF NOT EXISTS orders (
    abs_action_id TEXT PRIMARY KEY, seq INTEGER NOT NULL UNIQUE, type TEXT NOT NULL,
    description TEXT NOT NULL, metadata TEXT NOT NULL, files TEXT NOT NULL,
    issuing_agent TEXT NOT NULL, receiving_agent TEXT NOT NULL, status TEXT NOT NULL,
    timestamp INTEGER NOT NULL, answer_timestamp INTEGER NOT NULL, transaction_ids TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS orders_receiver ON orders (receiving_agent, seq);
CREATE INDEX IF NOT EXISTS orders_issuer ON orders (issuing_agent, seq);
CREATE TABLE IF NOT EXISTS record_types (
    name TEXT PRIMARY KEY, seq INTEGER NOT NULL, creator TEXT NOT NULL, properties TEXT NOT NULL,
    created_at INTEGER NOT NULL, transaction_ids TEXT NOT NULL, description TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS records (
    record_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, record_type TEXT NOT NULL, owner TEXT NOT NULL,
    reporters TEXT NOT NULL, properties TEXT NOT NULL, created_properties TEXT NOT NULL,
    created_at INTEGER NOT NULL, transaction_ids TEXT NOT NULL, description TEXT NOT NULL DEFAULT '',
    dynamic INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS records_type ON records (record_type, seq);
"""

#: The transaction log, the secrets and the gateway's bookkeeping.
SCHEMA = (
    STATE_SCHEMA
    + """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS agent_secrets (
    public_key TEXT PRIMARY KEY, private_key TEXT NOT NULL,
    password_salt BLOB NOT NULL, password_hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY, public_key TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS transactions (
    seq INTEGER PRIMARY KEY, txid TEXT NOT NULL UNIQUE, block_height INTEGER NOT NULL,
    signer TEXT NOT NULL, op TEXT NOT NULL, payload TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS transactions_block ON transactions (block_height);
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY, prev_hash TEXT NOT NULL, hash TEXT NOT NULL,
    created_at REAL NOT NULL, tx_count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS consumer_offsets (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    fingerprint TEXT NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (topic, partition));
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, key BLOB, value BLOB NOT NULL,
    headers TEXT NOT NULL, due_at REAL NOT NULL, created_at REAL NOT NULL);
"""
)

#: The replayable state tables: name -> (key column, compared columns).
STATE_TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "agents": ("public_key", ("public_key", "name", "created_at", "seq", "transaction_ids")),
    "partner_requests": (
        "partner_request_id",
        (
            "partner_request_id",
            "seq",
            "issuing_agent",
            "receiving_agent",
            "status",
            "timestamp",
            "answer_timestamp",
            "transaction_ids",
        ),
    ),
    "orders": (
        "abs_action_id",
        (
            "abs_action_id",
            "seq",
            "type",
            "description",
            "metadata",
            "files",
            "issuing_agent",
            "receiving_agent",
            "status",
            "timestamp",
            "answer_timestamp",
            "transaction_ids",
        ),
    ),
    "record_types": (
        "name",
        ("name", "seq", "creator", "properties", "created_at", "transaction_ids", "description"),
    ),
    "records": (
        "record_id",
        (
            "record_id",
            "seq",
            "record_type",
            "owner",
            "reporters",
            "properties",
            "created_properties",
            "created_at",
            "transaction_ids",
            "description",
            "dynamic",
        ),
    ),
}

#: Columns added to the state tables after their first version: ``(table, column, declaration)``.
_ADDED_COLUMNS = (
    ("record_types", "description", "TEXT NOT NULL DEFAULT ''"),
    ("records", "description", "TEXT NOT NULL DEFAULT ''"),
    ("records", "dynamic", "INTEGER NOT NULL DEFAULT 0"),
)

_PARTNER_FIELDS = (
    "partner_request_id",
    "issuing_agent",
    "receiving_agent",
    "status",
    "timestamp",
    "answer_timestamp",
    "transaction_ids",
)
_ORDER_FIELDS = (
    "abs_action_id",
    "type",
    "description",
    "metadata",
    "files",
    "issuing_agent",
    "receiving_agent",
    "status",
    "timestamp",
    "answer_timestamp",
    "transaction_ids",
)

_JSON_COLUMNS = ("metadata", "files", "transaction_ids")


def _json_object(fields: tuple[str, ...]) -> str:
    """A SQL expression building an item's JSON object in SQLite (one ``json.loads`` per page)."""
    parts = [f"'{name}', {f'json({name})' if name in _JSON_COLUMNS else name}" for name in fields]
    return f"json_object({', '.join(parts)})"


_PARTNER_JSON = _json_object(_PARTNER_FIELDS)
_ORDER_JSON = _json_object(_ORDER_FIELDS)


def _dump(value: Any) -> str:
    return crypto.canonical_json(value)


def _shown(value: object, limit: int = 40) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short(key: str) -> str:
    """A public key or id shortened for messages and logs."""
    return key[:12] + "..." if isinstance(key, str) and len(key) > 15 else str(key)


# --------------------------------------------------------------------------------------
# Applying transactions: the only writer of the state tables (live and in verify's replay)
# --------------------------------------------------------------------------------------


def _append_txid(conn: sqlite3.Connection, table: str, key_column: str, key: str, txid: str) -> None:
    row = conn.execute(f"SELECT transaction_ids FROM {table} WHERE {key_column} = ?", (key,)).fetchone()
    if row is None:
        raise LedgerError(f"{table} row {short(key)} does not exist")
    ids = json.loads(row[0])
    ids.append(txid)
    conn.execute(f"UPDATE {table} SET transaction_ids = ? WHERE {key_column} = ?", (_dump(ids), key))


def apply_transaction(conn: sqlite3.Connection, txid: str, payload: Mapping[str, Any]) -> None:
    """Write the effect of one signed transaction to the state tables of *conn*."""
    op = payload["op"]
    seq = payload["seq"]
    signer = payload["signer"]
    ts = payload["timestamp"]
    ids = _dump([txid])
    if op == "agent.create":
        conn.execute(
            "INSERT INTO agents (public_key, name, created_at, seq, transaction_ids) VALUES (?, ?, ?, ?, ?)",
            (payload["public_key"], payload["name"], ts, seq, ids),
        )
    elif op == "partner_request.create":
        conn.execute(
            "INSERT INTO partner_requests (partner_request_id, seq, issuing_agent, receiving_agent, status,"
            " timestamp, answer_timestamp, transaction_ids) VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
            (payload["partner_request_id"], seq, signer, payload["receiving_agent"], OPEN, ts, ids),
        )
    elif op == "order.create":
        conn.execute(
            "INSERT INTO orders (abs_action_id, seq, type, description, metadata, files, issuing_agent,"
            " receiving_agent, status, timestamp, answer_timestamp, transaction_ids)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
            (
                payload["abs_action_id"],
                seq,
                payload["type"],
                payload["description"],
                _dump(payload["metadata"]),
                _dump(payload["files"]),
                signer,
                payload["receiving_agent"],
                OPEN,
                ts,
                ids,
            ),
        )
    elif op in ("partner_request.answer", "order.answer"):
        table, key_column = (
            ("partner_requests", "partner_request_id")
            if op == "partner_request.answer"
            else ("orders", "abs_action_id")
        )
        key = payload[key_column]
        _append_txid(conn, table, key_column, key, txid)
        conn.execute(
            f"UPDATE {table} SET status = ?, answer_timestamp = ? WHERE {key_column} = ?",
            (payload["status"], ts, key),
        )
    elif op == "record_type.create":
        conn.execute(
            "INSERT INTO record_types (name, seq, creator, properties, created_at, transaction_ids, description)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                payload["name"],
                seq,
                signer,
                _dump(payload["properties"]),
                ts,
                ids,
                payload.get("description", ""),
            ),
        )
    elif op == "record.create":
        values = _dump(payload["properties"])
        # a dynamic record names its reporter, created in a transaction before this one
        reporter = payload.get("reporter")
        if (
            reporter is not None
            and conn.execute("SELECT 1 FROM agents WHERE public_key = ?", (reporter,)).fetchone() is None
        ):
            raise LedgerError(f"reporter {short(reporter)} of record {payload['record_id']} does not exist")
        conn.execute(
            "INSERT INTO records (record_id, seq, record_type, owner, reporters, properties,"
            " created_properties, created_at, transaction_ids, description, dynamic)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                payload["record_id"],
                seq,
                payload["record_type"],
                signer,
                _dump([reporter] if reporter else []),
                values,
                values,
                ts,
                ids,
                payload.get("description", ""),
                1 if payload.get("dynamic") else 0,
            ),
        )
    elif op == "record.update":
        record_id = payload["record_id"]
        row = conn.execute(
            "SELECT owner, reporters FROM records WHERE record_id = ?", (record_id,)
        ).fetchone()
        if row is not None and signer != row[0] and signer not in json.loads(row[1]):
            # checked here, the one writer, so that verify's replay checks every update's signer too
            raise LedgerError(
                f"agent {short(signer)} is neither the owner nor a reporter of record {record_id}"
            )
        _append_txid(conn, "records", "record_id", record_id, txid)
        (current,) = conn.execute(
            "SELECT properties FROM records WHERE record_id = ?", (record_id,)
        ).fetchone()
        merged = {**json.loads(current), **payload["properties"]}
        conn.execute("UPDATE records SET properties = ? WHERE record_id = ?", (_dump(merged), record_id))
    elif op == "record.add_reporter":
        record_id = payload["record_id"]
        _append_txid(conn, "records", "record_id", record_id, txid)
        (current,) = conn.execute(
            "SELECT reporters FROM records WHERE record_id = ?", (record_id,)
        ).fetchone()
        reporters = [*json.loads(current), payload["reporter"]]
        conn.execute("UPDATE records SET reporters = ? WHERE record_id = ?", (_dump(reporters), record_id))
    else:
        raise LedgerError(f"unknown transaction op {_shown(op)}")


# --------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------


def check_public_key(value: object, what: str = "public key") -> str:
    if not isinstance(value, str) or not PUBLIC_KEY_RE.fullmatch(value):
        raise LedgerError(
            f"invalid {what} {_shown(value)}: expected 66 lowercase hex characters starting 02 or 03"
        )
    return value


def check_item_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not ITEM_ID_RE.fullmatch(value):
        raise LedgerError(f"invalid {what} {_shown(value)}: expected 32 lowercase hex characters")
    return value


def check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise LedgerError(f"invalid {what} {_shown(value)}: expected 1-128 letters, digits and _ . : -")
    return value


def check_property_declarations(properties: object) -> list[dict[str, Any]]:
    if not isinstance(properties, list) or not properties:
        raise LedgerError("a record type needs a non-empty list of properties")
    checked: list[dict[str, Any]] = []
    seen: set[str] = set()
    for prop in properties:
        if not isinstance(prop, Mapping):
            raise LedgerError(f"invalid property declaration {_shown(prop)}: expected an object")
        name = check_name(prop.get("name"), "property name")
        if name in seen:
            raise LedgerError(f"property {name} is declared twice")
        seen.add(name)
        data_type = prop.get("data_type")
        if data_type not in PROPERTY_TYPES:
            raise LedgerError(
                f"invalid data_type {_shown(data_type)} of property {name}: one of {', '.join(PROPERTY_TYPES)}"
            )
        dynamic = prop.get("dynamic", False)
        if not isinstance(dynamic, bool):
            raise LedgerError(f"invalid dynamic flag of property {name}: expected true or false")
        checked.append({"name": name, "data_type": data_type, "dynamic": dynamic})
    return checked


def _check_value(record_type: str, name: str, data_type: str, value: object) -> None:
    if data_type == "STRING":
        ok = isinstance(value, str)
    elif data_type == "NUMBER":
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    else:
        ok = isinstance(value, bool)
    if not ok:
        raise LedgerError(
            f"property {name} of record type {record_type} is a {data_type}, not {_shown(value)}"
        )


def _check_values_object(properties: object) -> dict[str, Any]:
    """Property values as ``{name: value}``, from a list of ``{"name", "value"}`` (the wire's form,
    PROTOCOL.md 3.3) or an object."""
    if isinstance(properties, list) and properties:
        values: dict[str, Any] = {}
        for item in properties:
            if not isinstance(item, Mapping) or set(item) != {"name", "value"}:
                raise LedgerError(f"invalid property value {_shown(item)}: expected {{name, value}}")
            name = item["name"]
            if not isinstance(name, str) or name in values:
                raise LedgerError(f"property {_shown(name)} is not a name, or is given twice")
            values[name] = item["value"]
        return values
    if not isinstance(properties, Mapping) or not properties:
        raise LedgerError("record properties must be a non-empty list of {name, value}")
    return dict(properties)


def check_description(value: object) -> str:
    if not isinstance(value, str) or len(value) > 1000:
        raise LedgerError("invalid description: expected text of at most 1000 characters")
    return value


# --------------------------------------------------------------------------------------
# The ledger
# --------------------------------------------------------------------------------------


class Ledger:
    """The SQLite ledger at *db_path* (created if missing). Thread-safe; one connection.

    Public methods that change state raise :class:`LedgerError` with a readable reason when
    they refuse, and otherwise commit one block (or join the caller's :meth:`transaction`).
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
            self._conn.executescript("BEGIN IMMEDIATE;" + SCHEMA + "COMMIT;")
            for table, column, declaration in _ADDED_COLUMNS:  # a ledger written by an earlier version
                columns = {row[1] for row in self._conn.execute(f"PRAGMA table_info({table})")}
                if column not in columns:
                    self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
            self._conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1')")

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
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_AGENT_NAME:
            raise LedgerError(f"invalid agent name: expected 1-{MAX_AGENT_NAME} characters")
        if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise LedgerError(f"invalid password: expected {MIN_PASSWORD}-{MAX_PASSWORD} characters")
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

    def _answer(self, kind: str, agent_pk: str, item_id: object, accept: object) -> dict[str, Any]:
        table, key_column, what = (
            ("partner_requests", "partner_request_id", "partner request")
            if kind == "partner_request"
            else ("orders", "abs_action_id", "order request")
        )
        check_item_id(item_id, f"{what} id")
        if accept not in (0, 1) or not isinstance(accept, int):
            raise LedgerError(f"invalid response {_shown(accept)}: expected 1 (accept) or 0 (reject)")
        with self.transaction():
            row = self._conn.execute(
                f"SELECT receiving_agent, status FROM {table} WHERE {key_column} = ?", (item_id,)
            ).fetchone()
            if row is None:
                raise LedgerError(f"{what} {item_id} not found")
            receiver, status = row
            if receiver != agent_pk:
                raise LedgerError(f"{what} {item_id} is addressed to another agent")
            if status != OPEN:
                raise LedgerError(f"{what} {item_id} is already {status}")
            new_status = ACCEPTED if accept else REJECTED
            self._transact(agent_pk, f"{kind}.answer", **{key_column: item_id, "status": new_status})
            item = (self.partner_request if kind == "partner_request" else self.order)(item_id)
        assert item is not None
        return item

    def answer_partner_request(
        self, agent_pk: str, partner_request_id: str, accept: bool | int
    ) -> dict[str, Any]:
        """The receiving agent accepts (``True``/1) or rejects an OPEN partner request; return it."""
        return self._answer("partner_request", agent_pk, partner_request_id, accept)

    def answer_order(self, agent_pk: str, abs_action_id: str, accept: bool | int) -> dict[str, Any]:
        """The receiving agent accepts or rejects an OPEN order request; return it."""
        return self._answer("order", agent_pk, abs_action_id, accept)

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
        if not isinstance(type, str) or not type.strip():
            raise LedgerError("an order needs a non-empty type")
        if not isinstance(description, str):
            raise LedgerError("an order description must be text")
        metadata = {} if metadata is None else metadata
        if not isinstance(metadata, Mapping):
            raise LedgerError("order metadata must be an object")
        if isinstance(files, str) or not all(isinstance(f, str) for f in files):
            raise LedgerError("order files must be a list of strings")
        try:
            metadata = json.loads(crypto.canonical_json(dict(metadata)))
        except (TypeError, ValueError):
            raise LedgerError("order metadata must be plain JSON (no NaN or infinity)") from None
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
                files=list(files),
            )
        return item_id

    def _items(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        rows = self._all(sql, params)
        return json.loads("[" + ",".join(row[0] for row in rows) + "]")

    def partner_request(self, partner_request_id: str) -> dict[str, Any] | None:
        items = self._items(
            f"SELECT {_PARTNER_JSON} FROM partner_requests WHERE partner_request_id = ?",
            (partner_request_id,),
        )
        return items[0] if items else None

    def order(self, abs_action_id: str) -> dict[str, Any] | None:
        items = self._items(f"SELECT {_ORDER_JSON} FROM orders WHERE abs_action_id = ?", (abs_action_id,))
        return items[0] if items else None

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

    def partner_requests(
        self,
        receiver_pk: str | None = None,
        *,
        issuer_pk: str | None = None,
        agent_pk: str | None = None,
        status: str | None = None,
        start: int = 0,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Partner requests in creation order (stable), filtered and paged."""
        where, params = self._filters(receiver_pk, issuer_pk, agent_pk, status)
        return self._page("partner_requests", _PARTNER_JSON, where, params, start, limit)

    def orders(
        self,
        receiver_pk: str | None = None,
        *,
        issuer_pk: str | None = None,
        agent_pk: str | None = None,
        status: str | None = None,
        start: int = 0,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Order requests in creation order (stable), filtered and paged."""
        where, params = self._filters(receiver_pk, issuer_pk, agent_pk, status)
        return self._page("orders", _ORDER_JSON, where, params, start, limit)

    def _page(
        self, table: str, item_json: str, where: str, params: list[Any], start: int, limit: int | None
    ) -> list[dict[str, Any]]:
        """One page of *table* in creation order, each row as *item_json* builds it."""
        return self._items(
            f"SELECT {item_json} FROM (SELECT * FROM {table}{where} ORDER BY seq LIMIT ? OFFSET ?) ORDER BY seq",
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
        if not isinstance(password, str) or not password or len(password) > MAX_PASSWORD:
            raise LedgerError(f"a dynamic record needs its reporter's password: 1-{MAX_PASSWORD} characters")
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
        values = _check_values_object(properties)
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
                    raise LedgerError(f"record type {record_type} has no property {_shown(name)}")
                _check_value(record_type, name, declared[name]["data_type"], value)
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
        values = _check_values_object(properties)
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
                    raise LedgerError(f"record type {stored_type} has no property {_shown(name)}")
                if not declared[name]["dynamic"]:
                    raise LedgerError(
                        f"property {name} of record {record_id} is not dynamic: its value is final"
                    )
                _check_value(stored_type, name, declared[name]["data_type"], value)
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
            return _verify(conn) + _check_anchor(conn, self.anchor_path)

    # ---- gateway bookkeeping: consumed offsets and the response outbox --------------------

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
        if ids:
            self._write("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids], many=True)


# --------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------


def _check_anchor(conn: sqlite3.Connection, anchor_path: Path | None) -> list[str]:
    """The block the anchor file names must be in the chain, with that hash. The anchor may lag
    (a crash between a commit and its update), never lead."""
    if anchor_path is None:
        return []
    last = conn.execute("SELECT MAX(height) FROM blocks").fetchone()[0]
    try:
        anchor = json.loads(anchor_path.read_text())
        height, digest = int(anchor["height"]), str(anchor["hash"])
    except FileNotFoundError:
        return [f"the anchor file {anchor_path.name} is missing"] if last else []
    except (ValueError, KeyError, TypeError):
        return [f"the anchor file {anchor_path.name} is unreadable"]
    row = conn.execute("SELECT hash FROM blocks WHERE height = ?", (height,)).fetchone()
    if row is None:
        return [
            f"the anchor file says block {height} was committed, but the chain ends at block {last or 0}:"
            " blocks were removed"
        ]
    if row[0] != digest:
        return [f"block {height}: its hash differs from the one in the anchor file"]
    return []


def _allowed(replay: sqlite3.Connection, signer: str, payload: Mapping[str, Any]) -> str | None:
    """Why the ledger's rules would have refused this transaction of *signer*, given the state
    replayed so far; ``None`` when they allow it."""
    op = payload.get("op")

    def one(sql: str, *params: Any) -> tuple[Any, ...] | None:
        return replay.execute(sql, params).fetchone()

    def is_agent(key: object) -> bool:
        return one("SELECT 1 FROM agents WHERE public_key = ?", key) is not None

    if op == "agent.create":
        return None if payload.get("public_key") == signer else "an agent is created by its own key"
    if not is_agent(signer):
        return "the signer is not an agent"
    if op == "partner_request.create":
        receiver = payload.get("receiving_agent")
        return None if is_agent(receiver) and receiver != signer else "the receiver is not another agent"
    if op == "order.create":
        partners = one(
            "SELECT 1 FROM partner_requests WHERE status = 'ACCEPTED' AND ((issuing_agent = ?"
            " AND receiving_agent = ?) OR (issuing_agent = ? AND receiving_agent = ?))",
            signer,
            payload.get("receiving_agent"),
            payload.get("receiving_agent"),
            signer,
        )
        return None if partners else "orders need an accepted partner request"
    if op in ("partner_request.answer", "order.answer"):
        table, key = (
            ("partner_requests", "partner_request_id")
            if op == "partner_request.answer"
            else ("orders", "abs_action_id")
        )
        row = one(f"SELECT receiving_agent, status FROM {table} WHERE {key} = ?", payload.get(key))
        if row is None or row[0] != signer:
            return "only the receiving agent answers"
        return None if row[1] == OPEN else f"it was already {row[1]}"
    if op == "record.create":
        known = one("SELECT 1 FROM record_types WHERE name = ?", payload.get("record_type"))
        return None if known else "its record type does not exist"
    if op in ("record.update", "record.add_reporter"):
        row = one("SELECT owner, reporters FROM records WHERE record_id = ?", payload.get("record_id"))
        if row is None:
            return "the record does not exist"
        if op == "record.add_reporter":
            return None if row[0] == signer else "only the owner adds reporters"
        return (
            None
            if signer == row[0] or signer in json.loads(row[1])
            else "the signer is neither owner nor reporter"
        )
    return None


def _verify(conn: sqlite3.Connection) -> list[str]:
    problems: list[str] = []
    blocks = conn.execute("SELECT height, prev_hash, hash, tx_count FROM blocks ORDER BY height").fetchall()
    txs_by_block: dict[int, list[tuple[Any, ...]]] = {}
    for row in conn.execute(
        "SELECT seq, txid, block_height, signer, op, payload FROM transactions ORDER BY seq"
    ):
        txs_by_block.setdefault(row[2], []).append(row)
    replay = sqlite3.connect(":memory:", isolation_level=None)
    replay.executescript(STATE_SCHEMA)
    previous = crypto.GENESIS_HASH
    last_seq = 0
    for expected_height, (height, prev_hash, stored_hash, tx_count) in enumerate(blocks, start=1):
        if height != expected_height:
            problems.append(f"block {expected_height} is missing (next block found is {height})")
        if prev_hash != previous:
            problems.append(
                f"block {height}: its previous hash does not match the hash of the block before it"
            )
        txs = txs_by_block.pop(height, [])
        if len(txs) != tx_count:
            problems.append(f"block {height}: holds {len(txs)} transactions, its header says {tx_count}")
        entries = []
        for seq, txid, _, signer, op, text in txs:
            label = f"transaction {seq} ({txid[:16]}...) in block {height}"
            try:
                payload = json.loads(text)
            except ValueError:
                problems.append(f"{label}: payload is not JSON")
                continue
            entries.append({"txid": txid, "signer": signer, "payload": payload})
            if seq != last_seq + 1:
                problems.append(f"{label}: transaction sequence jumps from {last_seq} to {seq}")
            last_seq = seq
            if not isinstance(payload, dict):
                problems.append(f"{label}: payload is not an object")
                continue
            if payload.get("signer") != signer or payload.get("seq") != seq or payload.get("op") != op:
                problems.append(f"{label}: its columns differ from its signed payload")
            if crypto.canonical_json(payload) != text:
                problems.append(f"{label}: payload is not in canonical form")
            if not crypto.verify_signature(signer, txid, text.encode("utf-8")):
                problems.append(f"{label}: signature does not match the payload and signer")
            refused = _allowed(replay, signer, payload)
            if refused:
                problems.append(f"{label}: {op} is not allowed by the ledger's rules: {refused}")
            try:
                apply_transaction(replay, txid, payload)
            except (LedgerError, KeyError, TypeError, sqlite3.Error) as exc:
                problems.append(f"{label}: cannot be replayed: {exc}")
        if crypto.block_hash(prev_hash, entries) != stored_hash:
            problems.append(f"block {height}: hash does not match its transactions")
        previous = stored_hash
    for height in sorted(txs_by_block):
        problems.append(
            f"{len(txs_by_block[height])} transaction(s) belong to block {height}, which does not exist"
        )
    for table, (key, columns) in STATE_TABLES.items():
        sql = f"SELECT {', '.join(columns)} FROM {table}"
        actual = {row[columns.index(key)]: row for row in conn.execute(sql)}
        expected = {row[columns.index(key)]: row for row in replay.execute(sql)}
        for item in sorted(set(actual) | set(expected), key=str):
            if item not in expected:
                problems.append(f"{table} row {item}: not produced by any transaction")
            elif item not in actual:
                problems.append(f"{table} row {item}: missing, though the transaction log creates it")
            elif actual[item] != expected[item]:
                changed = [c for c, a, e in zip(columns, actual[item], expected[item], strict=True) if a != e]
                problems.append(
                    f"{table} row {item}: {', '.join(changed)} {'differs' if len(changed) == 1 else 'differ'}"
                    " from what the transaction log says"
                )
    replay.close()
    agents = {row[0] for row in conn.execute("SELECT public_key FROM agents")}
    for public_key, private_hex in conn.execute("SELECT public_key, private_key FROM agent_secrets"):
        try:
            derived = crypto.public_key_hex(PrivateKey.from_hex(private_hex))
        except ValueError:
            derived = None
        if derived != public_key:
            problems.append(f"agent {short(public_key)}: stored private key does not belong to it")
        if public_key not in agents:
            problems.append(f"agent {short(public_key)}: has a key but was never created by a transaction")
    return problems
