"""``blockchain-provider token create|rotate|check``: the MES agent and its token in the
``blockchain_token`` connection."""

from __future__ import annotations

import argparse
import json
import os
import secrets
from typing import Any

from blockchain_provider.cli import common
from blockchain_provider.exceptions import (
    BlockchainError,
)


def cmd_create(args: argparse.Namespace) -> int:
    existing = common.read_connection(args.conn_id)
    if existing and existing.get("login") and not args.force:
        raise common.CommandError(
            f"connection {args.conn_id} already holds agent {existing['login']}; use `token rotate` "
            "for a fresh token, or --force to create a new agent",
            common.EXIT_CONFIG,
            public_key=existing["login"],
        )
    if existing is not None:
        os.environ[common._env_name(args.conn_id)] = json.dumps(existing)
    else:
        os.environ[common._env_name(args.conn_id)] = json.dumps({"conn_type": "blockchain_token"})
    # everything that can fail on this side is done before the agent exists at the gateway
    extra = common._extra(existing, args.conn_id)
    if args.api_url:
        common._api_credentials()
    password = secrets.token_urlsafe(32)
    hook = common._hook(args)
    try:
        public_key, token = hook.create_agent(args.name, password)
        # stored at once, before anything else can fail (even closing the Kafka clients): first
        # privately on disk, then in the connection
        extra.update(
            {"agent_password": password, "agent_name": args.name, "instance_type": args.instance_type}
        )
        conn = {"conn_type": "blockchain_token", "login": public_key, "password": token, "extra": extra}
        kept = common._keep_privately(args.conn_id, conn)
        try:
            common.write_connection(args.conn_id, conn, args.api_url)
        except BaseException as exc:
            reason = common._redact(str(exc) if not isinstance(exc, SystemExit) else str(exc.code), conn)
            raise common.CommandError(
                f"{reason}\nerror: agent {public_key} was created, but connection {args.conn_id} could not "
                f"be written. Its public key, token and password are kept in {kept} (readable by you "
                f"only): store them with `airflow connections import --overwrite {kept}`, then delete "
                "the file",
                common.EXIT_FAILED,
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
        return common.EXIT_OK
    return common._done(
        args,
        text,
        public_key=public_key,
        name=args.name,
        instance_type=args.instance_type,
        conn_id=args.conn_id,
    )


def cmd_rotate(args: argparse.Namespace) -> int:
    existing = common.read_connection(args.conn_id)
    if (
        not existing
        or not existing.get("login")
        or not common._extra(existing, args.conn_id).get("agent_password")
    ):
        raise common.CommandError(
            f"connection {args.conn_id} has no public key and agent password; run `token create` first",
            common.EXIT_CONFIG,
        )
    os.environ[common._env_name(args.conn_id)] = json.dumps(existing)
    with common._hook(args) as hook:
        token = hook.get_token()
    conn = {**existing, "conn_type": "blockchain_token", "password": token, "extra": common._extra(existing)}
    conn.pop("conn_id", None)
    common.write_connection(args.conn_id, conn, args.api_url)
    text = f"Stored a fresh token for agent {existing['login']} in connection {args.conn_id}"
    if args.show:
        print(text)
        print(f"token: {token}")
        return common.EXIT_OK
    return common._done(args, text, public_key=existing["login"], conn_id=args.conn_id)


def cmd_check(args: argparse.Namespace) -> int:
    """One cheap authenticated request (a page of one partner request) with the stored token."""
    common.expose_connection(args.conn_id)
    public_key = (common.read_connection(args.conn_id) or {}).get("login")
    try:
        with common._hook(args) as hook:
            hook.list_partner_requests(0, 1)
    except BlockchainError as exc:
        if args.json:
            return common._failed(args, exc)
        # the line a person reads; the exit code says which failure it was
        print(f"FAILED: {exc}")
        return common.exit_code_of(exc)
    return common._done(
        args, "OK: The gateway accepted the token.", public_key=public_key, conn_id=args.conn_id
    )


def add_commands(groups: Any, documented: dict[str, Any]) -> None:
    """Add the ``token`` commands to the command line."""
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
            sub.add_argument("--json", action="store_true", help=common.JSON_HELP)
        else:
            output = sub.add_mutually_exclusive_group()
            output.add_argument("--show", action="store_true", help="print the token (it is a secret)")
            output.add_argument("--json", action="store_true", help=common.JSON_HELP)
            sub.add_argument(
                "--api-url",
                help="write the connection through this Airflow API server (AIRFLOW_API_USER and "
                "AIRFLOW_API_PASSWORD from the environment) instead of the airflow CLI",
            )
        if name == "create":
            sub.add_argument("--name", required=True, help="the agent's name, e.g. MES")
            sub.add_argument("--instance-type", default="Master", help="default: Master")
            sub.add_argument("--force", action="store_true", help="create a new agent even if one is stored")
