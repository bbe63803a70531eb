"""Importing the MES-side modules loads no Airflow and opens no connection."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

MODULES = [
    "include",
    "include.day_report_keys",
    "include.mes",
    "include.mes.models",
    "include.mes.schema",
    "include.mes.db",
    "include.mes.repository",
    "include.sample_data",
    "include.mes_client",
]


def test_modules_import_without_airflow_or_io() -> None:
    # Sockets and sqlite3.connect fail if used: the import itself must not need them.
    code = (
        "import socket, sqlite3, sys\n"
        "def refuse(*a, **k):\n"
        "    raise AssertionError('connection opened at import time')\n"
        "socket.socket.connect = refuse\n"
        "sqlite3.connect = refuse\n"
        f"for name in {MODULES!r}:\n"
        "    __import__(name)\n"
        "loaded = sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.'))\n"
        "print(loaded)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
