"""``blockchain-provider pools ensure``: the Airflow pools of a token connection."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from typing import Any

from blockchain_provider.cli import common
from blockchain_provider.pools import DEFAULT_REPORTER_SLOTS


def cmd_pools_ensure(args: argparse.Namespace) -> int:
    """Create the token's request pool and its reporters' pool (each kept when it exists, so an
    operator's resize stays)."""
    from blockchain_provider.pools import pool_name, reporter_pool_name

    airflow = shutil.which("airflow", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    if airflow is None:
        raise common.CommandError("the `airflow` command is not installed beside this one")
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
            raise common.CommandError(f"`airflow pools set` failed:\n{result.stderr[-2000:]}")
        lines.append(f"Pool {name}: {slots} slot(s), deferred tasks included")
        outcome.update({f"{key}pool": name, f"{key}set": True, f"{key}slots": slots})
    return common._done(args, "\n".join(lines), **outcome)


def add_commands(groups: Any, documented: dict[str, Any]) -> None:
    """Add the ``pools`` commands to the command line."""
    pools = groups.add_parser("pools", help="Airflow pools", **documented).add_subparsers(
        dest="command", required=True
    )
    ensure = pools.add_parser(
        "ensure", help="create the one-slot request pool of a token connection", **documented
    )
    ensure.add_argument("--json", action="store_true", help=common.JSON_HELP)
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
