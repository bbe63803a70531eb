"""Every benchmark of the project in one run: prints one table and refreshes ``bench/RESULTS.md``.

Usage (from the repository root): ``make bench``, or ``.venv/bin/python bench/run_all.py
[--no-write] [--quick] [--baseline-requests 8] [--brokers tansu apache]``. It takes about eight
minutes on two cores. ``--quick`` runs every measurement end to end with small counts (a few
minutes on both brokers) and writes nothing: its figures only show that each measurement works.

Every figure that depends on the broker is measured once per broker, each started by the run:
tansu (embedded, ``make run``'s default) and Apache Kafka (one KRaft node from the jars
``kafka/pom.xml`` pins, ``local_services/kafka.py``); ``KAFKA_BOOTSTRAP_SERVERS`` replaces both
with that broker. For each measurement it makes a fresh set of topics and starts the gateway
sandbox as its own process (``python -m gateway_sandbox serve``), then measures
(``bench/measurements.py``; ``bench/report.py`` renders the figures):

0. request round trips through ``KafkaBlockchainHook`` against an instant responder, and the
   broker's floor (``bench/request_roundtrip.py``), at the hook's ``fetch.wait.max.ms`` and at 1 ms;
1. request round trips through ``KafkaBlockchainHook`` (1,000 sequential requests with
   request_id echo off, 1,000 with it on), and the same 1,000 pipelined with echo on;
2. the original system's pattern, on the same broker and gateway: for each request a new
   producer, then a new consumer in a fixed group that subscribes after sending, with a per-call
   time limit (the seed document's views, see ``measurements.original_pattern_request``);
3. a full sync of 1,000 / 5,000 / 10,000 partner requests (every page, each upserted into the MES);
4. a day report of 100 production units (2,800 records) with echo;
5. the DagBag fill time of ``dags/`` beyond importing Airflow (fresh processes);
6. the peak RSS of a process making 1,000 / 5,000 / 10,000 requests through one hook;
7. what one idle reader costs the broker at the hook's default ``fetch.wait.max.ms``: fetch
   requests a second and broker CPU (``bench/idle_fetch_cpu.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "dags"))
# Airflow reads its configuration when first imported: a scratch home, no examples.
from bench.scratch_home import use_scratch_airflow_home  # noqa: E402

use_scratch_airflow_home("bench-airflow-home-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
# the operators' per-page and per-report INFO lines would bury the table (see harness.quiet)
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")

from bench import measurements, report, results  # noqa: E402
from bench.harness import (  # noqa: E402
    BROKER_COLUMNS,
    BrokerPass,
    load_average,
    machine,
    quiet,
    start_broker,
)
from bench.measurements import FULL, QUICK, PassResult, Plan  # noqa: E402
from local_services.termination import stop_on_termination  # noqa: E402


def say(line: str) -> None:
    print(line, flush=True)


def measured(result: PassResult, data: Any) -> None:
    """Keep one measurement's data and print its rows as they come."""
    if data is None:
        return
    result.measurements.append(data)
    for row in report.render(data).rows:
        say(row.line())


def run(broker_pass: BrokerPass, plan: Plan, dagbag: bool = True) -> PassResult:
    """Every measurement on one broker, in the order that keeps them from disturbing each other.

    :param broker_pass: the broker and scratch directory of this pass.
    :param plan: the counts.
    :param dagbag: measure the DagBag fill too (it does not depend on the broker), default yes.
    """
    result = PassResult(broker_pass.broker)
    column = BROKER_COLUMNS[broker_pass.broker]

    def step(title: str, measure: Callable[[], Any], *, broker: bool = True) -> None:
        say(f"\n{title} ({column})" if broker else f"\n{title}")
        measured(result, measure())

    m = measurements
    step("Round trips through KafkaBlockchainHook against an instant responder",
         lambda: m.instant_round_trips(broker_pass, plan))  # fmt: skip
    step("Round trips through KafkaBlockchainHook, and the original pattern",
         lambda: m.round_trips(broker_pass, plan, say))  # fmt: skip
    step("Full sync of partner requests (hook and MES upsert)", lambda: m.full_syncs(broker_pass, plan, say))
    step(f"Day report of {plan.day_report_units} production units", lambda: m.day_reports(broker_pass, plan))
    if dagbag:
        step("DagBag parse time", lambda: m.dagbag_parse(plan), broker=False)
    step("Peak RSS of a process making many requests", lambda: m.peak_rss(broker_pass, plan))
    # last: the broker has settled after its start-up work
    step("What an idle reader costs the broker", lambda: m.idle_reader(broker_pass, plan))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--no-write", action="store_true", help=f"do not refresh {results.RESULTS.relative_to(ROOT)}"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="every measurement with small counts, to check that each runs; implies --no-write",
    )
    parser.add_argument(
        "--baseline-requests", type=int, help="original-pattern requests (default 8; 2 with --quick)"
    )
    parser.add_argument(
        "--brokers", nargs="+", choices=tuple(BROKER_COLUMNS), default=list(BROKER_COLUMNS),
        help="the brokers to measure on, one pass each (default: tansu apache)",
    )  # fmt: skip
    args = parser.parse_args()
    # a SIGTERM (timeout, kill) stops what the script started, as Ctrl-C does
    stop_on_termination()
    plan = QUICK if args.quick else FULL
    if args.baseline_requests is not None:
        plan = dataclasses.replace(plan, baseline_requests=args.baseline_requests)

    quiet()
    about = machine()
    started = time.perf_counter()
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    passes: list[PassResult] = []
    described: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        for i, kind in enumerate(args.brokers):
            passdir = Path(workdir) / kind
            passdir.mkdir()
            broker = None
            if external:
                broker_pass = BrokerPass(external, passdir, broker=kind)
                described.append(f"{BROKER_COLUMNS[kind]}: {external}")
            else:
                broker = start_broker(kind, passdir)
                broker_pass = BrokerPass(broker.bootstrap, passdir, broker=kind, broker_pid=broker.pid)
                described.append(f"{BROKER_COLUMNS[kind]}: {broker.description}")
            try:
                passes.append(run(broker_pass, plan, dagbag=i == 0))
            finally:
                if broker is not None:
                    broker.stop()
    info = report.RunInfo(
        about=about,
        brokers="; ".join(described),
        minutes=(time.perf_counter() - started) / 60,
        when=datetime.now(UTC),
        load_at_end=load_average(),
    )

    print(report.console(passes, info))
    if args.quick:
        print("(--quick: small counts, figures not comparable; nothing written)")
    elif not args.no_write:
        report.write_results(passes, info)
        print(f"wrote {results.RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
