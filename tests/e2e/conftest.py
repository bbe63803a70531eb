"""The local stack of ``make run`` (``scripts/run_stack.py``), started as a user starts it.

Each stack runs in a temporary ``STACK_DIR`` with a free Airflow port and, unless
``KAFKA_BOOTSTRAP_SERVERS`` names a broker, an embedded broker on a free port. It is started in a
session of its own and stopped with SIGINT, as Ctrl-C stops it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway_sandbox.broker import free_port
from scripts.stack.airflow_api import api_token, http_json
from scripts.stack.processes import session_members
from tests import airflow_rest
from tests.conftest import needs

ROOT = Path(__file__).resolve().parents[2]
RUN_STACK = ROOT / "scripts" / "run_stack.py"
#: start-up on a busy two-core machine takes up to about 5 minutes; about 1.5 on a quiet one
START_TIMEOUT = float(os.environ.get("E2E_START_TIMEOUT", "600"))


def stack_environment(stack_dir: Path, airflow_port: int, broker_port: int) -> dict[str, str]:
    """A user's shell: none of the test session's Airflow settings, the stack's own options."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW_", "AIRFLOW__", "PYTEST_"))
    }
    # tests/conftest.py put the repository on PYTHONPATH for the session; run_stack adds it itself
    session_paths = {str(ROOT), str(ROOT / "dags")}
    user_paths = [p for p in env.pop("PYTHONPATH", "").split(os.pathsep) if p and p not in session_paths]
    if user_paths:
        env["PYTHONPATH"] = os.pathsep.join(user_paths)
    env.update(
        {"STACK_DIR": str(stack_dir), "AIRFLOW_PORT": str(airflow_port), "BROKER_PORT": str(broker_port)}
    )
    return env


@dataclass
class RunningStack:
    """One ``run_stack.py`` process and what it reported in ``stack.json``."""

    stack_dir: Path
    airflow_port: int
    broker_port: int
    process: subprocess.Popen[bytes] | None = None
    state: dict[str, Any] = field(default_factory=dict)
    output: Path | None = None
    _token: str | None = None

    # -- life

    def start(self, timeout: float = START_TIMEOUT) -> RunningStack:
        """Start it and wait until stack.json says it is ready (Airflow healthy, banner printed)."""
        state_file = self.stack_dir / "stack.json"
        state_file.unlink(missing_ok=True)
        self.output = self.stack_dir.parent / f"run_stack-{int(time.time())}.out"
        with open(self.output, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(RUN_STACK)],
                cwd=ROOT,
                env=stack_environment(self.stack_dir, self.airflow_port, self.broker_port),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._token = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if state_file.exists():
                self.state = json.loads(state_file.read_text())
                if self.state.get("ready"):
                    return self
            if self.process.poll() is not None:
                pytest.fail(f"run_stack.py exited with {self.process.returncode}:\n{self.console()[-4000:]}")
            time.sleep(1)
        self.stop()
        pytest.fail(f"the stack was not up within {timeout:.0f} s:\n{self.console()[-4000:]}")

    def stop(self, timeout: float = 180.0) -> int:
        """Ctrl-C: SIGINT to run_stack.py; return its exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
                pytest.fail(f"run_stack.py did not stop within {timeout:.0f} s:\n{self.console()[-3000:]}")
        return self.process.returncode

    def console(self) -> str:
        return self.output.read_text(errors="replace") if self.output else ""

    def leftovers(self) -> dict[str, list[int]]:
        """The processes still alive in the session of each service it had started."""
        return {
            name: members for name, pid in self.state["services"].items() if (members := session_members(pid))
        }

    # -- what it serves

    @property
    def url(self) -> str:
        return self.state["url"]

    @property
    def password(self) -> str:
        return json.loads(Path(self.state["password_file"]).read_text())["admin"]

    def api(self, path: str, body: dict[str, Any] | None = None, method: str | None = None) -> Any:
        """The Airflow REST API (``/api/v2``) as the admin user."""
        if self._token is None:
            self._token = api_token(self.url, self.password)
        return http_json(f"{self.url}/api/v2{path}", body, self._token, method)

    def sandbox(self, *args: str) -> Any:
        """``python -m gateway_sandbox ARGS --db <ledger>``, its JSON output parsed."""
        result = subprocess.run(
            [sys.executable, "-m", "gateway_sandbox", *args, "--db", self.state["ledger"]],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        try:
            return json.loads(result.stdout)
        except json.JSONDecodeError:
            return result.stdout.strip()

    def partner_requests(self) -> list[dict[str, Any]]:
        return self.sandbox("show", "partner-requests", "--agent", self.state["mes_public_key"])

    def partner_request_status(self, request_id: str) -> str:
        """The status of partner request *request_id* on the ledger."""
        return {i["partner_request_id"]: i["status"] for i in self.partner_requests()}[request_id]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300.0) -> dict[str, Any]:
        """Wait until the run is finished; return it."""
        return airflow_rest.wait_for_runs(self.api, {run_id: (dag_id, run_id)}, timeout)[run_id]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        return airflow_rest.task_states(self.api, dag_id, run_id)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the tests on the session's shared stack after every other test of the session.

    A session fixture lives until the session ends: started earlier, the shared stack would run
    beside every later test, and beside the stacks those tests start, on a machine of two cores.
    """
    shared = [item for item in items if "running_stack" in getattr(item, "fixturenames", ())]
    if shared:
        items[:] = [item for item in items if item not in shared] + shared


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[pytest.TestReport]:
    """Keep the call phase's report on the item, for fixtures that save evidence on failure."""
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report


def new_stack(tmp_path_factory: pytest.TempPathFactory) -> RunningStack:
    return RunningStack(tmp_path_factory.mktemp("stack") / "local", free_port(), free_port())


@pytest.fixture(scope="session")
@needs("broker", "airflow")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """One stack for the session's browser flows (each works on requests of its own, as against
    the stack ``make run`` keeps running), stopped at its end.

    With ``E2E_STACK_DIR`` set (e.g. ``.local``), the stack that ``make run`` is running there is
    used instead, and left running.
    """
    existing = os.environ.get("E2E_STACK_DIR")
    if existing:
        stack_dir = Path(existing) if Path(existing).is_absolute() else ROOT / existing
        state_file = stack_dir / "stack.json"
        if not state_file.exists():
            pytest.fail(f"E2E_STACK_DIR={existing}: no running stack there ({state_file} is missing)")
        state = json.loads(state_file.read_text())
        if not state.get("ready"):
            pytest.fail(f"E2E_STACK_DIR={existing}: that stack is still starting")
        if not state.get("url"):
            pytest.fail(f"E2E_STACK_DIR={existing}: that stack runs without Airflow")
        yield RunningStack(stack_dir, 0, 0, state=state)
        return
    stack = new_stack(tmp_path_factory).start()
    try:
        yield stack
    finally:
        stack.stop()
