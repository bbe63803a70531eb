"""The ledger on its own (no broker): agents, signatures, the hash chain, verify, the rules."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from coincurve import PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway_sandbox import crypto
from gateway_sandbox.erp import DEMO_AGENTS, erp_agent, seed_demo, send_order, send_partner_request
from gateway_sandbox.faults import FaultInjector, Faults
from gateway_sandbox.ledger import Ledger, LedgerError
from tests.sandbox.conftest import ERP_PASSWORD, MES_PASSWORD

REPORTER_PASSWORD = "reporter-password-0123456789"


def _tamper(db_path: str, sql: str, params: tuple = ()) -> None:
    conn = sqlite3.connect(db_path)
    with conn:
        changed = conn.execute(sql, params).rowcount
    conn.close()
    assert changed, f"tampering changed nothing: {sql}"


@pytest.fixture
def busy(ledger: Ledger, mes: tuple[str, str]) -> dict[str, str]:
    """A ledger with one of everything."""
    mes_pk, _ = mes
    erp = erp_agent(ledger, "ERP", ERP_PASSWORD)
    partner_request = ledger.create_partner_request(erp, mes_pk)
    ledger.answer_partner_request(mes_pk, partner_request, True)
    order = ledger.create_order(erp, mes_pk, "production", "wheels", {"Part": "wheel"})
    ledger.answer_order(mes_pk, order, False)
    ledger.create_record_type(mes_pk, "Unit", [{"name": "Status", "data_type": "STRING", "dynamic": True}])
    reporter, _ = ledger.create_dynamic_record(mes_pk, "PT10", "Unit", {"Status": "idle"}, REPORTER_PASSWORD)
    ledger.update_record(reporter, "PT10", {"Status": "running"})
    return {
        "mes": mes_pk,
        "erp": erp,
        "reporter": reporter,
        "partner_request": partner_request,
        "order": order,
    }


def test_agents_are_secp256k1_keys_with_hashed_secrets(ledger, db_path):
    public_key, token = ledger.create_agent("MES", MES_PASSWORD)
    assert len(public_key) == 66 and public_key[:2] in ("02", "03")
    assert ledger.agent_for_token(token) == public_key
    assert ledger.agent_for_token("not-a-token") is None
    second = ledger.issue_token(public_key, MES_PASSWORD)
    assert second != token and ledger.agent_for_token(second) == public_key
    assert ledger.agent_for_token(token) is None  # a fresh token revokes the earlier ones
    with pytest.raises(LedgerError, match="unknown agent or wrong password"):
        ledger.issue_token(public_key, "wrong password")
    with pytest.raises(LedgerError, match="unknown agent or wrong password"):
        ledger.issue_token("02" + "11" * 32, MES_PASSWORD)

    def stored() -> bytes:
        files = [Path(db_path), Path(db_path + "-wal")]
        return b"".join(f.read_bytes() for f in files if f.exists())

    before_checkpoint = stored()
    ledger.close()
    for raw in (before_checkpoint, stored()):
        for secret in (token, second, MES_PASSWORD):
            assert secret.encode() not in raw  # neither tokens nor the password are stored in clear
    conn = sqlite3.connect(db_path)
    (private_hex,) = conn.execute("SELECT private_key FROM agent_secrets").fetchone()
    assert PrivateKey.from_hex(private_hex).public_key.format().hex() == public_key
    hashes = {row[0] for row in conn.execute("SELECT token_hash FROM tokens")}
    assert hashes == {crypto.token_hash(second)}
    conn.close()


def test_every_state_change_is_a_signed_transaction_in_a_hash_chain(ledger, busy):
    blocks = ledger.blocks()
    # one per call: 2 agents, request, answer, order, answer, type, record with its reporter, update
    assert len(blocks) == 9
    assert [tx["op"] for tx in blocks[7]["transactions"]] == ["agent.create", "record.create"]
    previous = crypto.GENESIS_HASH
    for block in blocks:
        assert block["prev_hash"] == previous
        previous = block["hash"]
    conn = ledger._conn
    for txid, signer, payload in conn.execute("SELECT txid, signer, payload FROM transactions"):
        assert len(txid) == 128
        assert crypto.verify_signature(signer, txid, payload.encode())
        assert not crypto.verify_signature(signer, txid, payload.encode() + b" ")
    item = ledger.partner_request(busy["partner_request"])
    ops = [
        conn.execute("SELECT op, signer FROM transactions WHERE txid = ?", (txid,)).fetchone()
        for txid in item["transaction_ids"]
    ]
    assert ops == [("partner_request.create", busy["erp"]), ("partner_request.answer", busy["mes"])]
    record = ledger.record("PT10")
    assert len(record["transaction_ids"]) == 2  # created with its reporter, updated by the reporter
    assert ledger.verify() == []


def test_a_request_with_several_transactions_is_one_block(ledger, mes):
    mes_pk, _ = mes
    before = len(ledger.blocks())
    with ledger.transaction():
        ledger.create_record_type(mes_pk, "A", [{"name": "x", "data_type": "NUMBER", "dynamic": False}])
        ledger.create_record(mes_pk, "a1", "A", {"x": 1})
        with pytest.raises(LedgerError):  # a refused write inside rolls back on its own
            ledger.create_record(mes_pk, "a1", "A", {"x": 2})
        ledger.create_record(mes_pk, "a2", "A", {"x": 2})
    blocks = ledger.blocks()
    assert len(blocks) == before + 1
    assert [tx["op"] for tx in blocks[-1]["transactions"]] == [
        "record_type.create",
        "record.create",
        "record.create",
    ]
    assert ledger.verify() == []


def test_a_failed_transaction_leaves_nothing(ledger, mes):
    mes_pk, _ = mes
    before = ledger.counts()
    with pytest.raises(RuntimeError), ledger.transaction():
        ledger.create_record_type(mes_pk, "B", [{"name": "x", "data_type": "NUMBER", "dynamic": False}])
        raise RuntimeError("boom")
    assert ledger.counts() == before
    assert ledger.record_type("B") is None
    ledger.create_record_type(mes_pk, "B", [{"name": "x", "data_type": "NUMBER", "dynamic": False}])
    assert ledger.verify() == []


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("UPDATE partner_requests SET status = 'REJECTED'", "partner_requests row .*: status differs"),
        ('UPDATE orders SET metadata = \'{"Part":"gold"}\'', "orders row .*: metadata differs"),
        ('UPDATE records SET properties = \'{"Status":"stopped"}\'', "records row PT10: properties differs"),
        ("UPDATE records SET reporters = '[]'", "records row PT10: reporters differs"),
        ("DELETE FROM orders", "orders row .*: missing"),
        (
            "INSERT INTO record_types VALUES ('Fake', 99, 'x', '[]', 0, '[]', '')",
            "record_types row Fake: not produced by any transaction",
        ),
        (
            "UPDATE transactions SET payload = replace(payload, 'running', 'broken') WHERE op = 'record.update'",
            "signature does not match",
        ),
        ("UPDATE blocks SET hash = 'ab' || substr(hash, 3) WHERE height = 3", "block 4: its previous hash"),
        ("DELETE FROM transactions WHERE op = 'order.answer'", "holds 0 transactions"),
        (
            "UPDATE transactions SET signer = (SELECT public_key FROM agents WHERE name = 'MES') WHERE op = 'order.create'",
            "signature does not match|columns differ",
        ),
        ("DELETE FROM blocks WHERE height = 5", "block 5 is missing"),
        ("UPDATE records SET dynamic = 0", "records row PT10: dynamic differs"),
    ],
)
def test_verify_reports_tampering(ledger, busy, db_path, sql, expected):
    assert ledger.verify() == []
    _tamper(db_path, sql)
    problems = ledger.verify()
    assert problems, "tampering went unnoticed"
    assert any(re.search(expected, p) for p in problems), problems


def test_verify_replays_reporters(ledger, busy, monkeypatch):
    """An update signed (validly) by an agent that is neither the record's reporter nor its owner is
    refused live, and found by verify's replay if it got into the chain anyway."""
    import gateway_sandbox.ledger as module

    forged = {"record_id": "PT10", "properties": {"Status": "forged"}}
    with pytest.raises(LedgerError, match="neither the owner nor a reporter"), ledger.transaction():
        ledger._transact(busy["erp"], "record.update", **forged)
    assert ledger.verify() == []
    with monkeypatch.context() as patched:
        patched.setattr(module, "apply_transaction", lambda conn, txid, payload: None)
        with ledger.transaction():
            ledger._transact(busy["erp"], "record.update", **forged)
    problems = ledger.verify()
    assert any("cannot be replayed" in p and "neither the owner nor a reporter" in p for p in problems), (
        problems
    )
    assert ledger.record("PT10")["reporters"] == [busy["reporter"]]


def test_verify_reports_a_swapped_private_key(ledger, busy, db_path):
    _tamper(
        db_path,
        "UPDATE agent_secrets SET private_key = ? WHERE public_key = ?",
        (PrivateKey().to_hex(), busy["erp"]),
    )
    assert any("private key does not belong" in p for p in ledger.verify())


def test_state_survives_reopening(db_path, busy, ledger):
    ledger.close()
    with Ledger(db_path) as reopened:
        assert reopened.partner_request(busy["partner_request"])["status"] == "ACCEPTED"
        assert reopened.order(busy["order"])["status"] == "REJECTED"
        assert reopened.record("PT10")["properties"] == {"Status": "running"}
        assert reopened.verify() == []
        # and the chain goes on from where it was
        reopened.create_record(busy["mes"], "PT11", "Unit", {"Status": "idle"})
        assert reopened.verify() == []


def test_partner_request_rules(ledger, mes):
    mes_pk, _ = mes
    erp = erp_agent(ledger, "ERP", ERP_PASSWORD)
    with pytest.raises(LedgerError, match="to itself"):
        ledger.create_partner_request(mes_pk, mes_pk)
    with pytest.raises(LedgerError, match=re.escape("receiving agent 02ffffffffff... not found")):
        ledger.create_partner_request(erp, "02" + "ff" * 32)
    first = ledger.create_partner_request(erp, mes_pk)
    with pytest.raises(LedgerError, match="already OPEN"):
        ledger.create_partner_request(erp, mes_pk)
    ledger.answer_partner_request(mes_pk, first, False)
    second = ledger.create_partner_request(erp, mes_pk)  # may ask again after a rejection
    ledger.answer_partner_request(mes_pk, second, True)
    with pytest.raises(LedgerError, match="already partners"):
        ledger.create_partner_request(mes_pk, erp)
    assert [p["status"] for p in ledger.partner_requests(mes_pk)] == ["REJECTED", "ACCEPTED"]
    assert ledger.partner_requests(mes_pk, status="ACCEPTED")[0]["partner_request_id"] == second
    assert ledger.partner_requests(issuer_pk=mes_pk) == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=st.integers(0, 12), limit=st.integers(1, 12))
def test_paging_is_a_window_of_the_stable_order(paged_ledger, start, limit):
    ledger, mes_pk, orders = paged_ledger
    page = ledger.orders(agent_pk=mes_pk, start=start, limit=limit)
    assert [o["abs_action_id"] for o in page] == orders[start : start + limit]


@pytest.fixture
def paged_ledger(ledger, mes):
    mes_pk, _ = mes
    erp = erp_agent(ledger, "ERP", ERP_PASSWORD)
    ledger.answer_partner_request(mes_pk, ledger.create_partner_request(erp, mes_pk), True)
    orders = [ledger.create_order(erp, mes_pk, "t", f"order {i}", {"i": i}) for i in range(9)]
    return ledger, mes_pk, orders


def test_order_metadata_must_be_plain_json(ledger, mes):
    mes_pk, _ = mes
    erp = erp_agent(ledger, "ERP", ERP_PASSWORD)
    ledger.answer_partner_request(mes_pk, ledger.create_partner_request(erp, mes_pk), True)
    with pytest.raises(LedgerError, match="plain JSON"):
        ledger.create_order(erp, mes_pk, "t", "d", {"x": float("nan")})
    with pytest.raises(LedgerError, match="non-empty type"):
        ledger.create_order(erp, mes_pk, "", "d", {})
    with pytest.raises(LedgerError, match="files"):
        ledger.create_order(erp, mes_pk, "t", "d", {}, "not-a-list")


def test_erp_agent_is_reused_by_name_and_password(ledger, mes):
    mes_pk, _ = mes
    first = erp_agent(ledger, "ERP", ERP_PASSWORD)
    assert erp_agent(ledger, "ERP", ERP_PASSWORD) == first
    assert erp_agent(ledger, "ERP", "another password") != first  # same name, other password: another agent
    request = send_partner_request(ledger, mes_pk, name="ERP", password=ERP_PASSWORD)
    with pytest.raises(LedgerError, match="not an accepted partner"):
        send_order(ledger, mes_pk, type="t", description="d", name="ERP", password=ERP_PASSWORD)
    ledger.answer_partner_request(mes_pk, request, True)
    order = send_order(
        ledger, mes_pk, type="t", description="d", metadata={"a": 1}, name="ERP", password=ERP_PASSWORD
    )
    assert ledger.order(order)["issuing_agent"] == first
    with pytest.raises(LedgerError, match="create the MES agent first"):
        send_partner_request(ledger, "03" + "12" * 32)


def test_seed_demo_gives_mixed_states_once(ledger, mes):
    mes_pk, _ = mes
    result = seed_demo(ledger, mes_pk)
    assert result["created"] is True
    statuses = sorted(result["partner_requests"].values())
    assert statuses == ["ACCEPTED", "ACCEPTED", "OPEN", "REJECTED"]
    assert sorted(result["orders"].values()) == ["ACCEPTED", "ACCEPTED", "OPEN", "OPEN", "REJECTED"]
    assert {a["name"] for a in ledger.agents()} == {"MES", *DEMO_AGENTS}
    for order in ledger.orders(mes_pk):
        assert ledger.are_partners(order["issuing_agent"], mes_pk)
    again = seed_demo(ledger, mes_pk)
    assert again["created"] is False
    assert again["partner_requests"] == result["partner_requests"]
    assert again["orders"] == result["orders"]
    assert len(ledger.partner_requests(mes_pk)) == 4 and len(ledger.orders(mes_pk)) == 5
    assert ledger.verify() == []


def test_fault_decisions_are_reproducible_and_independent():
    def drops(faults: Faults) -> list[bool]:
        injector = FaultInjector(faults)
        return [injector.decide().drop for _ in range(200)]

    base = drops(Faults(drop_rate=0.3, seed=7))
    assert base == drops(Faults(drop_rate=0.3, seed=7))
    assert base != drops(Faults(drop_rate=0.3, seed=8))
    assert base == drops(
        Faults(drop_rate=0.3, error_rate=0.5, garbage_rate=1.0, seed=7)
    )  # other knobs don't shift it
    assert 30 < sum(base) < 90
    with pytest.raises(ValueError, match="drop_rate"):
        Faults(drop_rate=1.5)
    with pytest.raises(ValueError, match="delay_ms"):
        Faults(delay_ms=-1)
    assert not Faults().active and Faults(delay_ms=5).active


def test_canonical_json_is_what_gets_signed():
    key = PrivateKey()
    public_key = key.public_key.format().hex()
    payload = {"b": 1, "a": "é"}
    text = crypto.canonical_json(payload)
    assert text == '{"a":"é","b":1}'
    signature = crypto.sign(key, text.encode())
    assert len(signature) == 128
    assert crypto.verify_signature(public_key, signature, text.encode())
    assert not crypto.verify_signature(public_key, signature, json.dumps(payload).encode())
    assert not crypto.verify_signature(public_key, "00" * 64, text.encode())
    assert not crypto.verify_signature(public_key, "zz", text.encode())
