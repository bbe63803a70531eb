"""Applying signed transactions: the only code that writes the ledger's state tables.

The state tables are a materialised view of the transaction log: the ledger applies each
transaction as it signs it, and verification replays the whole log into an empty database with
the same function and compares.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from gateway_sandbox.crypto import canonical_json
from gateway_sandbox.schema import ANSWER_OPS, OPEN
from gateway_sandbox.validation import LedgerError, short, shown


def _append_txid(conn: sqlite3.Connection, table: str, key_column: str, key: str, txid: str) -> None:
    row = conn.execute(f"SELECT transaction_ids FROM {table} WHERE {key_column} = ?", (key,)).fetchone()
    if row is None:
        raise LedgerError(f"{table} row {short(key)} does not exist")
    ids = json.loads(row[0])
    ids.append(txid)
    conn.execute(f"UPDATE {table} SET transaction_ids = ? WHERE {key_column} = ?", (canonical_json(ids), key))


def apply_transaction(conn: sqlite3.Connection, txid: str, payload: Mapping[str, Any]) -> None:
    """Write the effect of one signed transaction to the state tables of *conn*."""
    op = payload["op"]
    seq = payload["seq"]
    signer = payload["signer"]
    ts = payload["timestamp"]
    ids = canonical_json([txid])
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
                canonical_json(payload["metadata"]),
                canonical_json(payload["files"]),
                signer,
                payload["receiving_agent"],
                OPEN,
                ts,
                ids,
            ),
        )
    elif isinstance(op, str) and op in ANSWER_OPS:
        kind = ANSWER_OPS[op]
        key = payload[kind.id_column]
        _append_txid(conn, kind.table, kind.id_column, key, txid)
        conn.execute(
            f"UPDATE {kind.table} SET status = ?, answer_timestamp = ? WHERE {kind.id_column} = ?",
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
                canonical_json(payload["properties"]),
                ts,
                ids,
                payload.get("description", ""),
            ),
        )
    elif op == "record.create":
        values = canonical_json(payload["properties"])
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
                canonical_json([reporter] if reporter else []),
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
        conn.execute(
            "UPDATE records SET properties = ? WHERE record_id = ?", (canonical_json(merged), record_id)
        )
    elif op == "record.add_reporter":
        record_id = payload["record_id"]
        _append_txid(conn, "records", "record_id", record_id, txid)
        (current,) = conn.execute(
            "SELECT reporters FROM records WHERE record_id = ?", (record_id,)
        ).fetchone()
        reporters = [*json.loads(current), payload["reporter"]]
        conn.execute(
            "UPDATE records SET reporters = ? WHERE record_id = ?", (canonical_json(reporters), record_id)
        )
    else:
        raise LedgerError(f"unknown transaction op {shown(op)}")
