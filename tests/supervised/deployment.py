"""A real Airflow deployment for tests: api-server, scheduler, dag-processor and triggerer processes.

Tasks run as production runs them: queued by the scheduler to the LocalExecutor, supervised in
their own processes (no ORM access, secrets masked in stored logs), deferred waits in the
triggerer, pools enforced. Runs are triggered and watched through the public REST API.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests import airflow_rest
from tests.conftest import airflow

SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")


def _free_port() -> int:
    from gateway_sandbox.broker import free_port

    return free_port()


class AirflowDeployment:
    """Airflow services sharing one home and one metadata database (``env`` may name one).

    :param home: the AIRFLOW_HOME (created).
    :param dags_folder: the DAGs folder to serve.
    :param env: extra environment for every process (connections, settings).
    :param port: the api-server's port.
    """

    def __init__(self, home: Path, dags_folder: Path, env: dict[str, str], port: int) -> None:
        self.home = home
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.password = "test-admin-password"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        home.mkdir(parents=True, exist_ok=True)
        (home / "passwords.json").write_text(json.dumps({"admin": self.password}))
        root = Path(__file__).resolve().parents[2]
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__API_AUTH__JWT_SECRET": "test-jwt-secret-for-the-supervised-suite",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            # each deployment serves its workers' and triggerer's logs on ports of its own
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(_free_port()),
            "PYTHONPATH": os.pathsep.join([str(root), str(dags_folder)]),
            **env,
        }
        self._token: str | None = None
        self._migrated = False

    # ------------------------------------------------------------------ processes
    def airflow(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return airflow(*args, check=check, env=self.env)

    def migrate(self) -> None:
        """``airflow db migrate``, once per deployment."""
        if not self._migrated:
            self.airflow("db", "migrate")
            self._migrated = True

    def command(self, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a console script of this virtualenv (``blockchain-provider``, ...) in this deployment."""
        command = [str(Path(sys.executable).with_name(name)), *args]
        return subprocess.run(command, env=self.env, capture_output=True, text=True, check=check)

    def start(self, timeout: float = 180.0) -> AirflowDeployment:
        self.migrate()
        logs = self.home / "service-logs"
        logs.mkdir(exist_ok=True)
        deadline = time.monotonic() + timeout
        # The API server first: tasks report to it from their first line, and a task started
        # before it listens fails and waits for a retry.
        self._spawn("api-server", "--port", str(self.port))
        while not self._answers():
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the API server did not answer within {timeout:.0f} s; logs in {logs}")
            time.sleep(0.5)
        for service in ("dag-processor", "triggerer", "scheduler"):
            self._spawn(service)
        while time.monotonic() < deadline:
            self._check_alive()
            health = self.get("/api/v2/monitor/health", auth=False)
            if all(
                health.get(part, {}).get("status") == "healthy"
                for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")
            ):
                return self
            time.sleep(1)
        raise TimeoutError(f"Airflow was not healthy within {timeout:.0f} s; logs in {logs}")

    def _spawn(self, service: str, *args: str) -> None:
        with open(self.home / "service-logs" / f"{service}.log", "ab") as out:
            self.processes[service] = subprocess.Popen(
                [str(Path(sys.executable).with_name("airflow")), service, *args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _answers(self) -> bool:
        try:
            self.get("/api/v2/monitor/health", auth=False)
            return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                log = (self.home / "service-logs" / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"airflow {name} exited with {process.returncode}:\n{log}")

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        self.processes.clear()

    # ------------------------------------------------------------------- REST API
    def _request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data, headers, method=method)
        attempts = 3 if method == "GET" else 1  # a busy API server may miss a read; GETs are safe to repeat
        for attempt in range(attempts):
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    payload = response.read()
                return json.loads(payload) if payload else None
            except TimeoutError:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def token(self) -> str:
        if self._token is None:
            answer = self._request(
                "POST", "/auth/token", {"username": "admin", "password": self.password}, auth=False
            )
            self._token = answer["access_token"]
        return self._token

    def get(self, path: str, auth: bool = True) -> Any:
        return self._request("GET", path, auth=auth)

    def post(self, path: str, body: Any) -> Any:
        return self._request("POST", path, body)

    def wait_for_dags(self, dag_ids: set[str], timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            listed = self.get("/api/v2/dags?limit=100")
            if dag_ids <= {d["dag_id"] for d in listed["dags"]}:
                return
            time.sleep(2)
        errors = self.get("/api/v2/importErrors")
        raise TimeoutError(f"DAGs {sorted(dag_ids)} not all parsed in time; import errors: {errors}")

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None, run_id: str | None = None) -> str:
        """Start a run of *dag_id* (with the id *run_id*, if given); its run id."""
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}}
        if run_id is not None:
            body["dag_run_id"] = run_id
        return self.post(f"/api/v2/dags/{dag_id}/dagRuns", body)["dag_run_id"]

    def api_get(self, path: str) -> Any:
        return self.get(f"/api/v2{path}")

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300.0) -> str:
        runs = airflow_rest.wait_for_runs(
            self.api_get, {run_id: (dag_id, run_id)}, timeout, interval=1, alive=self._check_alive
        )
        return runs[run_id]["state"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        return airflow_rest.task_states(self.api_get, dag_id, run_id)

    def task_logs(self) -> dict[Path, str]:
        """Every stored task log file of this deployment, by path."""
        return {path: path.read_text(errors="replace") for path in (self.home / "logs").rglob("*.log")}
