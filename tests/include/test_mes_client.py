"""The MES's Airflow client, against a small local HTTP server that checks what it receives."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from include.mes.models import ProductionUnit, ProductionUnitNotFoundError
from include.mes_client import MesAirflowClient, MesAirflowError, patch_production_unit

USER, PASSWORD = "mes", "s3cret-Passw0rd"
RUNS_PATH = "/api/v2/dags/blockchain_production_unit_update/dagRuns"
CUT_OFF = 0  # a status that makes the fake server close the connection without answering


class FakeAirflow:
    """Airflow's token and trigger endpoints; records every request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.tokens_issued = 0
        self.valid_tokens: set[str] = set()
        self.reject_next_trigger_with: int | None = None
        self.delay = 0.0
        self.dag_exists = True
        self.runs: list[str] = []  # the run ids started, in order
        self.trigger_failures: list[int] = []  # statuses of the next triggers, before any run starts
        self.late_triggers = 0  # how many next triggers start their run, then answer after 1 s
        self.cut_triggers = 0  # how many next triggers start their run, then close without an answer

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        payload = json.loads(body) if body else None
        self.requests.append({"method": method, "path": path, "headers": headers, "body": payload})
        if self.delay:
            time.sleep(self.delay)
        if method == "POST" and path == "/auth/token":
            if payload != {"username": USER, "password": PASSWORD}:
                return 401, {"detail": "Invalid credentials"}
            self.tokens_issued += 1
            token = f"jwt-{self.tokens_issued}"
            self.valid_tokens.add(token)
            return 201, {"access_token": token}
        if method == "POST" and path.endswith("/dagRuns"):
            auth = headers.get("authorization", "")
            if not auth.startswith("Bearer ") or auth[7:] not in self.valid_tokens:
                return 401, {"detail": "Not authenticated"}
            if self.reject_next_trigger_with:
                status, self.reject_next_trigger_with = self.reject_next_trigger_with, None
                if status == 401:
                    self.valid_tokens.clear()  # as if the token had expired
                return status, {"detail": "Token expired" if status == 401 else "Server error"}
            if not self.dag_exists or path != RUNS_PATH:
                return 404, {"detail": "The Dag with ID: `blockchain_production_unit_update` was not found"}
            if self.trigger_failures:
                return self.trigger_failures.pop(0), {"detail": "Service unavailable"}
            given = (payload or {}).get("dag_run_id")
            run_id = given or f"manual__2026-01-0{len(self.requests)}T09:30:00+00:00"
            if run_id in self.runs:
                # what Airflow 3.3.2 answers to a second run of one id (its unique constraint)
                return 409, {"detail": {
                    "reason": "Unique constraint violation",
                    "statement": "INSERT INTO dag_run (...) VALUES (...)",
                    "orig_error": "UNIQUE constraint failed: dag_run.dag_id, dag_run.run_id",
                }}  # fmt: skip
            self.runs.append(run_id)
            if self.late_triggers:
                self.late_triggers -= 1
                time.sleep(1.0)
            if self.cut_triggers:
                self.cut_triggers -= 1
                return CUT_OFF, None
            return 200, {
                "dag_run_id": run_id,
                "dag_id": "blockchain_production_unit_update",
                "state": "queued",
            }
        return 404, {"detail": "Not Found"}


@pytest.fixture
def airflow() -> Iterator[tuple[FakeAirflow, str]]:
    fake = FakeAirflow()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, answer = fake.handle("POST", self.path, headers, body)
            if status == CUT_OFF:
                self.close_connection = True
                return
            data = json.dumps(answer).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_trigger_gets_a_token_then_posts_the_run(airflow, caplog: pytest.LogCaptureFixture) -> None:
    fake, url = airflow
    client = MesAirflowClient(url + "/", USER, PASSWORD, timeout=5)
    with caplog.at_level(logging.DEBUG):
        run_id = client.trigger_production_unit_update(3, "Maintenance", "Die change")
    assert run_id == "manual__2026-01-02T09:30:00+00:00"
    token_request, run_request = fake.requests
    assert token_request["path"] == "/auth/token"
    assert token_request["body"] == {"username": USER, "password": PASSWORD}
    assert token_request["headers"]["content-type"] == "application/json"
    assert "authorization" not in token_request["headers"]
    assert run_request["path"] == RUNS_PATH
    assert run_request["headers"]["authorization"] == "Bearer jwt-1"
    assert run_request["headers"]["content-type"] == "application/json"
    assert run_request["body"] == {
        "logical_date": None,
        "conf": {"production_unit_id": 3, "status": "Maintenance", "process_name": "Die change"},
    }
    assert run_id in caplog.text
    assert PASSWORD not in caplog.text and "jwt-1" not in caplog.text


def test_the_token_is_reused_and_renewed_once_on_401(airflow) -> None:
    fake, url = airflow
    client = MesAirflowClient(url, USER, PASSWORD, timeout=5)
    client.trigger_production_unit_update(1, "Running", "Stamping")
    client.trigger_production_unit_update(2, "Stopped", "")
    assert fake.tokens_issued == 1
    fake.reject_next_trigger_with = 401
    client.trigger_production_unit_update(1, "Running", "Bending")
    assert fake.tokens_issued == 2
    assert fake.requests[-1]["headers"]["authorization"] == "Bearer jwt-2"
    assert [r["path"] for r in fake.requests].count("/auth/token") == 2


def test_refusals_are_errors_with_the_status_and_no_secret(airflow) -> None:
    fake, url = airflow
    with pytest.raises(MesAirflowError, match="401 to POST /auth/token: Invalid credentials") as bad_login:
        MesAirflowClient(url, USER, "wrong password").trigger_production_unit_update(1, "Running", "Stamping")
    assert bad_login.value.status == 401
    assert "wrong password" not in str(bad_login.value)

    client = MesAirflowClient(url, USER, PASSWORD)
    fake.dag_exists = False
    with pytest.raises(MesAirflowError, match=r"404 to POST .*/dagRuns: The Dag with ID") as missing:
        client.trigger_production_unit_update(1, "Running", "Stamping")
    assert missing.value.status == 404
    assert "jwt-" not in str(missing.value) and PASSWORD not in str(missing.value)

    fake.dag_exists = True
    fake.reject_next_trigger_with = 500
    with pytest.raises(MesAirflowError, match="500") as failed:
        client.trigger_production_unit_update(1, "Running", "Stamping")
    assert failed.value.status == 500


def test_a_slow_airflow_is_a_timeout_error(airflow) -> None:
    fake, url = airflow
    fake.delay = 1.0
    client = MesAirflowClient(url, USER, PASSWORD, timeout=0.2)
    # a client that waited for the slow answer would get it and trigger the run: no error
    with pytest.raises(MesAirflowError, match=r"No answer from Airflow to POST /auth/token within 0.2 s"):
        client.trigger_production_unit_update(1, "Running", "Stamping")


def test_a_trigger_with_a_run_id_whose_answer_was_lost_is_sent_again_and_starts_one_run(
    airflow, caplog
) -> None:
    fake, url = airflow
    client = MesAirflowClient(url, USER, PASSWORD, timeout=0.3, retry_wait=0.01)
    fake.late_triggers = 1  # the run starts, its answer comes after the client gave up
    with caplog.at_level(logging.INFO, logger="include.mes_client"):
        run_id = client.trigger_production_unit_update(1, "Running", "Stamping", run_id="mes__unit1__a")
    assert run_id == "mes__unit1__a"
    assert fake.runs == ["mes__unit1__a"]  # once, though sent twice
    assert [r["body"]["dag_run_id"] for r in fake.requests if r["path"] == RUNS_PATH] == ["mes__unit1__a"] * 2
    assert "No answer from Airflow to POST" in caplog.text and "started by an earlier attempt" in caplog.text
    assert PASSWORD not in caplog.text and "jwt-1" not in caplog.text


def test_a_trigger_with_a_run_id_outlasts_a_busy_airflow_and_gives_up_after_its_retries(airflow) -> None:
    fake, url = airflow
    client = MesAirflowClient(url, USER, PASSWORD, retries=2, retry_wait=0.01)
    fake.trigger_failures = [503, 429]
    assert (
        client.trigger_production_unit_update(1, "Running", "Stamping", run_id="mes__unit1__b")
        == "mes__unit1__b"
    )
    assert fake.runs == ["mes__unit1__b"]

    fake.trigger_failures = [503, 503, 503, 503]
    with pytest.raises(
        MesAirflowError, match=r"503 to POST .*: Service unavailable \(after 3 attempts\)"
    ) as busy:
        client.trigger_production_unit_update(1, "Running", "Stamping", run_id="mes__unit1__c")
    assert busy.value.status == 503
    assert fake.trigger_failures == [503]  # 1 + 2 retries sent, no more
    assert fake.runs == ["mes__unit1__b"]


def test_a_trigger_is_not_repeated_without_a_run_id_nor_after_a_refusal(airflow) -> None:
    fake, url = airflow
    client = MesAirflowClient(url, USER, PASSWORD, retry_wait=0.01)
    fake.trigger_failures = [503]
    with pytest.raises(MesAirflowError, match="503"):
        client.trigger_production_unit_update(1, "Running", "Stamping")  # repeated, it could run twice
    fake.dag_exists = False
    with pytest.raises(MesAirflowError, match="404"):
        client.trigger_production_unit_update(1, "Running", "Stamping", run_id="mes__unit1__d")
    fake.dag_exists = True
    client.trigger_production_unit_update(1, "Running", "Stamping", run_id="mes__unit1__e")
    # a run id that already exists before the first attempt is a conflict, not a success
    with pytest.raises(MesAirflowError, match=r"409 to POST .*Unique constraint violation") as taken:
        client.trigger_production_unit_update(1, "Running", "Stamping", run_id="mes__unit1__e")
    assert taken.value.status == 409
    # ... and so it is after an attempt Airflow refused without acting on it (429)
    fake.trigger_failures = [429]
    with pytest.raises(MesAirflowError, match=r"409 to POST .* \(after 2 attempts\)"):
        client.trigger_production_unit_update(1, "Running", "Stamping", run_id="mes__unit1__e")
    assert len([r for r in fake.requests if r["path"] == RUNS_PATH]) == 6
    assert fake.runs == ["mes__unit1__e"]


def test_a_trigger_whose_answer_was_cut_off_is_sent_again_and_starts_one_run(airflow) -> None:
    fake, url = airflow
    client = MesAirflowClient(url, USER, PASSWORD, retry_wait=0.01)
    fake.cut_triggers = 1  # the run starts, the connection closes before its answer
    assert (
        client.trigger_production_unit_update(1, "Running", "Stamping", run_id="mes__unit1__f")
        == "mes__unit1__f"
    )
    assert fake.runs == ["mes__unit1__f"]
    assert len([r for r in fake.requests if r["path"] == RUNS_PATH]) == 2
    fake.cut_triggers = 1
    with pytest.raises(MesAirflowError, match=r"answer to POST .*/dagRuns was cut off") as cut:
        client.trigger_production_unit_update(1, "Running", "Stamping")  # no run id: not repeated
    assert cut.value.maybe_done and cut.value.retriable


def test_an_unreachable_airflow_is_an_error() -> None:
    client = MesAirflowClient("http://127.0.0.1:9", USER, PASSWORD, timeout=2)
    with pytest.raises(MesAirflowError, match=r"Cannot reach Airflow at http://127.0.0.1:9"):
        client.trigger_production_unit_update(1, "Running", "Stamping")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ((0, "Running", "Stamping"), "production unit id 0"),
        ((-4, "Running", "Stamping"), "production unit id -4"),
        ((True, "Running", "Stamping"), "production unit id True"),
        (("3", "Running", "Stamping"), "production unit id '3'"),
        ((3, "", "Stamping"), "status ''"),
        ((3, None, "Stamping"), "status None"),
        ((3, "R" * 65, "Stamping"), "status"),
        ((3, "Running", 7), "process name 7"),
        ((3, "Running", "p" * 201), "process name"),
    ],
)
def test_arguments_are_checked_before_any_request(airflow, args: tuple, named: str) -> None:
    fake, url = airflow
    with pytest.raises(ValueError, match="Invalid " + named):
        MesAirflowClient(url, USER, PASSWORD).trigger_production_unit_update(*args)
    assert fake.requests == []


def test_client_settings_are_checked_and_the_password_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in ("airflow:8080", "ftp://host", "http://", "http://host?x=1"):
        with pytest.raises(ValueError, match="Invalid base_url"):
            MesAirflowClient(bad, USER, PASSWORD)
    with pytest.raises(ValueError, match="Invalid password"):
        MesAirflowClient("http://host", USER, "")
    with pytest.raises(ValueError, match="Invalid timeout"):
        MesAirflowClient("http://host", USER, PASSWORD, timeout=0)
    with pytest.raises(ValueError, match="Invalid retries"):
        MesAirflowClient("http://host", USER, PASSWORD, retries=-1)
    with pytest.raises(ValueError, match="Invalid retry_wait"):
        MesAirflowClient("http://host", USER, PASSWORD, retry_wait="1")
    with pytest.raises(ValueError, match="credentials in the URL are not accepted") as in_url:
        MesAirflowClient(f"http://{USER}:{PASSWORD}@host", USER, PASSWORD)
    assert PASSWORD not in str(in_url.value)
    client = MesAirflowClient("https://host/airflow/", USER, PASSWORD)
    assert client.base_url == "https://host/airflow"
    assert PASSWORD not in repr(client) and PASSWORD not in str(vars(client).get("base_url"))

    monkeypatch.setenv("MES_AIRFLOW_URL", "http://airflow:8080")
    monkeypatch.setenv("MES_AIRFLOW_USERNAME", USER)
    monkeypatch.delenv("MES_AIRFLOW_PASSWORD", raising=False)
    with pytest.raises(ValueError, match="MES_AIRFLOW_PASSWORD is not set"):
        MesAirflowClient.from_env()
    monkeypatch.setenv("MES_AIRFLOW_PASSWORD", PASSWORD)
    assert MesAirflowClient.from_env().base_url == "http://airflow:8080"


class _Units:
    def __init__(self) -> None:
        self.saved: list[tuple] = []

    def set_production_unit_state(
        self, unit_id: int, status: str, process_name: str, *, dag_run_id: str | None = None
    ) -> ProductionUnit:
        if unit_id != 7:
            raise ProductionUnitNotFoundError(unit_id)
        self.saved.append((unit_id, status, process_name, dag_run_id))
        return ProductionUnit(7, "PT16", "Press line 16", status, process_name)


def test_patch_saves_the_unit_then_triggers(airflow) -> None:
    fake, url = airflow
    units, client = _Units(), MesAirflowClient(url, USER, PASSWORD)
    run_id = patch_production_unit(units, client, 7, "Running", "Deep drawing")
    # the change is saved and noted under the run id the run is then triggered with
    assert re.fullmatch(r"mes__unit7__[0-9a-f]{32}", run_id)
    assert units.saved == [(7, "Running", "Deep drawing", run_id)]
    assert fake.requests[-1]["body"]["dag_run_id"] == run_id
    assert fake.requests[-1]["body"]["conf"] == {
        "production_unit_id": 7,
        "status": "Running",
        "process_name": "Deep drawing",
    }
    with pytest.raises(ProductionUnitNotFoundError, match="Production unit 8"):
        patch_production_unit(units, client, 8, "Running", "Deep drawing")
    assert len(fake.requests) == 2 and len(units.saved) == 1
    with pytest.raises(ValueError, match="Invalid run_id"):
        client.trigger_production_unit_update(7, "Running", "", run_id="a/b")
    assert len(fake.requests) == 2
