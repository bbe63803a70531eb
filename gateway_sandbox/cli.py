"""``python -m gateway_sandbox``: serve, inspect and verify the ledger, play the ERP, run a broker.

Commands:

- ``serve --bootstrap-servers HOST:PORT --db PATH [--encoding python-literal|json] [--echo|--no-echo]
  [--topic-prefix P] [--fetch-wait-max-ms N] [--broker-timeout S] [--delay-ms N] [--drop-rate R]
  [--error-rate R] [--garbage-rate R] [--duplicate-rate R] [--foreign-rate R] [--fault-seed N]
  [--profile sandbox|original] [--ignore-start] [--write-delay-ms N]``.
  The defaults are the original gateway's wire (Python-literal responses, no ``request_id``
  echo); the options turn on the improvements. ``--profile original`` is the strictest gateway
  the sources allow: any second creation refused, no read topic, writes answered after 1 s
  (:mod:`gateway_sandbox.profiles`). Stops cleanly on SIGTERM/SIGINT.
- ``verify --db PATH``: recompute the hash chain, check every signature, replay the log; exit 1
  and list the problems when the ledger was tampered with.
- ``show agents|partner-requests|orders|record-types|records|blocks|summary --db PATH``: state as
  JSON (agents: public keys and names only).
- ``erp partner-request --to PK --db PATH`` and ``erp order --to PK --type T --description D
  [--metadata JSON] [--file F ...] --db PATH``: act as an ERP agent; print the created id.
- ``seed-demo --to PK --db PATH``: demo partner requests and orders in mixed states.
- ``broker [--port N]``: an embedded tansu broker in the foreground.

``--db`` defaults to ``$GATEWAY_SANDBOX_DB`` when that is set.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from gateway_sandbox import wire
from gateway_sandbox.faults import Faults
from gateway_sandbox.ledger import Ledger
from gateway_sandbox.profiles import PROFILES, profile
from gateway_sandbox.validation import LedgerError

SHOW_KINDS = ("agents", "partner-requests", "orders", "record-types", "records", "blocks", "summary")


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a rate between 0 and 1")
    return value


def _db_option(parser: argparse.ArgumentParser) -> None:
    default = os.environ.get("GATEWAY_SANDBOX_DB")
    parser.add_argument(
        "--db",
        default=default,
        required=default is None,
        help="the SQLite ledger file (default: $GATEWAY_SANDBOX_DB)",
    )


def _erp_identity(parser: argparse.ArgumentParser) -> None:
    from gateway_sandbox.erp import DEFAULT_ERP_NAME, ERP_PASSWORD_ENV

    parser.add_argument(
        "--name", default=DEFAULT_ERP_NAME, help="the ERP agent's name (created on first use)"
    )
    parser.add_argument(
        "--password",
        default=None,
        help=f"the ERP agent's password (default: ${ERP_PASSWORD_ENV}, else one generated once per "
        "ledger and kept beside it in <db>.erp-password)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gateway_sandbox", description="The BLK gateway sandbox.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help=f"answer BLK_* requests on {wire.RESPONSES}")
    serve.add_argument("--bootstrap-servers", required=True, help="Kafka bootstrap servers, HOST:PORT")
    _db_option(serve)
    serve.add_argument("--encoding", choices=wire.ENCODINGS, default="python-literal")
    serve.add_argument(
        "--echo",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="copy each request's request_id into its response header (--no-echo, the default, does not,"
        f" like the original gateway; {wire.AGENTS} responses always do)",
    )
    serve.add_argument("--topic-prefix", default="", help="prefix of every topic name read or written")
    serve.add_argument(
        "--fetch-wait-max-ms",
        type=int,
        default=None,
        help="the consumer's fetch.wait.max.ms (default: 2 on tansu, 100 on Apache Kafka)",
    )
    serve.add_argument("--partitions", type=int, default=1, help="partitions of the topics it creates")
    serve.add_argument(
        "--page-cap",
        type=int,
        default=None,
        help="answer list requests with at most this many items, whatever their limit (default: the limit)",
    )
    serve.add_argument(
        "--broker-timeout", type=float, default=60.0, help="seconds to wait for the broker to answer at start"
    )
    serve.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="sandbox",
        help="sandbox (default): confirms an identical re-creation, answers reads; original: refuses any "
        "second creation of a record type or record, has no read topic, answers writes after "
        "--write-delay-ms",
    )
    serve.add_argument(
        "--ignore-start",
        action="store_true",
        help="answer every list request with its first page, whatever its start",
    )
    serve.add_argument(
        "--write-delay-ms",
        type=float,
        default=None,
        help="answer each write this much later, concurrently (default: the profile's; 1000 for original, 0 otherwise)",
    )
    faults = serve.add_argument_group("fault knobs")
    faults.add_argument("--delay-ms", type=float, default=0.0, help="write every answer this much later")
    faults.add_argument("--drop-rate", type=_rate, default=0.0, help="apply but never answer")
    faults.add_argument("--error-rate", type=_rate, default=0.0, help="answer error without applying")
    faults.add_argument("--garbage-rate", type=_rate, default=0.0, help="write an undecodable value first")
    faults.add_argument("--duplicate-rate", type=_rate, default=0.0, help="write the answer twice")
    faults.add_argument(
        "--foreign-rate", type=_rate, default=0.0, help="write an answer for another token first"
    )
    faults.add_argument("--fault-seed", type=int, default=0, help="seed of the knobs' random streams")
    serve.add_argument(
        "--hold-file",
        help="while this file exists, answers wait in the outbox (only those to the actions it names, one per line, when it names any); removing it releases them",
    )
    serve.add_argument(
        "--trace",
        help="append a JSON line per answered request to this file: token digest, request id, "
        "received and answered times (never the token)",
    )
    serve.add_argument(
        "--log-level", default="INFO", help="logging level (WARNING hides the per-request lines)"
    )

    verify = commands.add_parser("verify", help="check the hash chain, the signatures and the state")
    _db_option(verify)

    show = commands.add_parser("show", help="print ledger state as JSON")
    show.add_argument("kind", choices=SHOW_KINDS)
    _db_option(show)
    show.add_argument("--agent", help="partner-requests/orders: only those this agent issued or received")
    show.add_argument("--record-type", help="records: only this record type")

    erp = commands.add_parser("erp", help="act as an ERP agent")
    erp_commands = erp.add_subparsers(dest="erp_command", required=True)
    partner = erp_commands.add_parser("partner-request", help="ask an agent to become partners")
    partner.add_argument("--to", required=True, help="the receiving (MES) agent's public key")
    _db_option(partner)
    _erp_identity(partner)
    order = erp_commands.add_parser("order", help="send an order request to an accepted partner")
    order.add_argument("--to", required=True, help="the receiving (MES) agent's public key")
    order.add_argument("--type", required=True)
    order.add_argument("--description", required=True)
    order.add_argument("--metadata", default="{}", help="a JSON object")
    order.add_argument(
        "--file", action="append", default=[], dest="files", help="a file reference (repeatable)"
    )
    _db_option(order)
    _erp_identity(order)

    seed = commands.add_parser("seed-demo", help="demo partner requests and orders in mixed states")
    seed.add_argument("--to", required=True, help="the receiving (MES) agent's public key")
    _db_option(seed)

    broker = commands.add_parser("broker", help="run an embedded tansu broker in the foreground")
    broker.add_argument("--port", type=int, default=9092)
    broker.add_argument("--log", help="write the broker's output to this file")
    return parser


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _stop_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (installed before anything starts, so none is missed)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        logging.getLogger("gateway_sandbox").info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def _wait(stop: threading.Event, alive: Any) -> bool:
    """Wait for *stop*; ``False`` if ``alive()`` turned false first."""
    while not stop.wait(0.2):
        if not alive():
            return False
    return True


#: librdkafka settings of the sandbox's Kafka clients (TLS, SASL), a JSON object; e.g.
#: ``{"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.username": "gateway", ...}``.
KAFKA_CONFIG_ENV = "GATEWAY_SANDBOX_KAFKA_CONFIG"


def kafka_client_config() -> dict[str, Any]:
    """The client settings of ``$GATEWAY_SANDBOX_KAFKA_CONFIG`` (empty when unset)."""
    text = os.environ.get(KAFKA_CONFIG_ENV, "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise SystemExit(f"error: {KAFKA_CONFIG_ENV} is not JSON") from None
    if not isinstance(value, dict):
        raise SystemExit(f"error: {KAFKA_CONFIG_ENV} must be a JSON object of librdkafka settings")
    if "bootstrap.servers" in value:
        raise SystemExit(f"error: {KAFKA_CONFIG_ENV} must not set bootstrap.servers: use --bootstrap-servers")
    return value


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway_sandbox.broker import BrokerError, wait_for_broker
    from gateway_sandbox.server import GatewayServer

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    faults = Faults(
        delay_ms=args.delay_ms,
        drop_rate=args.drop_rate,
        error_rate=args.error_rate,
        garbage_rate=args.garbage_rate,
        duplicate_rate=args.duplicate_rate,
        foreign_rate=args.foreign_rate,
        seed=args.fault_seed,
    )
    client_config = kafka_client_config()
    server = GatewayServer(
        args.bootstrap_servers,
        args.db,
        encoding=args.encoding,
        echo=args.echo,
        topic_prefix=args.topic_prefix,
        faults=faults,
        fetch_wait_max_ms=args.fetch_wait_max_ms,
        topic_partitions=args.partitions,
        page_cap=args.page_cap,
        consumer_config=client_config,
        producer_config=client_config,
        hold_file=args.hold_file,
        trace_path=args.trace,
        profile=profile(args.profile, ignore_start=args.ignore_start, write_delay_ms=args.write_delay_ms),
    )
    log = logging.getLogger("gateway_sandbox")
    stop = _stop_signals()
    try:
        deadline = time.monotonic() + args.broker_timeout
        while True:  # in slices, so that SIGTERM is not kept waiting for the broker
            try:
                wait_for_broker(
                    args.bootstrap_servers, timeout=min(2.0, args.broker_timeout), config=client_config
                )
                break
            except BrokerError:
                if stop.is_set():
                    return 0
                if time.monotonic() >= deadline:
                    raise
        server.start()
    except Exception as exc:
        log.error("the gateway sandbox could not start: %s", exc)
        return 1
    stopped_cleanly = _wait(stop, lambda: server.running)
    server.stop()
    if not stopped_cleanly:
        log.error("the gateway stopped on its own")
        return 1
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    with Ledger(args.db) as ledger:
        problems = ledger.verify()
        counts = ledger.counts()
    if problems:
        print(f"ledger {args.db} FAILED verification: {len(problems)} problem(s)")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    print(
        f"ledger {args.db} intact: {counts['blocks']} blocks, {counts['transactions']} transactions verified"
    )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with Ledger(args.db) as ledger:
        if args.kind == "agents":
            _print_json(ledger.agents())
        elif args.kind == "partner-requests":
            _print_json(ledger.partner_requests(agent_pk=args.agent))
        elif args.kind == "orders":
            _print_json(ledger.orders(agent_pk=args.agent))
        elif args.kind == "record-types":
            _print_json(ledger.record_types())
        elif args.kind == "records":
            _print_json(ledger.records(args.record_type))
        elif args.kind == "blocks":
            _print_json(ledger.blocks())
        else:
            _print_json(ledger.counts())
    return 0


def cmd_erp(args: argparse.Namespace) -> int:
    from gateway_sandbox import erp

    with Ledger(args.db) as ledger:
        if args.erp_command == "partner-request":
            print(erp.send_partner_request(ledger, args.to, name=args.name, password=args.password))
            return 0
        try:
            metadata = json.loads(args.metadata)
        except json.JSONDecodeError as exc:
            raise LedgerError(f"--metadata is not JSON: {exc}") from None
        print(
            erp.send_order(
                ledger,
                args.to,
                type=args.type,
                description=args.description,
                metadata=metadata,
                files=args.files,
                name=args.name,
                password=args.password,
            )
        )
    return 0


def cmd_seed_demo(args: argparse.Namespace) -> int:
    from gateway_sandbox import erp

    with Ledger(args.db) as ledger:
        _print_json(erp.seed_demo(ledger, args.to))
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from gateway_sandbox.broker import TansuBroker

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = _stop_signals()
    broker = TansuBroker(port=args.port, log_path=args.log).start()
    print(f"tansu broker listening on {broker.bootstrap_servers} (Ctrl-C stops it)", flush=True)
    stopped_cleanly = _wait(stop, lambda: broker.process is not None and broker.process.poll() is None)
    broker.stop()
    if not stopped_cleanly:
        print("the broker exited on its own", file=sys.stderr)
        return 1
    return 0


COMMANDS = {
    "serve": cmd_serve,
    "verify": cmd_verify,
    "show": cmd_show,
    "erp": cmd_erp,
    "seed-demo": cmd_seed_demo,
    "broker": cmd_broker,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except LedgerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
