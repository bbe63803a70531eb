"""The sandbox ledger's files, its anchor, its replayed permissions and its agents' passwords."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from gateway_sandbox import erp
from gateway_sandbox.ledger import Ledger, LedgerError
from tests.sandbox.conftest import ERP_PASSWORD, MES_PASSWORD


def mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_ledger_and_its_wal_are_created_owner_only(tmp_path):
    old = os.umask(0o022)
    try:
        path = tmp_path / "ledger.sqlite3"
        with Ledger(path) as ledger:
            ledger.create_agent("MES", MES_PASSWORD)
            files = [path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}.anchor")]
            for file in files:
                assert file.exists(), file
                assert mode(file) == 0o600, (file, oct(mode(file)))
    finally:
        os.umask(old)


def _drop_last_block(path: Path) -> None:
    """Remove the last block and every trace of what it did, as someone with the file could."""
    conn = sqlite3.connect(path, isolation_level=None)
    (height,) = conn.execute("SELECT MAX(height) FROM blocks").fetchone()
    (public_key,) = conn.execute(
        "SELECT json_extract(payload, '$.public_key') FROM transactions WHERE block_height = ?", (height,)
    ).fetchone()
    conn.execute("DELETE FROM transactions WHERE block_height = ?", (height,))
    conn.execute("DELETE FROM blocks WHERE height = ?", (height,))
    for table in ("agents", "agent_secrets", "tokens"):
        conn.execute(f"DELETE FROM {table} WHERE public_key = ?", (public_key,))
    conn.close()


def test_deleting_the_last_block_is_detected(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    with Ledger(path) as ledger:
        ledger.create_agent("MES", MES_PASSWORD)
        ledger.create_agent("ERP", ERP_PASSWORD)
        assert ledger.verify() == []
    _drop_last_block(path)
    with Ledger(path) as ledger:
        problems = ledger.verify()
    assert any("anchor" in problem for problem in problems), problems


def test_an_anchor_one_block_behind_is_not_a_problem(tmp_path):
    """A crash between a commit and the anchor's update leaves the anchor one block behind."""
    path = tmp_path / "ledger.sqlite3"
    with Ledger(path) as ledger:
        ledger.create_agent("MES", MES_PASSWORD)
        behind = Path(f"{path}.anchor").read_bytes()
        ledger.create_agent("ERP", ERP_PASSWORD)
    Path(f"{path}.anchor").write_bytes(behind)
    with Ledger(path) as ledger:
        assert ledger.verify() == []


def test_verify_enforces_the_permission_rules_while_replaying(tmp_path, monkeypatch):
    """A transaction signed by an agent the rules do not allow is reported, even though its
    signature is valid."""
    import gateway_sandbox.ledger as ledger_module

    path = tmp_path / "ledger.sqlite3"
    with Ledger(path) as ledger:
        mes, _ = ledger.create_agent("MES", MES_PASSWORD)
        stranger, _ = ledger.create_agent("Stranger", ERP_PASSWORD)
        ledger.create_record_type(mes, "Unit", [{"name": "Status", "data_type": "STRING", "dynamic": True}])
        ledger.create_record(mes, "PT10", "Unit", {"Status": "idle"})
        assert ledger.verify() == []
        # the one writer refuses a stranger's update, so forge the log past it: the update is
        # signed with the stranger's own key and sealed in a block, as a tampered ledger would hold it
        with monkeypatch.context() as patched:
            patched.setattr(ledger_module, "apply_transaction", lambda *args, **kwargs: None)
            with ledger.transaction():
                ledger._transact(stranger, "record.update", record_id="PT10", properties={"Status": "hacked"})
        problems = ledger.verify()
    assert any("not allowed" in problem and "record.update" in problem for problem in problems), problems


@pytest.mark.parametrize("password", ["", "short", "elevenchars"])
def test_passwords_shorter_than_twelve_characters_are_refused(ledger, password):
    with pytest.raises(LedgerError, match="12"):
        ledger.create_agent("MES", password)


def test_erp_passwords_come_from_the_environment_or_are_generated(tmp_path, monkeypatch):
    monkeypatch.delenv("GATEWAY_SANDBOX_ERP_PASSWORD", raising=False)
    path = tmp_path / "ledger.sqlite3"
    with Ledger(path) as ledger:
        mes, _ = ledger.create_agent("MES", MES_PASSWORD)
        first = erp.send_partner_request(ledger, mes)
        issuer = ledger.partner_request(first)["issuing_agent"]
        for known in ("erp-sandbox-password", "demo-erp-password"):
            assert not ledger.check_password(issuer, known)
        generated = erp.erp_password(ledger)
        assert len(generated) >= 16 and ledger.check_password(issuer, generated)
    with Ledger(path) as ledger:  # another process: the same ERP agent
        assert erp.erp_agent(ledger) == issuer
    assert mode(Path(f"{path}.erp-password")) == 0o600

    monkeypatch.setenv("GATEWAY_SANDBOX_ERP_PASSWORD", "from-the-environment")
    with Ledger(tmp_path / "other.sqlite3") as ledger:
        assert erp.erp_password(ledger) == "from-the-environment"
