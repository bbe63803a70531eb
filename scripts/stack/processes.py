"""Process supervision: services in sessions of their own, stopping them (and what a killed run
left), log tails, port checks and the stack directory's lock."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from scripts.stack import StackError


def session_members(sid: int) -> list[int]:
    """Live (not zombie) processes of session *sid*: a service and everything it spawned, even
    the task processes that Airflow puts in process groups of their own."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[3]) == sid:
            members.append(int(entry))
    return members


def _kill_session(sid: int, sig: int) -> None:
    for pid in session_members(sid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


@dataclass
class Service:
    """A process started in a session of its own; stopping it stops the whole session."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    tier: int = 0

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        """Whether its first process still runs (what it spawned is :meth:`running`'s)."""
        return self.process.poll() is None

    def terminate(self) -> None:
        """SIGTERM to its process group, as Ctrl-C in a terminal would signal it: the service stops
        what it started in groups of its own (Airflow's task processes) itself."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)

    def running(self) -> bool:
        """Whether any process of its session still runs."""
        self.process.poll()
        return bool(session_members(self.pid))

    def kill(self) -> None:
        """SIGKILL to every process of its session."""
        _kill_session(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)


def stop_services(services: Sequence[Service], timeout: float = 30.0) -> None:
    """Stop *services* together: SIGTERM, then SIGKILL whatever is left of their sessions after
    *timeout*."""
    for service in services:
        service.terminate()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(service.running() for service in services):
        time.sleep(0.2)
    for service in services:
        service.kill()


def stop_leftover_sessions(sessions: dict[str, int], timeout: float = 30.0) -> list[str]:
    """Stop the sessions of services that a run killed without its clean stop left behind.

    Only processes that are this stack's (Airflow, the sandbox, tansu, Apache Kafka, Redis,
    PostgreSQL) are signalled, in case a process id was reused. Returns the names of the services
    that were still running.
    """
    ours = ("airflow", "gateway_sandbox", "tansu", "kafka.Kafka", "redis-server", "postgres")
    left = {
        name: sid
        for name, sid in sessions.items()
        if any(marker in _cmdline(pid) for pid in session_members(sid) for marker in ours)
    }
    for sid in left.values():
        _kill_session(sid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(session_members(sid) for sid in left.values()):
        time.sleep(0.2)
    for sid in left.values():
        _kill_session(sid, signal.SIGKILL)
    return sorted(left)


def _cmdline(pid: int) -> str:
    try:
        return Path("/proc", str(pid), "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def log_tail(path: Path, lines: int = 30) -> str:
    """The last *lines* lines of *path*, or ``""`` when it cannot be read.

    :param lines: how many; default 30
    """
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections on *port*.

    :param host: default: loopback
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def last_banner_offset(log: Path) -> int:
    """Where the last start's banner line (``=====``) begins in *log*: what follows is this run's."""
    text = log.read_text(errors="replace")
    return max(text.rfind("\n====="), 0)


@contextlib.contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """Send file descriptor 2 (what C libraries print too) to *path* for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "a") as target:
            os.dup2(target.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def stack_lock(stack_dir: Path) -> Iterator[None]:
    """Hold *stack_dir*'s lock for the block; a second run on the same directory is refused."""
    stack_dir.mkdir(parents=True, exist_ok=True)
    with open(stack_dir / "run.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StackError(f"another run_stack is using {stack_dir}; stop it first") from None
        yield
