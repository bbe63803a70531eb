"""The gateway sandbox in a process of its own (``python -m gateway_sandbox serve``), for the tests
that kill it, restart it with other options or run it beside a deployment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, wait_until


class SandboxProcess:
    """``gateway_sandbox serve`` on a ledger and a topic prefix, its output appended to *log_path*.

    :param args: extra ``serve`` options (``--echo``, ``--delay-ms 1500``...).
    """

    def __init__(
        self, bootstrap: str, ledger_path: Path | str, prefix: str, log_path: Path, *args: str
    ) -> None:
        self.command = [
            sys.executable, "-m", "gateway_sandbox", "serve",
            "--bootstrap-servers", bootstrap, "--db", str(ledger_path),
            "--topic-prefix", prefix, "--log-level", "INFO",
        ]  # fmt: skip
        self.args = args
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> SandboxProcess:
        """Start it and return once it is ready to serve (it says so in its log)."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*self.command, *self.args],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        ready = wait_until(
            lambda: "gateway sandbox ready" in self.log()[offset:] or self.process.poll() is not None, timeout
        )
        assert ready and self.process.poll() is None, f"the sandbox did not start:\n{self.log()[offset:]}"
        return self

    def restart(self, *args: str) -> SandboxProcess:
        """Stop it and start it again with the ``serve`` options *args* instead."""
        self.stop()
        self.args = args
        return self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no chance to flush, close or write anything more."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int | None:
        """SIGTERM, as a deployment stops it; its exit code (``None`` if it never ran)."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.terminate()
        try:
            return self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)
