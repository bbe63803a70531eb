"""After every other fault case: each ledger they wrote passes ``gateway_sandbox verify``, and a
tampered copy of one is caught.

The collection hook in ``conftest.py`` runs this module last. Run on its own, it first makes a
ledger of its own through the hook, so it always has something to verify.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook
from gateway_sandbox import cli
from tests.faults.conftest import LEDGERS, ROOT, erp_agent

# also in the tansu pass: it verifies the ledgers of that pass's fault cases too
pytestmark = [pytest.mark.broker, pytest.mark.also_tansu]


def transactions(path: Path) -> int:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return conn.execute("SELECT COUNT(*) FROM transactions").fetchone()[0]


def copy_ledger(source: Path, target: Path) -> Path:
    """A consistent copy (the ledger runs in WAL mode: copying the file alone could miss commits)."""
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
    return target


def verify(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gateway_sandbox", "verify", "--db", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_every_ledger_of_the_suite_verifies_and_tampering_is_caught(make_stack, tmp_path, capsys):
    # a ledger of this case's own, written through the gateway
    stack = make_stack(echo=True)
    with stack.ledger() as ledger:
        pid = ledger.create_partner_request(erp_agent(ledger), stack.mes_public_key)
    with KafkaBlockchainHook() as hook:
        hook.answer_partner_request(pid, True)
        hook.create_record_type("Unit", "Units", [{"name": "Status", "data_type": "STRING", "dynamic": True}])
        for i in range(5):
            reporter = hook.create_dynamic_record(f"U{i}", "Unit", f"unit {i}", {"Status": "NEW"}, "p" * 20)
            hook.update_record("Unit", f"U{i}", {"Status": "RUNNING"}, token=reporter.token)
    stack.stop()

    ledgers = [path for path in dict.fromkeys(LEDGERS) if path.exists()]
    assert stack.ledger_path in ledgers
    for path in ledgers:
        assert cli.main(["verify", "--db", str(path)]) == 0, capsys.readouterr().out
    assert "intact" in capsys.readouterr().out

    busiest = max(ledgers, key=transactions)
    assert verify(busiest).returncode == 0  # the command itself, as an operator runs it

    # a state row edited behind the ledger's back
    edited = copy_ledger(busiest, tmp_path / "edited.sqlite3")
    with closing(sqlite3.connect(edited)) as conn, conn:
        (changed,) = conn.execute(
            "UPDATE agents SET name = 'Mallory' WHERE rowid = (SELECT MIN(rowid) FROM agents) RETURNING public_key"
        ).fetchone()
    result = verify(edited)
    assert result.returncode == 1
    assert f"agents row {changed}: name differs from what the transaction log says" in result.stdout

    # a signed transaction rewritten
    forged = copy_ledger(busiest, tmp_path / "forged.sqlite3")
    with closing(sqlite3.connect(forged)) as conn, conn:
        (seq,) = conn.execute(
            "UPDATE transactions SET payload = replace(payload, '\"timestamp\":', '\"timestamp\":1') "
            "WHERE seq = (SELECT MAX(seq) FROM transactions) RETURNING seq"
        ).fetchone()
    result = verify(forged)
    assert result.returncode == 1
    assert f"transaction {seq} " in result.stdout
    assert "signature does not match" in result.stdout
