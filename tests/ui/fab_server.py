"""A real ``airflow api-server`` with the FAB auth manager, as ``docker-compose.yaml`` runs it.

Its own AIRFLOW_HOME and SQLite metadata database (FAB's tables created by ``airflow db migrate``),
DAGs serialized from dags/ (which creates FAB's per-DAG permissions), FAB roles and users made
with Airflow's own CLI (``airflow roles``, ``airflow users create``) and FAB's REST API. Users
sign in through FAB: ``POST /auth/token`` or the login form of ``/auth/login/``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway_sandbox.broker import free_port
from tests.conftest import airflow, needs

ROOT = Path(__file__).resolve().parents[2]
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
#: a role of our own: the partner sync DAG only, nothing of the answer DAGs
PARTNER_SYNC_ROLE = "PartnerSyncOnly"
PARTNER_SYNC_PERMISSIONS = (
    ("DAG:blockchain_partner_sync", ("can_read", "can_edit")),
    ("DAG Runs", ("can_read", "can_create")),
    # what puts plugin views in the UI's navigation under FAB (Admin and Op have it)
    ("Plugins", ("can_read",)),
)
#: username -> FAB role
USERS = {
    "admin": "Admin",
    "operator": "Op",
    "worker": "User",
    "reader": "Viewer",
    "syncer": PARTNER_SYNC_ROLE,
}


def password(username: str) -> str:
    return f"{username}-fab-password"


class FabApiServer:
    """One ``airflow api-server`` process on 127.0.0.1 with the FAB auth manager."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = home / "api-server.log"
        home.mkdir(parents=True, exist_ok=True)
        # a user's shell: none of the test session's Airflow settings
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__", "PYTEST_"))}
        self.env = {
            **base,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER,
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__BLOCKCHAIN__REQUEST_STORE": "include.mes.request_store.MesRequestStore",
            "AIRFLOW__BLOCKCHAIN__REPORTER_REGISTRY": "include.mes.reporter_store.MesReporterRegistry",
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__API__SECRET_KEY": "fab-test-flask-secret-" + "s" * 32,
            "AIRFLOW__API_AUTH__JWT_SECRET": "fab-test-jwt-secret-" + "j" * 64,
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "dags")]),
            **env,
        }

    # ------------------------------------------------------------------ set-up
    def airflow(self, *args: str) -> str:
        return airflow(*args, env=self.env).stdout

    def initialise(self) -> None:
        """Metadata database with FAB's tables, DAGs (and their FAB permissions), roles, users."""
        self.airflow("db", "migrate")
        self.airflow("dags", "reserialize")
        self.airflow("roles", "create", PARTNER_SYNC_ROLE)
        for resource, actions in PARTNER_SYNC_PERMISSIONS:
            self.airflow("roles", "add-perms", PARTNER_SYNC_ROLE, "-r", resource, "-a", *actions)
        # the first admin as the deployment's airflow-init makes it
        self.airflow(
            "users", "create", "--username", "admin", "--password", password("admin"),
            "--firstname", "Admin", "--lastname", "Test", "--email", "admin@example.com", "--role", "Admin",
        )  # fmt: skip

    def add_users(self, users: dict[str, str] | None = None) -> None:
        """*users* (username -> role; by default :data:`USERS` but the admin), created by the
        admin through FAB's REST API (``/auth/fab/v1/users``)."""
        with self.client("admin") as admin:
            for username, role in (USERS if users is None else users).items():
                if username == "admin":
                    continue
                response = admin.post(
                    "/auth/fab/v1/users",
                    json={
                        "username": username,
                        "email": f"{username}@example.com",
                        "first_name": username.title(),
                        "last_name": "Test",
                        "roles": [{"name": role}],
                        "password": password(username),
                    },
                )
                assert response.status_code in (200, 201), response.text

    # ------------------------------------------------------------------ process
    def start(self, timeout: float = 180.0) -> FabApiServer:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("airflow")),
                    "api-server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the API server exited with {self.process.returncode}:\n{self.logs()}")
            try:
                if httpx.get(f"{self.base_url}/api/v2/monitor/health", timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"the API server did not answer within {timeout:.0f} s:\n{self.logs()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    # ------------------------------------------------------------------ users
    def token(self, username: str) -> str:
        """A JWT from FAB's token endpoint, with the user's password."""
        response = httpx.post(
            f"{self.base_url}/auth/token",
            json={"username": username, "password": password(username)},
            timeout=30,
        )
        assert response.status_code in (200, 201), response.text
        return response.json()["access_token"]

    def client(self, username: str | None = None) -> httpx.Client:
        """An HTTP client of the server, signed in as *username* (``Authorization: Bearer``)."""
        headers = {"Authorization": f"Bearer {self.token(username)}"} if username else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=60)

    def sign_in_with_form(self, username: str, next_url: str) -> httpx.Client:
        """Sign in as a browser does: FAB's login form (with its CSRF token), then its redirect."""
        client = httpx.Client(base_url=self.base_url, timeout=60)
        login = client.get("/auth/login/", params={"next": next_url})
        assert login.status_code == 200, login.text[-500:]
        match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', login.text)
        assert match, "no CSRF token in FAB's login form"
        response = client.post(
            "/auth/login/",
            params={"next": next_url},
            data={"csrf_token": match.group(1), "username": username, "password": password(username)},
        )
        assert response.status_code == 302, response.text[-500:]
        assert response.headers["location"] == next_url
        return client

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        """The DAG's runs, through Airflow's REST API as the admin."""
        with self.client("admin") as admin:
            response = admin.get(f"/api/v2/dags/{dag_id}/dagRuns")
        assert response.status_code == 200, response.text
        return response.json()["dag_runs"]


@contextmanager
def requests_page_server(home: Path, mes_path: Path, mes_agent: str) -> Iterator[FabApiServer]:
    """A running FAB API server whose page reads the MES database at *mes_path* (connection
    ``mes_db``), *mes_agent* being this MES's agent (``blockchain_master``); stopped at the end."""
    fab = FabApiServer(
        home,
        {
            "AIRFLOW_CONN_MES_DB": json.dumps({"conn_type": "sqlite", "host": str(mes_path)}),
            "AIRFLOW_CONN_BLOCKCHAIN_MASTER": json.dumps(
                {"conn_type": "blockchain_token", "login": mes_agent, "password": "not-used"}
            ),
        },
    )
    fab.initialise()
    fab.start()
    try:
        fab.add_users()
        yield fab
    finally:
        fab.stop()


# The session's FAB API server, shared by the endpoint tests (tests/ui/) and the browser's
# (tests/e2e/): its set-up (FAB's tables, roles, users, an api-server) is the slow part. Each
# test adds the partner requests it looks at and compares run counts with what it found before.
# tests/conftest.py loads this module as a plugin, so that the fixtures exist once per session.


@pytest.fixture(scope="session")
def fab_mes_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MES database the session's FAB API server's page reads."""
    return tmp_path_factory.mktemp("fab-mes") / "mes.sqlite3"


@pytest.fixture(scope="session")
def fab_mes(fab_mes_path: Path) -> Any:
    """The MES repository (schema created) on the database the session's FAB API server's page
    reads."""
    from include.mes.db import engine_from_url
    from include.mes.repository import MesRepository

    repository = MesRepository(engine_from_url(f"sqlite:///{fab_mes_path}"))
    repository.create_schema()
    return repository


@pytest.fixture(scope="session")
@needs("airflow")
def fab_server(tmp_path_factory: pytest.TempPathFactory, fab_mes_path: Path) -> Iterator[FabApiServer]:
    """The API server, with the MES database and this MES's agent given as connections."""
    from tests.ui.conftest import MES_AGENT

    with requests_page_server(tmp_path_factory.mktemp("fab-home"), fab_mes_path, MES_AGENT) as fab:
        yield fab
