"""The ledger file's SQLite schema, and the shape of the request kinds' tables.

The state tables (``agents``, ``partner_requests``, ``orders``, ``record_types``, ``records``) are
a materialised view of the transaction log (:mod:`gateway_sandbox.transactions` writes them). The
other tables hold the log itself, the secrets and the gateway's bookkeeping
(:mod:`gateway_sandbox.outbox`).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from functools import cached_property

#: The status of a partner request or order: OPEN until its receiver answers.
OPEN = "OPEN"
ACCEPTED = "ACCEPTED"
REJECTED = "REJECTED"

#: The state tables, written only by :func:`~gateway_sandbox.transactions.apply_transaction`.
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

#: The fields a request kind's item ends with, after its own: who asked whom, and the answer.
_ANSWERED_FIELDS = (
    "issuing_agent",
    "receiving_agent",
    "status",
    "timestamp",
    "answer_timestamp",
    "transaction_ids",
)

#: Columns added to the state tables after their first version: ``(table, column, declaration)``.
ADDED_COLUMNS = (
    ("record_types", "description", "TEXT NOT NULL DEFAULT ''"),
    ("records", "description", "TEXT NOT NULL DEFAULT ''"),
    ("records", "dynamic", "INTEGER NOT NULL DEFAULT 0"),
)

_JSON_COLUMNS = ("metadata", "files", "transaction_ids")


@dataclass(frozen=True)
class RequestKind:
    """One kind of request an agent sends another and the receiver answers: its table and item.

    :param name: the prefix of its transaction ops (``<name>.create``, ``<name>.answer``).
    :param noun: how messages name one.
    :param table: its state table.
    :param id_column: its id column, also the id field of its items and transactions.
    :param fields: the fields of its protocol item, in order.
    """

    name: str
    noun: str
    table: str
    id_column: str
    fields: tuple[str, ...]

    @cached_property
    def item_json(self) -> str:
        """A SQL expression building an item's JSON object in SQLite (one ``json.loads`` per page)."""
        parts = [f"'{name}', {f'json({name})' if name in _JSON_COLUMNS else name}" for name in self.fields]
        return f"json_object({', '.join(parts)})"

    @property
    def state_columns(self) -> tuple[str, ...]:
        """The columns of its state table a replay compares: the id, ``seq``, then the other fields."""
        return (self.id_column, "seq", *self.fields[1:])


PARTNER_REQUEST = RequestKind(
    "partner_request",
    "partner request",
    "partner_requests",
    "partner_request_id",
    ("partner_request_id", *_ANSWERED_FIELDS),
)
ORDER = RequestKind(
    "order",
    "order request",
    "orders",
    "abs_action_id",
    ("abs_action_id", "type", "description", "metadata", "files", *_ANSWERED_FIELDS),
)

#: The replayable state tables: name -> (key column, compared columns).
STATE_TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "agents": ("public_key", ("public_key", "name", "created_at", "seq", "transaction_ids")),
    **{kind.table: (kind.id_column, kind.state_columns) for kind in (PARTNER_REQUEST, ORDER)},
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

#: The request kind each answer op answers.
ANSWER_OPS: dict[str, RequestKind] = {f"{kind.name}.answer": kind for kind in (PARTNER_REQUEST, ORDER)}


def create_or_upgrade(conn: sqlite3.Connection) -> None:
    """Create the missing tables of *conn*'s database, and add the columns an earlier version lacked.

    :param conn: a connection in autocommit mode, outside a transaction.
    """
    conn.executescript("BEGIN IMMEDIATE;" + SCHEMA + "COMMIT;")
    for table, column, declaration in ADDED_COLUMNS:
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in columns:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1')")
