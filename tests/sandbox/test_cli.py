"""``python -m gateway_sandbox``: serve as a process (SIGTERM, logs without secrets), and the admin
and ERP commands."""

from __future__ import annotations

import ast
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gateway_sandbox.broker import free_port, wait_for_broker
from gateway_sandbox.cli import main
from gateway_sandbox.ledger import Ledger
from tests.sandbox.client import BlkClient
from tests.sandbox.conftest import MES_PASSWORD

ROOT = Path(__file__).resolve().parents[2]


class Process:
    """A ``python -m gateway_sandbox`` subprocess whose output is collected line by line."""

    def __init__(self, *args: str) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway_sandbox", *args],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for_line(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no line with {text!r}; output:\n{self.output}")

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
            self._reader.join(5)


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.broker
def test_serve_logs_each_request_without_secrets_and_stops_on_sigterm(
    kafka_bootstrap, topic_prefix, tmp_path
):
    db = tmp_path / "state" / "ledger.db"  # its directory is created
    server = Process(
        "serve", "--bootstrap-servers", kafka_bootstrap, "--db", str(db), "--topic-prefix", topic_prefix,
        "--encoding", "json", "--echo",
    )  # fmt: skip
    client = BlkClient(kafka_bootstrap, topic_prefix, encoding="json")
    try:
        server.wait_for_line("gateway sandbox ready")
        created = client.request("BLK_Agt", {}, {"action": "create", "name": "MES", "password": MES_PASSWORD})
        public_key, token = created.outcome["data"]["public_key"], created.outcome["data"]["token"]
        fresh = client.request(
            "BLK_Agt", {"public_key": public_key}, {"action": "token", "password": MES_PASSWORD}
        )
        token2 = fresh.outcome["data"]["token"]
        listed = client.request("BLK_Part_Lst", {"auth": token2, "start": 0, "limit": 10})
        assert listed.outcome == {"data": []}
        wrong = client.request("BLK_Rec_Get", {"auth": token + "x"}, {"record_id": "R"})
        assert wrong.outcome == {"error": "unknown token"}
        server.wait_for_line(wrong.header["request_id"])

        # a clean exit on SIGTERM; one that ignores it fails here on the wait's timeout
        assert server.stop(timeout=30) == 0
    finally:
        server.stop(signal.SIGKILL)
        client.close()
    output = server.output
    request_lines = [line for line in output.splitlines() if " request_id=" in line]
    assert len(request_lines) == 4, output  # one line per request
    assert f"BLK_Agt create request_id={created.header['request_id']} agent={public_key[:12]}" in output
    assert "outcome=error" in request_lines[-1]
    assert "received SIGTERM, stopping" in output
    assert "gateway sandbox stopped" in output
    for secret in (token, token2, token + "x", MES_PASSWORD):
        assert secret not in output
    with Ledger(db) as ledger:
        assert ledger.agent(public_key)["name"] == "MES"


def test_verify_command(capsys, db_path, ledger, mes):
    mes_pk, _ = mes
    ledger.create_record_type(mes_pk, "Unit", [{"name": "Status", "data_type": "STRING", "dynamic": True}])
    ledger.create_record(mes_pk, "PT10", "Unit", {"Status": "idle"})
    code, out, _ = run(capsys, "verify", "--db", db_path)
    assert code == 0 and "intact: 3 blocks, 3 transactions verified" in out

    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute("""UPDATE records SET properties = '{"Status":"hacked"}'""")
    conn.close()
    code, out, _ = run(capsys, "verify", "--db", db_path)
    assert code == 1
    assert "FAILED verification: 1 problem(s)" in out
    assert "records row PT10: properties differs from what the transaction log says" in out


def test_show_command_prints_state_but_no_secrets(capsys, db_path, ledger, mes):
    mes_pk, token = mes
    code, out, _ = run(capsys, "seed-demo", "--to", mes_pk, "--db", db_path)
    assert code == 0
    code, out, _ = run(capsys, "show", "agents", "--db", db_path)
    agents = json.loads(out)
    assert {a["name"] for a in agents} >= {"MES", "ACME Automotive ERP"}
    assert all(set(a) == {"public_key", "name", "created_at"} for a in agents)
    assert token not in out
    code, out, _ = run(capsys, "show", "partner-requests", "--db", db_path, "--agent", mes_pk)
    assert sorted(p["status"] for p in json.loads(out)) == ["ACCEPTED", "ACCEPTED", "OPEN", "REJECTED"]
    code, out, _ = run(capsys, "show", "orders", "--db", db_path)
    assert len(json.loads(out)) == 5
    code, out, _ = run(capsys, "show", "summary", "--db", db_path)
    assert json.loads(out)["orders"] == 5
    code, out, _ = run(capsys, "show", "blocks", "--db", db_path)
    assert json.loads(out)[0]["transactions"][0]["op"] == "agent.create"


def test_erp_commands_print_the_created_ids(capsys, db_path, ledger, mes):
    mes_pk, _ = mes
    code, out, _ = run(capsys, "erp", "partner-request", "--to", mes_pk, "--db", db_path)
    assert code == 0
    partner_request = out.strip()
    assert ledger.partner_request(partner_request)["status"] == "OPEN"
    code, out, _ = run(capsys, "erp", "partner-request", "--to", mes_pk, "--db", db_path)
    assert code == 1  # the same ERP agent already has an open request

    order = ["erp", "order", "--to", mes_pk, "--type", "production", "--description", "Steering wheels"]
    metadata = ["--metadata", '{"Part": "steering wheel", "Size": 3}', "--file", "spec.pdf", "--db", db_path]
    code, _, err = run(capsys, *order, *metadata)
    assert code == 1 and "not an accepted partner" in err
    ledger.answer_partner_request(mes_pk, partner_request, True)
    code, out, _ = run(capsys, *order, *metadata)
    assert code == 0
    item = ledger.order(out.strip())
    assert item["metadata"] == {"Part": "steering wheel", "Size": 3} and item["files"] == ["spec.pdf"]
    code, _, err = run(capsys, *order, "--metadata", "{not json", "--db", db_path)
    assert code == 1 and "--metadata is not JSON" in err
    code, _, err = run(capsys, "erp", "partner-request", "--to", "02" + "ab" * 32, "--db", db_path)
    assert code == 1 and "create the MES agent first" in err


def test_seed_demo_twice_creates_nothing_twice(capsys, db_path, ledger, mes):
    mes_pk, _ = mes
    code, out, _ = run(capsys, "seed-demo", "--to", mes_pk, "--db", db_path)
    first = json.loads(out)
    assert code == 0 and first["created"] is True
    code, out, _ = run(capsys, "seed-demo", "--to", mes_pk, "--db", db_path)
    second = json.loads(out)
    assert second["created"] is False
    assert second["partner_requests"] == first["partner_requests"]
    assert len(ledger.partner_requests()) == 4


@pytest.mark.broker
def test_broker_command_runs_until_sigterm():
    port = free_port()
    broker = Process("broker", "--port", str(port))
    try:
        broker.wait_for_line(f"listening on 127.0.0.1:{port}")
        wait_for_broker(f"127.0.0.1:{port}", timeout=10)
        assert broker.stop() == 0
    finally:
        broker.stop(signal.SIGKILL)


def test_the_sandbox_never_imports_the_provider():
    for path in (ROOT / "gateway_sandbox").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] == "blockchain_provider" for n in names), path


@pytest.mark.broker
def test_erp_commands_beside_a_running_gateway_reach_the_mes(capsys, make_server, make_client, db_path, mes):
    mes_pk, token = mes
    make_server(echo=True)
    client = make_client()
    code, out, _ = run(capsys, "erp", "partner-request", "--to", mes_pk, "--db", db_path)
    assert code == 0
    partner_request = out.strip()
    listed = client.request("BLK_Part_Lst", {"auth": token}).outcome["data"]
    assert [p["partner_request_id"] for p in listed] == [partner_request]
    answer = client.request("BLK_Part_Ans", {"auth": token}, {"id": partner_request, "response": 1})
    assert answer.outcome == {"message": f"partner request {partner_request} ACCEPTED"}
    code, out, _ = run(capsys, "erp", "order", "--to", mes_pk, "--type", "production", "--description", "Clips",
                       "--db", db_path)  # fmt: skip
    assert code == 0
    orders = client.request("BLK_Act_Lst", {"auth": token}).outcome["data"]
    assert [(o["abs_action_id"], o["status"]) for o in orders] == [(out.strip(), "OPEN")]
    code, out, _ = run(capsys, "verify", "--db", db_path)
    assert code == 0, out
