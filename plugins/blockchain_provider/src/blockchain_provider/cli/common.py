"""What every ``blockchain-provider`` command shares: exit codes, errors, reading and writing
connections, the hook, and reporting an outcome (text, or one JSON object)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from typing import Any

from blockchain_provider.exceptions import (
    BlockchainBrokerError,
    BlockchainConfigError,
    BlockchainGatewayError,
    BlockchainProtocolError,
    BlockchainTimeoutError,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_NO_ANSWER = 4
EXIT_BROKER = 5
EXIT_CONFIG = 6
EXIT_PROTOCOL = 7

#: The ``error`` of a failed command's JSON, by exit code.
ERROR_KINDS = {
    EXIT_FAILED: "failed",
    EXIT_USAGE: "usage",
    EXIT_REFUSED: "refused",
    EXIT_NO_ANSWER: "no_answer",
    EXIT_BROKER: "broker",
    EXIT_CONFIG: "config",
    EXIT_PROTOCOL: "protocol",
}

#: The provider's errors by exit code; the first match counts (subclasses before their bases).
_EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (BlockchainGatewayError, EXIT_REFUSED),
    (BlockchainTimeoutError, EXIT_NO_ANSWER),
    (BlockchainBrokerError, EXIT_BROKER),
    (BlockchainProtocolError, EXIT_PROTOCOL),
    (BlockchainConfigError, EXIT_CONFIG),
)

JSON_HELP = "print one JSON object describing the outcome (never a token); see the exit codes below"

EPILOG = """\
exit codes: 0 done; 1 failed on this side (connection not written, unexpected error);
2 bad options; 3 the gateway refused (the token or the request); 4 no answer within --timeout;
5 the Kafka broker unreachable or did not take the request; 6 nothing sent: a connection is
missing or invalid, or what is stored does not allow the command; 7 the gateway broke the
protocol. --json prints one JSON object on stdout ({"ok": ..., "error": ..., ...}), never a token.
"""


class CommandError(Exception):
    """A command failed; the message is safe to print (no token, no password).

    :param message: what failed, for a person
    :param exit_code: one of the ``EXIT_*`` codes; default :data:`EXIT_FAILED`
    :param details: more fields of the ``--json`` outcome; default none
    """

    def __init__(self, message: str, exit_code: int = EXIT_FAILED, **details: Any) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.details = details


def exit_code_of(exc: BaseException) -> int:
    """The exit code of a failure: the command's own, or the one of the provider's error."""
    if isinstance(exc, CommandError):
        return exc.exit_code
    return next((code for kind, code in _EXIT_CODES if isinstance(exc, kind)), EXIT_FAILED)


def _env_name(conn_id: str) -> str:
    return "AIRFLOW_CONN_" + conn_id.upper()


def read_connection(conn_id: str) -> dict[str, Any] | None:
    """The connection as a JSON-able dict, looked up as the Airflow CLI does, or ``None``."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    try:
        conn = Connection.get_connection_from_secrets(conn_id)
    except AirflowNotFoundException:
        return None
    return json.loads(conn.as_json())


def expose_connection(conn_id: str) -> None:
    """Make *conn_id* visible to hooks in this process only (they read ``AIRFLOW_CONN_*``)."""
    if _env_name(conn_id) in os.environ:
        return
    conn = read_connection(conn_id)
    if conn is None:
        raise CommandError(f"connection {conn_id} is not defined", EXIT_CONFIG)
    os.environ[_env_name(conn_id)] = json.dumps(conn)


def write_connection(conn_id: str, conn: dict[str, Any], api_url: str | None) -> None:
    """Create or replace *conn_id* through the Airflow CLI, or the REST API when *api_url* is set."""
    if api_url:
        _write_with_rest_api(conn_id, conn, api_url)
    else:
        _write_with_airflow_cli(conn_id, conn)
    os.environ.pop(_env_name(conn_id), None)


def _write_with_airflow_cli(conn_id: str, conn: dict[str, Any]) -> None:
    airflow = shutil.which("airflow", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    if airflow is None:
        raise CommandError("the `airflow` command is not installed beside this one; use --api-url")
    fd, path = tempfile.mkstemp(prefix="blk-conn-", suffix=".json")  # mode 0600
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump({conn_id: conn}, handle)
        result = subprocess.run(
            [airflow, "connections", "import", "--overwrite", path], capture_output=True, text=True
        )
    finally:
        os.unlink(path)
    if result.returncode != 0:
        secret_free = _redact(result.stderr + result.stdout, conn)
        raise CommandError(f"`airflow connections import` failed:\n{secret_free[-2000:]}")


def _api_credentials() -> tuple[str, str]:
    user = os.environ.get("AIRFLOW_API_USER")
    password = os.environ.get("AIRFLOW_API_PASSWORD")
    if not user or not password:
        raise CommandError(
            "--api-url needs AIRFLOW_API_USER and AIRFLOW_API_PASSWORD in the environment", EXIT_CONFIG
        )
    return user, password


def _write_with_rest_api(conn_id: str, conn: dict[str, Any], api_url: str) -> None:
    user, password = _api_credentials()
    base = api_url.rstrip("/")
    token = _http_json("POST", f"{base}/auth/token", {"username": user, "password": password})["access_token"]
    body = {"connection_id": conn_id, **conn}
    if isinstance(body.get("extra"), dict):
        body["extra"] = json.dumps(body["extra"])
    try:
        _http_json("PATCH", f"{base}/api/v2/connections/{conn_id}", body, token)
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise CommandError(f"the REST API refused the connection update: HTTP {exc.code}") from None
        _http_json("POST", f"{base}/api/v2/connections", body, token)


def _http_json(method: str, url: str, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method=method)
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = response.read()
    return json.loads(payload) if payload else {}


def _redact(text: str, conn: dict[str, Any]) -> str:
    extra = conn.get("extra") or {}
    if isinstance(extra, str):
        extra = json.loads(extra or "{}")
    for secret in (conn.get("password"), extra.get("agent_password")):
        if secret:
            text = text.replace(secret, "***")
    return text


def _hook(args: argparse.Namespace) -> Any:
    from blockchain_provider.hooks.kafka_blockchain import KafkaBlockchainHook

    expose_connection(args.kafka_conn_id)
    return KafkaBlockchainHook(args.kafka_conn_id, args.conn_id, timeout=args.timeout)


def _extra(conn: dict[str, Any] | None, conn_id: str = "") -> dict[str, Any]:
    extra = (conn or {}).get("extra") or {}
    try:
        value = json.loads(extra) if isinstance(extra, str) else dict(extra)
    except (ValueError, TypeError):
        value = None
    if not isinstance(value, dict):
        raise CommandError(f"the extra of connection {conn_id or '?'} is not a JSON object", EXIT_CONFIG)
    return value


def _keep_privately(conn_id: str, conn: dict[str, Any]) -> str:
    """Write *conn* where only this user can read it, in ``airflow connections import`` form;
    return the path. The credentials of a new agent must outlive a failed connection write."""
    home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    directory = os.path.join(home, "blockchain-provider")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, f"{conn_id}.json")
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({conn_id: conn}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return path


def _command(args: argparse.Namespace) -> str:
    return f"{args.group} {args.command}"


def _done(args: argparse.Namespace, text: str, **outcome: Any) -> int:
    """Report success: *text* for a person, or with ``--json`` the *outcome* (never a secret)."""
    if args.json:
        print(json.dumps({"ok": True, "command": _command(args), **outcome}), file=args.json_out)
    elif text:
        print(text)
    return EXIT_OK


def _failed(args: argparse.Namespace | None, exc: BaseException) -> int:
    """Report a failure: one line on stderr, and with ``--json`` its outcome on stdout."""
    code = exit_code_of(exc)
    message = str(exc)
    print(f"error: {message}", file=sys.stderr)
    if args is not None and getattr(args, "json", False):
        outcome = {
            "ok": False,
            "command": _command(args),
            "error": ERROR_KINDS.get(code, "failed"),
            "exit_code": code,
            "message": message,
            **(exc.details if isinstance(exc, CommandError) else {}),
        }
        print(json.dumps(outcome), file=args.json_out)
    return code
