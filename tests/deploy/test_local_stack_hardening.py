"""What `make run` and `make production` leave on the machine: owner-only files, a Redis with a
password, and nothing running after a killed run's next start."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from scripts.production_stack import ProductionStack, redis_ping
from scripts.stack.orchestration import Stack, serve
from scripts.stack.processes import session_members
from scripts.stack.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def restored_umask():
    old = os.umask(0o022)
    os.umask(old)
    try:
        yield
    finally:
        os.umask(old)


class WritingStack(Stack):
    """A stack whose only step writes a file itself and has a service write one."""

    def up(self) -> None:
        folder = self.settings.stack_dir
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "written-by-the-stack").write_text("x")
        subprocess.run(
            [sys.executable, "-c", f"open({str(folder / 'written-by-a-service')!r}, 'w')"], check=True
        )

    def down(self) -> None:
        pass


def test_what_the_stack_and_its_services_write_is_owner_only(tmp_path, restored_umask):
    os.umask(0o022)  # a usual login's
    stack = WritingStack(Settings(root=ROOT, stack_dir=tmp_path / "stack"), out=io.StringIO())
    assert serve(stack, check=True) == 0
    assert mode(tmp_path / "stack" / "written-by-the-stack") == 0o600
    assert mode(tmp_path / "stack" / "written-by-a-service") == 0o600


def test_production_redis_has_a_generated_password(tmp_path, restored_umask):
    os.umask(0o077)
    settings = Settings(root=ROOT, stack_dir=tmp_path / "stack")
    for folder in (settings.stack_dir, settings.logs):
        folder.mkdir(parents=True)
    stack = ProductionStack(settings, out=io.StringIO())
    try:
        redis = stack.start_redis()
        password = stack.redis_password
        assert len(password) >= 32
        assert redis_ping(stack.redis_port, password)
        assert not redis_ping(stack.redis_port)  # NOAUTH without it
        assert not redis_ping(stack.redis_port, "wrong")
        command_line = Path(f"/proc/{redis.pid}/cmdline").read_bytes().decode()
        assert password not in command_line
        assert mode(settings.stack_dir / "redis.conf") == 0o600
        stack.postgres = SimpleNamespace(
            url=lambda database: f"postgresql+psycopg2://postgres@127.0.0.1:1/{database}"
        )
        broker_url = stack.env()["AIRFLOW__CELERY__BROKER_URL"]
        assert broker_url == f"redis://:{password}@127.0.0.1:{stack.redis_port}/0"
        stack.postgres = None
        assert ProductionStack(settings).redis_password == ""  # a new one on every start
    finally:
        stack.down()
    assert not (settings.stack_dir / "redis.conf").exists()


@pytest.mark.postgres
def test_a_killed_production_run_leaves_its_postgresql_to_the_next_start(tmp_path):
    from local_services.postgres import PostgresCluster

    settings = Settings(root=ROOT, stack_dir=tmp_path / "stack")
    settings.stack_dir.mkdir(parents=True)
    cluster = PostgresCluster().start()
    try:
        killed = ProductionStack(settings, out=io.StringIO())
        killed.postgres = cluster
        killed.write_state()  # what the run had recorded when it was killed (SIGKILL: no clean stop)
        postmaster = cluster.pid
        assert postmaster is not None and session_members(postmaster)

        ProductionStack(settings, out=io.StringIO()).stop_leftovers()
        deadline = time.monotonic() + 10
        while session_members(postmaster) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert session_members(postmaster) == []
        assert not cluster.base_dir.exists()
    finally:
        if cluster.base_dir.exists():  # the test failed: stop it here
            cluster.stop()
