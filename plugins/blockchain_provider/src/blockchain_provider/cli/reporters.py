"""``blockchain-provider reporters list|rotate``: the reporters of the deployment's records,
through its :class:`~blockchain_provider.reporter_registry.ReporterRegistry`."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import Any

from blockchain_provider.cli import common


@contextlib.contextmanager
def _registry_refusals() -> Iterator[None]:
    """Report what the deployment's reporter registry refuses (no such reporter, a secret it
    cannot read, no registry configured or buildable) as one line, as the other commands do."""
    from blockchain_provider.configured import ConfiguredObjectError
    from blockchain_provider.reporter_registry import ReporterRegistryError

    try:
        yield
    except (ConfiguredObjectError, ReporterRegistryError, ValueError) as exc:
        raise common.CommandError(str(exc), common.EXIT_CONFIG) from None


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
        return common._done(args, "", reporters=listed)
    if not reporters:
        print("No reporters: a record's reporter is created with its record")
        return common.EXIT_OK
    print(f"{'unit':<16} {'record id':<20} {'public key':<66} topic")
    for r in reporters:
        public_key = r.public_key or "(creation not answered yet)"
        print(f"{r.name:<16} {r.record_id:<20} {public_key:<66} {r.topic}")
    return common.EXIT_OK


def cmd_reporters_rotate(args: argparse.Namespace) -> int:
    """A fresh token for the reporter, kept by the deployment's reporter registry."""
    from blockchain_provider.reporter_registry import configured_reporter_registry

    with _registry_refusals():
        registry = configured_reporter_registry()
        credentials = registry.credentials(args.unit)
    if credentials is None:
        raise common.CommandError(
            f"{args.unit} has no reporter yet, or its creation was not answered", common.EXIT_CONFIG
        )
    common.expose_connection(args.conn_id)
    with common._hook(args) as hook:
        token = hook.get_token(credentials.public_key, credentials.password)
    try:
        registry.set_token(credentials.record_id, token)
    except Exception as exc:
        # the gateway has revoked the earlier tokens: nothing can be sent with the stored one now
        raise common.CommandError(
            f"the gateway issued {args.unit} a fresh token and revoked the earlier ones, but the "
            f"reporter registry did not keep it ({type(exc).__name__}): run `reporters rotate` again"
        ) from None
    return common._done(
        args,
        f"Stored a fresh token for reporter {credentials.public_key} of {args.unit} "
        f"({credentials.record_id})",
        unit=args.unit,
        record_id=credentials.record_id,
        public_key=credentials.public_key,
    )


def add_commands(groups: Any, documented: dict[str, Any]) -> None:
    """Add the ``reporters`` commands to the command line."""
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
        sub.add_argument("--json", action="store_true", help=common.JSON_HELP)
