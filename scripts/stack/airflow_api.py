"""Airflow seen from outside: its REST API (health, tokens), the admin password the simple auth
manager generated, and connection rows turned into ``AIRFLOW_CONN_*`` values."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from scripts.stack.settings import ADMIN_USER, Settings


def http_json(
    url: str,
    body: dict[str, Any] | None = None,
    token: str | None = None,
    method: str | None = None,
    timeout: float = 60.0,
) -> Any:
    """A JSON request to the Airflow API server; raises ``urllib.error.URLError`` or ``HTTPError``,
    or ``TimeoutError`` after *timeout* seconds without an answer.

    The default is generous: on a loaded machine the API server of an SQLite deployment can keep a
    request waiting for seconds (measured: 14 s while the first tasks of a new stack started)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data, headers, method=method or ("POST" if data else "GET"))
    with urllib.request.urlopen(request, timeout=timeout) as response:
        payload = response.read()
    return json.loads(payload) if payload else None


def airflow_health(url: str) -> dict[str, str]:
    """The status of each component from ``/api/v2/monitor/health``, or ``{}`` while it does not answer."""
    try:
        # while starting, a slow answer is as good as none: the caller asks again
        health = http_json(f"{url}/api/v2/monitor/health", timeout=10)
    except (OSError, ValueError):
        return {}
    return {name: (part or {}).get("status", "") for name, part in health.items() if isinstance(part, dict)}


def admin_password(settings: Settings) -> str | None:
    """The admin's password the simple auth manager generated, or ``None`` before it exists."""
    try:
        return json.loads(settings.password_file.read_text()).get(ADMIN_USER)
    except (OSError, ValueError):
        return None


def api_token(url: str, password: str, user: str = ADMIN_USER) -> str:
    """A JWT for the REST API (``POST /auth/token``)."""
    return http_json(f"{url}/auth/token", {"username": user, "password": password})["access_token"]


def connection_json(row: dict[str, Any]) -> dict[str, Any]:
    """An ``AIRFLOW_CONN_*`` JSON value from a row of ``airflow connections get -o json``."""
    conn = {key: row.get(key) for key in ("conn_type", "host", "schema", "login", "password", "port")}
    conn["extra"] = row.get("extra_dejson") or {}
    return {key: value for key, value in conn.items() if value not in (None, "")}
