"""Checking that a ledger is consistent: its hash chain, signatures, rules and state tables.

:func:`verify` recomputes every block's hash, checks every transaction's signature, replays the
log into an empty database (applying the ledger's rules to each transaction as it goes) and
compares the result with the state tables; it also checks the anchor file and the stored keys.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coincurve import PrivateKey

from gateway_sandbox import crypto
from gateway_sandbox.schema import ANSWER_OPS, OPEN, STATE_SCHEMA, STATE_TABLES
from gateway_sandbox.transactions import apply_transaction
from gateway_sandbox.validation import LedgerError, short


def check_anchor(conn: sqlite3.Connection, anchor_path: Path | None) -> list[str]:
    """The problems of the anchor file: the block it names must be in the chain, with that hash. The
    anchor may lag (a crash between a commit and its update), never lead.

    :param conn: the ledger's connection.
    :param anchor_path: the anchor file; ``None`` for a ledger that has none (nothing to check).
    """
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


def refusal(replay: sqlite3.Connection, signer: str, payload: Mapping[str, Any]) -> str | None:
    """Why the ledger's rules would have refused this transaction of *signer*, given the state
    replayed so far; ``None`` when they allow it.

    :param replay: the state replayed so far.
    :param signer: the transaction's signer.
    :param payload: the transaction's signed payload.
    """
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
    if isinstance(op, str) and op in ANSWER_OPS:
        kind = ANSWER_OPS[op]
        row = one(
            f"SELECT receiving_agent, status FROM {kind.table} WHERE {kind.id_column} = ?",
            payload.get(kind.id_column),
        )
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


def verify(conn: sqlite3.Connection, anchor_path: Path | None = None) -> list[str]:
    """Recompute the hash chain, check every signature, replay the log and compare the state tables;
    return the problems found (none for a sound ledger).

    :param conn: the ledger's connection, inside a read transaction so that it sees one state.
    :param anchor_path: the ledger's anchor file; default ``None``, for a ledger that has none.
    """
    return _check_chain(conn) + check_anchor(conn, anchor_path)


def _check_chain(conn: sqlite3.Connection) -> list[str]:
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
            refused = refusal(replay, signer, payload)
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
