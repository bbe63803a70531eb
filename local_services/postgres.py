"""A throwaway PostgreSQL cluster on loopback, for the tests and the local production shape.

It runs the server binaries that Debian's ``postgresql`` package installs (``initdb``, ``pg_ctl``):
``initdb`` a fresh data directory in a temporary folder, start the server on a free
``127.0.0.1`` port with trust authentication for the superuser ``postgres``, and remove it all
on :meth:`PostgresCluster.stop`. PostgreSQL refuses to run as root, so when the caller is root
the cluster belongs to the ``postgres`` system user (or ``nobody`` where there is none).

The data directory runs with ``fsync=off``: it is thrown away, and durability is not what the
tests measure.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from local_services.ports import free_port

#: The superuser of a throwaway cluster (trust authentication on loopback only).
SUPERUSER = "postgres"


class PostgresError(RuntimeError):
    """The PostgreSQL server binaries are missing, or the cluster did not start."""


def server_bindir() -> Path:
    """The directory of ``initdb`` and ``pg_ctl``: ``$PG_BINDIR``, ``PATH``, or Debian's newest
    ``/usr/lib/postgresql/<version>/bin``."""
    explicit = os.environ.get("PG_BINDIR")
    if explicit:
        return Path(explicit)
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if versions:
        return Path(versions[-1]).parent
    raise PostgresError(
        "No PostgreSQL server binaries (initdb, pg_ctl): install them with "
        "'apt-get install postgresql', set PG_BINDIR, or point MES_TEST_PG_HOST at a running server"
    )


def _service_user() -> pwd.struct_passwd | None:
    """The unprivileged account that owns the cluster when we are root; ``None`` otherwise."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresError("Running as root and neither a 'postgres' nor a 'nobody' user exists")


class PostgresCluster:
    """A PostgreSQL server of its own on ``127.0.0.1:<port>``, started and removed by its owner.

    :param port: the port to listen on; a free one when ``None``.
    :param base_dir: where the data directory and log go; a new temporary folder when ``None``
        (removed on stop; a given folder is kept, so a stack can be restarted on its data).
    """

    def __init__(self, port: int | None = None, base_dir: str | os.PathLike[str] | None = None) -> None:
        self.port = port or free_port()
        self._owns_dir = base_dir is None
        self.base_dir = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="pg-cluster-"))
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "postgres.log"
        self._user = _service_user()
        self._started = False

    host = "127.0.0.1"
    user = SUPERUSER

    def url(self, database: str = "postgres", driver: str = "psycopg2") -> str:
        """A SQLAlchemy URL of *database* on this cluster."""
        return f"postgresql+{driver}://{self.user}@{self.host}:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        kwargs: dict = {}
        if self._user is not None:
            kwargs = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        result = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, env=env, cwd=self.base_dir, **kwargs
        )
        if result.returncode != 0:
            raise PostgresError(
                f"{Path(args[0]).name} failed with exit code {result.returncode}: "
                f"{(result.stderr or result.stdout).strip()[-2000:]}"
            )
        return result

    def start(self, timeout: float = 60.0) -> PostgresCluster:
        """Create the cluster when its data directory is new, start it and wait until it accepts
        connections."""
        bindir = server_bindir()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            os.chown(self.base_dir, self._user.pw_uid, self._user.pw_gid)
        os.chmod(self.base_dir, 0o700)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                str(bindir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
                "--auth=trust", "--encoding=UTF8", "--no-sync",
            )  # fmt: skip
        options = (
            f"-p {self.port} -c listen_addresses={self.host} -k {self.base_dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_path),
            "-o", options, "-w", "-t", str(int(timeout)), "start",
        )  # fmt: skip
        self._started = True
        self._wait_ready(timeout)
        return self

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while it runs; it leads a session of its own (``pg_ctl``
        detaches it), with every server process in it."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    @property
    def temporary(self) -> bool:
        """Whether its folder is its own, removed when it stops."""
        return self._owns_dir

    def _wait_ready(self, timeout: float) -> None:
        import psycopg2

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg2.connect(
                    host=self.host, port=self.port, user=self.user, dbname="postgres", connect_timeout=2
                ).close()
                return
            except psycopg2.OperationalError as exc:
                if time.monotonic() > deadline:
                    self.stop()
                    raise PostgresError(
                        f"PostgreSQL on port {self.port} did not accept connections: {exc}"
                    ) from exc
                time.sleep(0.2)

    def stop(self) -> None:
        """Stop the server (immediately: its data is thrown away) and remove a temporary folder."""
        if self._started:
            with contextlib.suppress(PostgresError, subprocess.TimeoutExpired):
                self._run(
                    str(server_bindir() / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate",
                    "-w", "stop", timeout=60,
                )  # fmt: skip
            self._started = False
        if self._owns_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
