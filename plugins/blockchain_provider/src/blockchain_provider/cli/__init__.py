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
import sys

from confluent_kafka import KafkaException

from blockchain_provider.cli import pools, reporters, token, topics
from blockchain_provider.cli.common import (
    EPILOG,
    ERROR_KINDS,
    EXIT_BROKER,
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_NO_ANSWER,
    EXIT_OK,
    EXIT_PROTOCOL,
    EXIT_REFUSED,
    EXIT_USAGE,
    CommandError,
    _failed,
    exit_code_of,
)
from blockchain_provider.exceptions import BlockchainError

__all__ = [
    "ERROR_KINDS",
    "EXIT_BROKER",
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_NO_ANSWER",
    "EXIT_OK",
    "EXIT_PROTOCOL",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "CommandError",
    "build_parser",
    "exit_code_of",
    "main",
]


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``token``, ``pools``, ``topics`` and ``reporters`` and their commands."""
    documented = {"epilog": EPILOG, "formatter_class": argparse.RawDescriptionHelpFormatter}
    parser = argparse.ArgumentParser(
        prog="blockchain-provider", description=__doc__.splitlines()[0], **documented
    )
    groups = parser.add_subparsers(dest="group", required=True)
    for commands in (token, pools, topics, reporters):
        commands.add_commands(groups, documented)
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
