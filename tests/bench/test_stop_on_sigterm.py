"""A script that starts services stops them on SIGTERM as on Ctrl-C: nothing is left running.

``bench/sandbox_throughput.py`` is the smallest of them (tansu in a session of its own, the gateway
sandbox as its child); the production-shape benchmarks stop their stack through the same
:func:`local_services.termination.stop_on_termination`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from local_services.termination import TERMINATING_SIGNALS

ROOT = Path(__file__).resolve().parents[2]


def _stat(pid: int) -> tuple[int, str] | None:
    """The parent pid and start time of *pid*, ``None`` once it is gone (or a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else (int(fields[1]), fields[19])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def descendants(root: int) -> dict[int, tuple[str, str]]:
    """Every live process under *root*: pid -> (start time, command line)."""
    parents: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            parents.setdefault(stat[0], []).append(int(entry))
            starts[int(entry)] = stat[1]
    found, queue = {}, list(parents.get(root, []))
    while queue:
        pid = queue.pop()
        found[pid] = (starts[pid], _cmdline(pid))
        queue.extend(parents.get(pid, []))
    return found


def still_running(processes: dict[int, tuple[str, str]]) -> list[str]:
    return [
        command
        for pid, (start, command) in processes.items()
        if (stat := _stat(pid)) is not None and stat[1] == start
    ]


@pytest.mark.tansu
@pytest.mark.parametrize("signum", TERMINATING_SIGNALS[:1])
def test_a_benchmark_stops_its_broker_and_sandbox_on_sigterm(tmp_path: Path, signum: signal.Signals) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    with open(tmp_path / "out.log", "wb") as out:
        script = subprocess.Popen(
            [sys.executable, "bench/sandbox_throughput.py", "--requests", "100000000", "--partners", "1",
             "--orders", "1", "--records", "1", "--timeout", "600"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    started: dict[int, tuple[str, str]] = {}
    try:
        deadline = time.monotonic() + 120
        while True:
            started.update(descendants(script.pid))
            commands = " ".join(command for _, command in started.values())
            if "tansu" in commands and "gateway_sandbox" in commands:
                break
            assert script.poll() is None, (tmp_path / "out.log").read_text()
            assert time.monotonic() < deadline, f"the broker and the sandbox did not start: {commands}"
            time.sleep(0.2)
        time.sleep(3)  # the sandbox is serving: requests are under way
        started.update(descendants(script.pid))
        script.send_signal(signum)
        script.wait(90)
        deadline = time.monotonic() + 10  # a process that got SIGKILL may take a moment to go
        while still_running(started) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert still_running(started) == []
    finally:
        for pid in [*started, script.pid]:
            if _stat(pid) is not None and (pid == script.pid or _stat(pid)[1] == started[pid][0]):
                os.kill(pid, signal.SIGKILL)
        script.wait(10)
