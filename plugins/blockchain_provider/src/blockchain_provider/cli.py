"""``blockchain-provider``: manage the MES agent's token in the ``blockchain_token`` connection.

    blockchain-provider token create --conn-id blockchain_master --name "MES"
    blockchain-provider token rotate --conn-id blockchain_master
    blockchain-provider token check  --conn-id blockchain_master
    blockchain-provider pools ensure --conn-id blockchain_master [--slots 1] [--reporter-slots 16]
    blockchain-provider topics ensure --kafka-conn-id kafka_default --conn-id blockchain_master
    blockchain-provider reporters list
    blockchain-provider reporters rotate --unit PT10

``create`` makes the MES agent at the gateway (``BLK_Agt``) with a generated strong password;
``rotate`` gets a fresh token for the same agent with the stored public key and password. Both
write the connection through the Airflow CLI (``airflow connections import --overwrite``, from a
private temporary file) or, with ``--api-url``, through the REST API: tasks cannot write
connections, so this runs beside Airflow, where its CLI runs. Connections are read the same way
the Airflow CLI reads them (environment, secrets backends, metadata database).

The token and the password are never printed, unless ``--show`` is given.

``reporters`` reads the reporters the deployment's records were created with, through the
:class:`~blockchain_provider.reporter_registry.ReporterRegistry` that ``[blockchain]
reporter_registry`` names: ``list`` prints their names, record ids and public keys, never a
token; ``rotate`` gets a reporter a fresh token (``BLK_Agt`` with its public key and stored
password; the gateway revokes the earlier ones) and hands it to the registry to keep.

Every command takes ``--json``: it then prints one JSON object on stdout and nothing else there,
``{"ok": true, "command": "token create", "public_key": ..., ...}`` or ``{"ok": false,
"command": ..., "error": "refused", "exit_code": 3, "message": ...}``; never a token or a
password (``--show`` and ``--json`` exclude each other). Errors also go to stderr, as one
``error: ...`` line.

Exit codes (the ``error`` of the JSON in brackets), so that scripts never read the text:

- 0: done;
- 1 [``failed``]: a failure on this side: the connection could not be written (Airflow CLI or
  REST API), ``airflow pools set`` failed, or an unexpected error;
- 2 [``usage``]: bad options (argparse's), or an option's value out of range;
- 3 [``refused``]: the gateway answered with an error: it refused the token, or the request;
- 4 [``no_answer``]: the gateway did not answer within ``--timeout``;
- 5 [``broker``]: the Kafka broker could not be reached, or did not take the request;
- 6 [``config``]: nothing was sent: a connection is missing or invalid, or what is stored does
  not allow the command (``token create`` when an agent is stored, without ``--force``;
  ``token rotate`` without a stored agent; ``reporters rotate`` of a name without a reporter;
  a reporter registry that is not configured or cannot read a stored secret);
- 7 [``protocol``]: the gateway's answer broke the protocol.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from confluent_kafka import KafkaException

from blockchain_provider.exceptions import (
    BlockchainBrokerError,
    BlockchainConfigError,
    BlockchainError,
    BlockchainGatewayError,
    BlockchainProtocolError,
    BlockchainTimeoutError,
)
from blockchain_provider.pools import DEFAULT_REPORTER_SLOTS

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


def cmd_create(args: argparse.Namespace) -> int:
    existing = read_connection(args.conn_id)
    if existing and existing.get("login") and not args.force:
        raise CommandError(
            f"connection {args.conn_id} already holds agent {existing['login']}; use `token rotate` "
            "for a fresh token, or --force to create a new agent",
            EXIT_CONFIG,
            public_key=existing["login"],
        )
    if existing is not None:
        os.environ[_env_name(args.conn_id)] = json.dumps(existing)
    else:
        os.environ[_env_name(args.conn_id)] = json.dumps({"conn_type": "blockchain_token"})
    # everything that can fail on this side is done before the agent exists at the gateway
    extra = _extra(existing, args.conn_id)
    if args.api_url:
        _api_credentials()
    password = secrets.token_urlsafe(32)
    hook = _hook(args)
    try:
        public_key, token = hook.create_agent(args.name, password)
        # stored at once, before anything else can fail (even closing the Kafka clients): first
        # privately on disk, then in the connection
        extra.update(
            {"agent_password": password, "agent_name": args.name, "instance_type": args.instance_type}
        )
        conn = {"conn_type": "blockchain_token", "login": public_key, "password": token, "extra": extra}
        kept = _keep_privately(args.conn_id, conn)
        try:
            write_connection(args.conn_id, conn, args.api_url)
        except BaseException as exc:
            reason = _redact(str(exc) if not isinstance(exc, SystemExit) else str(exc.code), conn)
            raise CommandError(
                f"{reason}\nerror: agent {public_key} was created, but connection {args.conn_id} could not "
                f"be written. Its public key, token and password are kept in {kept} (readable by you "
                f"only): store them with `airflow connections import --overwrite {kept}`, then delete "
                "the file",
                EXIT_FAILED,
                public_key=public_key,
                kept=kept,
            ) from None
        os.unlink(kept)
    finally:
        hook.close()
    text = f"Created agent {public_key} ({args.name}); its token is stored in connection {args.conn_id}"
    if args.show:
        print(text)
        print(f"token: {token}")
        return EXIT_OK
    return _done(
        args,
        text,
        public_key=public_key,
        name=args.name,
        instance_type=args.instance_type,
        conn_id=args.conn_id,
    )


def cmd_rotate(args: argparse.Namespace) -> int:
    existing = read_connection(args.conn_id)
    if not existing or not existing.get("login") or not _extra(existing, args.conn_id).get("agent_password"):
        raise CommandError(
            f"connection {args.conn_id} has no public key and agent password; run `token create` first",
            EXIT_CONFIG,
        )
    os.environ[_env_name(args.conn_id)] = json.dumps(existing)
    with _hook(args) as hook:
        token = hook.get_token()
    conn = {**existing, "conn_type": "blockchain_token", "password": token, "extra": _extra(existing)}
    conn.pop("conn_id", None)
    write_connection(args.conn_id, conn, args.api_url)
    text = f"Stored a fresh token for agent {existing['login']} in connection {args.conn_id}"
    if args.show:
        print(text)
        print(f"token: {token}")
        return EXIT_OK
    return _done(args, text, public_key=existing["login"], conn_id=args.conn_id)


def cmd_check(args: argparse.Namespace) -> int:
    """One cheap authenticated request (a page of one partner request) with the stored token."""
    expose_connection(args.conn_id)
    public_key = (read_connection(args.conn_id) or {}).get("login")
    try:
        with _hook(args) as hook:
            hook.list_partner_requests(0, 1)
    except BlockchainError as exc:
        if args.json:
            return _failed(args, exc)
        # the line a person reads; the exit code says which failure it was
        print(f"FAILED: {exc}")
        return exit_code_of(exc)
    return _done(args, "OK: The gateway accepted the token.", public_key=public_key, conn_id=args.conn_id)


def cmd_pools_ensure(args: argparse.Namespace) -> int:
    """Create the token's request pool and its reporters' pool (each kept when it exists, so an
    operator's resize stays)."""
    from blockchain_provider.pools import pool_name, reporter_pool_name

    airflow = shutil.which("airflow", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    if airflow is None:
        raise CommandError("the `airflow` command is not installed beside this one")
    pools = (
        (
            pool_name(args.conn_id),
            args.slots,
            f"Requests made with the token of connection {args.conn_id}: one slot serialises them, as "
            "a gateway that does not echo request ids needs",
        ),
        (
            reporter_pool_name(args.conn_id),
            args.reporter_slots,
            f"Requests signed by the reporters the agent of {args.conn_id} created: records updated side "
            "by side (each record's own lock keeps its reporter to one request at a time)",
        ),
    )
    outcome: dict[str, Any] = {}
    lines = []
    for key, (name, slots, description) in zip(("", "reporter_"), pools, strict=True):
        exists = (
            subprocess.run([airflow, "pools", "get", name], capture_output=True, text=True).returncode == 0
        )
        if exists and not args.reset:
            lines.append(f"Pool {name} exists; kept as it is")
            outcome.update({f"{key}pool": name, f"{key}set": False})
            continue
        result = subprocess.run(
            [airflow, "pools", "set", name, str(slots), description, "--include-deferred"],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise CommandError(f"`airflow pools set` failed:\n{result.stderr[-2000:]}")
        lines.append(f"Pool {name}: {slots} slot(s), deferred tasks included")
        outcome.update({f"{key}pool": name, f"{key}set": True, f"{key}slots": slots})
    return _done(args, "\n".join(lines), **outcome)


def cmd_topics_ensure(args: argparse.Namespace) -> int:
    """Create the BLK topics (with the connection's overrides) that the broker does not have."""
    from confluent_kafka.admin import AdminClient, NewTopic

    from blockchain_provider import protocol
    from blockchain_provider.hooks.kafka_clients import _ProducerHook

    if args.replication is not None and args.replication < 1:
        raise CommandError(f"--replication {args.replication}: at least 1", EXIT_USAGE)
    expose_connection(args.kafka_conn_id)
    topics = protocol.TopicMap()
    existing_conn = read_connection(args.conn_id)
    if existing_conn is not None:
        topics = protocol.TopicMap.parse(_extra(existing_conn).get("topics"))
    config = _ProducerHook(args.kafka_conn_id)._build_config()
    admin = AdminClient(
        {k: v for k, v in config.items() if not k.startswith(("group.", "fetch.", "enable."))}
    )
    metadata = admin.list_topics(timeout=args.timeout)
    present = set(metadata.topics)
    # as many replicas as brokers, up to 3: a cluster keeps its topics when a broker fails
    replication = args.replication or max(1, min(3, len(metadata.brokers)))
    record_types = args.record_types or []
    wanted = [topics[name] for name in protocol.DEFAULT_TOPICS if name != protocol.RECORDS]
    wanted += [topics[protocol.record_topic(name)] for name in record_types]
    missing = [
        NewTopic(t, num_partitions=args.partitions, replication_factor=replication)
        for t in wanted
        if t not in present
    ]
    created = []
    for topic, future in (
        admin.create_topics(missing, operation_timeout=args.timeout).items() if missing else []
    ):
        future.result()
        created.append(topic)
        if not args.json:
            print(f"Created topic {topic}")
    return _done(
        args,
        f"{len(wanted) - len(missing)} topic(s) already present, {len(missing)} created",
        created=created,
        present=[t for t in wanted if t in present],
    )


@contextlib.contextmanager
def _registry_refusals() -> Iterator[None]:
    """Report what the deployment's reporter registry refuses (no such reporter, a secret it
    cannot read, no registry configured or buildable) as one line, as the other commands do."""
    from blockchain_provider.configured import ConfiguredObjectError
    from blockchain_provider.reporter_registry import ReporterRegistryError

    try:
        yield
    except (ConfiguredObjectError, ReporterRegistryError, ValueError) as exc:
        raise CommandError(str(exc), EXIT_CONFIG) from None


def cmd_reporters_list(args: argparse.Namespace) -> int:
    """Names, record ids, topics and public keys of the stored reporters; never a token."""
    from blockchain_provider.reporter_registry import configured_reporter_registry

    with _registry_refusals():
        reporters = list(configured_reporter_registry().reporters())
    if args.json:
        listed = [
            {
                "unit": r.name,
                "record_id": r.record_id,
                "topic": r.topic,
                "public_key": r.public_key,
                "has_token": bool(r.has_token),
            }
            for r in reporters
        ]
        return _done(args, "", reporters=listed)
    if not reporters:
        print("No reporters: a record's reporter is created with its record")
        return EXIT_OK
    print(f"{'unit':<16} {'record id':<20} {'public key':<66} topic")
    for r in reporters:
        public_key = r.public_key or "(creation not answered yet)"
        print(f"{r.name:<16} {r.record_id:<20} {public_key:<66} {r.topic}")
    return EXIT_OK


def cmd_reporters_rotate(args: argparse.Namespace) -> int:
    """A fresh token for the reporter, kept by the deployment's reporter registry."""
    from blockchain_provider.reporter_registry import configured_reporter_registry

    with _registry_refusals():
        registry = configured_reporter_registry()
        credentials = registry.credentials(args.unit)
    if credentials is None:
        raise CommandError(f"{args.unit} has no reporter yet, or its creation was not answered", EXIT_CONFIG)
    expose_connection(args.conn_id)
    with _hook(args) as hook:
        token = hook.get_token(credentials.public_key, credentials.password)
    try:
        registry.set_token(credentials.record_id, token)
    except Exception as exc:
        # the gateway has revoked the earlier tokens: nothing can be sent with the stored one now
        raise CommandError(
            f"the gateway issued {args.unit} a fresh token and revoked the earlier ones, but the "
            f"reporter registry did not keep it ({type(exc).__name__}): run `reporters rotate` again"
        ) from None
    return _done(
        args,
        f"Stored a fresh token for reporter {credentials.public_key} of {args.unit} "
        f"({credentials.record_id})",
        unit=args.unit,
        record_id=credentials.record_id,
        public_key=credentials.public_key,
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``token``, ``pools``, ``topics`` and ``reporters`` and their commands."""
    documented = {"epilog": EPILOG, "formatter_class": argparse.RawDescriptionHelpFormatter}
    parser = argparse.ArgumentParser(
        prog="blockchain-provider", description=__doc__.splitlines()[0], **documented
    )
    groups = parser.add_subparsers(dest="group", required=True)
    token = groups.add_parser("token", help="the MES agent's token", **documented).add_subparsers(
        dest="command", required=True
    )
    for name, func, text in (
        ("create", cmd_create, "create the MES agent and store its token"),
        ("rotate", cmd_rotate, "get a fresh token for the stored agent"),
        ("check", cmd_check, "make a cheap authenticated request with the stored token"),
    ):
        sub = token.add_parser(name, help=text, **documented)
        sub.set_defaults(func=func)
        sub.add_argument("--conn-id", default="blockchain_master", help="default: blockchain_master")
        sub.add_argument("--kafka-conn-id", default="kafka_default", help="default: kafka_default")
        sub.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the gateway")
        if name == "check":
            sub.add_argument("--json", action="store_true", help=JSON_HELP)
        else:
            output = sub.add_mutually_exclusive_group()
            output.add_argument("--show", action="store_true", help="print the token (it is a secret)")
            output.add_argument("--json", action="store_true", help=JSON_HELP)
            sub.add_argument(
                "--api-url",
                help="write the connection through this Airflow API server (AIRFLOW_API_USER and "
                "AIRFLOW_API_PASSWORD from the environment) instead of the airflow CLI",
            )
        if name == "create":
            sub.add_argument("--name", required=True, help="the agent's name, e.g. MES")
            sub.add_argument("--instance-type", default="Master", help="default: Master")
            sub.add_argument("--force", action="store_true", help="create a new agent even if one is stored")
    pools = groups.add_parser("pools", help="Airflow pools", **documented).add_subparsers(
        dest="command", required=True
    )
    ensure = pools.add_parser(
        "ensure", help="create the one-slot request pool of a token connection", **documented
    )
    ensure.add_argument("--json", action="store_true", help=JSON_HELP)
    ensure.set_defaults(func=cmd_pools_ensure)
    ensure.add_argument("--conn-id", default="blockchain_master", help="default: blockchain_master")
    ensure.add_argument("--slots", type=int, default=1, help="default: 1 (requests serialised)")
    ensure.add_argument(
        "--reporter-slots",
        type=int,
        default=DEFAULT_REPORTER_SLOTS,
        help=f"slots of the reporters' pool (records updated side by side); default: {DEFAULT_REPORTER_SLOTS}",
    )
    ensure.add_argument("--reset", action="store_true", help="set the slots even if the pool exists")

    topics = groups.add_parser("topics", help="Kafka topics", **documented).add_subparsers(
        dest="command", required=True
    )
    ensure = topics.add_parser("ensure", help="create the BLK topics the broker does not have", **documented)
    ensure.add_argument("--json", action="store_true", help=JSON_HELP)
    ensure.set_defaults(func=cmd_topics_ensure)
    ensure.add_argument("--kafka-conn-id", default="kafka_default", help="default: kafka_default")
    ensure.add_argument(
        "--conn-id", default="blockchain_master", help="topic overrides; default: blockchain_master"
    )
    ensure.add_argument(
        "--record-type",
        action="append",
        dest="record_types",
        help="also create this record type's topic BLK_Rec_<record type> (repeatable)",
    )
    ensure.add_argument("--partitions", type=int, default=1)
    ensure.add_argument(
        "--replication",
        type=int,
        default=None,
        help="replicas of each new topic; default: one per broker, at most 3",
    )
    ensure.add_argument("--timeout", type=float, default=30.0)

    reporters = groups.add_parser(
        "reporters",
        help="the reporters of the deployment's records ([blockchain] reporter_registry)",
        **documented,
    )
    reporter_commands = reporters.add_subparsers(dest="command", required=True)
    listing = reporter_commands.add_parser(
        "list", help="units, record ids and public keys (no tokens)", **documented
    )
    listing.set_defaults(func=cmd_reporters_list)
    rotate = reporter_commands.add_parser("rotate", help="get a reporter a fresh token", **documented)
    rotate.set_defaults(func=cmd_reporters_rotate)
    rotate.add_argument(
        "--name", "--unit", dest="unit", required=True, help="the reporter's name in the registry, e.g. PT10"
    )
    rotate.add_argument(
        "--conn-id", default="blockchain_master", help="topics and timeout; default: blockchain_master"
    )
    rotate.add_argument("--kafka-conn-id", default="kafka_default", help="default: kafka_default")
    rotate.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the gateway")
    for sub in (listing, rotate):
        sub.add_argument("--json", action="store_true", help=JSON_HELP)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code (``EXIT_*``, listed in the module's docstring).

    :param argv: the command line without the program; default: ``sys.argv[1:]``
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        # argparse has printed why; a script that asked for JSON still gets its one object
        if exc.code == EXIT_USAGE and "--json" in argv:
            print(json.dumps({"ok": False, "error": "usage", "exit_code": EXIT_USAGE}))
        raise
    args.json_out = sys.stdout
    if not getattr(args, "json", False):
        return _run(args)
    # stdout holds the one JSON object: what else would print there (Airflow's and the Kafka
    # clients' logs) goes to stderr
    with contextlib.redirect_stdout(sys.stderr):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except (CommandError, BlockchainError) as exc:
        return _failed(args, exc)
    except KafkaException as exc:
        # the admin client's calls (topics ensure) raise confluent-kafka's own error
        return _failed(args, CommandError(f"the Kafka broker: {exc}", EXIT_BROKER))


if __name__ == "__main__":
    sys.exit(main())
